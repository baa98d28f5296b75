//! The forwarder: two threads per node. `tx` reads packets from the TUN device (TSO
//! super-packets included), looks each destination up once, cuts super-packets into
//! MTU-sized segments and sends them as UDP GSO trains with sendmmsg; `rx` takes UDP GRO
//! trains with recvmmsg, drops what does not come from a known peer or is not for this
//! node, merges consecutive segments back into super-packets and writes them to the TUN
//! device. Buffers are allocated once per thread; nothing is allocated per packet.
//!
//! TTL: the kernel decrements it when it routes a packet into the TUN device and again
//! when the receiving node routes it out of its own, as for any two routers; the
//! forwarder leaves it alone (as flannel does), so a tunnel hop costs one TTL per node.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::gso::{self, Coalescer, MAX_IP_PACKET};
use super::icmp::{self, RateLimit};
use super::send::SendBatch;
use super::table::{Lookup, SockAddr, Table};
use super::tun::{Tun, VIRTIO_NET_HDR_F_NEEDS_CSUM, VNET_HDR_LEN, VnetHdr};

const SOL_UDP: libc::c_int = 17;
const UDP_GRO: libc::c_int = 104;
/// Datagrams (or GSO trains) per sendmmsg / recvmmsg.
pub(super) const BATCH: usize = 32;
/// Packets read from the TUN device before the batch goes out.
const READS_PER_BATCH: usize = 32;
/// How often blocked threads look at the stop flag.
const POLL_MS: libc::c_int = 100;
/// Socket buffers: room for a few hundred 64 KB trains.
const SOCKET_BUFFER: libc::c_int = 8 << 20;

/// Traffic and drop counters, for tests and logs.
#[derive(Debug, Default)]
pub struct Counters {
    pub(super) tun_read_packets: AtomicU64,
    pub(super) tun_read_bytes: AtomicU64,
    pub(super) udp_sent_datagrams: AtomicU64,
    pub(super) udp_sent_bytes: AtomicU64,
    pub(super) udp_received_datagrams: AtomicU64,
    pub(super) udp_received_bytes: AtomicU64,
    pub(super) tun_written_packets: AtomicU64,
    pub(super) tun_written_bytes: AtomicU64,
    pub(super) icmp_unreachable_sent: AtomicU64,
    pub(super) drop_no_route: AtomicU64,
    pub(super) drop_unknown_source: AtomicU64,
    pub(super) drop_not_local: AtomicU64,
    pub(super) drop_malformed: AtomicU64,
    pub(super) drop_not_ipv4: AtomicU64,
    pub(super) drop_send_error: AtomicU64,
    pub(super) drop_tun_write_error: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Packets (super-packets count once) and bytes read from the TUN device.
    pub tun_read_packets: u64,
    pub tun_read_bytes: u64,
    /// UDP datagrams (each segment of a GSO train counts) and payload bytes sent to peers.
    pub udp_sent_datagrams: u64,
    pub udp_sent_bytes: u64,
    /// UDP datagrams and payload bytes received from peers (unknown senders included).
    pub udp_received_datagrams: u64,
    pub udp_received_bytes: u64,
    /// Packets (merged ones count once) and bytes written to the TUN device.
    pub tun_written_packets: u64,
    pub tun_written_bytes: u64,
    pub icmp_unreachable_sent: u64,
    /// Packets to a destination no node owns (answered with ICMP, rate-limited).
    pub drop_no_route: u64,
    /// Datagrams from an address that is not a peer.
    pub drop_unknown_source: u64,
    /// Packets from a peer for an address outside this node's subnet.
    pub drop_not_local: u64,
    /// Packets the forwarder cannot parse.
    pub drop_malformed: u64,
    /// Packets that are not IPv4 (the cluster range is IPv4).
    pub drop_not_ipv4: u64,
    pub drop_send_error: u64,
    pub drop_tun_write_error: u64,
}

impl Counters {
    pub fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            tun_read_packets: get(&self.tun_read_packets),
            tun_read_bytes: get(&self.tun_read_bytes),
            udp_sent_datagrams: get(&self.udp_sent_datagrams),
            udp_sent_bytes: get(&self.udp_sent_bytes),
            udp_received_datagrams: get(&self.udp_received_datagrams),
            udp_received_bytes: get(&self.udp_received_bytes),
            tun_written_packets: get(&self.tun_written_packets),
            tun_written_bytes: get(&self.tun_written_bytes),
            icmp_unreachable_sent: get(&self.icmp_unreachable_sent),
            drop_no_route: get(&self.drop_no_route),
            drop_unknown_source: get(&self.drop_unknown_source),
            drop_not_local: get(&self.drop_not_local),
            drop_malformed: get(&self.drop_malformed),
            drop_not_ipv4: get(&self.drop_not_ipv4),
            drop_send_error: get(&self.drop_send_error),
            drop_tun_write_error: get(&self.drop_tun_write_error),
        }
    }
}

pub(super) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// What the backend and its threads share: the table (swapped whole on sync) and the
/// counters (kept across device re-creations).
#[derive(Debug)]
pub struct Shared {
    pub table: RwLock<Arc<Table>>,
    pub counters: Counters,
    /// Source of the ICMP errors (host byte order): the TUN device's address.
    pub router: u32,
}

impl Shared {
    pub fn current_table(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(t) => Arc::clone(&t),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

/// The running threads over one TUN fd and the UDP socket.
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    /// Set by a thread that found the TUN device gone (deleted by hand).
    lost: Arc<AtomicBool>,
    threads: Vec<(JoinHandle<()>, mpsc::Receiver<()>)>,
    tun: Arc<Tun>,
}

impl Forwarder {
    pub fn start(tun: Tun, socket: Arc<OwnedFd>, shared: Arc<Shared>) -> io::Result<Forwarder> {
        let tun = Arc::new(tun);
        let stop = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicBool::new(false));
        let mut forwarder = Forwarder {
            stop: Arc::clone(&stop),
            lost: Arc::clone(&lost),
            threads: Vec::new(),
            tun: Arc::clone(&tun),
        };
        let ctx = Ctx {
            tun,
            socket,
            shared,
            stop,
            lost,
        };
        let tx = ctx.clone();
        forwarder.spawn("podnet-udp-tx", move || TxLoop::new(tx).run())?;
        forwarder.spawn("podnet-udp-rx", move || RxLoop::new(ctx).run())?;
        Ok(forwarder)
    }

    fn spawn(&mut self, name: &str, body: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let (done_tx, done_rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                body();
                let _ = done_tx.send(());
            })
            .map_err(|e| io::Error::new(e.kind(), format!("start thread {name}: {e}")))?;
        self.threads.push((handle, done_rx));
        Ok(())
    }

    /// Whether both threads run on a TUN fd that still has its device.
    pub fn healthy(&self) -> bool {
        !self.lost.load(Ordering::Relaxed)
            && self.threads.iter().all(|(h, _)| !h.is_finished())
            && self.tun.attached()
    }

    /// Stops the threads, waiting at most `timeout` for each (they look at the flag every
    /// 100 ms); a thread that does not finish in time is left detached and said so.
    pub fn stop(&mut self, timeout: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        for (handle, done) in self.threads.drain(..) {
            let name = handle.thread().name().unwrap_or("forwarder").to_string();
            match done.recv_timeout(timeout) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = handle.join();
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    tracing::warn!(thread = %name, "udp forwarder thread did not stop in time; left running detached");
                }
            }
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

#[derive(Clone)]
struct Ctx {
    tun: Arc<Tun>,
    socket: Arc<OwnedFd>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
}

enum Ready {
    Yes,
    Timeout,
    /// The fd reports an error (a TUN fd whose device was deleted).
    Broken,
}

fn poll_in(fd: RawFd) -> Ready {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
    if n <= 0 {
        Ready::Timeout
    } else if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
        Ready::Broken
    } else {
        Ready::Yes
    }
}

pub(super) fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Waits (at most one poll period) for room in the socket's send buffer.
pub(super) fn wait_writable(fd: RawFd) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
}

/// TUN → UDP.
struct TxLoop {
    ctx: Ctx,
    icmp_buf: Vec<u8>,
    batch: SendBatch,
    icmp_limit: RateLimit,
}

impl TxLoop {
    fn new(ctx: Ctx) -> TxLoop {
        TxLoop {
            ctx,
            icmp_buf: vec![0; VNET_HDR_LEN + 1024],
            batch: SendBatch::new(),
            // The kernel's default ICMP rate: bursts of 50, about 1000 a second.
            icmp_limit: RateLimit::new(50, Duration::from_millis(50)),
        }
    }

    fn run(mut self) {
        let tun_fd = self.ctx.tun.as_raw_fd();
        let socket = self.ctx.socket.as_raw_fd();
        while !self.ctx.stop.load(Ordering::Relaxed) {
            match poll_in(tun_fd) {
                Ready::Timeout => continue,
                Ready::Broken => return self.lose_device(),
                Ready::Yes => {}
            }
            let table = self.ctx.shared.current_table();
            for _ in 0..READS_PER_BATCH {
                let slot = self.batch.read_slot(socket, &self.ctx.shared.counters);
                // SAFETY: reads into the batch's slot, of the length given.
                let n = unsafe { libc::read(tun_fd, slot.as_mut_ptr().cast(), slot.len()) };
                if n < 0 {
                    match errno() {
                        libc::EINTR => continue,
                        libc::EBADFD | libc::EBADF => {
                            self.batch.flush(socket, &self.ctx.shared.counters);
                            return self.lose_device();
                        }
                        _ => break,
                    }
                }
                self.encapsulate(n as usize, &table);
            }
            self.batch.flush(socket, &self.ctx.shared.counters);
        }
    }

    fn lose_device(&self) {
        tracing::warn!(device = %self.ctx.tun.name(), "TUN device gone; the udp forwarder waits for ensure_device to recreate it");
        self.ctx.lost.store(true, Ordering::Relaxed);
    }

    /// Queues the packet of `n` bytes (vnet header included) just read into the slot.
    fn encapsulate(&mut self, n: usize, table: &Table) {
        let counters = &self.ctx.shared.counters;
        let socket = self.ctx.socket.as_raw_fd();
        if n < VNET_HDR_LEN + 20 {
            add(&counters.drop_malformed, 1);
            return;
        }
        let buf = self.batch.slot(n);
        let hdr = VnetHdr::parse(&buf[..VNET_HDR_LEN]);
        let pkt = &mut buf[VNET_HDR_LEN..];
        add(&counters.tun_read_packets, 1);
        add(&counters.tun_read_bytes, pkt.len() as u64);
        if pkt[0] >> 4 != 4 {
            add(&counters.drop_not_ipv4, 1);
            return;
        }
        let dst = u32::from_be_bytes([pkt[16], pkt[17], pkt[18], pkt[19]]);
        let peer = match table.lookup(dst) {
            Lookup::Peer(peer) => peer.sockaddr,
            Lookup::Unowned => {
                add(&counters.drop_no_route, 1);
                self.unreachable(n);
                return;
            }
            Lookup::Local | Lookup::Outside => {
                add(&counters.drop_no_route, 1);
                return;
            }
        };
        let queued = match gso::gso_kind(&hdr) {
            gso::GSO_TCPV4 if hdr.gso_size > 0 => {
                let mss = usize::from(hdr.gso_size);
                self.batch.push_segments(n, mss, peer, socket, counters)
            }
            gso::GSO_NONE => {
                let complete = hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0
                    || gso::finish_partial_checksum(
                        pkt,
                        usize::from(hdr.csum_start),
                        usize::from(hdr.csum_offset),
                    );
                if complete {
                    self.batch.push_single(n, peer, socket, counters);
                }
                complete
            }
            _ => false,
        };
        if !queued {
            add(&counters.drop_malformed, 1);
        }
    }

    /// Answers the packet in the slot with ICMP net unreachable, rate-limited.
    fn unreachable(&mut self, n: usize) {
        if !self.icmp_limit.allow() {
            return;
        }
        let original = &self.batch.slot(n)[VNET_HDR_LEN..];
        let Some(len) = icmp::net_unreachable(original, self.ctx.shared.router, &mut self.icmp_buf)
        else {
            return;
        };
        // SAFETY: writes `len` bytes of our own buffer.
        let written =
            unsafe { libc::write(self.ctx.tun.as_raw_fd(), self.icmp_buf.as_ptr().cast(), len) };
        if written > 0 {
            add(&self.ctx.shared.counters.icmp_unreachable_sent, 1);
        }
    }
}

/// UDP → TUN.
struct RxLoop {
    ctx: Ctx,
    bufs: Vec<Vec<u8>>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    names: Vec<libc::sockaddr_in>,
    ctrl: Vec<[u64; 8]>,
    coalescer: Coalescer,
}

/// A receive buffer: the largest GRO train (a 64 KB IP packet) and room to spare.
const RECV_BUFFER: usize = MAX_IP_PACKET + 1024;

impl RxLoop {
    fn new(ctx: Ctx) -> RxLoop {
        // SAFETY: plain data for which all-zero is valid.
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let zero_addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        RxLoop {
            ctx,
            bufs: (0..BATCH).map(|_| vec![0u8; RECV_BUFFER]).collect(),
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                BATCH
            ],
            hdrs: vec![zero_hdr; BATCH],
            names: vec![zero_addr; BATCH],
            ctrl: vec![[0; 8]; BATCH],
            coalescer: Coalescer::new(),
        }
    }

    fn run(mut self) {
        let socket = self.ctx.socket.as_raw_fd();
        while !self.ctx.stop.load(Ordering::Relaxed) && !self.ctx.lost.load(Ordering::Relaxed) {
            if let Ready::Timeout = poll_in(socket) {
                continue;
            }
            self.prepare();
            // SAFETY: the headers point at this loop's own buffers, sized as declared.
            let n = unsafe {
                libc::recvmmsg(
                    socket,
                    self.hdrs.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n <= 0 {
                continue;
            }
            let table = self.ctx.shared.current_table();
            for i in 0..n as usize {
                self.deliver(i, &table);
            }
            let ctx = &self.ctx;
            self.coalescer.flush(&mut |p| write_tun(ctx, p));
        }
    }

    fn prepare(&mut self) {
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: RECV_BUFFER,
            };
            let hdr = &mut self.hdrs[i].msg_hdr;
            hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = self.ctrl[i].as_mut_ptr().cast();
            hdr.msg_controllen = std::mem::size_of::<[u64; 8]>();
            hdr.msg_flags = 0;
        }
    }

    /// Unwraps received message `i` (one datagram or a GRO train of them).
    fn deliver(&mut self, i: usize, table: &Table) {
        let counters = &self.ctx.shared.counters;
        let len = self.hdrs[i].msg_len as usize;
        let hdr = &self.hdrs[i].msg_hdr;
        let segment = gro_segment(hdr).unwrap_or(len).max(1);
        let datagrams = len.div_ceil(segment) as u64;
        add(&counters.udp_received_datagrams, datagrams);
        add(&counters.udp_received_bytes, len as u64);
        if hdr.msg_flags & libc::MSG_TRUNC != 0 {
            add(&counters.drop_malformed, datagrams);
            return;
        }
        let source = u32::from_be(self.names[i].sin_addr.s_addr);
        if !table.is_peer_source(source) {
            add(&counters.drop_unknown_source, datagrams);
            return;
        }
        let ctx = &self.ctx;
        for pkt in self.bufs[i][..len].chunks(segment) {
            if pkt.len() < 20 || pkt[0] >> 4 != 4 {
                add(&ctx.shared.counters.drop_malformed, 1);
                continue;
            }
            let dst = u32::from_be_bytes([pkt[16], pkt[17], pkt[18], pkt[19]]);
            if !table.is_local(dst) {
                add(&ctx.shared.counters.drop_not_local, 1);
                continue;
            }
            // SAFETY: the receive buffers stay untouched until the next recvmmsg, and the
            // coalescer is flushed at the end of every batch, before it.
            unsafe { self.coalescer.push(pkt, &mut |p| write_tun(ctx, p)) };
        }
    }
}

/// The UDP_GRO segment size the kernel attached to a received train, if any.
fn gro_segment(hdr: &libc::msghdr) -> Option<usize> {
    // SAFETY: walks the control buffer the kernel filled, within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == SOL_UDP && (*cmsg).cmsg_type == UDP_GRO {
                let mut value = [0u8; 4];
                std::ptr::copy_nonoverlapping(libc::CMSG_DATA(cmsg), value.as_mut_ptr(), 4);
                return usize::try_from(i32::from_ne_bytes(value)).ok();
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}

/// Writes one packet, given as iovecs (vnet header first), to the TUN device.
fn write_tun(ctx: &Ctx, iovs: &[libc::iovec]) {
    let counters = &ctx.shared.counters;
    // Bounded: EINTR is retried at most a few times.
    for _ in 0..4 {
        // SAFETY: the iovecs point at live buffers (see Coalescer::push).
        let n = unsafe { libc::writev(ctx.tun.as_raw_fd(), iovs.as_ptr(), iovs.len() as i32) };
        if n >= 0 {
            add(&counters.tun_written_packets, 1);
            add(
                &counters.tun_written_bytes,
                (n as u64).saturating_sub(VNET_HDR_LEN as u64),
            );
            return;
        }
        match errno() {
            libc::EINTR => continue,
            libc::EBADFD | libc::EBADF => {
                ctx.lost.store(true, Ordering::Relaxed);
                break;
            }
            _ => break,
        }
    }
    add(&counters.drop_tun_write_error, 1);
}

/// The UDP socket the node sends from and receives on: bound to its public address and
/// the backend's port in the calling thread's namespace, with UDP GRO on and large
/// buffers.
pub fn open_socket(addr: std::net::SocketAddrV4) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket call, checked.
    let raw = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    for (forced, plain) in [
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    ] {
        // Without CAP_NET_ADMIN the forced size fails; the capped one still helps.
        if setsockopt(&fd, libc::SOL_SOCKET, forced, SOCKET_BUFFER).is_err() {
            let _ = setsockopt(&fd, libc::SOL_SOCKET, plain, SOCKET_BUFFER);
        }
    }
    setsockopt(&fd, SOL_UDP, UDP_GRO, 1)
        .map_err(|e| io::Error::new(e.kind(), format!("enable UDP_GRO: {e}")))?;
    let sa = SockAddr::new(addr).0;
    // SAFETY: binds to a valid sockaddr_in of the size given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!(
                "bind UDP {addr}: {err} (is the address on an interface of this node, and the port free?)"
            ),
        ));
    }
    Ok(fd)
}

fn setsockopt(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes one c_int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
