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
            Sandbox::start(Path::new(PODNET), &["pause"], &name, hostname).expect("start sandbox"),
        ))
    }

    fn get(&self) -> &Sandbox {
        self.0.as_ref().expect("sandbox")
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(PODNET);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        self.get()
            .spawn(&mut cmd)
            .expect("spawn in pod")
            .wait_with_output()
            .expect("wait")
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
    let mut cmd = Command::new(PODNET);
    cmd.args(["probe", "serve", "--tcp", "127.0.0.1:8080", "--count", "1"])
        .stdout(Stdio::piped());
    let mut server = a.get().spawn(&mut cmd).expect("server in pod-a");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    assert_eq!(line.trim(), "serving");

    // Another pod has its own localhost: nothing listens there.
    let from_b = b.run(&[
        "probe",
        "send",
        "--tcp",
        "127.0.0.1:8080",
        "--data",
        "x",
        "--timeout",
        "1",
    ]);
    assert!(!from_b.status.success());
    assert!(
        String::from_utf8_lossy(&from_b.stderr).contains("refused"),
        "{from_b:?}"
    );

    let out = a.run(&["probe", "send", "--tcp", "127.0.0.1:8080", "--data", "hi"]);
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
    assert_eq!(line.trim(), "ready");
    let pid = pause.id() as i32;
    let hostname = Command::new(PODNET)
        .args([
            "sandbox",
            "exec",
            "--pid",
            &pid.to_string(),
            "--",
            "hostname",
        ])
        .output()
        .expect("exec");
    assert_eq!(String::from_utf8_lossy(&hostname.stdout).trim(), "pod-r");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let status = pause.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM");
}

#[test]
fn lab_demo_shows_both_paths_and_cleans_up() {
    let lab = format!("pndemo{}", std::process::id());
    let out = Command::new(PODNET)
        .args(["lab", "demo", "--name", &lab])
        .output()
        .expect("demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("received \"pod-a got: hello from container 2"),
        "{text}"
    );
    assert!(
        text.contains("received \"pod-b got: hello from pod-a"),
        "{text}"
    );
    assert!(text.contains("not available yet"), "{text}");
    assert!(text.contains("cni0"), "{text}");
    let left: Vec<String> = NetNs::list_named()
        .expect("list")
        .into_iter()
        .filter(|n| n.starts_with(&lab))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(!Path::new(&format!("/var/lib/podnet/{lab}")).exists());
    assert!(!Path::new(&format!("/run/podnet/{lab}")).exists());
}
