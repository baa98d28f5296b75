//! The `healthCheckNodePort` servers of `externalTrafficPolicy: Local` LoadBalancer
//! services, as kube-proxy serves them: `GET` anything on the port answers `200` with the
//! number of the service's endpoints on this node, or `503` when there are none, so a load
//! balancer sends traffic only to nodes that have a local endpoint.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use podnet_kernel::NetNs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What one health check port reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthStatus {
    pub namespace: String,
    pub name: String,
    pub local_endpoints: usize,
}

type Shared = Arc<Mutex<HashMap<u16, HealthStatus>>>;

/// The running servers, one per port and address.
pub struct HealthServers {
    netns: Option<NetNs>,
    addresses: Vec<IpAddr>,
    status: Shared,
    servers: HashMap<u16, Vec<JoinHandle<()>>>,
}

impl HealthServers {
    /// Servers bound on `addresses` (the node's IPs, or the configured bind address), in
    /// `netns`.
    pub fn new(netns: Option<NetNs>, addresses: Vec<IpAddr>) -> HealthServers {
        HealthServers {
            netns,
            addresses,
            status: Arc::default(),
            servers: HashMap::new(),
        }
    }

    /// Makes the servers match `desired` (port → status): new ports are bound, gone ones
    /// stopped, the rest answer with the new counts at once.
    pub fn sync(&mut self, desired: &BTreeMap<u16, HealthStatus>) {
        {
            let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
            status.clear();
            status.extend(desired.iter().map(|(p, s)| (*p, s.clone())));
        }
        self.servers.retain(|port, tasks| {
            let keep = desired.contains_key(port);
            if !keep {
                tasks.iter().for_each(|t| t.abort());
            }
            keep
        });
        for port in desired.keys() {
            if self.servers.contains_key(port) {
                continue;
            }
            let mut tasks = Vec::new();
            for ip in &self.addresses {
                let addr = SocketAddr::new(*ip, *port);
                match bind(self.netns.as_ref(), addr) {
                    Ok(listener) => {
                        tasks.push(tokio::spawn(serve(listener, *port, self.status.clone())))
                    }
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "cannot serve a healthCheckNodePort (is the port taken?)")
                    }
                }
            }
            self.servers.insert(*port, tasks);
        }
    }

    pub fn stop(&mut self) {
        for (_, tasks) in self.servers.drain() {
            tasks.iter().for_each(|t| t.abort());
        }
    }
}

impl Drop for HealthServers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds on a thread inside the namespace (a socket belongs to the namespace it was
/// created in).
fn bind(netns: Option<&NetNs>, addr: SocketAddr) -> std::io::Result<TcpListener> {
    let make = || -> std::io::Result<std::net::TcpListener> {
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(l)
    };
    let std_listener = match netns {
        Some(ns) => ns.run(make).map_err(std::io::Error::other)??,
        None => make()?,
    };
    TcpListener::from_std(std_listener)
}

async fn serve(listener: TcpListener, port: u16, status: Shared) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let status = status.clone();
        tokio::spawn(async move {
            // Read the request head (bounded in size and time); the answer does not depend
            // on it.
            let mut buf = [0u8; 4096];
            let mut seen = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while seen < buf.len() {
                    match conn.read(&mut buf[seen..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen += n,
                    }
                    if buf[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let current = status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&port)
                .cloned();
            let _ = conn.write_all(response(current.as_ref()).as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// The HTTP answer kube-proxy gives.
pub fn response(status: Option<&HealthStatus>) -> String {
    let (code, body) = match status {
        Some(s) => (
            if s.local_endpoints > 0 {
                "200 OK"
            } else {
                "503 Service Unavailable"
            },
            serde_json::json!({
                "service": {"namespace": s.namespace, "name": s.name},
                "localEndpoints": s.local_endpoints,
                "serviceProxyHealthy": true,
            })
            .to_string(),
        ),
        None => ("503 Service Unavailable", "{}".to_string()),
    };
    format!(
        "HTTP/1.1 {code}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_like_kube_proxy() {
        let s = HealthStatus {
            namespace: "default".into(),
            name: "web".into(),
            local_endpoints: 2,
        };
        let r = response(Some(&s));
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.ends_with(
            r#"{"localEndpoints":2,"service":{"name":"web","namespace":"default"},"serviceProxyHealthy":true}"#
        ));
        let none = HealthStatus {
            local_endpoints: 0,
            ..s
        };
        assert!(response(Some(&none)).starts_with("HTTP/1.1 503 "));
    }
}
