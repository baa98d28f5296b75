//! A node whose service proxy keeps failing, on a real 1-node lab: the fault is made for
//! real (someone else's nftables table named like the proxy's, `ip podnet-proxy`, owned by
//! another process so that the proxy may neither replace nor change it), not injected. The
//! Node then reports `NetworkUnavailable=True` (`ServiceProxyFailing`, with the kernel's
//! error) while `Ready` stays `True`; node lifecycle taints it; `lab up` (which starts the
//! killed agent again) fails with the condition's message and the agent's last warnings;
//! `get nodes` and `lab status` show it. Once the other table is gone the proxy's next retry
//! works, the condition turns `False` and the taint goes. Needs root. The lab and the
//! blocking process are removed even when the test fails.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const PODNET: &str = env!("CARGO_BIN_EXE_podnet");

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn podnet(args: &[&str]) -> Output {
    Command::new(PODNET).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = podnet(args);
    assert!(
        out.status.success(),
        "podnet {} failed:\n{}",
        args.join(" "),
        text(&out)
    );
    text(&out)
}

fn fails(args: &[&str]) -> String {
    let out = podnet(args);
    assert!(
        !out.status.success(),
        "podnet {} should have failed:\n{}",
        args.join(" "),
        text(&out)
    );
    text(&out)
}

/// The lab, taken down when dropped.
struct Lab {
    name: String,
    kubeconfig: String,
}

impl Lab {
    fn new() -> Lab {
        let name = format!("th{}", std::process::id() % 100_000);
        Lab {
            kubeconfig: format!("/var/lib/podnet/{name}/kubeconfig"),
            name,
        }
    }

    fn node(&self) -> String {
        format!("{}-node1", self.name)
    }

    fn get(&self, args: &[&str]) -> String {
        let mut full = vec!["--kubeconfig", &self.kubeconfig, "get"];
        full.extend_from_slice(args);
        ok(&full)
    }

    fn node_json(&self) -> Value {
        serde_json::from_str(&self.get(&["node", &self.node(), "-o", "json"])).unwrap()
    }

    /// The recorded agent's pid.
    fn agent_pid(&self) -> i32 {
        let path = format!("/run/podnet/{}/processes.json", self.name);
        let procs: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let pid = procs["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["component"] == "agent" && p["node"] == self.node())
            .unwrap()["pid"]
            .as_i64()
            .unwrap();
        i32::try_from(pid).unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = podnet(&["lab", "down", "--name", &self.name]);
        if !out.status.success() {
            eprintln!("lab down --name {} failed:\n{}", self.name, text(&out));
        }
    }
}

/// "Someone else": an interactive `nft` in the node's namespace that replaced the proxy's
/// table `ip podnet-proxy` by one of its own with `flags owner` — while it runs, no other
/// process may change or delete that table (EPERM). Killed when dropped, and its table
/// goes with it.
struct Blocker {
    child: Child,
}

impl Blocker {
    fn start(netns: &str) -> Blocker {
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns, "nft", "-i"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.as_mut().unwrap();
        stdin
            .write_all(
                b"delete table ip podnet-proxy\nadd table ip podnet-proxy { flags owner; }\n",
            )
            .unwrap();
        stdin.flush().unwrap();
        let blocker = Blocker { child };
        eventually("the owned table", Duration::from_secs(5), || {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    netns,
                    "nft",
                    "list",
                    "table",
                    "ip",
                    "podnet-proxy",
                ])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .contains("flags owner")
                .then_some(())
        });
        blocker
    }
}

impl Drop for Blocker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn eventually<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn condition<'a>(node: &'a Value, kind: &str) -> &'a Value {
    node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} condition: {node}"))
}

fn has_network_taint(node: &Value) -> bool {
    node["spec"]["taints"].as_array().is_some_and(|ts| {
        ts.iter()
            .any(|t| t["key"] == "node.kubernetes.io/network-unavailable")
    })
}

#[test]
fn a_failing_proxy_makes_the_node_network_unavailable_until_it_is_fixed() {
    let has_nft = Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !is_root() || !has_nft {
        eprintln!("skipped: needs root and nft (the other process holding the table)");
        return;
    }
    let lab = Lab::new();
    let name = lab.name.clone();
    let node = lab.node();
    let out = ok(&[
        "lab",
        "up",
        "--name",
        &name,
        "--nodes",
        "1",
        "--underlay-cidr",
        "172.31.9.0/24",
    ]);
    assert!(out.contains("1/1 nodes Ready"), "{out}");
    let n = lab.node_json();
    let network = condition(&n, "NetworkUnavailable");
    assert_eq!(network["status"], "False", "{network}");
    assert_eq!(network["reason"], "PodnetNetworkReady");
    assert!(lab.get(&["nodes", "--no-headers"]).contains(" Ready "));

    // The agent stops; meanwhile someone else takes the proxy's table.
    let pid = lab.agent_pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("the agent gone", Duration::from_secs(5), || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")))
        .then_some(())
    });
    let blocker = Blocker::start(&node);

    // `up` starts the agent again and fails with the condition's message.
    let err = fails(&["lab", "up", "--name", &name, "--timeout", "6"]);
    assert!(
        err.contains(&format!(
            "restarted the agent of {node} (pid {pid} had exited"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "the network of node {node} is unavailable (ServiceProxyFailing): service proxy: syncing the service rules failed"
        )),
        "{err}"
    );
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(
        err.contains("the last warnings and errors of its agent's log"),
        "{err}"
    );
    assert!(err.contains("ERROR podnet_proxy::runner"), "{err}");

    // The Node: network unavailable, Ready as kubelet means it, tainted.
    let n = eventually("the taint", Duration::from_secs(5), || {
        let n = lab.node_json();
        has_network_taint(&n).then_some(n)
    });
    let network = condition(&n, "NetworkUnavailable");
    assert_eq!(network["status"], "True", "{network}");
    assert_eq!(network["reason"], "ServiceProxyFailing");
    assert!(
        network["message"]
            .as_str()
            .unwrap()
            .contains("Operation not permitted"),
        "{network}"
    );
    assert_eq!(condition(&n, "Ready")["status"], "True");
    let listing = lab.get(&["nodes"]);
    assert!(listing.contains("Ready,NetworkUnavailable"), "{listing}");
    let status = ok(&["lab", "status", "--name", &name]);
    assert!(
        status.contains("UNAVAILABLE (ServiceProxyFailing)"),
        "{status}"
    );
    assert!(
        status.contains(&format!(
            "network unavailable on {node} (ServiceProxyFailing)"
        )),
        "{status}"
    );
    assert!(status.contains("running: 0/1 nodes Ready"), "{status}");

    // The other table goes: the proxy's next retry works, and `up` is content again.
    drop(blocker);
    let out = ok(&["lab", "up", "--name", &name, "--timeout", "60"]);
    assert!(out.contains("1/1 nodes Ready"), "{out}");
    assert!(!out.contains("restarted the agent"), "{out}");
    let n = eventually("the taint removed", Duration::from_secs(5), || {
        let n = lab.node_json();
        (!has_network_taint(&n)).then_some(n)
    });
    let network = condition(&n, "NetworkUnavailable");
    assert_eq!(network["status"], "False", "{network}");
    assert_eq!(network["reason"], "PodnetNetworkReady");
    assert!(!lab.get(&["nodes"]).contains("NetworkUnavailable"));
}
