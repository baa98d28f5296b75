//! Running a program as a process of a pod: join the sandbox's network, UTS
//! and PID namespaces, fork, and supervise the child. A process cannot move
//! itself into another PID namespace, only its children, hence the fork; this
//! process stays outside, passes stop signals on, and returns the child's
//! exit status. Should it be killed, the child dies with it.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command};

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;

/// Signals passed on to the pod process.
const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// When this variable names a file in the environment of `podnet sandbox
/// exec`, the supervisor records there how the pod process ended (see
/// [`ExitRecord`]), so that whoever started it — or an agent that adopted it
/// after a restart, and so is not its parent — learns its exit code. The
/// variable is not passed on to the pod process.
pub const EXIT_FILE_ENV: &str = "PODNET_EXIT_FILE";

/// What the supervisor writes to [`EXIT_FILE_ENV`]'s file, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitRecord {
    /// The exit code (128 + N when killed by signal N; 127 when the program
    /// could not be started).
    pub exit_code: i32,
    /// Why the program could not be started, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ExitRecord {
    /// Reads a record; `None` when there is none (the supervisor was killed
    /// before it could write it) or it cannot be read.
    pub fn read(path: &std::path::Path) -> Option<ExitRecord> {
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn write(&self, path: &std::path::Path) {
        let Ok(text) = serde_json::to_vec(self) else {
            return;
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}

/// Runs `program args…` in the pod whose PID 1 is `pid` (as the host sees
/// it) and returns its exit code (128 + N when killed by signal N). Must be
/// called before the process starts other threads.
pub fn run_in_pod(pid: i32, program: &OsString, args: &[OsString]) -> Result<i32, String> {
    let exit_file = std::env::var_os(EXIT_FILE_ENV).map(PathBuf::from);
    let record = |exit_code: i32, error: Option<String>| {
        if let Some(path) = &exit_file {
            ExitRecord { exit_code, error }.write(path);
        }
    };
    let signals = supervised_signals();
    let started = signals
        .thread_block()
        .map_err(|e| format!("block signals: {e}"))
        .and_then(|()| join_pod(pid))
        .and_then(|()| {
            spawn(program, args).map_err(|e| format!("run {}: {e}", program.to_string_lossy()))
        });
    match started {
        Ok(child) => {
            let code = supervise(child, &signals);
            record(code, None);
            Ok(code)
        }
        Err(e) => {
            record(127, Some(e.clone()));
            Err(e)
        }
    }
}

/// The signals the supervisor takes with `sigwait`.
fn supervised_signals() -> SigSet {
    let mut signals = SigSet::empty();
    for sig in FORWARDED.iter().chain([Signal::SIGCHLD].iter()) {
        signals.add(*sig);
    }
    signals
}

/// Makes `cmd` (a `podnet sandbox exec`) start with the supervised signals
/// already blocked, so a stop signal sent right after the spawn is passed on
/// to the pod process rather than ending the supervisor before it is ready.
pub fn block_supervised_signals_on_exec(cmd: &mut Command) {
    let signals = supervised_signals();
    // SAFETY: pthread_sigmask is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || signals.thread_block().map_err(std::io::Error::from));
    }
}

fn join_pod(pid: i32) -> Result<(), String> {
    // Joining a mount namespace moves the working directory to its root: keep it (the
    // pod's namespace is a copy of the node's, so the path is there).
    let cwd = std::env::current_dir().ok();
    // Joining a mount namespace also sets the root to that namespace's root mount, which
    // is not the sandbox's root when the runtime runs chrooted: take the sandbox's own
    // root afterwards, as `nsenter --root` does.
    let root = File::open(format!("/proc/{pid}/root"))
        .map_err(|e| format!("open /proc/{pid}/root (is sandbox {pid} running?): {e}"))?;
    let mut joined_mnt = false;
    for (kind, flag) in [
        ("net", CloneFlags::CLONE_NEWNET),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let path = format!("/proc/{pid}/ns/{kind}");
        if kind == "mnt" && same_namespace(&path, "/proc/self/ns/mnt") {
            // A sandbox started before pods had mount namespaces.
            continue;
        }
        let file = File::open(&path)
            .map_err(|e| format!("open {path} (is sandbox {pid} running?): {e}"))?;
        nix::sched::setns(&file, flag)
            .map_err(|e| format!("join the {kind} namespace of sandbox {pid}: {e}"))?;
        joined_mnt |= kind == "mnt";
    }
    if joined_mnt {
        nix::unistd::fchdir(&root)
            .and_then(|()| nix::unistd::chroot("."))
            .map_err(|e| format!("take the root of sandbox {pid}: {e}"))?;
    }
    if let Some(dir) = cwd {
        let _ = std::env::set_current_dir(dir);
    }
    Ok(())
}

fn same_namespace(a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn spawn(program: &OsString, args: &[OsString]) -> std::io::Result<Child> {
    let mut cmd = Command::new(program);
    cmd.args(args).env_remove(EXIT_FILE_ENV);
    // SAFETY: sigprocmask and prctl are async-signal-safe. The child gets
    // the signals this process blocks for sigwait, and dies with this
    // process, as a container dies with its runtime's shim.
    unsafe {
        cmd.pre_exec(|| {
            let mut none = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut none);
            if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0
                || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

fn supervise(mut child: Child, signals: &SigSet) -> i32 {
    let pid = Pid::from_raw(child.id() as i32);
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => match child.try_wait() {
                Ok(Some(status)) => {
                    return status
                        .code()
                        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                }
                Ok(None) => {}
                Err(_) => return 1,
            },
            Ok(sig) => {
                let _ = kill(pid, sig);
            }
            Err(_) => {
                let _ = kill(pid, Signal::SIGKILL);
                return 1;
            }
        }
    }
}

/// Stops a pod process started through [`run_in_pod`] (`podnet sandbox
/// exec`) as kubelet does: SIGTERM, which the supervisor passes on, then
/// SIGKILL once `grace` has passed. Waits for it either way. A graceful stop
/// lets the supervisor reap the pod process itself; a SIGKILLed supervisor
/// leaves that to the host's init.
pub fn stop(
    child: &mut Child,
    grace: std::time::Duration,
) -> std::io::Result<std::process::ExitStatus> {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill()?;
    child.wait()
}
