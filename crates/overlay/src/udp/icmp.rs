//! ICMP "destination net unreachable" for packets to a part of the cluster range no node
//! owns, written back into the TUN device as a router on the other side of it would, and
//! rate-limited like the kernel's own ICMP errors.

use std::time::{Duration, Instant};

use super::csum;
use super::tun::VNET_HDR_LEN;

const PROTO_ICMP: u8 = 1;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_NET_UNREACH: u8 = 0;
/// RFC 1812: an ICMP error carries as much of the original as fits in 576 bytes.
const MAX_ERROR_PACKET: usize = 576;
/// ICMP error types: never answered with another error (RFC 1122).
const ERROR_TYPES: [u8; 5] = [3, 4, 5, 11, 12];

/// At most `burst` errors per `period`.
#[derive(Debug)]
pub struct RateLimit {
    period: Duration,
    burst: u32,
    window_start: Instant,
    used: u32,
}

impl RateLimit {
    pub fn new(burst: u32, period: Duration) -> RateLimit {
        RateLimit {
            period,
            burst,
            window_start: Instant::now(),
            used: 0,
        }
    }

    pub fn allow(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.window_start) >= self.period {
            self.window_start = now;
            self.used = 0;
        }
        self.used < self.burst && {
            self.used += 1;
            true
        }
    }
}

/// Writes into `out` a vnet header and an ICMP net-unreachable from `router` (host byte
/// order) about `original`, and returns its length; `None` when the original must not be
/// answered (an ICMP error itself, a non-first fragment, or not IPv4).
pub fn net_unreachable(original: &[u8], router: u32, out: &mut [u8]) -> Option<usize> {
    if original.len() < 20 || original[0] >> 4 != 4 {
        return None;
    }
    let iphl = usize::from(original[0] & 0x0f) * 4;
    let fragment_offset = u16::from_be_bytes([original[6], original[7]]) & 0x1fff;
    if fragment_offset != 0 || original.len() < iphl {
        return None;
    }
    if original[9] == PROTO_ICMP && original.get(iphl).is_some_and(|t| ERROR_TYPES.contains(t)) {
        return None;
    }
    let quoted = original.len().min(MAX_ERROR_PACKET - 28);
    let total = 28 + quoted;
    let pkt = out.get_mut(VNET_HDR_LEN..VNET_HDR_LEN + total)?;
    pkt[..20].copy_from_slice(&[
        0x45, 0xc0, 0, 0, 0, 0, 0, 0, 64, PROTO_ICMP, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    pkt[12..16].copy_from_slice(&router.to_be_bytes());
    pkt[16..20].copy_from_slice(&original[12..16]);
    csum::set_ipv4_header(&mut pkt[..20]);
    let icmp = &mut pkt[20..];
    icmp[..8].copy_from_slice(&[ICMP_DEST_UNREACH, ICMP_NET_UNREACH, 0, 0, 0, 0, 0, 0]);
    icmp[8..].copy_from_slice(&original[..quoted]);
    let check = csum::finish(csum::sum(icmp));
    icmp[2..4].copy_from_slice(&check.to_be_bytes());
    out[..VNET_HDR_LEN].fill(0);
    Some(VNET_HDR_LEN + total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_goes_back_to_the_sender_and_quotes_the_packet() {
        let mut original = vec![0u8; 84];
        original[0] = 0x45;
        original[2..4].copy_from_slice(&84u16.to_be_bytes());
        original[9] = PROTO_ICMP;
        original[12..16].copy_from_slice(&[10, 244, 1, 2]);
        original[16..20].copy_from_slice(&[10, 244, 200, 5]);
        original[20] = 8; // echo request
        let mut out = vec![0u8; 1024];
        let router = u32::from(std::net::Ipv4Addr::new(10, 244, 1, 0));
        let len = net_unreachable(&original, router, &mut out).unwrap();
        let pkt = &out[VNET_HDR_LEN..len];
        assert_eq!(&pkt[16..20], &[10, 244, 1, 2]);
        assert_eq!(&pkt[12..16], &[10, 244, 1, 0]);
        assert_eq!((pkt[20], pkt[21]), (3, 0));
        assert_eq!(csum::finish(csum::sum(&pkt[..20])), 0);
        assert_eq!(csum::finish(csum::sum(&pkt[20..])), 0);
        assert_eq!(&pkt[28..], &original[..]);

        let mut error = original.clone();
        error[20] = 3;
        assert_eq!(net_unreachable(&error, router, &mut out), None);
    }

    #[test]
    fn the_rate_limit_allows_a_burst_per_period() {
        let mut limit = RateLimit::new(3, Duration::from_secs(60));
        assert_eq!((0..5).filter(|_| limit.allow()).count(), 3);
    }
}
