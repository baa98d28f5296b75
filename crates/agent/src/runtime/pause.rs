//! The pod sandbox process ("pause"): it creates the pod's network, UTS, PID and
//! mount namespaces and holds them for as long as the pod lives. The mount namespace
//! exists for the pod's own `/etc/resolv.conf` and `/etc/hosts` (files the runtime
//! writes, bind-mounted over the node's inside the pod only: the namespace is made a
//! slave of the node's first, so nothing mounted in it reaches the node, while the
//! node's later unmounts still reach it). Its second
//! process is PID 1 of the pod, so every process of the pod whose parent
//! exits is re-parented to it and reaped there (Kubernetes'
//! `shareProcessNamespace`); when it exits, the kernel kills what is left of
//! the pod.
//!
//! Two processes, because the process that unshares a PID namespace stays
//! outside it: the first (the one the runtime started) creates the
//! namespaces, forks PID 1, prints `ready <PID 1's pid>` and forwards
//! SIGTERM/SIGINT to it until it exits.

use std::io::Write;

use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use podnet_kernel::Netlink;

/// What the sandbox prints on stdout, followed by the pid of the pod's PID 1,
/// once its namespaces are ready.
pub const READY_WORD: &str = "ready";

/// Files bind-mounted over the node's inside the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFiles {
    /// Over `/etc/resolv.conf`.
    pub resolv_conf: Option<PathBuf>,
    /// Over `/etc/hosts`.
    pub hosts: Option<PathBuf>,
}

impl PodFiles {
    fn mounts(&self) -> impl Iterator<Item = (&Path, &'static str)> {
        self.resolv_conf
            .as_deref()
            .map(|p| (p, "/etc/resolv.conf"))
            .into_iter()
            .chain(self.hosts.as_deref().map(|p| (p, "/etc/hosts")))
    }
}

/// Runs the sandbox in this process; returns the exit code. Must be called
/// before the process starts other threads.
pub fn run(hostname: &str, files: &PodFiles) -> i32 {
    let signals = match setup(hostname, files) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("podnet pause: {e}");
            return 1;
        }
    };
    // SAFETY: the process is single-threaded here (see above), so the child
    // may run arbitrary code.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => pod_init(&signals),
        Ok(ForkResult::Parent { child }) => {
            println!("{READY_WORD} {child}");
            let _ = std::io::stdout().flush();
            supervise(child, &signals)
        }
        Err(e) => {
            eprintln!("podnet pause: start the pod's PID 1: {e}");
            1
        }
    }
}

/// The signals pause handles, blocked so that none is lost and each is taken
/// with `sigwait` (an init process would otherwise ignore them).
fn handled_signals() -> SigSet {
    let mut signals = SigSet::empty();
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGCHLD,
        Signal::SIGHUP,
    ] {
        signals.add(sig);
    }
    signals
}

fn setup(hostname: &str, files: &PodFiles) -> Result<SigSet, String> {
    let signals = handled_signals();
    signals
        .thread_block()
        .map_err(|e| format!("block signals: {e}"))?;
    nix::sched::unshare(
        CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWNS,
    )
    .map_err(|e| format!("create the pod's network, UTS, PID and mount namespaces: {e}"))?;
    mount_files(files)?;
    if !hostname.is_empty() {
        nix::unistd::sethostname(hostname).map_err(|e| format!("set hostname {hostname}: {e}"))?;
    }
    bring_loopback_up()?;
    Ok(signals)
}

/// Makes the new mount namespace receive-only, then bind-mounts the pod's files.
fn mount_files(files: &PodFiles) -> Result<(), String> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| format!("make the pod's mount namespace a slave of the node's: {e}"))?;
    for (src, dst) in files.mounts() {
        mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| {
            format!(
                "bind-mount {} on {dst} in the pod (does {dst} exist on the node?): {e}",
                src.display()
            )
        })?;
    }
    Ok(())
}

/// Containers of the pod reach each other on 127.0.0.1 only if `lo` is up.
fn bring_loopback_up() -> Result<(), String> {
    let mut nl = Netlink::current().map_err(|e| e.to_string())?;
    let lo = nl.require_link("lo").map_err(|e| e.to_string())?;
    nl.set_up(lo.index).map_err(|e| e.to_string())
}

/// PID 1 of the pod: reaps every orphan until told to stop.
fn pod_init(signals: &SigSet) -> ! {
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => reap_children(),
            Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => std::process::exit(0),
            Ok(_) => {}
            Err(e) => {
                eprintln!("podnet pause: waiting for signals: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// The first process: passes stop signals to PID 1 and exits with it.
fn supervise(init: Pid, signals: &SigSet) -> i32 {
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => match waitpid(init, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => return code,
                Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
                _ => {}
            },
            Ok(sig @ (Signal::SIGTERM | Signal::SIGINT)) => {
                let _ = kill(init, sig);
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("podnet pause: waiting for signals: {e}");
                let _ = kill(init, Signal::SIGKILL);
                return 1;
            }
        }
    }
}

fn reap_children() {
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            return;
        }
    }
}
