//! The lab's processes: started as detached daemons (own session, output to a
//! log file), recorded by pid and start time, and stopped only after checking
//! that the pid still names the process the lab started.

use std::fs::{self, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The fd number an inherited listening socket gets in the child.
pub const INHERITED_FD: i32 = 3;

/// State (field 3) and start time (field 22) of a process, from
/// `/proc/PID/stat`; `None` when there is no such process.
pub fn stat(pid: i32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// Start time of a running process.
pub fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|(_, start)| start)
}

/// Whether `pid` is the process that started at `start_time` and has not
/// exited (a zombie has exited).
pub fn is_alive(pid: i32, start_time: u64) -> bool {
    matches!(stat(pid), Some((state, start)) if start == start_time && state != 'Z' && state != 'X')
}

/// The process's command line, arguments separated by spaces.
pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// A started daemon.
pub struct Started {
    pub pid: i32,
    pub start_time: u64,
}

/// `close_range`'s flag: mark the range close-on-exec instead of closing it now.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 4;

/// Starts `cmd` as a daemon: in a session of its own, stdin from /dev/null,
/// stdout and stderr appended to `log`, no other descriptor of ours but `inherit`,
/// which becomes the child's fd 3.
pub fn spawn_daemon(mut cmd: Command, log: &Path, inherit: Option<&OwnedFd>) -> Result<Started> {
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open log file {}", log.display()))?;
    let err = out
        .try_clone()
        .with_context(|| format!("open log file {}", log.display()))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let inherited = inherit.map(|fd| fd.as_raw_fd());
    // SAFETY: only async-signal-safe calls (setsid, close_range, dup2, fcntl) run between
    // fork and exec, on fds the parent keeps open until the spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Whatever else the caller had open (a shell's pipes, the test harness's
            // sockets) must not live on in a daemon; a kernel without close_range (before
            // 5.11) leaves them as they are.
            let _ = libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC);
            if let Some(fd) = inherited {
                if fd == INHERITED_FD {
                    // dup2 onto itself would leave close-on-exec set.
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, INHERITED_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let program = cmd.get_program().to_string_lossy().into_owned();
    let child = cmd.spawn().with_context(|| format!("start {program}"))?;
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    // The child handle is dropped without waiting: the daemon outlives us.
    let start_time = start_time(pid).with_context(|| {
        format!(
            "{program} (pid {pid}) exited at once; see {}",
            log.display()
        )
    })?;
    Ok(Started { pid, start_time })
}

/// A process to stop.
#[derive(Debug, Clone)]
pub struct Target {
    pub label: String,
    pub pid: i32,
    pub start_time: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It had already exited (or its pid now names another process).
    Gone,
    /// It exited after SIGTERM.
    Stopped,
    /// It needed SIGKILL.
    Killed,
    /// It survived SIGKILL (stuck in the kernel).
    Stuck,
}

/// Stops every target: SIGTERM, up to `grace` for them to exit, then SIGKILL.
/// A pid whose start time no longer matches is never signalled.
pub fn stop_all(targets: &[Target], grace: Duration) -> Vec<(Target, Outcome)> {
    let mut outcomes: Vec<Option<Outcome>> = targets
        .iter()
        .map(|t| {
            if !is_alive(t.pid, t.start_time) {
                return Some(Outcome::Gone);
            }
            let _ = kill(Pid::from_raw(t.pid), Signal::SIGTERM);
            None
        })
        .collect();
    wait_gone(targets, &mut outcomes, Outcome::Stopped, grace);
    for (t, outcome) in targets.iter().zip(&outcomes) {
        if outcome.is_none() && is_alive(t.pid, t.start_time) {
            let _ = kill(Pid::from_raw(t.pid), Signal::SIGKILL);
        }
    }
    wait_gone(
        targets,
        &mut outcomes,
        Outcome::Killed,
        Duration::from_secs(5),
    );
    targets
        .iter()
        .cloned()
        .zip(outcomes.into_iter().map(|o| o.unwrap_or(Outcome::Stuck)))
        .collect()
}

fn wait_gone(
    targets: &[Target],
    outcomes: &mut [Option<Outcome>],
    mark: Outcome,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let mut pending = false;
        for (t, outcome) in targets.iter().zip(outcomes.iter_mut()) {
            if outcome.is_none() {
                if is_alive(t.pid, t.start_time) {
                    pending = true;
                } else {
                    *outcome = Some(mark);
                }
            }
        }
        if !pending || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port free right now (the kernel picks it).
pub fn free_loopback_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("find a free port on 127.0.0.1")?;
    Ok(listener
        .local_addr()
        .context("find a free port on 127.0.0.1")?
        .port())
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn own_stat() {
        let pid = std::process::id() as i32;
        let (state, start) = stat(pid).unwrap();
        assert_ne!(state, 'Z');
        assert!(is_alive(pid, start));
        assert!(!is_alive(pid, start + 1));
    }
}
