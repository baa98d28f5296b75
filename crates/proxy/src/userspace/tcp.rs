//! A service port's TCP listener: each accepted connection is connected to a backend the
//! [`Balancer`] picks — another one when a connect fails, with growing timeouts, as
//! kube-proxy's userspace proxier retried — and then spliced both ways.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

use super::balancer::Balancer;
use super::splice;

/// Connect timeouts of the successive attempts (each to a different endpoint).
pub const CONNECT_ATTEMPTS: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// Accepts until the task is aborted (the service port went away).
pub async fn serve(listener: TcpListener, name: Arc<str>, balancer: Arc<Mutex<Balancer>>) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                tokio::spawn(handle(client, peer, name.clone(), balancer.clone()));
            }
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!(service = %name, error = %e, "accepting a proxied connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(
    client: TcpStream,
    peer: SocketAddr,
    name: Arc<str>,
    balancer: Arc<Mutex<Balancer>>,
) {
    let Some(backend) = connect_backend(peer, &name, &balancer).await else {
        tracing::warn!(service = %name, client = %peer, "no endpoint accepted the connection; closing it");
        reset(&client);
        return;
    };
    let pair = (|| -> std::io::Result<()> {
        let client = client.into_std()?;
        let backend = backend.into_std()?;
        for s in [&client, &backend] {
            s.set_nonblocking(false)?;
            s.set_nodelay(true)?;
        }
        splice::proxy_pair(client, backend)
    })();
    if let Err(e) = pair {
        tracing::warn!(service = %name, client = %peer, error = %e, "proxying a connection failed");
    }
}

/// Closes with a TCP reset, so the client sees the connection refused rather than an
/// empty answer (`SO_LINGER` with a zero timeout never blocks the close).
fn reset(stream: &TcpStream) {
    use std::os::fd::AsRawFd as _;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a `linger` of the size passed.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// A connection to an endpoint, trying another one after each failure.
async fn connect_backend(
    peer: SocketAddr,
    name: &str,
    balancer: &Mutex<Balancer>,
) -> Option<TcpStream> {
    let mut failed: Vec<SocketAddrV4> = Vec::new();
    for timeout in CONNECT_ATTEMPTS {
        let endpoint = balancer
            .lock()
            .ok()?
            .pick(peer.ip(), &failed, Instant::now())?;
        match tokio::time::timeout(timeout, TcpStream::connect(endpoint)).await {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(e)) => {
                tracing::info!(service = %name, %endpoint, error = %e, "endpoint refused; trying another");
            }
            Err(_) => {
                tracing::info!(service = %name, %endpoint, ?timeout, "endpoint did not answer; trying another");
            }
        }
        failed.push(endpoint);
    }
    None
}
