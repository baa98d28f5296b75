//! A hand-built lab for the udp backend's tests and benchmark: an underlay namespace with
//! a switch (bridge), N node namespaces on it (172.31.50.1N/24, MTU 1500), each with a
//! `cni0` bridge holding its subnet's gateway (10.244.N.1/24) and one pod namespace on it
//! (10.244.N.2/24, default route via .1, pod MTU). Every namespace is deleted on drop,
//! also when a test panics.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use podnet_kernel::netns::OwnedNetNs;
use podnet_kernel::{Netlink, Route, sysctl};
use podnet_overlay::{BackendConfig, BackendKind, DEFAULT_UDP_PORT, LocalNode, Peer, VxlanOptions};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub const CLUSTER: &str = "10.244.0.0/16";
pub const UNDERLAY_MTU: u32 = 1500;
/// 1500 − 20 (outer IPv4) − 8 (UDP).
pub const POD_MTU: u32 = 1472;

pub fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A test namespace `pn-u-PID-N-TAG`. `ns` is the guard that deletes it on drop (also when a
/// test panics); `name` is a copy of its name, kept as a field because the tests sharing
/// this module read it.
pub struct TestNs {
    pub name: String,
    pub ns: OwnedNetNs,
}

impl TestNs {
    pub fn new(tag: &str) -> TestNs {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("pn-u-{}-{n}-{tag}", std::process::id());
        let ns =
            OwnedNetNs::create(&name).unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        TestNs { name, ns }
    }

    pub fn netlink(&self) -> Netlink {
        Netlink::open_in(&self.ns).unwrap_or_else(|e| panic!("netlink in {}: {e}", self.name))
    }

    /// Runs `f` on a thread inside this namespace.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.ns
            .run(f)
            .unwrap_or_else(|e| panic!("enter {}: {e}", self.name))
    }
}

/// One node with its pod.
pub struct Node {
    pub name: String,
    pub ns: TestNs,
    pub pod: TestNs,
    pub public_ip: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub pod_ip: Ipv4Addr,
}

impl Node {
    pub fn local(&self) -> LocalNode {
        LocalNode {
            name: self.name.clone(),
            public_ip: self.public_ip,
            subnet: self.subnet,
            cluster_cidr: net(CLUSTER),
        }
    }

    /// The udp backend's configuration for this node.
    pub fn udp_config(&self) -> BackendConfig {
        BackendConfig {
            kind: BackendKind::Udp,
            local: self.local(),
            underlay_mtu: UNDERLAY_MTU,
            mtu_override: None,
            vxlan: VxlanOptions::default(),
            udp_port: DEFAULT_UDP_PORT,
            netns: Some(self.ns.ns.try_clone().expect("namespace handle")),
        }
    }

    /// This node as its peers see it.
    pub fn as_peer(&self) -> Peer {
        Peer {
            node: self.name.clone(),
            subnet: self.subnet,
            public_ip: self.public_ip,
            backend_type: Some("udp".into()),
            backend_data: None,
        }
    }
}

/// The underlay and its nodes. Nodes drop before the underlay.
pub struct Lab {
    pub nodes: Vec<Node>,
    pub underlay: TestNs,
}

impl Lab {
    pub fn new(tag: &str, count: u8, pod_mtu: u32) -> Lab {
        Lab::with_underlay_mtu(tag, count, pod_mtu, UNDERLAY_MTU)
    }

    /// A lab whose underlay links have MTU `underlay_mtu` (the benchmark's vxlan path
    /// needs 50 bytes more than the udp one for the same pod MTU).
    pub fn with_underlay_mtu(tag: &str, count: u8, pod_mtu: u32, underlay_mtu: u32) -> Lab {
        let underlay = TestNs::new(&format!("{tag}-ul"));
        let mut u = underlay.netlink();
        let sw = u.ensure_bridge("sw", None).expect("underlay switch");
        u.set_up(sw.index).expect("switch up");
        // An address on the switch: a stranger on the underlay for the tests.
        u.ensure_address(sw.index, IpNet::V4(net("172.31.50.99/24")))
            .expect("switch address");
        up(&mut u, "lo");
        let nodes = (1..=count)
            .map(|i| node(tag, i, &underlay, sw.index, pod_mtu, underlay_mtu))
            .collect();
        Lab { nodes, underlay }
    }

    /// Node `i`'s peers: all the other nodes.
    pub fn peers_of(&self, i: usize) -> Vec<Peer> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| n.as_peer())
            .collect()
    }
}

fn node(tag: &str, i: u8, underlay: &TestNs, switch: u32, pod_mtu: u32, underlay_mtu: u32) -> Node {
    let ns = TestNs::new(&format!("{tag}-n{i}"));
    let pod = TestNs::new(&format!("{tag}-p{i}"));
    let public_ip = Ipv4Addr::new(172, 31, 50, 10 + i);
    let subnet = net(&format!("10.244.{i}.0/24"));
    let gateway = Ipv4Addr::new(10, 244, i, 1);
    let pod_ip = Ipv4Addr::new(10, 244, i, 2);

    let mut n = ns.netlink();
    n.create_veth(
        "eth0",
        &format!("n{i}"),
        Some(&underlay.ns),
        Some(underlay_mtu),
    )
    .expect("underlay veth");
    let mut u = underlay.netlink();
    let port = u.require_link(&format!("n{i}")).expect("switch port");
    u.set_master(port.index, switch).expect("attach to switch");
    u.set_up(port.index).expect("switch port up");

    up(&mut n, "lo");
    let eth0 = up(&mut n, "eth0");
    n.ensure_address(eth0, IpNet::V4(Ipv4Net::new(public_ip, 24).expect("net")))
        .expect("public ip");
    sysctl::write(&ns.ns, "net.ipv4.ip_forward", "1").expect("ip_forward");
    let cni0 = n.ensure_bridge("cni0", Some(pod_mtu)).expect("cni0");
    n.ensure_address(
        cni0.index,
        IpNet::V4(Ipv4Net::new(gateway, 24).expect("net")),
    )
    .expect("gateway address");
    n.set_up(cni0.index).expect("cni0 up");

    n.create_veth("vp", "eth0", Some(&pod.ns), Some(pod_mtu))
        .expect("pod veth");
    let vp = n.require_link("vp").expect("pod veth, node side");
    n.set_master(vp.index, cni0.index).expect("attach pod");
    n.set_up(vp.index).expect("pod veth up");

    let mut p = pod.netlink();
    up(&mut p, "lo");
    let peth = up(&mut p, "eth0");
    p.ensure_address(peth, IpNet::V4(Ipv4Net::new(pod_ip, 24).expect("net")))
        .expect("pod address");
    p.ensure_route(&Route::via(net("0.0.0.0/0"), gateway))
        .expect("pod default route");
    Node {
        name: format!("node-{i}"),
        ns,
        pod,
        public_ip,
        subnet,
        pod_ip,
    }
}

fn up(nl: &mut Netlink, name: &str) -> u32 {
    let link = nl.require_link(name).expect("link");
    nl.set_up(link.index).expect("set up");
    link.index
}

/// Runs a command inside namespace `ns` (`ip netns exec`).
pub fn exec_in(ns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {args:?} in {ns}: {e}"))
}

/// One ping from `from` to `to`; the error carries ping's output.
pub fn ping(from: &TestNs, to: Ipv4Addr) -> Result<String, String> {
    let out = exec_in(&from.name, &["ping", "-c1", "-W2", &to.to_string()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("ping {to} from {}: {text}", from.name))
    }
}

/// Sends `bytes` over TCP from `client` to a listener on `server` at `server_ip`, with the
/// don't-fragment bit forced on the client's socket; returns the client address the
/// server saw and the bytes it received.
pub fn tcp_transfer(
    client: &TestNs,
    server: &TestNs,
    server_ip: Ipv4Addr,
    bytes: usize,
) -> Result<(SocketAddr, usize), String> {
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::scope(|s| {
        let srv = s.spawn(move || {
            server.run(move || -> Result<(SocketAddr, usize), String> {
                let listener =
                    TcpListener::bind((server_ip, 0)).map_err(|e| format!("listen: {e}"))?;
                let port = listener.local_addr().map_err(|e| e.to_string())?.port();
                let _ = ready_tx.send(port);
                let (mut conn, peer) = accept_within(&listener, Duration::from_secs(10))?;
                conn.set_read_timeout(Some(Duration::from_secs(10)))
                    .map_err(|e| e.to_string())?;
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0;
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => total += n,
                        Err(e) => return Err(format!("server read after {total} bytes: {e}")),
                    }
                }
                conn.write_all(&(total as u64).to_be_bytes())
                    .map_err(|e| format!("server reply: {e}"))?;
                Ok((peer, total))
            })
        });
        let port = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "the server did not start".to_string())?;
        let sent = client.run(move || -> Result<u64, String> {
            let mut conn =
                TcpStream::connect_timeout(&(server_ip, port).into(), Duration::from_secs(5))
                    .map_err(|e| format!("connect {server_ip}:{port}: {e}"))?;
            set_df(&conn)?;
            conn.set_write_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            let chunk = vec![0x5au8; 64 * 1024];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                conn.write_all(&chunk[..n])
                    .map_err(|e| format!("client write with {left} bytes left: {e}"))?;
                left -= n;
            }
            conn.shutdown(std::net::Shutdown::Write)
                .map_err(|e| e.to_string())?;
            let mut reply = [0u8; 8];
            conn.read_exact(&mut reply)
                .map_err(|e| format!("client reading the server's count: {e}"))?;
            Ok(u64::from_be_bytes(reply))
        });
        let served = srv
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        if sent? as usize != served.1 {
            return Err("client and server disagree on the byte count".into());
        }
        Ok(served)
    })
}

fn accept_within(
    listener: &TcpListener,
    limit: Duration,
) -> Result<(TcpStream, SocketAddr), String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        match listener.accept() {
            Ok((conn, peer)) => {
                conn.set_nonblocking(false).map_err(|e| e.to_string())?;
                return Ok((conn, peer));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
    Err("no connection arrived".into())
}

/// IP_PMTUDISC_DO: the kernel sets DF and never fragments this socket's packets.
fn set_df(stream: &TcpStream) -> Result<(), String> {
    let value: libc::c_int = libc::IP_PMTUDISC_DO;
    // SAFETY: passes one c_int of the size given to a valid socket.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("set DF: {}", std::io::Error::last_os_error()))
    }
}

/// One UDP datagram from `client` to `server_ip` and its echo back; returns the source
/// the server saw and the source of the echo the client got.
pub fn udp_echo(
    client: &TestNs,
    server: &TestNs,
    server_ip: Ipv4Addr,
) -> Result<(SocketAddr, SocketAddr), String> {
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::scope(|s| {
        let srv = s.spawn(move || {
            server.run(move || -> Result<SocketAddr, String> {
                let sock = UdpSocket::bind((server_ip, 0)).map_err(|e| format!("bind: {e}"))?;
                sock.set_read_timeout(Some(Duration::from_secs(5)))
                    .map_err(|e| e.to_string())?;
                let port = sock.local_addr().map_err(|e| e.to_string())?.port();
                let _ = ready_tx.send(port);
                let mut buf = [0u8; 1500];
                let (n, from) = sock
                    .recv_from(&mut buf)
                    .map_err(|e| format!("server recv: {e}"))?;
                sock.send_to(&buf[..n], from)
                    .map_err(|e| format!("server echo: {e}"))?;
                Ok(from)
            })
        });
        let port = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "the server did not start".to_string())?;
        let echoed = client.run(move || -> Result<SocketAddr, String> {
            let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| e.to_string())?;
            sock.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            sock.send_to(b"hello over udp", (server_ip, port))
                .map_err(|e| format!("client send: {e}"))?;
            let mut buf = [0u8; 64];
            let (n, from) = sock
                .recv_from(&mut buf)
                .map_err(|e| format!("client recv: {e}"))?;
            if &buf[..n] != b"hello over udp" {
                return Err("echo differs".into());
            }
            Ok(from)
        });
        let seen = srv
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        Ok((seen, echoed?))
    })
}

/// A process started in a namespace, killed (by its PID) and reaped on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn spawn(ns: &str, args: &[&str]) -> Proc {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {args:?} in {ns}: {e}"));
        Proc(child)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
