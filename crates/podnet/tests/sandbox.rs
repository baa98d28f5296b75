//! The pod sandbox (`podnet pause`) and joining it, with real processes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use podnet_agent::runtime::Sandbox;
use podnet_kernel::NetNs;

const PODNET: &str = env!("CARGO_BIN_EXE_podnet");

/// A sandbox stopped on drop, even when the test fails.
struct TestSandbox(Option<Sandbox>);

impl TestSandbox {
    fn start(tag: &str, hostname: &str) -> TestSandbox {
        let name = format!("pnt-{tag}-{}", std::process::id());
        TestSandbox(Some(
            Sandbox::start(Path::new(PODNET), &name, hostname).expect("start sandbox"),
        ))
    }

    fn get(&self) -> &Sandbox {
        self.0.as_ref().expect("sandbox")
    }

    /// Runs `program args…` in the pod and waits for it.
    fn run(&self, program: &str, args: &[&str]) -> std::process::Output {
        self.get()
            .command(program)
            .args(args)
            .output()
            .expect("run in pod")
    }
}

impl Drop for TestSandbox {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            let _ = s.stop(Duration::from_secs(2));
        }
    }
}

#[test]
fn containers_of_one_pod_share_localhost_and_other_pods_do_not() {
    let a = TestSandbox::start("a", "pod-a");
    let b = TestSandbox::start("b", "pod-b");
    let mut server = a
        .get()
        .command(PODNET)
        .args(["probe", "serve", "--tcp", "127.0.0.1:8080", "--count", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("server in pod-a");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    assert_eq!(line.trim(), "serving");

    // Another pod has its own localhost: nothing listens there.
    let from_b = b.run(
        PODNET,
        &[
            "probe",
            "send",
            "--tcp",
            "127.0.0.1:8080",
            "--data",
            "x",
            "--timeout",
            "1",
        ],
    );
    assert!(!from_b.status.success());
    assert!(
        String::from_utf8_lossy(&from_b.stderr).contains("refused"),
        "{from_b:?}"
    );

    let out = a.run(
        PODNET,
        &["probe", "send", "--tcp", "127.0.0.1:8080", "--data", "hi"],
    );
    assert!(out.status.success(), "{out:?}");
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(
        reply.starts_with("pod-a got: hi (from 127.0.0.1:"),
        "{reply}"
    );
    assert!(server.wait().expect("server exits").success());
}

#[test]
fn sandbox_has_its_own_hostname_and_netns_and_stops_cleanly() {
    let s = TestSandbox::start("h", "pod-h");
    let pid = s.get().pid().to_string();
    let out = Command::new(PODNET)
        .args(["sandbox", "exec", "--pid", &pid, "--", "hostname"])
        .output()
        .expect("exec");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pod-h");
    let code = Command::new(PODNET)
        .args(["sandbox", "exec", "--pid", &pid, "--", "sh", "-c", "exit 7"])
        .status()
        .expect("exec");
    assert_eq!(code.code(), Some(7), "exit code passed through");
    // Only lo, and it is up.
    let links = Command::new(PODNET)
        .args(["sandbox", "exec", "--pid", &pid, "--", "ip", "-o", "link"])
        .output()
        .expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");

    let name = s.get().name().to_string();
    assert!(
        NetNs::list_named().expect("list").contains(&name),
        "named under /run/netns"
    );
    let mut s = s;
    let sandbox = s.0.take().expect("sandbox");
    let pid = sandbox.pid();
    sandbox.stop(Duration::from_secs(2)).expect("stop");
    assert!(!NetNs::list_named().expect("list").contains(&name));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "sandbox process gone"
    );
}

#[test]
fn pause_exits_zero_on_sigterm() {
    let mut pause = Command::new(PODNET)
        .args(["pause", "--hostname", "pod-r"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("pause");
    let mut line = String::new();
    BufReader::new(pause.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    let (word, init) = line.trim().split_once(' ').expect("ready <pid>");
    assert_eq!(word, "ready");
    let init: i32 = init.parse().expect("pid");
    let hostname = Command::new(PODNET)
        .args([
            "sandbox",
            "exec",
            "--pid",
            &init.to_string(),
            "--",
            "hostname",
        ])
        .output()
        .expect("exec");
    assert_eq!(String::from_utf8_lossy(&hostname.stdout).trim(), "pod-r");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pause.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let status = pause.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM");
    assert!(
        !Path::new(&format!("/proc/{init}")).exists(),
        "the pod's PID 1 is gone too"
    );
}

/// The pids of the children of `pid` (zombies included), from /proc.
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

#[test]
fn processes_of_a_pod_share_its_pid_namespace_and_orphans_are_reaped() {
    let s = TestSandbox::start("reap", "pod-reap");
    // The sandbox is PID 1 of the pod, as with shareProcessNamespace.
    let init = s.get().pid();
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).expect("status");
    let nspid = status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .expect("NSpid");
    assert_eq!(
        nspid.split_whitespace().last(),
        Some("1"),
        "PID 1 of the pod is the sandbox: {nspid}"
    );
    let out = s.run("sh", &["-c", "echo $$"]);
    let own: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("pid");
    assert!(
        own > 1 && own < 100,
        "a pod process has a pod-local pid: {own}"
    );

    // A shell backgrounds a sleep and exits: the sleep is orphaned, so it
    // becomes a child of the pod's PID 1, which must reap it when it ends.
    // (The sleep must not hold the test's stdout pipe, or waiting for the
    // shell's output would wait for the sleep too.)
    let status = s
        .get()
        .command("sh")
        .args(["-c", "sleep 1 & exit 0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("sh in pod");
    assert!(status.success());
    let orphans = children(init);
    assert_eq!(
        orphans.len(),
        1,
        "the orphan was re-parented to the pod's PID 1"
    );
    let orphan = orphans[0];
    // (It may still be the shell's fork, not yet the sleep: what matters is
    // that it lives in the pod's PID namespace.)
    let ns_of = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).expect("pid ns");
    assert_eq!(ns_of(orphan), ns_of(init));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{orphan}")).exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !Path::new(&format!("/proc/{orphan}")).exists(),
        "the orphan was reaped, not left a zombie (state {:?})",
        state(orphan)
    );
    assert!(children(init).is_empty());
}

#[test]
fn a_pods_processes_die_with_its_sandbox() {
    let s = TestSandbox::start("die", "pod-die");
    let mut long = s
        .get()
        .command("sleep")
        .arg("30")
        .spawn()
        .expect("sleep in pod");
    let wrapper = long.id() as i32;
    // The pod process is the wrapper's child.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while children(wrapper).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let inner = children(wrapper)[0];
    let mut s = s;
    s.0.take()
        .expect("sandbox")
        .stop(Duration::from_secs(2))
        .expect("stop");
    let status = long.wait().expect("wait");
    assert_eq!(
        status.code(),
        Some(128 + 9),
        "killed with the pod: {status:?}"
    );
    assert!(!Path::new(&format!("/proc/{inner}")).exists());
}

/// What a lab left: its namespaces (nodes, pods, underlay), its directories
/// and processes whose command line names its directories.
fn lab_leftovers(lab: &str) -> Vec<String> {
    let mut left: Vec<String> = NetNs::list_named()
        .expect("list")
        .into_iter()
        .filter(|n| n.starts_with(&format!("{lab}-")))
        .collect();
    for dir in [
        format!("/var/lib/podnet/{lab}"),
        format!("/run/podnet/{lab}"),
    ] {
        if Path::new(&dir).exists() {
            left.push(dir);
        }
    }
    let marker = format!("/{lab}/");
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&marker) {
            left.push(format!(
                "process {}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    left
}

#[test]
fn lab_demo_shows_every_path_and_cleans_up() {
    let lab = format!("dm{}", std::process::id());
    let out = Command::new(PODNET)
        .args(["lab", "demo", "--name", &lab])
        .output()
        .expect("demo");
    let text = String::from_utf8_lossy(&out.stdout);
    let left = lab_leftovers(&lab);
    if !left.is_empty() {
        let _ = Command::new(PODNET)
            .args(["lab", "down", "--name", &lab])
            .output();
    }
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("received \"pod-a got: hello from container client"),
        "{text}"
    );
    assert!(
        text.contains("received \"pod-b got: hello from pod-a"),
        "{text}"
    );
    assert!(
        text.contains("received \"pod-c got: hello from pod-a"),
        "{text}"
    );
    // The Service step: web's only pod is on the other node, reached through the ClusterIP
    // by node1's service proxy, and the rules that did it are shown.
    assert!(
        text.contains("sent \"hello, web\", received \"pod-c got: hello, web"),
        "{text}"
    );
    assert!(text.contains("the rules that did it"), "{text}");
    // and its path, traced hop by hop to the listening pod.
    assert!(
        text.contains("hop by hop") && text.contains("=> delivered"),
        "{text}"
    );
    assert!(!text.contains("unexpected"), "{text}");
    assert!(
        text.contains(&format!("Route table of {lab}-node2")),
        "{text}"
    );
    assert!(
        text.contains(&format!("Bridge cni0 of {lab}-node1")),
        "{text}"
    );
    assert!(left.is_empty(), "the demo left: {left:?}");
}

#[test]
fn lab_demo_keep_leaves_the_lab_up_until_lab_down() {
    let lab = format!("dk{}", std::process::id());
    let out = Command::new(PODNET)
        .args(["lab", "demo", "--name", &lab, "--keep"])
        .output()
        .expect("demo");
    let text = String::from_utf8_lossy(&out.stdout);
    let kept = lab_leftovers(&lab);
    let down = Command::new(PODNET)
        .args(["lab", "down", "--name", &lab])
        .output()
        .expect("lab down");
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "export KUBECONFIG=/var/lib/podnet/{lab}/kubeconfig"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("podnet lab down --name {lab}")),
        "{text}"
    );
    assert!(
        text.contains("podnet ui    # the live picture: open http://127.0.0.1:7480/"),
        "{text}"
    );
    assert!(
        kept.contains(&format!("{lab}-node2")),
        "kept: {kept:?}\n{text}"
    );
    assert!(down.status.success(), "{down:?}");
    let left = lab_leftovers(&lab);
    assert!(left.is_empty(), "lab down left: {left:?}");
}

#[test]
fn a_pod_process_gets_sigterm_through_its_supervisor() {
    let s = TestSandbox::start("term", "pod-term");
    let mut sleeper = s
        .get()
        .command("sleep")
        .arg("30")
        .spawn()
        .expect("sleep in pod");
    let started = std::time::Instant::now();
    let status =
        podnet_agent::runtime::exec::stop(&mut sleeper, Duration::from_secs(10)).expect("stop");
    assert_eq!(
        status.code(),
        Some(128 + 15),
        "ended by the forwarded SIGTERM: {status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "before the grace period ran out"
    );
}
