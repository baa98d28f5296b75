//! The send side's batch: packets are read from the TUN device straight into an arena,
//! super-packets are cut by writing only new headers (the payload stays where it was
//! read, and each datagram is a header iovec plus a payload iovec), and everything goes
//! out with sendmmsg, a UDP GSO train per message, [`BATCH`] messages per call.

use std::os::fd::RawFd;

use super::forwarder::{BATCH, Counters, add, errno, wait_writable};
use super::gso::{self, MAX_IP_PACKET};
use super::table::SockAddr;
use super::tun::VNET_HDR_LEN;

const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
/// Segments per UDP GSO send (the kernel's UDP_MAX_SEGMENTS is 64 on older kernels).
const MAX_GSO_SEGMENTS: usize = 64;
/// Largest UDP payload in one IPv4 datagram (or GSO train).
const MAX_UDP_PAYLOAD: usize = 65507;
/// One read: the vnet header and the largest packet, rounded to keep slots aligned.
pub const SLOT: usize = (VNET_HDR_LEN + MAX_IP_PACKET + 63) & !63;
/// Packets as read: a few slots, small enough to stay in cache.
const ARENA: usize = 4 * SLOT;
/// Segment headers written when cutting (a 64 KB super-packet at the smallest MSS Linux
/// sends, 48 bytes, needs 1366 headers of up to 120 bytes).
const HEADERS: usize = 192 << 10;
/// Iovecs of the pending messages (two per segment).
const IOVS: usize = 4096;
/// EAGAIN waits (one poll period each) before the rest of a batch is dropped.
const SEND_WAITS: usize = 20;

/// One UDP datagram or GSO train waiting for sendmmsg.
#[derive(Clone, Copy)]
struct Pending {
    iov_start: usize,
    iov_count: usize,
    len: usize,
    /// Segment size for UDP_SEGMENT; 0 for a single datagram.
    segment: u16,
    dst: SockAddr,
}

pub struct SendBatch {
    arena: Vec<u8>,
    used: usize,
    headers: Vec<u8>,
    headers_used: usize,
    iovs: Vec<libc::iovec>,
    pending: Vec<Pending>,
    hdrs: Vec<libc::mmsghdr>,
    addrs: Vec<libc::sockaddr_in>,
    /// Control buffers, u64 for cmsghdr alignment.
    ctrl: Vec<[u64; 4]>,
    /// Set when the kernel refused UDP GSO (an underlay that cannot offload UDP
    /// checksums): segments then go out as datagrams of their own.
    no_gso: bool,
}

impl SendBatch {
    pub fn new() -> SendBatch {
        // SAFETY: the libc structs are plain data for which all-zero is valid.
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let zero_addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        SendBatch {
            arena: vec![0; ARENA],
            used: 0,
            headers: vec![0; HEADERS],
            headers_used: 0,
            iovs: vec![zero_iov; IOVS],
            pending: Vec::with_capacity(IOVS),
            hdrs: vec![zero_hdr; BATCH],
            addrs: vec![zero_addr; BATCH],
            ctrl: vec![[0; 4]; BATCH],
            no_gso: false,
        }
    }

    /// The slot the next TUN read goes to, sending what is queued first if the arena
    /// is full.
    pub fn read_slot(&mut self, socket: RawFd, counters: &Counters) -> &mut [u8] {
        if self.used + SLOT > self.arena.len() || self.pending.len() >= BATCH {
            self.flush(socket, counters);
        }
        if self.pending.is_empty() {
            self.used = 0;
        }
        &mut self.arena[self.used..self.used + SLOT]
    }

    /// The packet of the last read (vnet header included).
    pub fn slot(&mut self, n: usize) -> &mut [u8] {
        &mut self.arena[self.used..self.used + n]
    }

    /// Queues the packet in the slot (`n` bytes with the vnet header) as one datagram.
    pub fn push_single(&mut self, n: usize, dst: SockAddr, socket: RawFd, counters: &Counters) {
        if self.iovs_free() < 1 {
            self.flush(socket, counters);
        }
        let start = self.used + VNET_HDR_LEN;
        let len = n - VNET_HDR_LEN;
        let iov = self.pending_iovs();
        self.iovs[iov] = self.arena_iov(start, len);
        self.pending.push(Pending {
            iov_start: iov,
            iov_count: 1,
            len,
            segment: 0,
            dst,
        });
        self.used += SLOT.min(n.next_multiple_of(64));
    }

    /// Cuts the TCP super-packet in the slot at `mss` and queues the segments as GSO
    /// trains (or single datagrams when GSO is off). False when it cannot be cut.
    pub fn push_segments(
        &mut self,
        n: usize,
        mss: usize,
        dst: SockAddr,
        socket: RawFd,
        counters: &Counters,
    ) -> bool {
        let pkt_start = self.used + VNET_HDR_LEN;
        let Some(cut) = gso::plan_cut(&self.arena[pkt_start..self.used + n], mss) else {
            return false;
        };
        let header_bytes = cut.segments * cut.header_len;
        if self.headers_used + header_bytes > self.headers.len()
            || self.iovs_free() < 2 * cut.segments
        {
            self.flush(socket, counters);
            if header_bytes > self.headers.len() || 2 * cut.segments > self.iovs.len() {
                return false;
            }
        }
        let first_iov = self.pending_iovs();
        let mut iov = first_iov;
        let headers_at = self.headers_used;
        let headers_base = self.headers.as_mut_ptr();
        let arena_base = self.arena.as_ptr();
        let pkt = &self.arena[pkt_start..self.used + n];
        let headers = &mut self.headers[headers_at..headers_at + header_bytes];
        let iovs = &mut self.iovs;
        let cut_ok = gso::cut_tcp4(pkt, mss, headers, |h, payload| {
            // SAFETY: offsets inside the header arena and the arena, which never move.
            iovs[iov] = libc::iovec {
                iov_base: unsafe { headers_base.add(headers_at + h) }.cast(),
                iov_len: cut.header_len,
            };
            iovs[iov + 1] = libc::iovec {
                iov_base: unsafe { arena_base.add(pkt_start + payload.start) }
                    .cast_mut()
                    .cast(),
                iov_len: payload.len(),
            };
            iov += 2;
        });
        if cut_ok.is_none() {
            return false;
        }
        self.headers_used += header_bytes;
        self.queue_trains(first_iov, cut.segments, cut.full_segment, cut.total, dst);
        self.used += SLOT.min(n.next_multiple_of(64));
        true
    }

    /// Groups `segments` segments (two iovecs each, from `first_iov`) into messages.
    fn queue_trains(
        &mut self,
        first_iov: usize,
        segments: usize,
        full: usize,
        total: usize,
        dst: SockAddr,
    ) {
        let per_message = if self.no_gso {
            1
        } else {
            (MAX_UDP_PAYLOAD / full).clamp(1, MAX_GSO_SEGMENTS)
        };
        let mut done = 0;
        let mut bytes_left = total;
        while done < segments {
            let count = per_message.min(segments - done);
            let len = if done + count == segments {
                bytes_left
            } else {
                count * full
            };
            self.pending.push(Pending {
                iov_start: first_iov + 2 * done,
                iov_count: 2 * count,
                len,
                segment: if count > 1 { full as u16 } else { 0 },
                dst,
            });
            bytes_left -= len;
            done += count;
        }
    }

    fn pending_iovs(&self) -> usize {
        self.pending.last().map_or(0, |p| p.iov_start + p.iov_count)
    }

    fn iovs_free(&self) -> usize {
        self.iovs.len() - self.pending_iovs()
    }

    fn arena_iov(&mut self, start: usize, len: usize) -> libc::iovec {
        libc::iovec {
            // SAFETY: start + len lie inside the arena.
            iov_base: unsafe { self.arena.as_mut_ptr().add(start) }.cast(),
            iov_len: len,
        }
    }

    /// Sends everything queued. The slot of the packet being handled stays put.
    pub fn flush(&mut self, socket: RawFd, counters: &Counters) {
        let mut start = 0;
        while start < self.pending.len() {
            let count = BATCH.min(self.pending.len() - start);
            self.send_window(start, count, socket, counters);
            start += count;
        }
        self.pending.clear();
        self.headers_used = 0;
    }

    /// Sends pending[start..start + count] (at most [`BATCH`]) with sendmmsg.
    fn send_window(&mut self, start: usize, count: usize, socket: RawFd, counters: &Counters) {
        for i in 0..count {
            let p = self.pending[start + i];
            self.addrs[i] = p.dst.0;
            let hdr = &mut self.hdrs[i].msg_hdr;
            hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_in).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            hdr.msg_iov = &mut self.iovs[p.iov_start];
            hdr.msg_iovlen = p.iov_count;
            hdr.msg_flags = 0;
            if p.segment > 0 {
                set_segment_cmsg(hdr, &mut self.ctrl[i], p.segment);
            } else {
                hdr.msg_control = std::ptr::null_mut();
                hdr.msg_controllen = 0;
            }
        }
        let mut sent = 0;
        let mut waits = 0;
        // Each pass sends, skips a failing message or waits (at most SEND_WAITS times).
        while sent < count {
            // SAFETY: hdrs[sent..count] point at live iovecs, addresses and control
            // buffers of this window.
            let n = unsafe {
                libc::sendmmsg(
                    socket,
                    self.hdrs[sent..].as_mut_ptr(),
                    (count - sent) as u32,
                    0,
                )
            };
            if n > 0 {
                for p in &self.pending[start + sent..start + sent + n as usize] {
                    count_sent(p, counters);
                }
                sent += n as usize;
                continue;
            }
            match errno() {
                libc::EINTR => continue,
                libc::EAGAIN if waits < SEND_WAITS => {
                    waits += 1;
                    wait_writable(socket);
                }
                libc::EIO | libc::EINVAL if self.pending[start + sent].segment > 0 => {
                    self.fall_back_from_gso(start + sent, socket, counters);
                    sent += 1;
                }
                _ => {
                    // Peer unreachable, refused, buffer full for too long: drop, go on.
                    add(&counters.drop_send_error, 1);
                    sent += 1;
                }
            }
        }
    }

    /// The kernel refused a GSO train (the underlay cannot offload UDP checksums): sends
    /// its segments (header and payload iovec pairs) one by one and stops using GSO.
    fn fall_back_from_gso(&mut self, index: usize, socket: RawFd, counters: &Counters) {
        if !self.no_gso {
            tracing::warn!(
                "the underlay refuses UDP GSO; the udp forwarder sends segments one by one (slower)"
            );
            self.no_gso = true;
        }
        let p = self.pending[index];
        for pair in (p.iov_start..p.iov_start + p.iov_count).step_by(2) {
            // SAFETY: a zeroed msghdr is valid; it points at one iovec pair of this batch
            // and a valid sockaddr_in.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            let mut addr = p.dst.0;
            msg.msg_name = (&mut addr as *mut libc::sockaddr_in).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            msg.msg_iov = &mut self.iovs[pair];
            msg.msg_iovlen = 2;
            // SAFETY: as above.
            let n = unsafe { libc::sendmsg(socket, &msg, 0) };
            if n < 0 {
                add(&counters.drop_send_error, 1);
            } else {
                add(&counters.udp_sent_datagrams, 1);
                add(&counters.udp_sent_bytes, n as u64);
            }
        }
    }
}

fn count_sent(p: &Pending, counters: &Counters) {
    let segment = if p.segment > 0 {
        usize::from(p.segment)
    } else {
        p.len
    };
    add(&counters.udp_sent_datagrams, p.len.div_ceil(segment) as u64);
    add(&counters.udp_sent_bytes, p.len as u64);
}

fn set_segment_cmsg(hdr: &mut libc::msghdr, buf: &mut [u64; 4], segment: u16) {
    // SAFETY: CMSG_SPACE(2) (24 bytes) fits in the 32-byte, 8-aligned buffer; the macros
    // only compute offsets inside it.
    unsafe {
        hdr.msg_control = buf.as_mut_ptr().cast();
        hdr.msg_controllen = libc::CMSG_SPACE(2) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(hdr);
        (*cmsg).cmsg_level = SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(2) as usize;
        std::ptr::copy_nonoverlapping(segment.to_ne_bytes().as_ptr(), libc::CMSG_DATA(cmsg), 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udp::gso::tests::{tcp_checksum_ok, tcp_packet};
    use crate::udp::tun::{VIRTIO_NET_HDR_GSO_TCPV4, VnetHdr};
    use std::net::{SocketAddrV4, UdpSocket};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// Cuts a 60 KB super-packet at a tiny MSS (more segments than one GSO train may
    /// carry, and more trains than one sendmmsg window) and sends it over loopback: every
    /// datagram arrives, in order, a valid TCP segment.
    #[test]
    fn a_super_packet_at_a_tiny_mss_goes_out_as_valid_segments_over_several_trains() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // Room for every datagram before the test reads them.
        let big: libc::c_int = 8 << 20;
        // SAFETY: one c_int to a valid socket.
        unsafe {
            libc::setsockopt(
                rx.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&big as *const libc::c_int).cast(),
                4,
            )
        };
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = match rx.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => SockAddr::new(SocketAddrV4::new(*a.ip(), a.port())),
            _ => unreachable!(),
        };
        let counters = Counters::default();
        let mut batch = SendBatch::new();
        let mss = 48;
        let payload = 60_000;
        // Small packets first, then a super-packet whose trains overflow the window.
        let small = 20;
        for _ in 0..small {
            let pkt = tcp_packet(10, 0x10);
            let slot = batch.read_slot(tx.as_raw_fd(), &counters);
            slot[..VNET_HDR_LEN].fill(0);
            slot[VNET_HDR_LEN..VNET_HDR_LEN + pkt.len()].copy_from_slice(&pkt);
            batch.push_single(VNET_HDR_LEN + pkt.len(), dst, tx.as_raw_fd(), &counters);
        }
        let pkt = tcp_packet(payload, 0x18);
        let slot = batch.read_slot(tx.as_raw_fd(), &counters);
        VnetHdr {
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            gso_size: mss as u16,
            ..VnetHdr::default()
        }
        .write(&mut slot[..VNET_HDR_LEN]);
        slot[VNET_HDR_LEN..VNET_HDR_LEN + pkt.len()].copy_from_slice(&pkt);
        let n = VNET_HDR_LEN + pkt.len();
        assert!(batch.push_segments(n, mss, dst, tx.as_raw_fd(), &counters));
        assert!(batch.pending.len() > BATCH, "several sendmmsg windows");
        batch.flush(tx.as_raw_fd(), &counters);

        let segments = payload.div_ceil(mss);
        let mut buf = [0u8; 2048];
        for i in 0..small {
            let len = rx
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("small {i}: {e}"));
            assert_eq!(len, 62, "small packet {i} as it was");
        }
        let mut seq = 1000u32;
        for i in 0..segments {
            let len = rx
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("segment {i}: {e}"));
            let seg = &buf[..len];
            assert!(tcp_checksum_ok(seg), "segment {i}");
            assert_eq!(
                u32::from_be_bytes([seg[24], seg[25], seg[26], seg[27]]),
                seq
            );
            seq = seq.wrapping_add((len - 52) as u32);
        }
        let sent = counters
            .udp_sent_datagrams
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(sent, (small + segments) as u64);
    }
}
