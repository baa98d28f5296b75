//! Test fixtures: a node namespace, pod namespaces, and `podnet-cni` executed
//! exactly as a container runtime does (env + config on stdin, in the node's
//! namespace). Everything is removed on drop, also when a test fails.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use podnet_kernel::NetNs;
use podnet_kernel::netns::OwnedNetNs;
use serde_json::Value;

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub const PLUGIN: &str = env!("CARGO_BIN_EXE_podnet-cni");

/// A test namespace `pnc-TAG-PID-N`. `ns` is the guard that deletes it on drop; `name`
/// is a copy of its name, kept as a field because the tests sharing this module read it.
pub struct TestNs {
    pub name: String,
    pub ns: OwnedNetNs,
}

impl TestNs {
    pub fn new(tag: &str) -> TestNs {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("pnc-{tag}-{}-{n}", std::process::id());
        let ns = OwnedNetNs::create(&name).expect("create test namespace");
        TestNs { name, ns }
    }

    pub fn path(&self) -> PathBuf {
        self.ns.path()
    }
}

/// A node: its namespace and its IPAM data dir.
pub struct Node {
    pub ns: TestNs,
    pub data: tempfile::TempDir,
}

impl Node {
    pub fn new() -> Node {
        Node {
            ns: TestNs::new("node"),
            data: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A bridge-plugin style config for `subnet`.
    pub fn config(&self, version: &str, subnet: &str, extra: Value) -> String {
        let mut conf = serde_json::json!({
            "cniVersion": version,
            "name": "testnet",
            "type": "podnet-cni",
            "bridge": "cni0",
            "isGateway": true,
            "isDefaultGateway": true,
            "ipam": {
                "type": "podnet-cni",
                "subnet": subnet,
                "dataDir": self.data.path(),
            },
        });
        merge(&mut conf, extra);
        conf.to_string()
    }

    /// Allocation records on disk (files named by an IP).
    pub fn records(&self) -> Vec<String> {
        let dir = self.data.path().join("testnet");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.parse::<Ipv4Addr>().is_ok())
            .collect()
    }

    /// Names of the links in the node namespace.
    pub fn links(&self) -> Vec<String> {
        let mut nl = podnet_kernel::Netlink::open_in(&self.ns.ns).expect("netlink");
        nl.links()
            .expect("links")
            .into_iter()
            .map(|l| l.name)
            .collect()
    }

    pub fn plugin(
        &self,
        command: &str,
        container: &str,
        netns: Option<&Path>,
        ifname: &str,
    ) -> Invocation {
        let mut inv = Invocation::new(&self.ns.ns);
        inv.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", "/nonexistent");
        if let Some(p) = netns {
            inv.env("CNI_NETNS", &p.display().to_string());
        }
        inv
    }
}

fn merge(base: &mut Value, extra: Value) {
    if let (Value::Object(b), Value::Object(e)) = (base, extra) {
        for (k, v) in e {
            match (b.get_mut(&k), v) {
                (Some(Value::Object(bo)), Value::Object(vo)) => {
                    for (k2, v2) in vo {
                        bo.insert(k2, v2);
                    }
                }
                (_, v) => {
                    b.insert(k, v);
                }
            }
        }
    }
}

/// One execution of the plugin binary.
pub struct Invocation {
    cmd: Command,
}

pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }

    pub fn ok(self) -> Outcome {
        assert_eq!(
            self.code, 0,
            "plugin failed: stdout {} stderr {}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts the spec's error JSON with `code`, and returns its message.
    pub fn error(&self, code: u64) -> String {
        assert_ne!(self.code, 0, "plugin should have failed: {}", self.stdout);
        let v = self.json();
        assert_eq!(v["code"].as_u64(), Some(code), "error: {v}");
        assert!(
            v["cniVersion"].is_string(),
            "error JSON carries cniVersion: {v}"
        );
        let msg = v["msg"].as_str().expect("msg").to_string();
        assert!(!msg.is_empty());
        assert!(
            !self.stderr.contains("panicked"),
            "plugin panicked: {}",
            self.stderr
        );
        msg
    }
}

impl Invocation {
    pub fn new(node: &NetNs) -> Invocation {
        let mut cmd = Command::new(PLUGIN);
        cmd.env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        node.enter_on_exec(&mut cmd)
            .expect("enter node namespace on exec");
        Invocation { cmd }
    }

    pub fn env(&mut self, k: &str, v: &str) -> &mut Invocation {
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(&mut self, k: &str) -> &mut Invocation {
        self.cmd.env_remove(k);
        self
    }

    pub fn spawn(&mut self, stdin: &str) -> Child {
        let mut child = self.cmd.spawn().expect("spawn podnet-cni");
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(stdin.as_bytes()).expect("write stdin");
        drop(pipe);
        child
    }

    pub fn run(&mut self, stdin: &str) -> Outcome {
        let out = self.spawn(stdin).wait_with_output().expect("wait");
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The pod's IPv4 address from an ADD result.
pub fn result_ip(result: &Value) -> Ipv4Addr {
    result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no IPv4 address in result {result}"))
}

/// A TCP echo server inside `ns` on a background thread; answers `conns`
/// connections with "echo:<data>|from:<peer ip>".
pub fn tcp_echo(ns: &NetNs, port: u16, conns: usize) -> std::thread::JoinHandle<()> {
    let ns = ns.try_clone().expect("clone ns");
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        ns.enter().expect("enter ns");
        let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind");
        tx.send(()).expect("ready");
        for _ in 0..conns {
            let (mut conn, peer) = listener.accept().expect("accept");
            let mut buf = [0u8; 256];
            let n = conn.read(&mut buf).unwrap_or(0);
            let reply = format!(
                "echo:{}|from:{}",
                String::from_utf8_lossy(&buf[..n]),
                peer.ip()
            );
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("server ready");
    handle
}

/// A UDP echo server inside `ns`, answering `count` datagrams.
pub fn udp_echo(ns: &NetNs, port: u16, count: usize) -> std::thread::JoinHandle<()> {
    let ns = ns.try_clone().expect("clone ns");
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        ns.enter().expect("enter ns");
        let sock = UdpSocket::bind(("0.0.0.0", port)).expect("bind udp");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        tx.send(()).expect("ready");
        let mut buf = [0u8; 256];
        for _ in 0..count {
            let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                return;
            };
            let reply = format!(
                "echo:{}|from:{}",
                String::from_utf8_lossy(&buf[..n]),
                peer.ip()
            );
            let _ = sock.send_to(reply.as_bytes(), peer);
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("server ready");
    handle
}

/// Connects from inside `ns` to `addr`, sends `data`, returns the reply.
pub fn tcp_send(ns: &NetNs, addr: SocketAddr, data: &str) -> String {
    ns.run(|| -> std::io::Result<String> {
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        conn.set_read_timeout(Some(Duration::from_secs(3)))?;
        conn.write_all(data.as_bytes())?;
        conn.shutdown(std::net::Shutdown::Write)?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply)?;
        Ok(reply)
    })
    .expect("enter ns")
    .unwrap_or_else(|e| panic!("TCP to {addr}: {e}"))
}

pub fn udp_send(ns: &NetNs, addr: SocketAddr, data: &str) -> String {
    ns.run(|| -> std::io::Result<String> {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        sock.set_read_timeout(Some(Duration::from_secs(3)))?;
        sock.send_to(data.as_bytes(), addr)?;
        let mut buf = [0u8; 256];
        let (n, _) = sock.recv_from(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .expect("enter ns")
    .unwrap_or_else(|e| panic!("UDP to {addr}: {e}"))
}

/// ICMP echo from inside namespace `ns_name` (iputils ping).
pub fn ping(ns_name: &str, ip: Ipv4Addr) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            ns_name,
            "ping",
            "-c1",
            "-W2",
            "-q",
            &ip.to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .expect("run ping (install iputils-ping)")
        .success()
}
