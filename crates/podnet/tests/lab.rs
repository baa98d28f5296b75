//! `podnet lab up|down|status` against the real kernel: a lab comes up with
//! real namespaces, an apiserver and agents, and `lab down` leaves the
//! machine exactly as it was. Needs root. Every test uses a lab name of its
//! own and takes its lab down even when it fails.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

const PODNET: &str = env!("CARGO_BIN_EXE_podnet");

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A lab name unique to this test process and test.
fn lab_name(tag: char) -> String {
    format!("t{}{tag}", std::process::id())
}

fn podnet(args: &[&str]) -> Output {
    Command::new(PODNET).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
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

/// Takes the lab down when dropped, so a failing test leaves nothing behind.
struct Lab {
    name: String,
}

impl Lab {
    fn new(tag: char) -> Lab {
        Lab {
            name: lab_name(tag),
        }
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

fn cmd_lines(program: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new(program).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// What a lab could leave behind on the machine.
#[derive(Debug, PartialEq)]
struct Snapshot {
    /// The lab's named namespaces (`ip netns list`).
    namespaces: Vec<String>,
    /// Links in the root namespace and in every namespace of the lab.
    links: Vec<String>,
    /// Processes whose command line names the lab, or which sit in one of
    /// `netns_inodes`.
    processes: Vec<String>,
    /// Mount points under /run/netns (the lab's) and /run/podnet/<lab>.
    mounts: Vec<String>,
    /// Files under the lab's directories.
    files: Vec<String>,
    /// nftables tables of the root namespace.
    nft_tables: Vec<String>,
}

fn snapshot(lab: &str, netns_inodes: &BTreeSet<u64>) -> Snapshot {
    let mine = |n: &str| n.starts_with(&format!("{lab}-"));
    let namespaces: Vec<String> = cmd_lines("ip", &["netns", "list"])
        .into_iter()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|n| mine(n))
        .collect();
    let mut links: Vec<String> = cmd_lines("ip", &["-o", "link", "show"])
        .into_iter()
        .map(|l| link_name(&l))
        .collect();
    for ns in &namespaces {
        links.extend(
            cmd_lines("ip", &["-n", ns, "-o", "link", "show"])
                .into_iter()
                .map(|l| format!("{ns}: {}", link_name(&l))),
        );
    }
    let mut processes = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let cmdline = fs::read(entry.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let in_lab_ns = fs::metadata(entry.path().join("ns/net"))
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                netns_inodes.contains(&m.ino())
            })
            .unwrap_or(false);
        if cmdline.contains(&format!("/{lab}/"))
            || cmdline.contains(&format!("{lab}-node"))
            || in_lab_ns
        {
            processes.push(format!("{pid} {cmdline}"));
        }
    }
    let mounts = fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| {
            m.starts_with(&format!("/run/netns/{lab}-"))
                || m.starts_with(&format!("/run/podnet/{lab}"))
                || m.starts_with(&format!("/var/lib/podnet/{lab}"))
        })
        .map(str::to_string)
        .collect();
    let mut files = Vec::new();
    for dir in [
        format!("/run/podnet/{lab}"),
        format!("/var/lib/podnet/{lab}"),
    ] {
        walk(Path::new(&dir), &mut files);
    }
    let nft_tables = cmd_lines("nft", &["list", "tables"]);
    Snapshot {
        namespaces,
        links,
        processes,
        mounts,
        files,
        nft_tables,
    }
}

/// `3: eth0@if2: <...> ...` -> `eth0@if2`; link indexes differ run to run.
fn link_name(line: &str) -> String {
    line.split(':').nth(1).unwrap_or("").trim().to_string()
}

fn walk(dir: &Path, out: &mut Vec<String>) {
    if fs::symlink_metadata(dir).is_err() {
        return;
    }
    out.push(dir.display().to_string());
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.filter_map(|e| e.ok()) {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(&p, out);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
}

fn netns_inode(name: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(format!("/run/netns/{name}")).unwrap().ino()
}

fn json(path: &str) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn three_nodes_up_then_down_leaves_the_machine_as_before() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let lab = Lab::new('a');
    let name = lab.name.as_str();
    let before = snapshot(name, &BTreeSet::new());

    let out = ok(&["lab", "up", "--name", name, "--nodes", "3"]);
    assert!(out.contains("3/3 nodes Ready"), "{out}");
    assert!(
        out.contains(&format!(
            "export KUBECONFIG=/var/lib/podnet/{name}/kubeconfig"
        )),
        "{out}"
    );

    // The underlay: bridge with its address, one port per node.
    let underlay = format!("{name}-underlay");
    let addrs = cmd_lines(
        "ip",
        &["-n", &underlay, "-o", "-4", "addr", "show", "underlay0"],
    );
    assert!(
        addrs.iter().any(|l| l.contains("172.30.0.1/24")),
        "{addrs:?}"
    );
    for i in 1..=3 {
        let port = cmd_lines(
            "ip",
            &[
                "-n",
                &underlay,
                "-o",
                "link",
                "show",
                &format!("{name}n{i}"),
            ],
        );
        assert!(
            port.iter().any(|l| l.contains("master underlay0")),
            "{port:?}"
        );
        // The node: eth0 with its address, forwarding on, a default route via the underlay
        // bridge (as a real node has one: its own traffic to a ClusterIP needs it).
        let node = format!("{name}-node{i}");
        let addrs = cmd_lines("ip", &["-n", &node, "-o", "-4", "addr", "show", "eth0"]);
        assert!(
            addrs
                .iter()
                .any(|l| l.contains(&format!("172.30.0.{}/24", 10 + i))),
            "{addrs:?}"
        );
        let routes: Vec<String> = cmd_lines("ip", &["-n", &node, "route", "show", "default"])
            .iter()
            .map(|l| l.trim_end().to_string())
            .collect();
        assert_eq!(
            routes,
            vec!["default via 172.30.0.1 dev eth0".to_string()],
            "the default route of node {node}"
        );
        let fwd = cmd_lines(
            "ip",
            &[
                "netns",
                "exec",
                &node,
                "cat",
                "/proc/sys/net/ipv4/ip_forward",
            ],
        );
        assert_eq!(fwd, vec!["1".to_string()]);
    }

    // The records.
    let state = json(&format!("/var/lib/podnet/{name}/lab.json"));
    assert_eq!(state["name"], name);
    assert_eq!(state["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(state["nodes"][1]["name"], format!("{name}-node2"));
    assert_eq!(state["nodes"][1]["node_ip"], "172.30.0.12");
    assert_eq!(state["backend"], "vxlan");
    assert_eq!(state["proxy_mode"], "nftables");
    assert_eq!(state["store"], "embedded");
    let procs = json(&format!("/run/podnet/{name}/processes.json"));
    let procs = procs["processes"].as_array().unwrap();
    assert_eq!(
        procs.iter().filter(|p| p["component"] == "agent").count(),
        3
    );
    assert_eq!(
        procs
            .iter()
            .filter(|p| p["component"] == "apiserver")
            .count(),
        1
    );
    for p in procs {
        let pid = p["pid"].as_i64().unwrap();
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "{p} is not running"
        );
    }
    // Agents run inside their node's namespace; the apiserver in the root one.
    let agent1 = procs
        .iter()
        .find(|p| p["node"] == format!("{name}-node1"))
        .unwrap();
    let agent_ns = fs::read_link(format!("/proc/{}/ns/net", agent1["pid"])).unwrap();
    let node1_ns = format!("net:[{}]", netns_inode(&format!("{name}-node1")));
    assert_eq!(agent_ns.display().to_string(), node1_ns);

    // A pod on every node, so that `lab down` has sandboxes, their
    // namespaces and container processes to remove.
    let kubeconfig = format!("/var/lib/podnet/{name}/kubeconfig");
    let pods = run_pods(&kubeconfig, name, 3);
    let pod_namespaces: Vec<String> = cmd_lines("ip", &["netns", "list"])
        .into_iter()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|n| n.starts_with(&format!("{name}-node")) && n.contains("-pod-"))
        .collect();
    assert_eq!(pod_namespaces.len(), pods, "{pod_namespaces:?}");

    // Nothing was added to the root namespace while the lab is up.
    let lab_namespaces: Vec<String> = std::iter::once(underlay.clone())
        .chain((1..=3).map(|i| format!("{name}-node{i}")))
        .chain(pod_namespaces.iter().cloned())
        .collect();
    let inodes: BTreeSet<u64> = lab_namespaces.iter().map(|n| netns_inode(n)).collect();
    // Held open until the last snapshot: a namespace's inode number is reused once the
    // namespace is gone, and other tests create namespaces meanwhile, so only a held one
    // keeps "a process in one of the lab's namespaces" meaning the lab's.
    let _held: Vec<fs::File> = lab_namespaces
        .iter()
        .map(|n| fs::File::open(format!("/run/netns/{n}")).unwrap())
        .collect();
    let during = snapshot(name, &inodes);
    assert_eq!(
        during
            .links
            .iter()
            .filter(|l| !l.contains(": "))
            .collect::<Vec<_>>(),
        before.links.iter().collect::<Vec<_>>(),
        "root namespace links changed"
    );
    assert_eq!(
        during.nft_tables, before.nft_tables,
        "root nftables changed"
    );

    let out = ok(&["lab", "down", "--name", name]);
    assert!(out.contains("stopped sandbox of pod default/p1"), "{out}");
    assert!(
        out.contains(&format!("removed network namespace {name}-node3")),
        "{out}"
    );
    assert!(out.contains("stopped apiserver"), "{out}");
    assert!(out.contains(&format!("lab {name} is down")), "{out}");
    let after = snapshot(name, &inodes);
    assert_eq!(after, before);

    let out = ok(&["lab", "down", "--name", name]);
    assert!(out.contains("nothing to remove"), "{out}");
}

/// Creates pods p1..pN, pod i bound to node i, and waits until every pod of the lab runs
/// (the lab's kube-dns pods too); their count.
fn run_pods(kubeconfig: &str, lab: &str, n: u32) -> usize {
    use std::io::Write;
    let mut manifest = String::new();
    for i in 1..=n {
        manifest.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}}}\nspec:\n  nodeName: {lab}-node{i}\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sleep\", \"600\"]\n"
        ));
    }
    let mut child = Command::new(PODNET)
        .args(["--kubeconfig", kubeconfig, "apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "podnet apply: {}", text(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = podnet(&[
            "--kubeconfig",
            kubeconfig,
            "get",
            "pods",
            "-A",
            "--no-headers",
        ]);
        let listing = text(&out);
        let pods = listing.lines().count();
        let running = listing.lines().filter(|l| l.contains("Running")).count();
        // The lab's own kube-dns pods (kube-system) have sandboxes too.
        if pods > n as usize && running == pods {
            return pods;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pods not Running after 30 s:\n{listing}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn up_twice_adopts_the_running_lab() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let lab = Lab::new('b');
    let name = lab.name.as_str();
    ok(&[
        "lab",
        "up",
        "--name",
        name,
        "--nodes",
        "1",
        "--underlay-cidr",
        "172.31.5.0/24",
    ]);
    let procs = fs::read_to_string(format!("/run/podnet/{name}/processes.json")).unwrap();
    let out = ok(&["lab", "up", "--name", name]);
    assert!(out.contains("already up; adopting"), "{out}");
    assert!(out.contains(&format!("{name}-node1")), "{out}");
    assert_eq!(
        fs::read_to_string(format!("/run/podnet/{name}/processes.json")).unwrap(),
        procs,
        "adopting must not start anything"
    );
    // (A larger --nodes grows the lab: see lab_overlay; another backend is refused.)
    let err = fails(&["lab", "up", "--name", name, "--backend", "host-gw"]);
    assert!(err.contains("--backend host-gw (it uses vxlan)"), "{err}");
    assert!(
        err.contains(&format!("podnet lab down --name {name}")),
        "{err}"
    );
}

#[test]
fn status_shows_nodes_agents_and_apiserver() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let lab = Lab::new('c');
    let name = lab.name.as_str();
    ok(&[
        "lab",
        "up",
        "--name",
        name,
        "--nodes",
        "2",
        "--underlay-cidr",
        "172.31.6.0/24",
    ]);
    let out = ok(&["lab", "status", "--name", name]);
    assert!(out.contains("NODE"), "{out}");
    assert!(out.contains("/readyz ok"), "{out}");
    for i in 1..=2 {
        let row = out
            .lines()
            .find(|l| l.starts_with(&format!("{name}-node{i} ")))
            .unwrap_or_else(|| panic!("no row for node{i}:\n{out}"));
        assert!(row.contains("present"), "{row}");
        assert!(row.contains("running"), "{row}");
        assert!(row.contains("True"), "{row}");
        assert!(row.contains(" available "), "{row}");
        assert!(row.contains("10.244."), "{row}");
    }
    assert!(out.contains("healthy: 2/2 nodes Ready"), "{out}");

    // A dead agent shows, and `up` starts it again (as re-running `up` on a lab should).
    let procs = json(&format!("/run/podnet/{name}/processes.json"));
    let agent = procs["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node"] == format!("{name}-node2"))
        .unwrap()
        .clone();
    let pid = agent["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = ok(&["lab", "status", "--name", name]);
    assert!(out.contains(&format!("{pid} EXITED")), "{out}");
    assert!(out.contains("problems:"), "{out}");
    let out = ok(&["lab", "up", "--name", name]);
    assert!(
        out.contains(&format!(
            "restarted the agent of {name}-node2 (pid {pid} had exited"
        )),
        "{out}"
    );
    assert!(out.contains("agents: 2/2 nodes Ready"), "{out}");
    let procs = json(&format!("/run/podnet/{name}/processes.json"));
    let agents: Vec<i64> = procs["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["node"] == format!("{name}-node2"))
        .map(|p| p["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(agents.len(), 1, "one record per agent: {procs}");
    assert_ne!(agents[0], i64::from(pid));
    assert!(Path::new(&format!("/proc/{}", agents[0])).exists());
    let out = ok(&["lab", "status", "--name", name]);
    assert!(out.contains("healthy: 2/2 nodes Ready"), "{out}");

    ok(&["lab", "down", "--name", name]);
    let err = fails(&["lab", "status", "--name", name]);
    assert!(
        err.contains(&format!("there is no lab called {name}")),
        "{err}"
    );
}

#[test]
fn bad_arguments_are_refused_before_anything_is_made() {
    let name = lab_name('d');
    for (args, expect) in [
        (vec!["--name", "Bad_Name"], "not a DNS-1123 label"),
        (vec!["--name", "muchtoolongname"], "at most 12"),
        (vec!["--name", "a-node1"], "-node"),
        (vec!["--name", &name, "--nodes", "0"], "1 to 64 nodes"),
        (vec!["--name", &name, "--nodes", "65"], "1 to 64 nodes"),
        (
            vec!["--name", &name, "--underlay-cidr", "10.244.0.0/24"],
            "overlaps --cluster-cidr",
        ),
        (
            vec![
                "--name",
                &name,
                "--underlay-cidr",
                "172.30.0.0/29",
                "--nodes",
                "3",
            ],
            "use a larger subnet",
        ),
        (
            vec!["--name", &name, "--backend", "carrier-pigeon"],
            "invalid value",
        ),
    ] {
        let mut full = vec!["lab", "up"];
        full.extend(args.iter().copied());
        let err = fails(&full);
        assert!(err.contains(expect), "podnet {}: {err}", full.join(" "));
    }
    let err = fails(&["lab", "down", "--name", "../etc"]);
    assert!(err.contains("not a DNS-1123 label"), "{err}");
    assert!(!Path::new(&format!("/run/podnet/{name}")).exists());
    assert!(!Path::new(&format!("/var/lib/podnet/{name}")).exists());
    assert!(!Path::new(&format!("/run/netns/{name}-underlay")).exists());
}

#[test]
fn a_half_built_lab_is_named_and_removed() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let lab = Lab::new('e');
    let name = lab.name.as_str();
    let before = snapshot(name, &BTreeSet::new());
    // What a crash half-way through `lab up` could leave: the underlay
    // namespace, a node namespace and the run directory, no lab.json.
    for ns in [format!("{name}-underlay"), format!("{name}-node1")] {
        let out = Command::new("ip")
            .args(["netns", "add", &ns])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    fs::create_dir_all(format!("/run/podnet/{name}/nodes/{name}-node1")).unwrap();

    let err = fails(&["lab", "up", "--name", name]);
    assert!(err.contains("partly there"), "{err}");
    assert!(
        err.contains(&format!("network namespace {name}-underlay exists")),
        "{err}"
    );
    assert!(
        err.contains(&format!("network namespace {name}-node1 exists")),
        "{err}"
    );
    assert!(err.contains(&format!("/run/podnet/{name} exists")), "{err}");
    assert!(
        err.contains(&format!("podnet lab down --name {name}")),
        "{err}"
    );
    let status = ok(&["lab", "status", "--name", name]);
    assert!(
        status.contains(&format!("lab {name} is not complete")),
        "{status}"
    );
    assert!(
        status.contains(&format!("network namespace {name}-node1 exists")),
        "{status}"
    );

    let out = ok(&["lab", "down", "--name", name]);
    assert!(
        out.contains(&format!("removed network namespace {name}-underlay")),
        "{out}"
    );
    assert!(
        out.contains(&format!("removed network namespace {name}-node1")),
        "{out}"
    );
    assert!(
        out.contains(&format!("removed /run/podnet/{name}")),
        "{out}"
    );
    assert_eq!(snapshot(name, &BTreeSet::new()), before);
}

#[test]
fn etcd_store_runs_as_a_lab_process() {
    if !is_root() || !Path::new("/usr/bin/etcd").exists() {
        eprintln!("skipped: needs root and /usr/bin/etcd (apt-get install -y etcd-server)");
        return;
    }
    let lab = Lab::new('f');
    let name = lab.name.as_str();
    let before = snapshot(name, &BTreeSet::new());
    let out = ok(&[
        "lab", "up", "--name", name, "--nodes", "1", "--store", "etcd",
    ]);
    assert!(out.contains("etcd… ready on 127.0.0.1:"), "{out}");
    assert!(out.contains("1/1 nodes Ready"), "{out}");
    let state = json(&format!("/var/lib/podnet/{name}/lab.json"));
    assert!(
        state["store"]
            .as_str()
            .unwrap()
            .starts_with("etcd://127.0.0.1:"),
        "{state}"
    );
    let status = ok(&["lab", "status", "--name", name]);
    assert!(status.contains("etcd: pid"), "{status}");
    assert!(status.contains("running"), "{status}");
    let out = ok(&["lab", "down", "--name", name]);
    assert!(out.contains("stopped etcd"), "{out}");
    assert_eq!(snapshot(name, &BTreeSet::new()), before);
}
