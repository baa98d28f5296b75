//! User-space segmentation and coalescing of TCP/IPv4, the two halves of carrying 64 KB
//! super-packets through a tunnel of MTU-sized datagrams (what wireguard-go and tailscale
//! do): on the way out a TSO packet from the TUN device is cut into MSS-sized segments
//! with their own headers and checksums, sent as one UDP GSO datagram train; on the way in
//! the segments of a UDP GRO train that continue one another are merged back into one
//! packet the TUN device takes with a GSO `virtio_net_hdr`, so the kernel behind it sees
//! one packet instead of forty-odd.

use super::csum;
use super::tun::{
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VNET_HDR_LEN,
    VnetHdr,
};

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_URG: u8 = 0x20;
const TCP_CWR: u8 = 0x80;
/// Largest IPv4 packet.
pub const MAX_IP_PACKET: usize = 65535;

/// Header lengths of a TCP/IPv4 packet.
#[derive(Debug, Clone, Copy)]
struct Tcp4 {
    iphl: usize,
    tcphl: usize,
    /// IPv4 total length.
    total: usize,
}

impl Tcp4 {
    fn parse(pkt: &[u8]) -> Option<Tcp4> {
        if pkt.len() < 40 || pkt[0] >> 4 != 4 || pkt[9] != PROTO_TCP {
            return None;
        }
        let iphl = usize::from(pkt[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
        if iphl < 20 || total > pkt.len() || total < iphl + 20 {
            return None;
        }
        let tcphl = usize::from(pkt[iphl + 12] >> 4) * 4;
        (tcphl >= 20 && iphl + tcphl <= total).then_some(Tcp4 { iphl, tcphl, total })
    }

    fn header_len(&self) -> usize {
        self.iphl + self.tcphl
    }
}

/// The plan for cutting a TCP/IPv4 super-packet: header length, segment count and the
/// length of a full segment; `None` when `pkt` is not a TCP/IPv4 packet it can cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub header_len: usize,
    pub segments: usize,
    pub full_segment: usize,
    /// Total bytes of all segments, headers included.
    pub total: usize,
}

pub fn plan_cut(pkt: &[u8], mss: usize) -> Option<Cut> {
    let t = Tcp4::parse(pkt)?;
    if mss == 0 {
        return None;
    }
    let payload = t.total - t.header_len();
    let segments = payload.div_ceil(mss).max(1);
    Some(Cut {
        header_len: t.header_len(),
        segments,
        full_segment: t.header_len() + mss,
        total: segments * t.header_len() + payload,
    })
}

/// Cuts TCP/IPv4 super-packet `pkt` into segments of `mss` payload bytes without copying
/// the payload: each segment's headers (own IP id, length, sequence number, flags and
/// full checksums) are written into `headers` (`segments × header_len` bytes, see
/// [`plan_cut`]), and `each` gets, per segment, its header's offset in `headers` and its
/// payload's range in `pkt`, to send the two as one datagram.
pub fn cut_tcp4(
    pkt: &[u8],
    mss: usize,
    headers: &mut [u8],
    mut each: impl FnMut(usize, std::ops::Range<usize>),
) -> Option<()> {
    let t = Tcp4::parse(pkt)?;
    let hl = t.header_len();
    let payload_len = t.total - hl;
    let ip_id = u16::from_be_bytes([pkt[4], pkt[5]]);
    let seq0 = seq_of(pkt, t.iphl);
    let flags = pkt[t.iphl + 13];
    let pseudo_base = csum::pseudo_v4(&pkt[12..16], &pkt[16..20], PROTO_TCP, 0);
    let count = payload_len.div_ceil(mss).max(1);
    for i in 0..count {
        let start = hl + (i * mss).min(payload_len);
        let end = hl + ((i + 1) * mss).min(payload_len);
        let payload = &pkt[start..end];
        let hdr = headers.get_mut(i * hl..(i + 1) * hl)?;
        hdr.copy_from_slice(&pkt[..hl]);
        hdr[2..4].copy_from_slice(&((hl + payload.len()) as u16).to_be_bytes());
        hdr[4..6].copy_from_slice(&ip_id.wrapping_add(i as u16).to_be_bytes());
        csum::set_ipv4_header(&mut hdr[..t.iphl]);
        let tcp = &mut hdr[t.iphl..];
        tcp[4..8].copy_from_slice(&seq0.wrapping_add((i * mss) as u32).to_be_bytes());
        let mut seg_flags = flags;
        if i + 1 < count {
            seg_flags &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            seg_flags &= !TCP_CWR;
        }
        tcp[13] = seg_flags;
        tcp[16] = 0;
        tcp[17] = 0;
        // The TCP header is a multiple of 4 bytes: the payload's sum starts even.
        let tcp_len = t.tcphl + payload.len();
        let sum = csum::combine(&[
            pseudo_base,
            tcp_len as u32,
            csum::sum(tcp),
            csum::sum(payload),
        ]);
        tcp[16..18].copy_from_slice(&csum::finish(sum).to_be_bytes());
        each(i * hl, start..end);
    }
    Some(())
}

/// Completes the checksum the kernel left partial (`VIRTIO_NET_HDR_F_NEEDS_CSUM`): the
/// field holds the pseudo-header sum, so summing from `start` to the end and
/// complementing gives the final value. Returns false when the offsets do not fit.
pub fn finish_partial_checksum(pkt: &mut [u8], start: usize, offset: usize) -> bool {
    if start + offset + 2 > pkt.len() {
        return false;
    }
    let mut value = csum::finish(csum::sum(&pkt[start..]));
    if value == 0 && pkt.len() > 9 && pkt[9] == PROTO_UDP {
        // Zero means "no checksum" in UDP: an all-ones sum is sent as 0xffff.
        value = 0xffff;
    }
    pkt[start + offset..start + offset + 2].copy_from_slice(&value.to_be_bytes());
    true
}

/// Merges consecutive TCP/IPv4 segments of one flow into one packet for the TUN device
/// (Linux GRO's rules: same addresses, ports, ack, window, options, TTL and TOS, each
/// segment starting where the last ended, all but the last exactly `mss` long, only the
/// last with PSH or FIN). Other packets pass through alone.
///
/// Without copying: the merged packet is handed over as iovecs (its rebuilt headers, then
/// each segment's payload where it was received) for one writev to the TUN device.
pub struct Coalescer {
    /// The vnet header and the IP and TCP headers of the packet being built.
    head: [u8; HEAD],
    /// `head`, then the payloads.
    iovs: Vec<libc::iovec>,
    /// Packet bytes (headers and payloads); 0 when no packet is open.
    len: usize,
    segments: usize,
    mss: usize,
    iphl: usize,
    tcphl: usize,
    next_seq: u32,
    /// False once a short segment or PSH/FIN closed the packet.
    open: bool,
}

/// vnet header + the largest IPv4 and TCP headers.
const HEAD: usize = VNET_HDR_LEN + 60 + 60;
/// Iovecs per write (the kernel's UIO_MAXIOV is 1024).
const MAX_IOVS: usize = 1024;
/// The vnet header of a packet that needs nothing from the kernel.
static PLAIN: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer::new()
    }
}

fn iov(bytes: &[u8]) -> libc::iovec {
    libc::iovec {
        // The kernel only reads from these (writev).
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    }
}

impl Coalescer {
    pub fn new() -> Coalescer {
        Coalescer {
            head: [0; HEAD],
            iovs: Vec::with_capacity(MAX_IOVS),
            len: 0,
            segments: 0,
            mss: 0,
            iphl: 0,
            tcphl: 0,
            next_seq: 0,
            open: false,
        }
    }

    /// Adds one packet received from the tunnel; `emit` gets every packet ready for the
    /// TUN device, as iovecs (vnet header first).
    ///
    /// # Safety
    /// `pkt` must stay valid and unchanged until the next [`Coalescer::flush`]: the
    /// merged packet points into it.
    pub unsafe fn push(&mut self, pkt: &[u8], emit: &mut impl FnMut(&[libc::iovec])) {
        let Some(t) = Tcp4::parse(pkt).filter(|t| coalescable(pkt, t)) else {
            self.flush(emit);
            emit(&[iov(&PLAIN), iov(pkt)]);
            return;
        };
        if self.len > 0 && self.extends(pkt, &t) {
            self.append(pkt, &t);
            return;
        }
        self.flush(emit);
        self.start(pkt, &t);
    }

    fn start(&mut self, pkt: &[u8], t: &Tcp4) {
        let hl = t.header_len();
        self.head[VNET_HDR_LEN..VNET_HDR_LEN + hl].copy_from_slice(&pkt[..hl]);
        self.iovs.clear();
        self.iovs.push(iov(&[]));
        self.iovs.push(iov(&pkt[hl..t.total]));
        self.len = t.total;
        self.segments = 1;
        self.iphl = t.iphl;
        self.tcphl = t.tcphl;
        self.mss = t.total - hl;
        self.next_seq = seq_of(pkt, t.iphl).wrapping_add(self.mss as u32);
        self.open = pkt[t.iphl + 13] & (TCP_PSH | TCP_FIN) == 0;
    }

    fn extends(&self, pkt: &[u8], t: &Tcp4) -> bool {
        let cur = &self.head[VNET_HDR_LEN..VNET_HDR_LEN + self.iphl + self.tcphl];
        let payload = t.total - t.header_len();
        let (ip, tcp) = (self.iphl, self.iphl + 20);
        self.open
            && t.iphl == self.iphl
            && t.tcphl == self.tcphl
            && payload <= self.mss
            && self.len + payload <= MAX_IP_PACKET
            && self.iovs.len() < MAX_IOVS
            && seq_of(pkt, t.iphl) == self.next_seq
            // TOS, DF, TTL, addresses; ports; ack; offset, flags bar PSH/FIN, window;
            // options.
            && pkt[1] == cur[1]
            && pkt[6] & 0x40 == cur[6] & 0x40
            && pkt[8] == cur[8]
            && pkt[12..20] == cur[12..20]
            && pkt[ip..ip + 4] == cur[ip..ip + 4]
            && pkt[ip + 8..ip + 13] == cur[ip + 8..ip + 13]
            && pkt[ip + 13] & !(TCP_PSH | TCP_FIN) == cur[ip + 13] & !(TCP_PSH | TCP_FIN)
            && pkt[ip + 14..ip + 16] == cur[ip + 14..ip + 16]
            && pkt[tcp..ip + t.tcphl] == cur[tcp..ip + t.tcphl]
    }

    fn append(&mut self, pkt: &[u8], t: &Tcp4) {
        let payload = &pkt[t.header_len()..t.total];
        self.iovs.push(iov(payload));
        self.len += payload.len();
        self.segments += 1;
        self.next_seq = self.next_seq.wrapping_add(payload.len() as u32);
        let flags = pkt[t.iphl + 13] & (TCP_PSH | TCP_FIN);
        self.head[VNET_HDR_LEN + self.iphl + 13] |= flags;
        if payload.len() < self.mss || flags != 0 {
            self.open = false;
        }
    }

    /// Hands the open packet (if any) to `emit`.
    pub fn flush(&mut self, emit: &mut impl FnMut(&[libc::iovec])) {
        if self.len == 0 {
            return;
        }
        let hdr = if self.segments > 1 {
            self.finish_merged()
        } else {
            VnetHdr::default()
        };
        hdr.write(&mut self.head[..VNET_HDR_LEN]);
        self.iovs[0] = iov(&self.head[..VNET_HDR_LEN + self.iphl + self.tcphl]);
        emit(&self.iovs);
        self.len = 0;
        self.segments = 0;
    }

    /// Fixes the merged packet's IP length and checksum, leaves the TCP checksum partial
    /// (pseudo-header only: the kernel finishes it, or the pod's stack trusts it as a
    /// locally made packet), and describes it as a TSO packet of `mss`.
    fn finish_merged(&mut self) -> VnetHdr {
        let ip = &mut self.head[VNET_HDR_LEN..VNET_HDR_LEN + self.iphl + self.tcphl];
        ip[2..4].copy_from_slice(&(self.len as u16).to_be_bytes());
        csum::set_ipv4_header(&mut ip[..self.iphl]);
        let tcp_len = self.len - self.iphl;
        let pseudo = csum::pseudo_v4(&ip[12..16], &ip[16..20], PROTO_TCP, tcp_len);
        ip[self.iphl + 16..self.iphl + 18].copy_from_slice(&(pseudo as u16).to_be_bytes());
        VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: (self.iphl + self.tcphl) as u16,
            gso_size: self.mss as u16,
            csum_start: self.iphl as u16,
            csum_offset: 16,
        }
    }
}

/// A data segment that GRO may merge: unfragmented, no IP options, only ACK (and PSH/FIN)
/// set, with payload.
fn coalescable(pkt: &[u8], t: &Tcp4) -> bool {
    let flags = pkt[t.iphl + 13];
    let fragmented = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0;
    t.iphl == 20
        && !fragmented
        && t.total > t.header_len()
        && flags & TCP_ACK != 0
        && flags & (TCP_SYN | TCP_RST | TCP_URG | TCP_CWR) == 0
}

fn seq_of(pkt: &[u8], iphl: usize) -> u32 {
    u32::from_be_bytes([pkt[iphl + 4], pkt[iphl + 5], pkt[iphl + 6], pkt[iphl + 7]])
}

/// The `gso_type` the kernel may hand us without segmentation we support (ECN bit aside).
pub fn gso_kind(hdr: &VnetHdr) -> u8 {
    hdr.gso_type & !super::tun::VIRTIO_NET_HDR_GSO_ECN
}

pub const GSO_NONE: u8 = VIRTIO_NET_HDR_GSO_NONE;
pub const GSO_TCPV4: u8 = VIRTIO_NET_HDR_GSO_TCPV4;

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A TCP/IPv4 packet with timestamps-sized options and `payload` bytes.
    pub(in crate::udp) fn tcp_packet(payload: usize, flags: u8) -> Vec<u8> {
        let tcphl = 32;
        let total = 20 + tcphl + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&7u16.to_be_bytes());
        p[6] = 0x40;
        p[8] = 63;
        p[9] = PROTO_TCP;
        p[12..16].copy_from_slice(&[10, 244, 1, 2]);
        p[16..20].copy_from_slice(&[10, 244, 2, 2]);
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        t[4..8].copy_from_slice(&1000u32.to_be_bytes());
        t[8..12].copy_from_slice(&55u32.to_be_bytes());
        t[12] = ((tcphl / 4) as u8) << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&500u16.to_be_bytes());
        t[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3]);
        for (i, b) in t[tcphl..].iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        p
    }

    /// The bytes a writev of `iovs` would write.
    fn gather(iovs: &[libc::iovec]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in iovs {
            // SAFETY: the iovecs point at live test buffers.
            out.extend_from_slice(unsafe {
                std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len)
            });
        }
        out
    }

    pub(in crate::udp) fn tcp_checksum_ok(seg: &[u8]) -> bool {
        let pseudo = csum::pseudo_v4(&seg[12..16], &seg[16..20], PROTO_TCP, seg.len() - 20);
        csum::finish(csum::combine(&[pseudo, csum::sum(&seg[20..])])) == 0
    }

    #[test]
    fn a_super_packet_is_cut_into_valid_segments_and_merged_back_whole() {
        let mss = 1420;
        let original = tcp_packet(60_000, TCP_ACK | TCP_PSH);
        let cut = plan_cut(&original, mss).unwrap();
        let mut headers = vec![0u8; cut.segments * cut.header_len];
        let mut pieces = Vec::new();
        cut_tcp4(&original, mss, &mut headers, |h, payload| {
            pieces.push((h, payload))
        })
        .unwrap();
        let mut out = Vec::new();
        for (h, payload) in pieces {
            out.extend_from_slice(&headers[h..h + cut.header_len]);
            out.extend_from_slice(&original[payload]);
        }
        assert_eq!(out.len(), cut.total);
        let segments: Vec<&[u8]> = out.chunks(cut.full_segment).collect();
        assert_eq!(segments.len(), 60_000usize.div_ceil(mss));
        for (i, seg) in segments.iter().enumerate() {
            assert_eq!(csum::finish(csum::sum(&seg[..20])), 0, "IP checksum of {i}");
            assert!(tcp_checksum_ok(seg), "TCP checksum of {i}");
            let last = i + 1 == segments.len();
            assert_eq!(seg[33] & TCP_PSH != 0, last, "PSH only on the last");
            assert_eq!(seq_of(seg, 20), 1000 + (i * mss) as u32);
        }

        let mut emitted = Vec::new();
        let mut co = Coalescer::new();
        for seg in &segments {
            // SAFETY: `out` outlives the coalescer's use of it.
            unsafe { co.push(seg, &mut |p| emitted.push(gather(p))) };
        }
        co.flush(&mut |p| emitted.push(gather(p)));
        assert_eq!(emitted.len(), 1, "one merged packet");
        let merged = &emitted[0];
        let hdr = VnetHdr::parse(merged);
        assert_eq!(hdr.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!(usize::from(hdr.gso_size), mss);
        let pkt = &merged[VNET_HDR_LEN..];
        assert_eq!(pkt.len(), original.len());
        assert_eq!(pkt[52..], original[52..], "payload intact");
        assert_eq!(pkt[33], TCP_ACK | TCP_PSH);
        // Completing the partial checksum gives the original's valid one.
        let mut done = pkt.to_vec();
        assert!(finish_partial_checksum(&mut done, 20, 16));
        assert!(tcp_checksum_ok(&done));
    }

    #[test]
    fn a_gap_or_another_flow_starts_a_new_packet() {
        let a = tcp_packet(100, TCP_ACK);
        let mut b = tcp_packet(100, TCP_ACK);
        b[24..28].copy_from_slice(&1100u32.to_be_bytes());
        let mut c = tcp_packet(100, TCP_ACK);
        c[24..28].copy_from_slice(&5000u32.to_be_bytes());
        let syn = tcp_packet(0, TCP_SYN);
        let mut count = 0;
        let mut co = Coalescer::new();
        for p in [&a, &b, &c, &syn] {
            // SAFETY: the packets outlive the coalescer's use of them.
            unsafe { co.push(p, &mut |_| count += 1) };
        }
        co.flush(&mut |_| count += 1);
        assert_eq!(count, 3, "a+b merged, c alone, the SYN alone");
    }
}
