//! The pod sandbox process ("pause"): it creates the pod's network and UTS
//! namespaces, holds them for as long as the pod lives, reaps orphaned
//! children, and exits cleanly on SIGTERM.

use std::io::Write;

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use podnet_kernel::Netlink;

/// What the sandbox prints on stdout once its namespaces are ready.
pub const READY_LINE: &str = "ready";

/// Runs the sandbox in this process; returns the exit code. Must be called
/// before the process starts other threads.
pub fn run(hostname: &str) -> i32 {
    match setup(hostname) {
        Ok(signals) => {
            println!("{READY_LINE}");
            let _ = std::io::stdout().flush();
            wait_for_termination(&signals)
        }
        Err(e) => {
            eprintln!("podnet pause: {e}");
            1
        }
    }
}

fn setup(hostname: &str) -> Result<SigSet, String> {
    // Block the signals first so none is lost between setup and the wait.
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
        .thread_block()
        .map_err(|e| format!("block signals: {e}"))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS)
        .map_err(|e| format!("create the pod's network and UTS namespaces: {e}"))?;
    if !hostname.is_empty() {
        nix::unistd::sethostname(hostname).map_err(|e| format!("set hostname {hostname}: {e}"))?;
    }
    bring_loopback_up()?;
    // Orphans of processes started in the pod are re-parented to us.
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(format!(
            "become child subreaper: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(signals)
}

/// Containers of the pod reach each other on 127.0.0.1 only if `lo` is up.
fn bring_loopback_up() -> Result<(), String> {
    let mut nl = Netlink::current().map_err(|e| e.to_string())?;
    let lo = nl.require_link("lo").map_err(|e| e.to_string())?;
    nl.set_up(lo.index).map_err(|e| e.to_string())
}

fn wait_for_termination(signals: &SigSet) -> i32 {
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => reap_children(),
            Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => {
                reap_children();
                return 0;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("podnet pause: waiting for signals: {e}");
                return 1;
            }
        }
    }
}

fn reap_children() {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
