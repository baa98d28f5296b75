//! A hand-built multi-node network for overlay tests, in namespaces of its own that are
//! deleted when the [`Lab`] drops (also when a test panics):
//!
//! ```text
//!   underlay ns: bridge br0 ── n1 ─┐ ── n2 ─┐ ── n3 ─┐
//!   node i ns:   eth0 172.31.0.1i/24 (MTU 1500), ip_forward on,
//!                bridge cni0 10.244.i.1/24 ── vp ─── pod i ns: eth0 10.244.i.2/24, default via .1
//! ```
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use podnet_kernel::netns::OwnedNetNs;
use podnet_kernel::{Netlink, Route, sysctl};
use podnet_overlay::{BackendConfig, BackendKind, LocalNode, VxlanOptions};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub const CLUSTER: &str = "10.244.0.0/16";
pub const UNDERLAY_MTU: u32 = 1500;

/// A test namespace `pn-a1-PID-N-TAG`. `ns` is the guard that deletes it on drop (also when a
/// test panics); `name` is a copy of its name, kept as a field because the tests sharing
/// this module read it.
pub struct TestNs {
    pub name: String,
    pub ns: OwnedNetNs,
}

impl TestNs {
    pub fn new(tag: &str) -> TestNs {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("pn-a1-{}-{n}-{tag}", std::process::id());
        let ns =
            OwnedNetNs::create(&name).unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        TestNs { name, ns }
    }

    pub fn netlink(&self) -> Netlink {
        Netlink::open_in(&self.ns).unwrap_or_else(|e| panic!("netlink in {}: {e}", self.name))
    }
}

/// One node: its namespace, its pod's namespace and addresses.
pub struct Node {
    pub name: String,
    pub ns: TestNs,
    pub pod: TestNs,
    pub public_ip: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub pod_ip: Ipv4Addr,
}

impl Node {
    /// The backend configuration of this node (netns = the node's).
    pub fn config(&self, vxlan: VxlanOptions) -> BackendConfig {
        BackendConfig {
            kind: BackendKind::Vxlan,
            local: LocalNode {
                name: self.name.clone(),
                public_ip: self.public_ip,
                subnet: self.subnet,
                cluster_cidr: net(CLUSTER),
            },
            underlay_mtu: UNDERLAY_MTU,
            mtu_override: None,
            vxlan,
            udp_port: podnet_overlay::DEFAULT_UDP_PORT,
            netns: Some(self.ns.ns.try_clone().expect("clone netns handle")),
        }
    }
}

/// The whole lab; dropping it deletes every namespace (pods first, the underlay last).
pub struct Lab {
    pub nodes: Vec<Node>,
    pub underlay: TestNs,
}

pub fn net(s: &str) -> Ipv4Net {
    s.parse().expect("cidr")
}

impl Lab {
    /// `count` nodes on one underlay segment (172.31.0.1i/24), pods with MTU `pod_mtu`.
    pub fn new(tag: &str, count: u8, pod_mtu: u32) -> Lab {
        let publics: Vec<Ipv4Net> = (1..=count)
            .map(|i| Ipv4Net::new(Ipv4Addr::new(172, 31, 0, 10 + i), 24).expect("net"))
            .collect();
        Self::with_public_ips(tag, &publics, pod_mtu)
    }

    /// One node per address in `publics` (address and prefix of its underlay interface),
    /// all on one switch, so nodes with different prefixes share the wire but not a subnet.
    pub fn with_public_ips(tag: &str, publics: &[Ipv4Net], pod_mtu: u32) -> Lab {
        let underlay = TestNs::new(&format!("{tag}-u"));
        let mut u = underlay.netlink();
        let br = u.ensure_bridge("br0", None).expect("underlay bridge");
        u.set_up(br.index).expect("underlay bridge up");
        let mut nodes = Vec::new();
        for (i, public) in (1..).zip(publics) {
            nodes.push(Self::node(tag, i, *public, &mut u, br.index, pod_mtu));
        }
        Lab { nodes, underlay }
    }

    fn node(tag: &str, i: u8, public: Ipv4Net, u: &mut Netlink, br: u32, pod_mtu: u32) -> Node {
        let ns = TestNs::new(&format!("{tag}-n{i}"));
        let pod = TestNs::new(&format!("{tag}-p{i}"));
        let public_ip = public.addr();
        let subnet = net(&format!("10.244.{i}.0/24"));
        let gateway = Ipv4Addr::new(10, 244, i, 1);
        let pod_ip = Ipv4Addr::new(10, 244, i, 2);

        // Underlay side: a veth from the switch to the node.
        let port = format!("n{i}");
        u.create_veth(&port, "eth0", Some(&ns.ns), Some(UNDERLAY_MTU))
            .expect("underlay veth");
        let port = u.require_link(&port).expect("underlay port");
        u.set_master(port.index, br).expect("attach to switch");
        u.set_up(port.index).expect("underlay port up");

        let mut n = ns.netlink();
        up(&mut n, "lo");
        let eth0 = up(&mut n, "eth0");
        n.ensure_address(eth0, IpNet::V4(public))
            .expect("public ip");
        sysctl::write(&ns.ns, "net.ipv4.ip_forward", "1").expect("ip_forward");
        let cni0 = n.ensure_bridge("cni0", Some(pod_mtu)).expect("cni0");
        n.ensure_address(
            cni0.index,
            IpNet::V4(Ipv4Net::new(gateway, 24).expect("net")),
        )
        .expect("gateway address");
        n.set_up(cni0.index).expect("cni0 up");

        // The pod: a veth from cni0 into its own namespace.
        n.create_veth("vp", "eth0", Some(&pod.ns), Some(pod_mtu))
            .expect("pod veth");
        let vp = n.require_link("vp").expect("pod veth host side");
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
}

fn up(nl: &mut Netlink, name: &str) -> u32 {
    let link = nl.require_link(name).expect("link");
    nl.set_up(link.index).expect("set up");
    link.index
}

/// Runs a command inside `ns` (`ip netns exec`), with its output.
pub fn exec_in(ns: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("run ip netns exec")
}

/// Whether `from` gets an ICMP echo reply from `to` (3 tries, bounded by ping's deadline).
/// `size` sets the payload with the don't-fragment bit on.
pub fn ping(from: &TestNs, to: Ipv4Addr, size: Option<u32>) -> Result<(), String> {
    let to = to.to_string();
    let size_text = size.map(|s| s.to_string());
    let mut args = vec!["ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", "-w", "4"];
    if let Some(s) = &size_text {
        args.extend(["-M", "do", "-s", s.as_str()]);
    }
    args.push(&to);
    let out = exec_in(&from.name, &args);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ping {to} from {} failed: {}{}",
            from.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// What a TCP server saw: the client's address and the bytes it received.
#[derive(Debug)]
pub struct Received {
    pub peer: SocketAddr,
    pub bytes: usize,
}

const DEADLINE: Duration = Duration::from_secs(20);

/// Sends `len` bytes over TCP from inside `client` to a server inside `server` at
/// `server_ip:port`, with the don't-fragment bit forced on the client's socket
/// (`IP_PMTUDISC_DO`: a too-big segment is an error, never fragmented). Everything is
/// bounded by a deadline; the server's view is returned.
pub fn tcp_transfer(
    server: &TestNs,
    server_ip: Ipv4Addr,
    port: u16,
    client: &TestNs,
    len: usize,
) -> Result<Received, String> {
    let server_ns = server.ns.try_clone().map_err(|e| e.to_string())?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let server_thread = std::thread::spawn(move || -> Result<Received, String> {
        server_ns.enter().map_err(|e| e.to_string())?;
        let listener = TcpListener::bind(SocketAddrV4::new(server_ip, port))
            .map_err(|e| format!("bind {server_ip}:{port}: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let _ = ready_tx.send(());
        let start = Instant::now();
        let (mut stream, peer) = loop {
            match listener.accept() {
                Ok(conn) => break conn,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if start.elapsed() > DEADLINE {
                        return Err("no connection within the deadline".into());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        stream.set_nonblocking(false).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut bytes = 0;
        loop {
            if start.elapsed() > DEADLINE {
                return Err(format!(
                    "transfer not done within the deadline ({bytes} bytes)"
                ));
            }
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => bytes += n,
                Err(e) => return Err(format!("read after {bytes} bytes: {e}")),
            }
        }
        Ok(Received { peer, bytes })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| "server did not start".to_string())?;
    let client_ns = client.ns.try_clone().map_err(|e| e.to_string())?;
    let sent = client_ns
        .run(move || -> Result<(), String> {
            let addr = SocketAddr::V4(SocketAddrV4::new(server_ip, port));
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .map_err(|e| format!("connect {addr}: {e}"))?;
            set_df(&stream)?;
            stream
                .set_write_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            let chunk = vec![0x5au8; 64 * 1024];
            let mut left = len;
            while left > 0 {
                let n = left.min(chunk.len());
                stream
                    .write_all(&chunk[..n])
                    .map_err(|e| format!("write with {left} bytes left: {e}"))?;
                left -= n;
            }
            stream
                .shutdown(std::net::Shutdown::Write)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?;
    let received = server_thread
        .join()
        .map_err(|_| "server thread panicked".to_string())?;
    sent?;
    received
}

/// Forces the don't-fragment bit on the socket's packets.
fn set_df(stream: &TcpStream) -> Result<(), String> {
    let value: libc::c_int = libc::IP_PMTUDISC_DO;
    // SAFETY: a valid socket fd and a c_int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "setsockopt IP_MTU_DISCOVER: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// An `iperf3 -s` inside a namespace, stopped (by its PID) on drop.
pub struct Iperf3Server {
    child: std::process::Child,
}

impl Iperf3Server {
    pub fn start(ns: &TestNs, port: u16) -> Iperf3Server {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "iperf3",
                "-s",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start iperf3 -s (apt-get install iperf3)");
        Iperf3Server { child }
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One single-stream TCP iperf3 run of `secs` seconds from inside `client`: Gbit/s received.
pub fn iperf3_gbits(client: &TestNs, server_ip: Ipv4Addr, port: u16, secs: u32) -> f64 {
    let args = [
        "iperf3",
        "-c",
        &server_ip.to_string(),
        "-p",
        &port.to_string(),
        "-t",
        &secs.to_string(),
        "-J",
        "--connect-timeout",
        "2000",
    ]
    .map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The server may still be starting: a few bounded tries.
    for _ in 0..10 {
        let out = exec_in(&client.name, &args);
        if out.status.success() {
            let report: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
            let bps = report["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .expect("bits_per_second in iperf3's report");
            return bps / 1e9;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!(
        "iperf3 to {server_ip}:{port} from {} kept failing",
        client.name
    );
}

/// Median round-trip time in ms over `count` pings (10 ms apart) from `from` to `to`.
pub fn ping_median_ms(from: &TestNs, to: Ipv4Addr, count: u32) -> f64 {
    let out = exec_in(
        &from.name,
        &[
            "ping",
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            "0.01",
            "-w",
            "30",
            &to.to_string(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut times: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(!times.is_empty(), "no replies: {text}");
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
