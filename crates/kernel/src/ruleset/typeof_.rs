//! The `typeof` description nft keeps in a set's user data, read back as nft prints it,
//! for the expressions podnet's sets are declared with: `numgen`, payload fields of the
//! IPv4, TCP, UDP and SCTP headers, and concatenations of them.

/// User data records: key typeof 3, data typeof 4; inside, an expression's id 0 and its
/// data 1.
const KEY_TYPEOF: u8 = 3;
const DATA_TYPEOF: u8 = 4;

/// nft's expression ids.
const EXPR_PAYLOAD: u32 = 7;
const EXPR_CONCAT: u32 = 13;
const EXPR_NUMGEN: u32 = 0x17;

/// `<key> [: <data>]` when the set was declared with `typeof` and its expressions are
/// ones this reads; `None` otherwise (nft then prints `type …`).
pub fn describe(userdata: &[u8]) -> Option<String> {
    let key = expression(record(userdata, KEY_TYPEOF)?)?;
    match record(userdata, DATA_TYPEOF) {
        Some(data) => Some(format!("{key} : {}", expression(data)?)),
        None => Some(key),
    }
}

/// The value of the first record `kind` of a run of (type, length, value) records.
fn record(mut rest: &[u8], kind: u8) -> Option<&[u8]> {
    while rest.len() >= 2 {
        let len = usize::from(rest[1]);
        let value = rest.get(2..2 + len)?;
        if rest[0] == kind {
            return Some(value);
        }
        rest = &rest[2 + len..];
    }
    None
}

fn number(records: &[u8], kind: u8) -> Option<u32> {
    Some(u32::from_ne_bytes(record(records, kind)?.try_into().ok()?))
}

fn expression(e: &[u8]) -> Option<String> {
    let data = record(e, 1)?;
    match number(e, 0)? {
        EXPR_NUMGEN if number(data, 0)? == 1 => {
            let modulus = number(data, 1)?;
            match number(data, 2)? {
                0 => Some(format!("numgen random mod {modulus}")),
                off => Some(format!("numgen random mod {modulus} offset {off}")),
            }
        }
        EXPR_PAYLOAD => payload(number(data, 0)?, number(data, 1)?),
        EXPR_CONCAT => {
            let mut parts = Vec::new();
            let mut rest = data;
            while rest.len() >= 2 {
                let len = usize::from(rest[1]);
                parts.push(expression(rest.get(2..2 + len)?)?);
                rest = &rest[2 + len..];
            }
            // A concatenation declared by `type` is recorded with no expressions.
            (!parts.is_empty()).then(|| parts.join(" . "))
        }
        _ => None,
    }
}

/// A header field by nft's protocol and field ids.
fn payload(header: u32, field: u32) -> Option<String> {
    let proto = match header {
        12 => "ip",
        8 => "tcp",
        6 => "udp",
        10 => "sctp",
        _ => return None,
    };
    let name = match (header, field) {
        (12, 11) => "saddr",
        (12, 12) => "daddr",
        (12, 9) => "protocol",
        (_, 1) if header != 12 => "sport",
        (_, 2) if header != 12 => "dport",
        _ => return None,
    };
    Some(format!("{proto} {name}"))
}
