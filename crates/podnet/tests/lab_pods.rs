//! Pods on a real 3-node lab, driven through the podnet CLI: pods spread over
//! the nodes run and get ready with IPs from their node's podCIDR; `exec`
//! and `logs` work; pods talk across nodes, on one node and over localhost;
//! bad manifests fail clearly without leaving anything behind; a SIGKILLed
//! agent, restarted, adopts its pods; a deleted pod frees its IP and veth.
//! Needs root. One lab for the whole test (lab up is the slow part), with a
//! name of its own, taken down even when the test fails. Every probe runs
//! inside a pod.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const PODNET: &str = env!("CARGO_BIN_EXE_podnet");
/// How long pods get to become Running and Ready.
const READY_WITHIN: Duration = Duration::from_secs(60);

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

/// Takes the lab down when dropped, so a failing test leaves nothing behind;
/// also stops an agent the test restarted, should `lab down` miss it.
struct Lab {
    name: String,
    kubeconfig: String,
    /// An agent the test restarted (its child handle, reaped on drop) and
    /// its start time.
    restarted_agent: Option<(std::process::Child, u64)>,
}

impl Lab {
    fn new() -> Lab {
        Lab::with_prefix("lp")
    }

    /// A lab named `<prefix><pid>`, so two tests of this file never share one.
    fn with_prefix(prefix: &str) -> Lab {
        let name = format!("{prefix}{}", std::process::id() % 100_000);
        Lab {
            kubeconfig: format!("/var/lib/podnet/{name}/kubeconfig"),
            name,
            restarted_agent: None,
        }
    }

    fn node(&self, i: u32) -> String {
        format!("{}-node{i}", self.name)
    }

    fn node_state_dir(&self, node: &str) -> PathBuf {
        Path::new("/run/podnet")
            .join(&self.name)
            .join("nodes")
            .join(node)
    }

    /// `podnet --kubeconfig K ARGS…`, with `stdin` fed in.
    fn podnet_in(&self, args: &[&str], stdin: &str) -> Output {
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

    fn podnet(&self, args: &[&str]) -> Output {
        self.podnet_in(args, "")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.podnet(args);
        assert!(
            out.status.success(),
            "podnet {} failed:\n{}",
            args.join(" "),
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, manifest: &str) -> Output {
        self.podnet_in(&["apply", "-f", "-"], manifest)
    }

    fn pods(&self) -> Vec<Value> {
        let out = self.ok(&["get", "pods", "-o", "json"]);
        let list: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("get pods -o json: {e}:\n{out}"));
        list["items"].as_array().cloned().unwrap_or_default()
    }

    fn pod(&self, name: &str) -> Value {
        let out = self.ok(&["get", "pod", name, "-o", "json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("get pod {name}: {e}:\n{out}"))
    }

    /// `podnet exec POD -c C -- podnet probe send --tcp ADDR --data DATA`.
    fn send_from(&self, pod: &str, container: &str, addr: &str, data: &str) -> String {
        let out = self.podnet(&[
            "exec", pod, "-c", container, "--", PODNET, "probe", "send", "--tcp", addr, "--data",
            data,
        ]);
        assert!(
            out.status.success(),
            "from pod {pod}: probe send {addr} failed:\n{}",
            text(&out)
        );
        let reply = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            reply.contains(&format!("got: {data}")),
            "from pod {pod} to {addr}: unexpected reply {reply:?}"
        );
        reply
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = Command::new(PODNET)
            .args(["lab", "down", "--name", &self.name])
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("lab down --name {} failed:\n{}", self.name, text(&out)),
            Err(e) => eprintln!("lab down --name {}: {e}", self.name),
        }
        if let Some((mut child, start)) = self.restarted_agent.take() {
            if proc_start(child.id() as i32) == Some(start) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Field 22 of /proc/PID/stat (start time), `None` when there is no such
/// process or it is a zombie.
fn proc_start(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn json_file(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn server_pod(name: &str, node: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: lp}}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: srv\n    image: podnet\n    command: [\"{PODNET}\", \"probe\", \"serve\", \"--tcp\", \"0.0.0.0:8080\"]\n    readinessProbe:\n      tcpSocket: {{port: 8080}}\n      periodSeconds: 1\n"
    )
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The reasons found anywhere in a pod's containerStatuses.
fn container_reasons(pod: &Value) -> Vec<String> {
    let mut reasons = Vec::new();
    for cs in pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for state in [&cs["state"], &cs["lastState"]] {
            for kind in ["waiting", "terminated"] {
                if let Some(r) = state[kind]["reason"].as_str() {
                    reasons.push(r.to_string());
                }
            }
        }
    }
    reasons
}

/// Pod records of a node: name -> record.
fn pod_records(dir: &Path) -> BTreeMap<String, Value> {
    let mut records = BTreeMap::new();
    for entry in fs::read_dir(dir.join("pods"))
        .unwrap()
        .filter_map(|e| e.ok())
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            let record = json_file(&path);
            records.insert(record["name"].as_str().unwrap().to_string(), record);
        }
    }
    records
}

/// Container name -> pid, from a pod record.
fn container_pids(record: &Value) -> BTreeMap<String, i64> {
    record["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c["name"].as_str()?.to_string(), c["pid"].as_i64()?)))
        .collect()
}

/// Files (allocated addresses) anywhere under a node's ipam directory.
fn ipam_entries(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
        {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(&dir.join("ipam"), &mut out);
    out
}

fn links_of(ns: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .collect()
}

/// Polls `check` every 200 ms until it returns `Some`, or panics with
/// `what` and the last state after `within`.
fn wait_for<T>(within: Duration, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what}: not done after {} s; last seen:\n{last}",
                within.as_secs()
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn pods_run_talk_survive_an_agent_restart_and_clean_up() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut lab = Lab::new();
    let name = lab.name.clone();
    let started = Instant::now();
    let out = Command::new(PODNET)
        .args([
            "lab",
            "up",
            "--name",
            &name,
            "--nodes",
            "3",
            "--underlay-cidr",
            "172.31.9.0/24",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "lab up failed:\n{}", text(&out));
    eprintln!("lab up: {:.1} s", started.elapsed().as_secs_f64());

    // Six servers, two per node (s1, s4 on node1; s2, s5 on node2; s3, s6
    // on node3), a two-container pod on node1 and a pod whose program does
    // not exist, on node2.
    let mut manifest = String::new();
    for i in 1..=6u32 {
        manifest.push_str(&server_pod(&format!("s{i}"), &lab.node((i - 1) % 3 + 1)));
    }
    manifest.push_str(&format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: duo}}\nspec:\n  nodeName: {}\n  containers:\n  - name: web\n    image: podnet\n    command: [\"{PODNET}\", \"probe\", \"serve\", \"--tcp\", \"0.0.0.0:9090\"]\n  - name: side\n    image: podnet\n    command: [\"sleep\", \"600\"]\n",
        lab.node(1)
    ));
    let missing = "/nonexistent/podnet-no-such-program";
    manifest.push_str(&format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: bad}}\nspec:\n  nodeName: {}\n  containers:\n  - name: c\n    image: podnet\n    command: [\"{missing}\"]\n",
        lab.node(2)
    ));
    let applied = Instant::now();
    let out = lab.apply(&manifest);
    assert!(out.status.success(), "apply failed:\n{}", text(&out));

    let good: Vec<String> = (1..=6)
        .map(|i| format!("s{i}"))
        .chain(["duo".to_string()])
        .collect();
    let pods = wait_for(READY_WITHIN, "pods Running and Ready", || {
        let pods = lab.pods();
        let by_name: BTreeMap<String, Value> = pods
            .iter()
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    p.clone(),
                )
            })
            .collect();
        let not_ready: Vec<&String> = good
            .iter()
            .filter(|n| !by_name.get(*n).is_some_and(is_ready))
            .collect();
        if not_ready.is_empty() {
            Ok(by_name)
        } else {
            Err(format!(
                "not ready: {not_ready:?}\n{}",
                lab.podnet(&["get", "pods", "-o", "wide"])
                    .stdout
                    .iter()
                    .map(|b| *b as char)
                    .collect::<String>()
            ))
        }
    });
    eprintln!(
        "7 pods Running and Ready {:.1} s after apply",
        applied.elapsed().as_secs_f64()
    );

    // Each pod's IP lies in its node's podCIDR.
    let nodes: Value = serde_json::from_str(&lab.ok(&["get", "nodes", "-o", "json"])).unwrap();
    let cidrs: BTreeMap<String, ipnet::Ipv4Net> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let node = n["metadata"]["name"].as_str().unwrap().to_string();
            let cidr = n["spec"]["podCIDR"]
                .as_str()
                .unwrap_or_else(|| panic!("node {node} has no podCIDR: {n}"))
                .parse()
                .unwrap();
            (node, cidr)
        })
        .collect();
    assert_eq!(cidrs.len(), 3, "{cidrs:?}");
    let mut ips = BTreeMap::new();
    for pod in &good {
        let p = &pods[pod];
        let node = p["spec"]["nodeName"].as_str().unwrap();
        let ip: Ipv4Addr = p["status"]["podIP"]
            .as_str()
            .unwrap_or_else(|| panic!("pod {pod} has no podIP: {p}"))
            .parse()
            .unwrap();
        assert!(
            cidrs[node].contains(&ip),
            "pod {pod} has {ip}, outside {node}'s podCIDR {}",
            cidrs[node]
        );
        ips.insert(pod.clone(), ip);
    }
    let distinct: std::collections::BTreeSet<_> = ips.values().collect();
    assert_eq!(distinct.len(), ips.len(), "pod IPs repeat: {ips:?}");

    // From s1 (node1): s3 on node3, s4 on node1.
    let reply = lab.send_from("s1", "srv", &format!("{}:8080", ips["s3"]), "cross");
    assert!(reply.contains(&format!("from {}:", ips["s1"])), "{reply}");
    lab.send_from("s1", "srv", &format!("{}:8080", ips["s4"]), "same");
    // Two containers of one pod over localhost.
    lab.send_from("duo", "side", "127.0.0.1:9090", "local");
    // The server's output.
    let logs = lab.ok(&["logs", "s3"]);
    assert!(logs.contains("serving"), "podnet logs s3: {logs:?}");
    let logs = lab.ok(&["logs", "duo", "-c", "web"]);
    assert!(logs.contains("serving"), "podnet logs duo -c web: {logs:?}");

    // The pod whose program does not exist says why, and only it fails.
    let bad = wait_for(Duration::from_secs(30), "pod bad reports its error", || {
        let p = lab.pod("bad");
        let reasons = container_reasons(&p);
        if reasons.iter().any(|r| {
            matches!(
                r.as_str(),
                "RunContainerError" | "CreateContainerError" | "StartError"
            )
        }) {
            Ok(p)
        } else {
            Err(format!("{:#}", p["status"]))
        }
    });
    assert!(
        bad["status"]["containerStatuses"]
            .to_string()
            .contains(missing),
        "the error does not name {missing}: {:#}",
        bad["status"]
    );
    assert!(!is_ready(&bad), "{:#}", bad["status"]);
    assert!(lab.pods().iter().filter(|p| is_ready(p)).count() == good.len());

    // An unknown kind fails with a clear message and creates nothing.
    let before: Vec<String> = lab
        .pods()
        .iter()
        .map(|p| p["metadata"]["name"].to_string())
        .collect();
    let out = lab.apply("apiVersion: v1\nkind: Gadget\nmetadata: {name: g1}\nspec: {}\n");
    assert!(
        !out.status.success(),
        "unknown kind applied: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("no matches for kind \"Gadget\""),
        "{}",
        text(&out)
    );
    let after: Vec<String> = lab
        .pods()
        .iter()
        .map(|p| p["metadata"]["name"].to_string())
        .collect();
    assert_eq!(before, after);

    // SIGKILL node3's agent, restart it as `lab up` starts it: it adopts its
    // pods (same IPs, same container processes, no new sandboxes).
    let node3 = lab.node(3);
    let dir3 = lab.node_state_dir(&node3);
    let records_before = pod_records(&dir3);
    assert_eq!(
        records_before.keys().collect::<Vec<_>>(),
        vec!["s3", "s6"],
        "pod records on {node3}"
    );
    let netns_before: Vec<String> = netns_list(&node3);
    let processes_path = PathBuf::from(format!("/run/podnet/{name}/processes.json"));
    let mut processes = json_file(&processes_path);
    let agent = processes["processes"]
        .as_array()
        .unwrap()
        .iter()
        .position(|p| p["component"] == "agent" && p["node"] == node3.as_str())
        .unwrap();
    let old_pid = processes["processes"][agent]["pid"].as_i64().unwrap() as i32;
    let argv: Vec<String> = fs::read(format!("/proc/{old_pid}/cmdline"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let log = PathBuf::from(processes["processes"][agent]["log"].as_str().unwrap());
    let log_len = fs::metadata(&log).map(|m| m.len() as usize).unwrap_or(0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for(
        Duration::from_secs(5),
        "the killed agent is gone",
        || match proc_start(old_pid) {
            None => Ok(()),
            Some(_) => Err(format!("pid {old_pid} still there")),
        },
    );
    let (child, start) = restart_agent(&argv, &node3, &log);
    let pid = child.id() as i32;
    lab.restarted_agent = Some((child, start));
    processes["processes"][agent]["pid"] = pid.into();
    processes["processes"][agent]["start_time"] = start.into();
    fs::write(
        &processes_path,
        serde_json::to_string_pretty(&processes).unwrap(),
    )
    .unwrap();
    // The restarted agent serves: the lab's status shows all nodes healthy
    // and the pods on node3 answer again.
    wait_for(
        Duration::from_secs(30),
        "lab status healthy after the restart",
        || {
            let out = Command::new(PODNET)
                .args(["lab", "status", "--name", &name])
                .output()
                .unwrap();
            let t = text(&out);
            if out.status.success() && t.contains("healthy: 3/3 nodes Ready") {
                Ok(())
            } else {
                Err(t)
            }
        },
    );
    // The restarted agent says, in its log, that it adopted both sandboxes
    // and both containers, and starts nothing anew.
    let new_log = wait_for(Duration::from_secs(30), "pods on node3 adopted", || {
        let all = fs::read(&log).unwrap_or_default();
        let new = String::from_utf8_lossy(&all[log_len.min(all.len())..]).into_owned();
        let sandboxes = new.matches("adopted the pod's sandbox").count();
        let containers = new.matches("adopted a running container").count();
        if sandboxes == 2 && containers == 2 {
            Ok(new)
        } else {
            Err(format!(
                "{sandboxes} sandboxes, {containers} containers adopted; the restarted agent's log:\n{new}"
            ))
        }
    });
    for bad in ["started container", "the recorded sandbox is gone"] {
        assert!(!new_log.contains(bad), "restarted agent: {bad}:\n{new_log}");
    }
    wait_for(Duration::from_secs(30), "pods on node3 Ready", || {
        let pods = lab.pods();
        let ok = ["s3", "s6"].iter().all(|n| {
            pods.iter()
                .any(|p| p["metadata"]["name"] == *n && is_ready(p))
        });
        if ok {
            Ok(())
        } else {
            Err(format!("{pods:#?}"))
        }
    });
    let records_after = pod_records(&dir3);
    for pod in ["s3", "s6"] {
        let (b, a) = (&records_before[pod], &records_after[pod]);
        assert_eq!(a["pod_ip"], b["pod_ip"], "pod {pod} changed IP");
        assert_eq!(a["sandbox_pid"], b["sandbox_pid"], "pod {pod}: new sandbox");
        assert_eq!(
            container_pids(a),
            container_pids(b),
            "pod {pod}: container processes changed"
        );
        for (c, pid) in container_pids(a) {
            assert!(
                proc_start(pid as i32).is_some(),
                "pod {pod} container {c} (pid {pid}) is not running"
            );
        }
        let api_ip = lab.pod(pod)["status"]["podIP"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(api_ip, ips[pod].to_string(), "pod {pod}: podIP in the API");
    }
    assert_eq!(netns_list(&node3), netns_before, "sandboxes on {node3}");
    lab.send_from("s1", "srv", &format!("{}:8080", ips["s6"]), "after-restart");

    // Deleting a pod frees its IP and removes its veth.
    let record = &records_after["s6"];
    let ip6 = ips["s6"].to_string();
    assert!(
        ipam_entries(&dir3).iter().any(|e| e.contains(&ip6)),
        "{ip6} not allocated under {}: {:?}",
        dir3.join("ipam").display(),
        ipam_entries(&dir3)
    );
    let host_veth = record["cni_result"]["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["sandbox"].as_str().unwrap_or("").is_empty() && i["name"] != "cni0")
        .and_then(|i| i["name"].as_str())
        .unwrap_or_else(|| panic!("no host veth in s6's CNI result: {record:#}"))
        .to_string();
    assert!(
        links_of(&node3).contains(&host_veth),
        "{host_veth} not on {node3}: {:?}",
        links_of(&node3)
    );
    lab.ok(&["delete", "pod", "s6"]);
    wait_for(Duration::from_secs(40), "s6 deleted and cleaned up", || {
        let gone = !lab.pods().iter().any(|p| p["metadata"]["name"] == "s6");
        let ip_free = !ipam_entries(&dir3).iter().any(|e| e.contains(&ip6));
        let veth_gone = !links_of(&node3).contains(&host_veth);
        let record_gone = !pod_records(&dir3).contains_key("s6");
        if gone && ip_free && veth_gone && record_gone {
            Ok(())
        } else {
            Err(format!(
                "pod gone from API {gone}, {ip6} freed {ip_free}, {host_veth} removed {veth_gone}, record removed {record_gone}"
            ))
        }
    });
    // The others are untouched.
    lab.send_from("s1", "srv", &format!("{}:8080", ips["s3"]), "still");
    eprintln!("whole test: {:.1} s", started.elapsed().as_secs_f64());
}

/// Named network namespaces of a node's pods (`<node>-…`).
fn netns_list(node: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let mut list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{node}-")))
        .map(str::to_string)
        .collect();
    list.sort();
    list
}

/// Starts the agent as `lab up` does (the lab module has no restart
/// function, and `lab up` refuses a lab with a dead agent): the same
/// command line, inside the node's network namespace, in a session of its
/// own, stdin from /dev/null, output appended to its log. Returns it and
/// its start time.
fn restart_agent(argv: &[String], node: &str, log: &Path) -> (std::process::Child, u64) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let ns = fs::File::open(format!("/run/netns/{node}")).unwrap();
    let out = fs::OpenOptions::new().append(true).open(log).unwrap();
    let err = out.try_clone().unwrap();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let fd = ns.as_raw_fd();
    // SAFETY: only setns and setsid, both async-signal-safe, run between
    // fork and exec, on an fd kept open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 || libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    drop(ns);
    let start = proc_start(pid).unwrap_or_else(|| {
        panic!(
            "the restarted agent (pid {pid}) exited at once; see {}",
            log.display()
        )
    });
    (child, start)
}

/// The addresses of a Service's Endpoints, ready and not ready.
fn endpoint_addresses(ep: &Value) -> (Vec<String>, Vec<String>) {
    let collect = |field: &str| -> Vec<String> {
        ep["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s[field].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a["ip"].as_str().map(str::to_owned))
            .collect()
    };
    (collect("addresses"), collect("notReadyAddresses"))
}

/// A pod whose readiness probe starts failing turns NotReady and leaves its Service's
/// ready endpoints; when it passes again, the pod is back.
#[test]
fn a_failing_readiness_probe_takes_the_pod_out_of_its_service() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let lab = Lab::with_prefix("lr");
    let out = Command::new(PODNET)
        .args([
            "lab",
            "up",
            "--name",
            &lab.name,
            "--nodes",
            "1",
            "--underlay-cidr",
            "172.31.10.0/24",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "lab up failed:\n{}", text(&out));
    // The probe runs in the pod, which shares the host's filesystem (lab pods have no
    // mount namespace of their own): a file the test creates and removes decides it.
    let flag = PathBuf::from(format!("/tmp/podnet-{}-ready", lab.name));
    struct RemoveOnDrop(PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }
    let _flag_guard = RemoveOnDrop(flag.clone());
    fs::write(&flag, b"ready").unwrap();
    let manifest = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: rd}}\nspec:\n  selector: {{app: rd}}\n  ports:\n  - {{port: 80, targetPort: 8080}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: rd-0, labels: {{app: rd}}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: srv\n    image: podnet\n    command: [\"{PODNET}\", \"probe\", \"serve\", \"--tcp\", \"0.0.0.0:8080\"]\n    readinessProbe:\n      exec: {{command: [\"test\", \"-e\", \"{flag}\"]}}\n      periodSeconds: 1\n      failureThreshold: 1\n",
        node = lab.node(1),
        flag = flag.display()
    );
    let out = lab.apply(&manifest);
    assert!(out.status.success(), "apply failed:\n{}", text(&out));

    let ip = wait_for(READY_WITHIN, "rd-0 Ready and in the Service", || {
        let pod = lab.pod("rd-0");
        let ip = pod["status"]["podIP"].as_str().unwrap_or("").to_owned();
        if !is_ready(&pod) || ip.is_empty() {
            return Err(format!("{:#}", pod["status"]));
        }
        let ep: Value = serde_json::from_str(&lab.ok(&["get", "ep", "rd", "-o", "json"])).unwrap();
        match endpoint_addresses(&ep) {
            (ready, _) if ready == vec![ip.clone()] => Ok(ip),
            other => Err(format!("endpoints {other:?}")),
        }
    });

    fs::remove_file(&flag).unwrap();
    wait_for(
        Duration::from_secs(30),
        "rd-0 NotReady and out of the ready endpoints",
        || {
            let pod = lab.pod("rd-0");
            if is_ready(&pod) {
                return Err("still Ready".into());
            }
            let ep: Value =
                serde_json::from_str(&lab.ok(&["get", "ep", "rd", "-o", "json"])).unwrap();
            match endpoint_addresses(&ep) {
                (ready, not_ready) if ready.is_empty() && not_ready == vec![ip.clone()] => Ok(()),
                other => Err(format!("endpoints {other:?}")),
            }
        },
    );

    fs::write(&flag, b"ready").unwrap();
    wait_for(
        Duration::from_secs(30),
        "rd-0 Ready and back in the Service",
        || {
            let ep: Value =
                serde_json::from_str(&lab.ok(&["get", "ep", "rd", "-o", "json"])).unwrap();
            match endpoint_addresses(&ep) {
                (ready, _) if ready == vec![ip.clone()] => Ok(()),
                other => Err(format!("endpoints {other:?}")),
            }
        },
    );
}
