//! `podnet lab up` and `podnet agent` check the machine before they change anything: each
//! missing piece, made missing for real (a user without privileges, a TUN device node that
//! is not one, a read-only /run/netns, an etcd that is not a program; the last three in a
//! mount namespace of the test's own), gives its one line saying what, who needs it and
//! what provides it, and nothing is left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

const PODNET: &str = env!("CARGO_BIN_EXE_podnet");

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `podnet ARGS` in a mount namespace of its own after the shell `setup` ran there.
fn in_mount_ns(setup: &str, args: &str) -> Output {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("{setup} && exec {PODNET} {args}"))
        .output()
        .expect("run unshare")
}

/// The lab's name left no trace: no state directories, no namespaces.
fn nothing_left(lab: &str) {
    for dir in ["/var/lib/podnet", "/run/podnet"] {
        assert!(!Path::new(dir).join(lab).exists(), "{dir}/{lab} was made");
    }
    let named = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(lab))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert!(named.is_empty(), "namespaces were made: {named:?}");
}

/// The one line that names `what`, and the failure as a whole.
fn refused_with(out: &Output, what: &str, provides: &str) {
    let text = text(out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("cannot start on this machine; nothing was changed"),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no line about {what}: {text}"));
    assert!(
        line.contains("needs it") && line.contains(provides),
        "{line}"
    );
}

#[test]
fn a_user_without_privileges_is_told_to_be_root_and_nothing_is_made() {
    let lab = format!("pfroot{}", std::process::id());
    for args in [
        vec!["lab", "up", "--name", &lab],
        vec!["agent", "--node-name", &lab, "--kubeconfig", "/nonexistent"],
    ] {
        let out = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(PODNET)
            .args(&args)
            .output()
            .expect("setpriv");
        refused_with(&out, "root privileges", "run it as root");
    }
    nothing_left(&lab);
}

#[test]
fn a_tun_device_node_that_is_not_one_stops_the_udp_backend_only() {
    let lab = format!("pftun{}", std::process::id());
    let hide = "mount --bind /dev/null /dev/net/tun";
    let out = in_mount_ns(hide, &format!("lab up --name {lab} --backend udp"));
    refused_with(&out, "TUN devices", "CONFIG_TUN");
    nothing_left(&lab);
    let out = in_mount_ns(
        hide,
        &format!("agent --node-name {lab} --kubeconfig /nonexistent --backend udp"),
    );
    refused_with(&out, "TUN devices", "CONFIG_TUN");
    // Another backend does not need it: the agent gets past its checks (and then stops at
    // the kubeconfig that is not there).
    let out = in_mount_ns(
        hide,
        &format!("agent --node-name {lab} --kubeconfig /nonexistent --backend vxlan"),
    );
    let text = text(&out);
    assert!(!out.status.success());
    assert!(!text.contains("cannot start on this machine"), "{text}");
    assert!(text.contains("/nonexistent"), "{text}");
}

#[test]
fn a_read_only_netns_directory_and_a_missing_etcd_are_both_said() {
    let lab = format!("pfro{}", std::process::id());
    // etcd not installed is as missing as etcd replaced by a file that is not a program.
    let ro_netns = "mkdir -p /run/netns && mount -t tmpfs -o ro tmpfs /run/netns";
    let setup = if Path::new("/usr/bin/etcd").exists() {
        format!("{ro_netns} && mount --bind /dev/null /usr/bin/etcd")
    } else {
        ro_netns.to_string()
    };
    let out = in_mount_ns(&setup, &format!("lab up --name {lab} --store etcd"));
    refused_with(&out, "a writable /run/netns", "make /run/netns writable");
    refused_with(&out, "the program /usr/bin/etcd", "etcd-server");
    nothing_left(&lab);
}
