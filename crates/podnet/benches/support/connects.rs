//! TCP connect latency from inside a namespace, as the data path benches measure it (the
//! proxy's, the policy engine's and podnet's own include this file with `#[path]`).

use std::net::{SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use podnet_kernel::NetNs;

/// How long each of `n` TCP connects from `client` to `addr` took, after 20 untimed ones
/// (ARP, route caches). A connect that fails stops the bench: the path is broken.
pub fn connect_latencies(client: &NetNs, addr: SocketAddrV4, n: usize) -> Vec<Duration> {
    client
        .run(|| {
            for _ in 0..20 {
                let _ = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2));
            }
            (0..n)
                .map(|_| {
                    let t = Instant::now();
                    let s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2))
                        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
                    let took = t.elapsed();
                    drop(s);
                    took
                })
                .collect()
        })
        .expect("enter the client's namespace")
}
