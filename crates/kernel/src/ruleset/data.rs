//! The values sets hold and rules compare: nft's data types, and one value of each, with
//! the bytes the kernel stores and the text nft prints.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// nft's data types podnet uses (their numbers are nft's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// A number in host byte order (`numgen` results).
    Integer,
    Ipv4Addr,
    InetProto,
    InetService,
    Mark,
}

impl DataType {
    pub fn number(self) -> u32 {
        match self {
            DataType::Integer => 4,
            DataType::Ipv4Addr => 7,
            DataType::InetProto => 12,
            DataType::InetService => 13,
            DataType::Mark => 19,
        }
    }

    pub fn from_number(n: u32) -> Option<DataType> {
        Some(match n {
            4 => DataType::Integer,
            7 => DataType::Ipv4Addr,
            12 => DataType::InetProto,
            13 => DataType::InetService,
            19 => DataType::Mark,
            _ => return None,
        })
    }

    /// Bytes of a value alone (in a concatenation each field takes a multiple of 4).
    pub fn size(self) -> u32 {
        match self {
            DataType::Integer | DataType::Ipv4Addr | DataType::Mark => 4,
            DataType::InetProto => 1,
            DataType::InetService => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DataType::Integer => "integer",
            DataType::Ipv4Addr => "ipv4_addr",
            DataType::InetProto => "inet_proto",
            DataType::InetService => "inet_service",
            DataType::Mark => "mark",
        }
    }
}

/// The type number of a concatenation (six bits a field) or of a single type.
pub fn type_number(types: &[DataType]) -> u32 {
    types.iter().fold(0, |acc, t| (acc << 6) | t.number())
}

/// The types of a type number (one type, or a concatenation's fields), as far as they
/// are known.
pub fn types_of(number: u32) -> Vec<Option<DataType>> {
    if number < 64 {
        return vec![DataType::from_number(number)];
    }
    let mut fields = Vec::new();
    let mut n = number;
    while n != 0 {
        fields.push(DataType::from_number(n & 0x3f));
        n >>= 6;
    }
    fields.reverse();
    fields
}

/// The key length of `types`: one type's own length, a concatenation's fields padded.
pub fn key_len(types: &[DataType]) -> u32 {
    match types {
        [one] => one.size(),
        many => many.iter().map(|t| t.size().next_multiple_of(4)).sum(),
    }
}

/// One value, of one of the types above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Datum {
    Int(u32),
    Ip(Ipv4Addr),
    /// A network, in a set with intervals.
    Net(Ipv4Net),
    Proto(u8),
    Port(u16),
    /// A port range, in a set with intervals.
    Ports(u16, u16),
    Mark(u32),
}

impl Datum {
    /// The bytes the kernel stores (a network's or range's first value).
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Datum::Int(n) => n.to_ne_bytes().to_vec(),
            Datum::Ip(ip) => ip.octets().to_vec(),
            Datum::Net(net) => net.network().octets().to_vec(),
            Datum::Proto(p) => vec![*p],
            Datum::Port(p) | Datum::Ports(p, _) => p.to_be_bytes().to_vec(),
            Datum::Mark(m) => m.to_ne_bytes().to_vec(),
        }
    }

    /// The value of type `t` in `bytes`.
    pub fn read(t: DataType, bytes: &[u8]) -> Option<Datum> {
        let four = || -> Option<[u8; 4]> { bytes.get(..4)?.try_into().ok() };
        Some(match t {
            DataType::Integer => Datum::Int(u32::from_ne_bytes(four()?)),
            DataType::Ipv4Addr => Datum::Ip(Ipv4Addr::from(four()?)),
            DataType::InetProto => Datum::Proto(*bytes.first()?),
            DataType::InetService => {
                Datum::Port(u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?))
            }
            DataType::Mark => Datum::Mark(u32::from_ne_bytes(four()?)),
        })
    }
}

/// A protocol as nft names it.
pub fn proto_name(p: u8) -> Option<&'static str> {
    Some(match p {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        58 => "ipv6-icmp",
        132 => "sctp",
        _ => return None,
    })
}

impl fmt::Display for Datum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Datum::Int(n) => write!(f, "{n}"),
            Datum::Ip(ip) => write!(f, "{ip}"),
            Datum::Net(net) if net.prefix_len() == 32 => write!(f, "{}", net.addr()),
            Datum::Net(net) => write!(f, "{net}"),
            Datum::Proto(p) => match proto_name(*p) {
                Some(name) => f.write_str(name),
                None => write!(f, "{p}"),
            },
            Datum::Port(p) => write!(f, "{p}"),
            Datum::Ports(a, b) if a == b => write!(f, "{a}"),
            Datum::Ports(a, b) => write!(f, "{a}-{b}"),
            Datum::Mark(m) => write!(f, "{m:#010x}"),
        }
    }
}

/// A concatenation's values, each field padded to 32 bits.
pub fn concat_bytes(values: &[Datum]) -> Vec<u8> {
    if let [one] = values {
        return one.bytes();
    }
    let mut out = Vec::new();
    for v in values {
        out.extend_from_slice(&v.bytes());
        out.resize(out.len().next_multiple_of(4), 0);
    }
    out
}

/// The values of a key of `types` (unknown types read as integers).
pub fn read_concat(types: &[Option<DataType>], bytes: &[u8]) -> Option<Vec<Datum>> {
    if let [one] = types {
        return Datum::read(one.unwrap_or(DataType::Integer), bytes).map(|d| vec![d]);
    }
    let mut out = Vec::new();
    let mut at = 0;
    for t in types {
        let t = t.unwrap_or(DataType::Integer);
        out.push(Datum::read(t, bytes.get(at..)?)?);
        at += t.size().next_multiple_of(4) as usize;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenations_round_trip() {
        let types = [
            DataType::Ipv4Addr,
            DataType::InetProto,
            DataType::InetService,
        ];
        let n = type_number(&types);
        assert_eq!(n, 0x730d);
        let key = [
            Datum::Ip("10.96.0.1".parse().unwrap()),
            Datum::Proto(6),
            Datum::Port(80),
        ];
        let bytes = concat_bytes(&key);
        assert_eq!(bytes.len() as u32, key_len(&types));
        let read = read_concat(&types_of(n), &bytes).unwrap();
        assert_eq!(read, key.to_vec());
        assert_eq!(types_of(7), vec![Some(DataType::Ipv4Addr)]);
    }
}
