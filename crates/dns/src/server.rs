//! The sockets. UDP is served by plain threads, one `SO_REUSEPORT` socket each, in a
//! blocking receive loop (no task or allocation per query: the reply is written into the
//! thread's buffer from its answer cache), so the common case costs two system calls.
//! Forwarded queries leave the loop for the tokio runtime and are answered from there on
//! the same socket. TCP (RFC 7766: length-prefixed, several queries per connection, an
//! idle timeout) and the health endpoint (`/health`, and `/ready` once the watches have
//! listed, as CoreDNS's `health` and `ready` plugins) run on the runtime.
//!
//! Sockets belong to the network namespace of the thread that binds them: bind in the
//! namespace the server is for, and run the runtime there too (the forwarder's sockets
//! are made on its threads).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::handler::{self, Action, AnswerCache, Shared, Transport};
use crate::wire;

/// A TCP connection idle this long is closed (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// TCP connections at most; more wait in the backlog.
const TCP_MAX: usize = 1024;
/// Forwarded queries in flight at most; past it, SERVFAIL.
const FORWARDS_MAX: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listen on {addr} ({proto}): {source}")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("start the UDP worker threads: {0}")]
    Thread(#[source] std::io::Error),
}

/// Where to listen.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// DNS over UDP and TCP on each.
    pub listen: Vec<SocketAddr>,
    /// UDP threads per address (default: one per CPU).
    pub udp_workers: usize,
    /// `/health` and `/ready` over HTTP.
    pub health: Option<SocketAddr>,
}

/// Bound sockets, ready to serve.
pub struct Bound {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
    health: Option<std::net::TcpListener>,
    addrs: Vec<SocketAddr>,
}

fn bind_err(addr: SocketAddr, proto: &'static str) -> impl Fn(std::io::Error) -> ServerError {
    move |source| ServerError::Bind {
        addr,
        proto,
        source,
    }
}

/// Binds every socket (in the calling thread's network namespace).
pub fn bind(cfg: &ServerConfig) -> Result<Bound, ServerError> {
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    let mut addrs = Vec::new();
    for addr in &cfg.listen {
        let mut addr = *addr;
        // The first socket fixes an ephemeral port for the others.
        for i in 0..cfg.udp_workers.max(1) {
            let s = udp_socket(addr).map_err(bind_err(addr, "udp"))?;
            if i == 0 {
                addr = s.local_addr().map_err(bind_err(addr, "udp"))?;
            }
            udp.push(s);
        }
        let t = tcp_listener(addr).map_err(bind_err(addr, "tcp"))?;
        tcp.push(t);
        addrs.push(addr);
    }
    let health = match cfg.health {
        Some(a) => Some(tcp_listener(a).map_err(bind_err(a, "tcp"))?),
        None => None,
    };
    Ok(Bound {
        udp,
        tcp,
        health,
        addrs,
    })
}

fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Room for bursts while a worker is descheduled on a busy machine.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

impl Bound {
    /// The addresses DNS is served on (ephemeral ports resolved).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `stop` turns true (or its sender is dropped). Must run on a tokio
    /// runtime.
    pub async fn serve(
        self,
        shared: Arc<Shared>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), ServerError> {
        let stopping = Arc::new(AtomicBool::new(false));
        let inflight = Arc::new(AtomicUsize::new(0));
        let rt = tokio::runtime::Handle::current();
        let mut threads = Vec::new();
        for (i, sock) in self.udp.into_iter().enumerate() {
            let sock = Arc::new(sock);
            let (shared, stopping, inflight, rt) = (
                shared.clone(),
                stopping.clone(),
                inflight.clone(),
                rt.clone(),
            );
            let t = std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || udp_worker(&sock, &shared, &rt, &stopping, &inflight))
                .map_err(ServerError::Thread)?;
            threads.push(t);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for l in self.tcp {
            let l = tokio::net::TcpListener::from_std(l).map_err(|source| ServerError::Bind {
                addr: self
                    .addrs
                    .first()
                    .copied()
                    .unwrap_or(([0, 0, 0, 0], 0).into()),
                proto: "tcp",
                source,
            })?;
            tasks.spawn(tcp_accept(l, shared.clone()));
        }
        if let Some(h) = self.health
            && let Ok(l) = tokio::net::TcpListener::from_std(h)
        {
            tasks.spawn(health_accept(l, shared.clone()));
        }
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        stopping.store(true, Ordering::Release);
        tasks.abort_all();
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        Ok(())
    }
}

fn udp_worker(
    sock: &Arc<std::net::UdpSocket>,
    shared: &Arc<Shared>,
    rt: &tokio::runtime::Handle,
    stopping: &AtomicBool,
    inflight: &Arc<AtomicUsize>,
) {
    // The timeout only lets the loop notice a stop.
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; wire::MAX_MESSAGE];
    let mut out = Vec::with_capacity(wire::CLASSIC_UDP * 3);
    let mut cache = AnswerCache::default();
    while !stopping.load(Ordering::Acquire) {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                // ICMP errors of earlier sends surface here; nothing to do about them.
                tracing::trace!(error = %e, "udp receive");
                continue;
            }
        };
        match handler::handle(shared, &buf[..n], Transport::Udp, &mut cache, &mut out) {
            Action::Reply => {
                let _ = sock.send_to(&out, peer);
            }
            Action::Drop => {}
            Action::Forward(job) => {
                if inflight.fetch_add(1, Ordering::AcqRel) >= FORWARDS_MAX {
                    inflight.fetch_sub(1, Ordering::AcqRel);
                    let opts = wire::ReplyOptions {
                        recursion_available: true,
                        server_payload: shared.replies.max_udp,
                        limit: job.limit,
                    };
                    wire::error_reply(
                        &mut out,
                        job.id,
                        job.flags,
                        Some(&job.question),
                        job.edns,
                        ResponseCode::ServFail,
                        opts,
                    );
                    let _ = sock.send_to(&out, peer);
                    continue;
                }
                let (sock, shared, inflight) = (sock.clone(), shared.clone(), inflight.clone());
                rt.spawn(async move {
                    let reply = handler::forward(&shared, job).await;
                    let _ = sock.send_to(&reply, peer);
                    inflight.fetch_sub(1, Ordering::AcqRel);
                });
            }
        }
    }
}

async fn tcp_accept(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(TCP_MAX));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "tcp accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            tcp_conn(stream, &shared).await;
            drop(permit);
        });
    }
}

/// Serves one TCP connection: queries in order, until it closes or idles.
async fn tcp_conn(mut stream: tokio::net::TcpStream, shared: &Shared) {
    let mut cache = AnswerCache::default();
    let mut out = Vec::new();
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(n)) => n as usize,
            _ => return,
        };
        let mut msg = vec![0u8; len];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut msg)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let reply = match handler::handle(shared, &msg, Transport::Tcp, &mut cache, &mut out) {
            Action::Reply => std::mem::take(&mut out),
            Action::Drop => return,
            Action::Forward(job) => handler::forward(shared, job).await,
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&n.to_be_bytes());
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

async fn health_accept(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let synced = shared.synced();
        tokio::spawn(async move {
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(2), async {
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let line = String::from_utf8_lossy(&req);
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = match path {
                "/health" => ("200 OK", "OK"),
                "/ready" if synced => ("200 OK", "OK"),
                "/ready" => ("503 Service Unavailable", "not synced with the API yet"),
                _ => ("404 Not Found", "not found"),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
        });
    }
}
