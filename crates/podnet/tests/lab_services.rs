//! Services end to end on a real 3-node lab, once per proxy mode (nftables and
//! userspace), driven through the podnet CLI as a user would: a ClusterIP
//! reached from a pod and from the node itself on every node, spread over all
//! ready endpoints; a NodePort through every node's IP and a LoadBalancer IP
//! from a client outside the cluster (a namespace of the test's own on the
//! underlay); ClientIP affinity; endpoints leaving and entering rotation
//! (readiness, pod added and deleted) within seconds; a Service without
//! endpoints refusing at once; an agent restart that keeps the rules (and,
//! in nftables mode, an established connection); a deleted Service leaving
//! nothing behind; bad input rejected clearly. Needs root. One lab per mode,
//! taken down even when the test fails.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const PODNET: &str = env!("CARGO_BIN_EXE_podnet");
/// How long pods get to become Running and Ready.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// The bound on an endpoint change reaching the data path of every node:
/// the proxy needs well under a second; the rest is the readiness probe
/// period (1 s) and polling.
const ROTATION_WITHIN: Duration = Duration::from_secs(3);
/// The LoadBalancer ingress IP the test assigns, as a cloud controller would
/// (the lab's apiserver has no --lb-pool): TEST-NET-1, routed by the outside
/// client to a node.
/// The lab apiserver's `--lb-pool` (routed to a node by the outside client, as a router
/// announcing the pool would).
const LB_POOL: &str = "192.0.2.0/28";
/// The outside client's address on the lab's underlay (nodes are .11 and up).
const OUTSIDE_HOST: u32 = 200;

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

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"))
}

fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {} failed:\n{}",
        args.join(" "),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A lab of its own, taken down when dropped (also after a failure), with
/// the outside client namespace and a restarted agent.
struct Lab {
    name: String,
    mode: &'static str,
    kubeconfig: String,
    /// The test's client namespace on the underlay, outside the cluster.
    outside: Option<String>,
    /// An agent the test restarted and its start time.
    restarted_agent: Option<(Child, u64)>,
    /// The readiness flag files of the test's pods.
    flags: Vec<PathBuf>,
}

impl Lab {
    fn new(prefix: &str, mode: &'static str) -> Lab {
        let name = format!("{prefix}{}", std::process::id() % 100_000);
        Lab {
            kubeconfig: format!("/var/lib/podnet/{name}/kubeconfig"),
            name,
            mode,
            outside: None,
            restarted_agent: None,
            flags: Vec::new(),
        }
    }

    fn node(&self, i: u32) -> String {
        format!("{}-node{i}", self.name)
    }

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

    fn ok(&self, args: &[&str]) -> String {
        let out = self.podnet_in(args, "");
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

    fn apply_ok(&self, manifest: &str) {
        let out = self.apply(manifest);
        assert!(out.status.success(), "apply failed:\n{}", text(&out));
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}:\n{out}"))
    }

    fn service(&self, name: &str) -> Service {
        let svc = self.json(&["get", "svc", name]);
        let port = &svc["spec"]["ports"][0];
        Service {
            cluster_ip: svc["spec"]["clusterIP"].as_str().unwrap().to_string(),
            port: port["port"].as_u64().unwrap() as u16,
            node_port: port["nodePort"].as_u64().map(|p| p as u16),
        }
    }

    fn node_ips(&self) -> Vec<String> {
        (1..=3)
            .map(|i| {
                let node = self.json(&["get", "node", &self.node(i)]);
                node["status"]["addresses"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|a| a["type"] == "InternalIP")
                    .and_then(|a| a["address"].as_str())
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    /// The table the lab's proxy mode owns.
    fn table(&self) -> &'static str {
        match self.mode {
            "nftables" => "podnet-proxy",
            _ => "podnet-userspace",
        }
    }

    /// `nft list ruleset` in node `i`: the proxy's tables (one, or several
    /// when the proxy shards its services) and the node's other rules.
    fn rules(&self, i: u32) -> String {
        run_ok(
            "ip",
            &["netns", "exec", &self.node(i), "nft", "list", "ruleset"],
        )
    }

    fn pod_ready(&self, name: &str) -> bool {
        let pod = self.json(&["get", "pod", name]);
        pod["status"]["phase"] == "Running"
            && pod["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
    }

    fn wait_ready(&self, names: &[&str]) {
        wait_for(READY_WITHIN, "pods Running and Ready", || {
            let waiting: Vec<&&str> = names.iter().filter(|n| !self.pod_ready(n)).collect();
            if waiting.is_empty() {
                Ok(())
            } else {
                Err(format!("not ready: {waiting:?}"))
            }
        });
    }

    /// Ready endpoint addresses of a Service (`get endpoints`).
    fn ready_endpoints(&self, svc: &str) -> BTreeSet<String> {
        let ep = self.json(&["get", "endpoints", svc]);
        ep["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a["ip"].as_str().map(str::to_owned))
            .collect()
    }

    fn pod_ip(&self, name: &str) -> String {
        let pod = self.json(&["get", "pod", name]);
        pod["status"]["podIP"].as_str().unwrap().to_string()
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
        if let Some(ns) = self.outside.take() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
        for flag in &self.flags {
            let _ = fs::remove_file(flag);
        }
    }
}

struct Service {
    cluster_ip: String,
    port: u16,
    node_port: Option<u16>,
}

impl Service {
    fn addr(&self) -> String {
        format!("{}:{}", self.cluster_ip, self.port)
    }
}

/// Where a probe runs: in a pod (through `podnet exec`) or in a namespace
/// (a node's, or the outside client's).
#[derive(Clone, Debug)]
enum From {
    Pod(String),
    Netns(String),
}

/// One TCP exchange through `podnet probe send`: the answering pod's name,
/// or the error text.
fn probe(lab: &Lab, from: &From, addr: &str) -> Result<String, String> {
    let send = [PODNET, "probe", "send", "--tcp", addr, "--data", "x"];
    let out = match from {
        From::Pod(pod) => {
            let mut args = vec!["exec", pod.as_str(), "--"];
            args.extend(send);
            args.extend(["--timeout", "2"]);
            lab.podnet_in(&args, "")
        }
        From::Netns(ns) => {
            let mut args = vec!["netns", "exec", ns.as_str()];
            args.extend(send);
            args.extend(["--timeout", "2"]);
            run("ip", &args)
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.split_once(" got: ") {
        Some((name, _)) if out.status.success() => Ok(name.trim().to_string()),
        _ => Err(text(&out)),
    }
}

/// The names that answer `n` connects; panics on a failed connect.
fn names_seen(lab: &Lab, from: &From, addr: &str, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| {
            probe(lab, from, addr)
                .unwrap_or_else(|e| panic!("{from:?} -> {addr} failed ({}): {e}", lab.mode))
        })
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Polls `check` every 100 ms until it returns `Ok`, or panics with `what`
/// and the last state after `within`.
fn wait_for<T>(within: Duration, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what}: not done after {:.1} s; last seen:\n{last}",
                within.as_secs_f64()
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
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

fn server_pod(name: &str, node: &str, readiness: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: s}}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: srv\n    image: podnet\n    command: [\"{PODNET}\", \"probe\", \"serve\", \"--tcp\", \"0.0.0.0:8080\"]\n    readinessProbe:\n      {readiness}\n      periodSeconds: 1\n      failureThreshold: 1\n"
    )
}

fn client_pod(name: &str, node: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: podnet\n    command: [\"/bin/sleep\", \"3600\"]\n"
    )
}

fn service(name: &str, kind: &str, selector: &str, port: u16, extra: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  type: {kind}\n  selector: {{app: {selector}}}\n  ports: [{{port: {port}, targetPort: 8080}}]\n{extra}"
    )
}

/// Brings the lab up with `mode` and makes the pods and Services the checks
/// use: s1..s3 (one per node; s3's readiness follows a flag file), clients
/// c1..c3, and the Services web (NodePort), lb (LoadBalancer), aff
/// (ClientIP affinity) and empty (selects nothing).
fn set_up(lab: &mut Lab) {
    let out = run(
        PODNET,
        &[
            "lab",
            "up",
            "--name",
            &lab.name,
            "--nodes",
            "3",
            "--proxy-mode",
            lab.mode,
        ],
    );
    assert!(out.status.success(), "lab up failed:\n{}", text(&out));
    let flag = PathBuf::from(format!("/tmp/podnet-{}-s3-ready", lab.name));
    fs::write(&flag, b"ready").unwrap();
    lab.flags.push(flag.clone());
    let tcp = "tcpSocket: {port: 8080}";
    let exec = format!(
        "exec: {{command: [\"test\", \"-e\", \"{}\"]}}",
        flag.display()
    );
    let mut manifest = String::new();
    for i in 1..=3 {
        let readiness = if i == 3 { exec.as_str() } else { tcp };
        manifest += &server_pod(&format!("s{i}"), &lab.node(i), readiness);
        manifest += &client_pod(&format!("c{i}"), &lab.node(i));
    }
    manifest += &service("web", "NodePort", "s", 80, "");
    manifest += &service("lb", "LoadBalancer", "s", 81, "");
    manifest += &service("aff", "ClusterIP", "s", 82, "  sessionAffinity: ClientIP\n");
    manifest += &service("empty", "ClusterIP", "nothing", 83, "");
    lab.apply_ok(&manifest);
    lab.wait_ready(&["s1", "s2", "s3", "c1", "c2", "c3"]);
    wait_for(READY_WITHIN, "web has 3 ready endpoints", || {
        let ready = lab.ready_endpoints("web");
        if ready.len() == 3 {
            Ok(())
        } else {
            Err(format!("{ready:?}"))
        }
    });
}

/// A namespace of the test's own with a veth on the lab's underlay bridge and
/// a free underlay address: a client outside the cluster. Its route to the
/// LoadBalancer IP goes via node 2, as a network announcing the LB IP would.
fn make_outside_client(lab: &mut Lab, node_ips: &[String]) -> String {
    let ns = format!("pn-{}-out", lab.name);
    let underlay = format!("{}-underlay", lab.name);
    let port = format!("{}o0", lab.name);
    run_ok("ip", &["netns", "add", &ns]);
    lab.outside = Some(ns.clone());
    let node1: std::net::Ipv4Addr = node_ips[0].parse().unwrap();
    let base = u32::from(node1) & 0xffff_ff00;
    let me = std::net::Ipv4Addr::from(base + OUTSIDE_HOST);
    run_ok(
        "ip",
        &[
            "-n", &underlay, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ],
    );
    run_ok(
        "ip",
        &[
            "-n",
            &underlay,
            "link",
            "set",
            &port,
            "master",
            "underlay0",
            "up",
        ],
    );
    run_ok(
        "ip",
        &["-n", &ns, "addr", "add", &format!("{me}/24"), "dev", "eth0"],
    );
    run_ok("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
    run_ok("ip", &["-n", &ns, "link", "set", "lo", "up"]);
    run_ok(
        "ip",
        &["-n", &ns, "route", "add", LB_POOL, "via", &node_ips[1]],
    );
    ns
}

/// The load-balancer IP the apiserver allocated to Service `name` from the lab's pool.
fn allocated_lb_ip(lab: &Lab, name: &str) -> String {
    use k8s_openapi::api::core::v1::Service as K8sService;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&lab.kubeconfig).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let api: kube::Api<K8sService> = kube::Api::namespaced(client, "default");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let svc = api.get_status(name).await.unwrap();
            let ip = svc
                .status
                .and_then(|s| s.load_balancer)
                .and_then(|lb| lb.ingress)
                .and_then(|i| i.into_iter().find_map(|i| i.ip));
            if let Some(ip) = ip {
                return ip;
            }
            assert!(
                Instant::now() < deadline,
                "Service {name} got no load-balancer IP from the lab's --lb-pool"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// ClusterIP from a pod and from the node itself on every node: each source
/// sees all three backends (on its own node and the others) in 30 connects.
fn check_cluster_ip(lab: &Lab, web: &Service) {
    let all = set(&["s1", "s2", "s3"]);
    for i in 1..=3 {
        for from in [From::Pod(format!("c{i}")), From::Netns(lab.node(i))] {
            let seen = names_seen(lab, &from, &web.addr(), 30);
            assert_eq!(
                seen,
                all,
                "{}: {from:?} -> {} in 30 connects",
                lab.mode,
                web.addr()
            );
        }
    }
}

/// NodePort through every node's IP and the LoadBalancer IP, from outside.
fn check_from_outside(lab: &Lab, outside: &str, node_ips: &[String]) {
    let from = From::Netns(outside.to_string());
    let all = set(&["s1", "s2", "s3"]);
    let web = lab.service("web");
    let node_port = web.node_port.expect("web has a nodePort");
    for ip in node_ips {
        let addr = format!("{ip}:{node_port}");
        let seen = names_seen(lab, &from, &addr, 30);
        assert_eq!(seen, all, "{}: outside -> NodePort {addr}", lab.mode);
    }
    let lb_ip = allocated_lb_ip(lab, "lb");
    assert!(
        lb_ip.starts_with("192.0.2."),
        "{}: the LB IP {lb_ip} is not from the lab's pool {LB_POOL}",
        lab.mode
    );
    let addr = format!("{lb_ip}:81");
    // The proxy picks up the ingress IP at its next sync.
    wait_for(Duration::from_secs(10), "the LB IP answers", || {
        probe(lab, &from, &addr)
    });
    let seen = names_seen(lab, &from, &addr, 30);
    assert_eq!(seen, all, "{}: outside -> LoadBalancer {addr}", lab.mode);
}

/// ClientIP affinity: every connect of one client lands on one backend.
fn check_affinity(lab: &Lab) {
    let aff = lab.service("aff");
    for from in [From::Pod("c2".into()), From::Netns(lab.node(3))] {
        let seen = names_seen(lab, &from, &aff.addr(), 15);
        assert_eq!(seen.len(), 1, "{}: {from:?} -> aff saw {seen:?}", lab.mode);
    }
}

/// Polls rounds of 12 connects from c1 until `done(names of the round)`;
/// returns the time taken. A failed connect counts as a round not done.
fn time_until(lab: &Lab, addr: &str, what: &str, done: impl Fn(&BTreeSet<String>) -> bool) -> f64 {
    let started = Instant::now();
    let from = From::Pod("c1".into());
    wait_for(Duration::from_secs(15), what, || {
        let mut seen = BTreeSet::new();
        for _ in 0..12 {
            seen.insert(probe(lab, &from, addr)?);
        }
        if done(&seen) {
            Ok(())
        } else {
            Err(format!("round saw {seen:?}"))
        }
    });
    started.elapsed().as_secs_f64()
}

/// An endpoint leaves and enters rotation: s3 made NotReady by its probe and
/// Ready again, s4 added on node 3 and deleted. Each time is measured from
/// the change reaching the API (Endpoints) to the data path, and bounded.
fn check_rotation(lab: &Lab, web: &Service) {
    let addr = web.addr();
    let flag = &lab.flags[0];
    let s3_ip = lab.pod_ip("s3");
    fs::remove_file(flag).unwrap();
    wait_endpoints(lab, "s3 NotReady leaves web's endpoints", |ready| {
        !ready.contains(&s3_ip)
    });
    let t = time_until(lab, &addr, "s3 out of rotation", |seen| {
        !seen.contains("s3")
    });
    println!(
        "{}: NotReady endpoint out of rotation {t:.2} s after the API",
        lab.mode
    );
    assert_out_of_rotation(lab, &addr, "s3");
    assert!(
        t <= ROTATION_WITHIN.as_secs_f64(),
        "{}: s3 left after {t:.2} s",
        lab.mode
    );

    fs::write(flag, b"ready").unwrap();
    wait_endpoints(lab, "s3 Ready again in web's endpoints", |ready| {
        ready.contains(&s3_ip)
    });
    let t = time_until(lab, &addr, "s3 back in rotation", |seen| {
        seen.contains("s3")
    });
    println!(
        "{}: Ready endpoint in rotation {t:.2} s after the API",
        lab.mode
    );
    assert!(
        t <= ROTATION_WITHIN.as_secs_f64(),
        "{}: s3 back after {t:.2} s",
        lab.mode
    );

    lab.apply_ok(&server_pod("s4", &lab.node(3), "tcpSocket: {port: 8080}"));
    lab.wait_ready(&["s4"]);
    let s4_ip = lab.pod_ip("s4");
    wait_endpoints(lab, "s4 in web's endpoints", |ready| ready.contains(&s4_ip));
    let t = time_until(lab, &addr, "s4 in rotation", |seen| seen.contains("s4"));
    println!("{}: added pod in rotation {t:.2} s after the API", lab.mode);
    assert!(
        t <= ROTATION_WITHIN.as_secs_f64(),
        "{}: s4 in after {t:.2} s",
        lab.mode
    );

    let mut delete = Command::new(PODNET)
        .args(["--kubeconfig", &lab.kubeconfig, "delete", "pod", "s4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_endpoints(lab, "s4 out of web's endpoints", |ready| {
        !ready.contains(&s4_ip)
    });
    let t = time_until(lab, &addr, "s4 out of rotation", |seen| {
        !seen.contains("s4")
    });
    println!(
        "{}: deleted pod out of rotation {t:.2} s after the API",
        lab.mode
    );
    assert!(
        t <= ROTATION_WITHIN.as_secs_f64(),
        "{}: s4 left after {t:.2} s",
        lab.mode
    );
    assert!(delete.wait().unwrap().success(), "delete pod s4 failed");
    assert_out_of_rotation(lab, &addr, "s4");
}

fn wait_endpoints(lab: &Lab, what: &str, done: impl Fn(&BTreeSet<String>) -> bool) {
    wait_for(Duration::from_secs(15), what, || {
        let ready = lab.ready_endpoints("web");
        if done(&ready) {
            Ok(())
        } else {
            Err(format!("ready endpoints {ready:?}"))
        }
    });
}

/// 30 more connects from every client pod: none reaches `gone`, none fails.
fn assert_out_of_rotation(lab: &Lab, addr: &str, gone: &str) {
    for i in 1..=3 {
        let seen = names_seen(lab, &From::Pod(format!("c{i}")), addr, 30);
        assert!(
            !seen.contains(gone),
            "{}: c{i} still reaches {gone}: {seen:?}",
            lab.mode
        );
    }
}

/// A Service without endpoints refuses at once (ECONNREFUSED, under a
/// second), `get endpoints` shows `<none>`, and web keeps answering.
fn check_no_endpoints(lab: &Lab, web: &Service) {
    let empty = lab.service("empty");
    let listing = lab.ok(&["get", "endpoints", "empty"]);
    assert!(
        listing.contains("<none>"),
        "get endpoints empty:\n{listing}"
    );
    for from in [From::Pod("c1".into()), From::Netns(lab.node(2))] {
        let started = Instant::now();
        let err =
            probe(lab, &from, &empty.addr()).expect_err("a Service without endpoints answered");
        let took = started.elapsed();
        assert!(
            err.contains("Connection refused"),
            "{}: {from:?} -> empty: {err}",
            lab.mode
        );
        assert!(
            took < Duration::from_secs(1),
            "{}: refusal took {took:?}",
            lab.mode
        );
        probe(lab, &from, &web.addr()).unwrap();
    }
}

/// Bad Services fail in `podnet apply` with the API's reason and leave
/// nothing behind.
fn check_bad_input(lab: &Lab) {
    let cases = [
        (
            "bad-port",
            service("bad-port", "ClusterIP", "s", 0, "").replace("port: 0,", "port: 70000,"),
            "must be between 1 and 65535",
        ),
        (
            "bad-np",
            service("bad-np", "NodePort", "s", 80, "")
                .replace("targetPort: 8080}", "targetPort: 8080, nodePort: 20000}"),
            "not in the valid range",
        ),
    ];
    for (name, manifest, reason) in cases {
        let out = lab.apply(&manifest);
        assert!(!out.status.success(), "apply of {name} succeeded");
        assert!(text(&out).contains(reason), "apply {name}: {}", text(&out));
        let get = lab.podnet_in(&["get", "svc", name], "");
        assert!(!get.status.success(), "{name} exists after a failed apply");
    }
}

/// Kills node 1's agent and restarts it with the same command line: the
/// rules come back identical, new connections work, and in nftables mode an
/// established connection through a Service (iperf3 from c1) lives on.
fn check_agent_restart(lab: &mut Lab, web: &Service) {
    let before = lab.rules(1);
    let iperf = (lab.mode == "nftables").then(|| start_iperf(lab));
    restart_agent(lab, 1);
    wait_for(
        Duration::from_secs(20),
        "identical rules after the restart",
        || {
            let after = lab.rules(1);
            if canonical(&after) == canonical(&before) {
                Ok(())
            } else {
                Err(format!("before:\n{before}\nafter:\n{after}"))
            }
        },
    );
    let seen = names_seen(lab, &From::Pod("c1".into()), &web.addr(), 30);
    assert_eq!(
        seen,
        set(&["s1", "s2", "s3"]),
        "{}: after the restart",
        lab.mode
    );
    if let Some((child, log)) = iperf {
        let out = child.wait_with_output().unwrap();
        let report = fs::read_to_string(&log).unwrap_or_default();
        let _ = fs::remove_file(&log);
        assert!(
            out.status.success() && report.contains("receiver"),
            "the iperf3 connection through the Service broke over the agent restart:\n{report}{}",
            text(&out)
        );
        println!("nftables: an iperf3 connection through a ClusterIP outlived the agent restart");
    }
}

/// A ruleset listing as a sorted list of its tables' chains, sets and maps. The full
/// sync of a restarted proxy recreates the table, so nft lists the same
/// objects in another order; the order of a set's or map's elements is not
/// meaning either (a chain's rule order is, and is kept). The elements of
/// `affinity-` sets are state (clients seen), not rules: a full resync
/// forgets them (crates/proxy/README.md), so they are left out.
fn canonical(listing: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    let mut table = "";
    for line in listing.lines() {
        let top = line.starts_with('\t') && !line.starts_with("\t\t");
        if line.starts_with("table ") {
            table = line;
        } else if top && line.trim() == "}" {
            if let Some(block) = current.take() {
                blocks.push(format!("{table}\n{}", canonical_block(block)));
            }
        } else if top {
            current = Some(vec![line]);
        } else if let Some(block) = current.as_mut() {
            block.push(line);
        }
    }
    blocks.sort();
    blocks
}

fn canonical_block(block: Vec<&str>) -> String {
    let head = block[0].trim();
    if !(head.starts_with("set ") || head.starts_with("map ")) {
        return block.join("\n");
    }
    let mut body: Vec<&str> = block[1..].to_vec();
    if head.starts_with("set affinity-") {
        let declaration = ["type ", "size ", "flags ", "timeout "];
        body.retain(|l| declaration.iter().any(|d| l.trim().starts_with(d)));
    }
    body.sort();
    format!("{}\n{}", block[0], body.join("\n"))
}

/// iperf3 from c1 to Service ip3 (server pod on node 2), 1 Mbit/s for 10 s;
/// returns once it has reported its first second, so the connection is
/// established before the agent goes.
fn start_iperf(lab: &Lab) -> (Child, PathBuf) {
    let ip3 = lab.service("ip3");
    let log = PathBuf::from(format!("/tmp/podnet-{}-iperf.log", lab.name));
    let port = ip3.port.to_string();
    let child = Command::new(PODNET)
        .args([
            "--kubeconfig",
            &lab.kubeconfig,
            "exec",
            "c1",
            "--",
            "iperf3",
        ])
        .args(["-c", &ip3.cluster_ip, "-p", &port, "-t", "10", "-i", "1"])
        .args(["-b", "1M", "--logfile"])
        .arg(&log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), "iperf3 transferring", || {
        let report = fs::read_to_string(&log).unwrap_or_default();
        if report.contains("sec") {
            Ok(())
        } else {
            Err(report)
        }
    });
    (child, log)
}

/// SIGKILLs node `i`'s agent and starts it again as `lab up` did (same
/// command line, in the node's namespace, own session, output to its log),
/// recorded in the lab's processes.json so `lab down` stops it; waits until
/// its proxy has listed the API and synced.
fn restart_agent(lab: &mut Lab, i: u32) {
    let node = lab.node(i);
    let processes_path = PathBuf::from(format!("/run/podnet/{}/processes.json", lab.name));
    let mut processes: Value =
        serde_json::from_str(&fs::read_to_string(&processes_path).unwrap()).unwrap();
    let agent = processes["processes"]
        .as_array()
        .unwrap()
        .iter()
        .position(|p| p["component"] == "agent" && p["node"] == node.as_str())
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
    let (child, start) = spawn_in_netns(&argv, &node, &log);
    processes["processes"][agent]["pid"] = (child.id() as i32).into();
    processes["processes"][agent]["start_time"] = start.into();
    lab.restarted_agent = Some((child, start));
    fs::write(
        &processes_path,
        serde_json::to_string_pretty(&processes).unwrap(),
    )
    .unwrap();
    let synced = match lab.mode {
        "nftables" => "full sync of the service rules done",
        _ => "listed Services and EndpointSlices",
    };
    wait_for(
        Duration::from_secs(20),
        "the restarted proxy synced",
        || {
            let all = fs::read(&log).unwrap_or_default();
            let new = String::from_utf8_lossy(all.get(log_len..).unwrap_or_default()).into_owned();
            if new.contains(synced) {
                Ok(())
            } else {
                Err(new)
            }
        },
    );
}

fn spawn_in_netns(argv: &[String], node: &str, log: &Path) -> (Child, u64) {
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

/// Deleting web leaves none of its rules, chains, sets or map elements on
/// any node (nothing naming it, its ClusterIP or its NodePort), and lb
/// keeps working.
fn check_service_deleted(lab: &Lab, web: &Service) {
    let before = lab.rules(1);
    let table = format!("table ip {}", lab.table());
    assert!(before.contains(&table), "no {table} in node1:\n{before}");
    assert!(
        before.contains(&web.cluster_ip),
        "web's ClusterIP is not in:\n{before}"
    );
    lab.ok(&["delete", "svc", "web"]);
    let node_port = web.node_port.unwrap().to_string();
    for i in 1..=3 {
        wait_for(Duration::from_secs(10), "web's rules gone", || {
            let rules = lab.rules(i);
            let left: Vec<&str> = rules
                .lines()
                .filter(|l| {
                    l.contains("default/web/")
                        || has_token(l, &web.cluster_ip)
                        || has_token(l, &node_port)
                })
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("node{i}: {left:#?}"))
            }
        });
    }
    let lb = lab.service("lb");
    probe(lab, &From::Pod("c3".into()), &lb.addr()).unwrap();
}

/// Whether `line` holds `token` as a whole address or number (10.96.0.1
/// is not in 10.96.0.10).
fn has_token(line: &str, token: &str) -> bool {
    line.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .any(|w| w == token)
}

/// `lab down` removes every namespace, and with them the proxy's tables.
fn check_lab_down(lab: &Lab) {
    run_ok(PODNET, &["lab", "down", "--name", &lab.name]);
    let left = run_ok("ip", &["netns", "list"]);
    let prefix = format!("{}-", lab.name);
    let ours: Vec<&str> = left.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert!(ours.is_empty(), "namespaces left after lab down: {ours:?}");
}

fn services_end_to_end(prefix: &str, mode: &'static str) {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let started = Instant::now();
    let mut lab = Lab::new(prefix, mode);
    set_up(&mut lab);
    if mode == "nftables" {
        let iperf = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: ips, labels: {app: ips}}\nspec:\n  nodeName: NODE\n  containers:\n  - name: srv\n    image: podnet\n    command: [\"iperf3\", \"-s\", \"-p\", \"8080\"]\n    readinessProbe:\n      tcpSocket: {port: 8080}\n      periodSeconds: 1\n";
        lab.apply_ok(
            &(iperf.replace("NODE", &lab.node(2)) + &service("ip3", "ClusterIP", "ips", 5201, "")),
        );
        lab.wait_ready(&["ips"]);
    }
    println!(
        "{mode}: lab and pods ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let web = lab.service("web");
    let node_ips = lab.node_ips();
    check_cluster_ip(&lab, &web);
    let outside = make_outside_client(&mut lab, &node_ips);
    check_from_outside(&lab, &outside, &node_ips);
    check_affinity(&lab);
    check_no_endpoints(&lab, &web);
    check_bad_input(&lab);
    check_rotation(&lab, &web);
    check_agent_restart(&mut lab, &web);
    check_service_deleted(&lab, &web);
    check_lab_down(&lab);
    println!(
        "{mode}: all checks in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn services_work_end_to_end_with_the_nftables_proxy() {
    services_end_to_end("sn", "nftables");
}

#[test]
fn services_work_end_to_end_with_the_userspace_proxy() {
    services_end_to_end("su", "userspace");
}
