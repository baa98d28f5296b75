//! Small IPv4 network helpers shared by the config validation and the IPAM.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// True when the two networks share at least one address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The `n`th address of `net` counting from the network address (`n = 0`), or `None` when
/// `n` is past the last address of the network.
pub fn nth_host(net: &Ipv4Net, n: u32) -> Option<Ipv4Addr> {
    let base = u32::from(net.network());
    let size = size(net);
    if u64::from(n) >= size {
        return None;
    }
    Some(Ipv4Addr::from(base.wrapping_add(n)))
}

/// The number of addresses in `net`, network and broadcast included.
pub fn size(net: &Ipv4Net) -> u64 {
    1u64 << (32 - u32::from(net.prefix_len()))
}

/// The position of `ip` in `net` (0 for the network address), or `None` when outside.
pub fn offset(net: &Ipv4Net, ip: Ipv4Addr) -> Option<u32> {
    if net.contains(&ip) {
        Some(u32::from(ip).wrapping_sub(u32::from(net.network())))
    } else {
        None
    }
}

/// Every address from `start` to `end` inclusive (empty when `start > end`).
pub fn range(start: Ipv4Addr, end: Ipv4Addr) -> impl Iterator<Item = Ipv4Addr> {
    (u32::from(start)..=u32::from(end)).map(Ipv4Addr::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn overlap() {
        assert!(overlaps(&n("10.244.0.0/16"), &n("10.244.3.0/24")));
        assert!(overlaps(&n("10.244.3.0/24"), &n("10.244.0.0/16")));
        assert!(overlaps(&n("10.0.0.0/8"), &n("10.0.0.0/8")));
        assert!(!overlaps(&n("10.244.0.0/16"), &n("10.96.0.0/12")));
        assert!(!overlaps(&n("10.0.0.0/25"), &n("10.0.0.128/25")));
        // host bits in the text do not matter
        assert!(overlaps(&n("10.0.0.77/24"), &n("10.0.0.0/30")));
    }

    #[test]
    fn nth_and_broadcast() {
        let net = n("10.244.1.1/24");
        assert_eq!(nth_host(&net, 0), Some(Ipv4Addr::new(10, 244, 1, 0)));
        assert_eq!(nth_host(&net, 1), Some(Ipv4Addr::new(10, 244, 1, 1)));
        assert_eq!(nth_host(&net, 255), Some(Ipv4Addr::new(10, 244, 1, 255)));
        assert_eq!(nth_host(&net, 256), None);
        assert_eq!(
            nth_host(&n("0.0.0.0/0"), u32::MAX),
            Some(Ipv4Addr::BROADCAST)
        );
        assert_eq!(size(&n("0.0.0.0/0")), 1 << 32);
        assert_eq!(offset(&net, Ipv4Addr::new(10, 244, 1, 9)), Some(9));
        assert_eq!(offset(&net, Ipv4Addr::new(10, 244, 2, 9)), None);
    }

    #[test]
    fn range_iteration() {
        assert_eq!(
            range(Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 0, 5)).count(),
            3
        );
        assert_eq!(
            range(Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 3)).count(),
            0
        );
    }
}
