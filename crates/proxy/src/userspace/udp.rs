//! A service port's UDP socket: each client address gets a session — a socket connected
//! to the endpoint the [`Balancer`] picked — that carries its datagrams there and the
//! replies back, until it has been idle for the session timeout (kube-proxy's
//! `--udp-timeout`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::balancer::Balancer;

/// The largest datagram carried.
const MAX_DATAGRAM: usize = 65_535;

/// kube-proxy's default `--udp-timeout` for the userspace mode.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_millis(250);

struct Session {
    upstream: Arc<UdpSocket>,
    /// Milliseconds since `epoch` of the last datagram either way.
    last_active: Arc<AtomicU64>,
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Session>>>;

/// Serves until the task is aborted (the service port went away); sessions end on their
/// own when idle.
pub async fn serve(
    socket: UdpSocket,
    name: Arc<str>,
    balancer: Arc<Mutex<Balancer>>,
    idle_timeout: Duration,
) {
    let socket = Arc::new(socket);
    let sessions: Sessions = Arc::default();
    let epoch = Instant::now();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(service = %name, error = %e, "receiving a proxied datagram failed");
                continue;
            }
        };
        let Some((upstream, last_active)) = session(
            &socket,
            &sessions,
            client,
            &name,
            &balancer,
            idle_timeout,
            epoch,
        )
        .await
        else {
            continue;
        };
        last_active.store(millis_since(epoch), Ordering::Relaxed);
        if let Err(e) = upstream.send(&buf[..n]).await {
            tracing::debug!(service = %name, %client, error = %e, "forwarding a datagram failed");
        }
    }
}

fn millis_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// The client's session, opened (with a new backend pick) when it has none.
async fn session(
    socket: &Arc<UdpSocket>,
    sessions: &Sessions,
    client: SocketAddr,
    name: &Arc<str>,
    balancer: &Mutex<Balancer>,
    idle_timeout: Duration,
    epoch: Instant,
) -> Option<(Arc<UdpSocket>, Arc<AtomicU64>)> {
    if let Some(s) = sessions.lock().ok()?.get(&client) {
        return Some((s.upstream.clone(), s.last_active.clone()));
    }
    let endpoint = balancer
        .lock()
        .ok()?
        .pick(client.ip(), &[], Instant::now())?;
    let upstream = UdpSocket::bind("0.0.0.0:0").await.ok()?;
    if let Err(e) = upstream.connect(endpoint).await {
        tracing::info!(service = %name, %endpoint, error = %e, "cannot reach the endpoint");
        return None;
    }
    let upstream = Arc::new(upstream);
    let last_active = Arc::new(AtomicU64::new(millis_since(epoch)));
    sessions.lock().ok()?.insert(
        client,
        Session {
            upstream: upstream.clone(),
            last_active: last_active.clone(),
        },
    );
    tokio::spawn(replies(
        socket.clone(),
        upstream.clone(),
        client,
        sessions.clone(),
        last_active.clone(),
        idle_timeout,
        epoch,
    ));
    Some((upstream, last_active))
}

/// Carries the endpoint's replies back to the client until the session is idle.
async fn replies(
    socket: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    sessions: Sessions,
    last_active: Arc<AtomicU64>,
    idle_timeout: Duration,
    epoch: Instant,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match tokio::time::timeout(idle_timeout, upstream.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                last_active.store(millis_since(epoch), Ordering::Relaxed);
                let _ = socket.send_to(&buf[..n], client).await;
            }
            // ECONNREFUSED from an ICMP error: the endpoint is gone; end the session so
            // the next datagram picks another.
            Ok(Err(_)) => break,
            Err(_) => {
                let idle = millis_since(epoch).saturating_sub(last_active.load(Ordering::Relaxed));
                if idle >= idle_timeout.as_millis() as u64 {
                    break;
                }
            }
        }
    }
    if let Ok(mut map) = sessions.lock() {
        map.remove(&client);
    }
}
