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
    /// An address range that is not one network, in a set with intervals.
    IpRange(Ipv4Addr, Ipv4Addr),
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
            Datum::IpRange(a, _) => a.octets().to_vec(),
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
            Datum::IpRange(a, b) => write!(f, "{a}-{b}"),
            Datum::Mark(m) => write!(f, "{m:#010x}"),
        }
    }
}

/// The addresses of an interval element, first and last; `None` for other values.
pub fn ip_bounds(d: &Datum) -> Option<(u32, u32)> {
    match d {
        Datum::Ip(ip) => Some((u32::from(*ip), u32::from(*ip))),
        Datum::Net(net) => Some((u32::from(net.network()), u32::from(net.broadcast()))),
        Datum::IpRange(a, b) => Some((u32::from(*a), u32::from(*b))),
        _ => None,
    }
}

/// An address range as nft shows it: one network when it is one, else `first-last`.
pub fn ip_interval(first: u32, last: u32) -> Datum {
    let size = u64::from(last) - u64::from(first) + 1;
    if size.is_power_of_two() && u64::from(first) % size == 0 {
        let prefix = 32 - size.trailing_zeros() as u8;
        if let Ok(net) = Ipv4Net::new(Ipv4Addr::from(first), prefix) {
            return Datum::Net(net);
        }
    }
    Datum::IpRange(Ipv4Addr::from(first), Ipv4Addr::from(last))
}

/// `include` minus `exclude`, as sorted, merged address ranges (an ipBlock's `cidr` and
/// `except`).
pub fn ip_ranges(include: &[Ipv4Net], exclude: &[Ipv4Net]) -> Vec<(u32, u32)> {
    let bounds = |n: &Ipv4Net| (u32::from(n.network()), u32::from(n.broadcast()));
    let mut ranges: Vec<(u32, u32)> = include.iter().map(bounds).collect();
    ranges.sort();
    let mut merged: Vec<(u32, u32)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if u64::from(a) <= u64::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    for (xa, xb) in exclude.iter().map(bounds) {
        merged = merged
            .into_iter()
            .flat_map(|(a, b)| {
                let mut keep = Vec::new();
                if xb < a || xa > b {
                    keep.push((a, b));
                } else {
                    if xa > a {
                        keep.push((a, xa - 1));
                    }
                    if xb < b {
                        keep.push((xb + 1, b));
                    }
                }
                keep
            })
            .collect();
    }
    merged
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
    fn a_block_minus_its_exceptions_is_merged_ranges_shown_as_networks_where_they_are() {
        let n = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let r = ip_ranges(&[n("10.0.0.0/8")], &[n("10.1.0.0/16"), n("10.0.0.0/16")]);
        let shown: Vec<String> = r
            .iter()
            .map(|(a, b)| ip_interval(*a, *b).to_string())
            .collect();
        assert_eq!(shown, vec!["10.2.0.0-10.255.255.255"]);
        let r = ip_ranges(&[n("10.0.0.0/24"), n("10.0.1.0/24")], &[n("10.0.0.5/32")]);
        let shown: Vec<String> = r
            .iter()
            .map(|(a, b)| ip_interval(*a, *b).to_string())
            .collect();
        assert_eq!(shown, vec!["10.0.0.0-10.0.0.4", "10.0.0.6-10.0.1.255"]);
        assert_eq!(ip_interval(0, u32::MAX).to_string(), "0.0.0.0/0");
        assert_eq!(ip_interval(5, 5).to_string(), "0.0.0.5");
    }

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
