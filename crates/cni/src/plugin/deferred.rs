//! The end of a DEL: deleting the links it took out of service, in a
//! detached process, so DEL does not wait for the kernel.
//!
//! Deleting a veth blocks the deleting process 10–20 ms inside the kernel
//! (`rtnl_dellink` waits for RCU grace periods and an `rcu_barrier`), more
//! than the whole rest of DEL. By the time DEL gets here the attachment is
//! out of service ([`wiring::detach`]: both ends down, the host end off the
//! bridge, both renamed to tombstones), so nothing the runtime can observe
//! depends on the deletion finishing before DEL returns. A grandchild in its
//! own session, with its standard streams on `/dev/null` (a runtime reads
//! the plugin's stdout until every writer has closed it), deletes the
//! tombstones and exits. If it dies first, the tombstones stay until GC
//! deletes them (or, for a pod end, until the pod's namespace goes); an ADD
//! never collides with them because they no longer carry the names it uses.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork, setsid};
use podnet_kernel::{NetNs, Netlink};

use super::wiring::{self, Tombstones};

/// Starts the deletion of `tombstones` and returns without waiting for it;
/// deletes them here when no process can be started.
///
/// Must be called while the process has a single thread (DEL starts none),
/// as `fork` only copies the calling thread. The children share the caller's
/// open netlink sockets; they never read from them (the worker opens its
/// own), so the caller's replies stay the caller's.
pub fn delete_detached(tombstones: &Tombstones, pod_ns: Option<&NetNs>) {
    if tombstones.is_empty() {
        return;
    }
    // SAFETY: the process is single-threaded (see above), so the child's
    // copy of the heap and of every lock is consistent.
    match unsafe { fork() } {
        // The intermediate child exits as soon as it has forked the worker:
        // reaping it keeps no zombie around and takes well under a
        // millisecond.
        Ok(ForkResult::Parent { child }) => {
            let _ = waitpid(child, None);
        }
        Ok(ForkResult::Child) => intermediate(tombstones, pod_ns),
        Err(_) => delete_here(tombstones, pod_ns),
    }
}

/// In the intermediate child: a new session (no signal for the runtime's
/// process group or terminal reaches the worker), then the worker, which
/// init adopts when this process exits.
fn intermediate(tombstones: &Tombstones, pod_ns: Option<&NetNs>) -> ! {
    quiet_stdio();
    let _ = setsid();
    // SAFETY: still single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => _exit(0),
        // Cannot fork again: do the work here; DEL waits for it, as before.
        Ok(ForkResult::Child) | Err(_) => {
            worker(tombstones, pod_ns);
            _exit(0)
        }
    }
}

fn worker(tombstones: &Tombstones, pod_ns: Option<&NetNs>) {
    // Crash testing: a worker that dies before deleting anything (see
    // commands::fault_point).
    if std::env::var("PODNET_CNI_FAULT").is_ok_and(|p| p == "deferred-delete") {
        return;
    }
    delete_here(tombstones, pod_ns);
}

/// Deletes the tombstones with a socket of its own (the caller's socket
/// stays the caller's). Failures have nowhere to go in the detached worker;
/// GC deletes what is left.
fn delete_here(tombstones: &Tombstones, pod_ns: Option<&NetNs>) {
    if let Ok(mut host) = Netlink::current() {
        let _ = wiring::delete_tombstones(&mut host, pod_ns, tombstones);
    }
}

/// Ends this child without running the parent's exit-time work (flushing
/// the stdout buffer it copied, for one).
fn _exit(status: i32) -> ! {
    // SAFETY: _exit ends the process at once; it touches no Rust state.
    unsafe { libc::_exit(status) }
}

/// Points stdin, stdout and stderr at `/dev/null`, so the runtime, which
/// reads the plugin's output until EOF, is not kept waiting by this process.
fn quiet_stdio() {
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..=2 {
            // SAFETY: dup2 only replaces descriptor `fd` with a copy of an
            // open one; nothing else in this process uses 0-2 any more.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}
