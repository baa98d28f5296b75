//! The lab harness the lab tests share: a lab of the test's own (a unique name, its own
//! underlay, taken down on drop even when the test fails), podnet run against it, pods
//! applied, waited for and entered, and bounded waits.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const PODNET: &str = env!("CARGO_BIN_EXE_podnet");

/// How long pods may take to be Running and Ready.
pub const READY_WITHIN: Duration = Duration::from_secs(60);

pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

/// Retries `check` until it succeeds or `within` has passed (then fails with its last
/// complaint); the value and how long it took.
pub fn wait_for<T>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return (v, start.elapsed()),
            Err(last) => assert!(
                start.elapsed() < within,
                "{what}: not within {within:?}; last: {last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A lab of the test's own.
pub struct Lab {
    pub name: String,
    pub kubeconfig: String,
    pub underlay: String,
    /// The environment `lab up` (and so every agent) runs with, when not the test's.
    pub env: Option<Vec<(String, String)>>,
}

impl Lab {
    /// `prefix` + a number unique to this test process; `underlay` must be a range no
    /// other test uses.
    pub fn new(prefix: &str, underlay: &str) -> Lab {
        let name = format!("{prefix}{}", std::process::id() % 100_000);
        Lab {
            kubeconfig: format!("/var/lib/podnet/{name}/kubeconfig"),
            name,
            underlay: underlay.to_string(),
            env: None,
        }
    }

    pub fn node(&self, i: u32) -> String {
        format!("{}-node{i}", self.name)
    }

    /// The node's underlay IP, as `lab up` assigns it (network + 10 + i).
    pub fn node_ip(&self, i: u32) -> String {
        let net: ipnet::Ipv4Net = self.underlay.parse().unwrap();
        std::net::Ipv4Addr::from(u32::from(net.network()) + 10 + i).to_string()
    }

    /// The underlay switch's own address (outside the cluster).
    pub fn bridge_ip(&self) -> String {
        let net: ipnet::Ipv4Net = self.underlay.parse().unwrap();
        std::net::Ipv4Addr::from(u32::from(net.network()) + 1).to_string()
    }

    /// The underlay switch's namespace: outside the cluster.
    pub fn underlay_netns(&self) -> String {
        format!("/run/netns/{}-underlay", self.name)
    }

    /// `podnet lab up --nodes N` with `extra` flags, in the lab's environment.
    pub fn up(&self, nodes: u32, extra: &[&str]) {
        let n = nodes.to_string();
        let mut cmd = Command::new(PODNET);
        cmd.args(["lab", "up", "--name", &self.name, "--nodes", &n])
            .args(["--underlay-cidr", &self.underlay])
            .args(extra)
            .stdin(Stdio::null());
        if let Some(env) = &self.env {
            cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
        }
        let out = cmd.output().expect("run lab up");
        assert!(out.status.success(), "lab up failed:\n{}", text(&out));
    }

    /// `podnet --kubeconfig … ARGS` with `stdin`.
    pub fn podnet(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(PODNET)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// `podnet ARGS`, which must succeed; its output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.podnet(args, "");
        assert!(
            out.status.success(),
            "podnet {} failed:\n{}",
            args.join(" "),
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn apply(&self, manifest: &str) {
        let out = self.podnet(&["apply", "-f", "-"], manifest);
        assert!(out.status.success(), "apply:\n{manifest}\n{}", text(&out));
    }

    /// A server pod `name` on node `i`, labelled `app: name` (TCP 8080, UDP 8081).
    pub fn server_pod(&self, name: &str, i: u32) {
        self.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {name}}}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: srv\n    image: podnet\n    command: [\"{PODNET}\", \"probe\", \"serve\", \"--tcp\", \"0.0.0.0:8080\", \"--udp\", \"0.0.0.0:8081\"]\n    readinessProbe:\n      tcpSocket: {{port: 8080}}\n      periodSeconds: 1\n",
            node = self.node(i)
        ));
    }

    /// Waits until the pods are Running and Ready; their IPs.
    pub fn ready_ips(&self, pods: &[&str]) -> BTreeMap<String, String> {
        wait_for(READY_WITHIN, "pods Running and Ready", || {
            let mut ips = BTreeMap::new();
            for pod in pods {
                let out = self.podnet(&["get", "pod", pod, "-o", "json"], "");
                let p: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                let ready = p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                match p["status"]["podIP"].as_str() {
                    Some(ip) if ready => {
                        ips.insert(pod.to_string(), ip.to_string());
                    }
                    _ => return Err(format!("{pod}: {:#}", p["status"])),
                }
            }
            Ok(ips)
        })
        .0
    }

    /// The pod's network namespace, from its node's pod record.
    pub fn pod_netns(&self, pod: &str) -> PathBuf {
        let nodes = Path::new("/run/podnet").join(&self.name).join("nodes");
        for node in fs::read_dir(&nodes).unwrap().filter_map(|e| e.ok()) {
            let records = fs::read_dir(node.path().join("pods")).into_iter().flatten();
            for record in records.filter_map(|e| e.ok()) {
                let Ok(t) = fs::read_to_string(record.path()) else {
                    continue;
                };
                let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                if v["name"] == pod
                    && let Some(netns) = v["netns"].as_str()
                {
                    return PathBuf::from(netns);
                }
            }
        }
        panic!("no pod record of {pod} under {}", nodes.display());
    }

    /// Runs a command inside the network namespace at `netns`.
    pub fn in_netns(&self, netns: &Path, args: &[&str]) -> Output {
        let net = format!("--net={}", netns.display());
        let mut all = vec![net.as_str(), "--"];
        all.extend_from_slice(args);
        run("nsenter", &all)
    }

    /// Runs a command inside pod `pod`'s network namespace.
    pub fn in_pod(&self, pod: &str, args: &[&str]) -> Output {
        self.in_netns(&self.pod_netns(pod), args)
    }

    /// A TCP exchange with `podnet probe send` from `netns` to `addr`, retried for up to
    /// `within`: the server's answer (`NAME got: … (from SOURCE)`).
    pub fn tcp_from(&self, netns: &Path, addr: &str, within: Duration) -> String {
        wait_for(within, &format!("TCP to {addr}"), || {
            let out = self.in_netns(
                netns,
                &[
                    PODNET,
                    "probe",
                    "send",
                    "--tcp",
                    addr,
                    "--data",
                    "hi",
                    "--timeout",
                    "1",
                ],
            );
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            } else {
                Err(text(&out))
            }
        })
        .0
    }
}

impl Lab {
    /// The PID of node `i`'s agent, from the lab's process records.
    pub fn agent_pid(&self, i: u32) -> i32 {
        let path = format!("/run/podnet/{}/processes.json", self.name);
        let v: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let node = self.node(i);
        v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["component"] == "agent" && p["node"] == node.as_str())
            .and_then(|p| p["pid"].as_i64())
            .unwrap_or_else(|| panic!("no agent of {node} in {path}")) as i32
    }

    /// Kills node `i`'s agent (SIGKILL: no clean-up) and has `lab up` start it again; back
    /// when the node reports its network available again.
    pub fn restart_agent(&self, i: u32, nodes: u32) {
        let pid = self.agent_pid(i);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        wait_for(Duration::from_secs(5), "the agent gone", || {
            let gone = !Path::new(&format!("/proc/{pid}")).exists()
                || fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "));
            gone.then_some(()).ok_or(format!("{pid} still runs"))
        });
        self.up(nodes, &[]);
        assert_ne!(self.agent_pid(i), pid, "lab up did not restart the agent");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        match Command::new(PODNET)
            .args(["lab", "down", "--name", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("lab down --name {} failed:\n{}", self.name, text(&out)),
            Err(e) => eprintln!("lab down --name {}: {e}", self.name),
        }
    }
}
