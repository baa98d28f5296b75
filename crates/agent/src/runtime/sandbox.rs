//! Starting, joining and stopping pod sandboxes.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use podnet_kernel::NetNs;

use super::pause::READY_LINE;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("start the sandbox of pod {pod}: {why}")]
    Start { pod: String, why: String },
    #[error("sandbox of pod {pod} (pid {pid}): {why}")]
    Process { pod: String, pid: i32, why: String },
    #[error("name the network namespace of pod {pod}: {source}")]
    Netns {
        pod: String,
        #[source]
        source: podnet_kernel::KernelError,
    },
}

/// A running pod sandbox: the process holding the pod's namespaces, and the
/// name under which its network namespace is mounted in `/run/netns`.
#[derive(Debug)]
pub struct Sandbox {
    name: String,
    pid: i32,
    child: Option<Child>,
}

impl Sandbox {
    /// Starts `program args… --hostname HOSTNAME` (the `podnet pause`
    /// command), waits until it reports its namespaces ready, and names its
    /// network namespace `name`.
    pub fn start(
        program: &Path,
        args: &[&str],
        name: &str,
        hostname: &str,
    ) -> Result<Sandbox, SandboxError> {
        let start_err = |why: String| SandboxError::Start {
            pod: name.to_string(),
            why,
        };
        let mut child = Command::new(program)
            .args(args)
            .arg("--hostname")
            .arg(hostname)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| start_err(format!("run {}: {e}", program.display())))?;
        let pid = child.id() as i32;
        let ready = child
            .stdout
            .take()
            .map(|out| {
                let mut line = String::new();
                let _ = BufReader::new(out).read_line(&mut line);
                line.trim() == READY_LINE
            })
            .unwrap_or(false);
        if !ready {
            let _ = child.kill();
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            return Err(start_err(format!(
                "the sandbox process exited before it was ready ({status})"
            )));
        }
        if let Err(source) = NetNs::attach_pid(name, pid) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SandboxError::Netns {
                pod: name.to_string(),
                source,
            });
        }
        Ok(Sandbox {
            name: name.to_string(),
            pid,
            child: Some(child),
        })
    }

    /// Takes over a sandbox started earlier (by a previous agent), checking
    /// that `pid` still holds the namespace mounted as `name`.
    pub fn adopt(name: &str, pid: i32) -> Result<Sandbox, SandboxError> {
        let err = |why: String| SandboxError::Process {
            pod: name.to_string(),
            pid,
            why,
        };
        let mounted = NetNs::open(name).map_err(|e| err(e.to_string()))?;
        let held = NetNs::open_pid(pid).map_err(|e| err(e.to_string()))?;
        if mounted.id().map_err(|e| err(e.to_string()))?
            != held.id().map_err(|e| err(e.to_string()))?
        {
            return Err(err(format!("pid {pid} is not in network namespace {name}")));
        }
        Ok(Sandbox {
            name: name.to_string(),
            pid,
            child: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The path a container runtime passes as `CNI_NETNS`.
    pub fn netns_path(&self) -> PathBuf {
        NetNs::path_of(&self.name)
    }

    pub fn netns(&self) -> Result<NetNs, SandboxError> {
        NetNs::open(&self.name).map_err(|source| SandboxError::Netns {
            pod: self.name.clone(),
            source,
        })
    }

    /// Whether the sandbox process is still running.
    pub fn is_alive(&mut self) -> bool {
        if let Some(child) = &mut self.child {
            return matches!(child.try_wait(), Ok(None));
        }
        kill(Pid::from_raw(self.pid), None).is_ok()
    }

    /// Spawns `cmd` inside the pod: it joins the sandbox's network and UTS
    /// namespaces before it execs, so it shares the pod's `localhost`.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<Child> {
        join_namespaces(cmd, self.pid)?.spawn()
    }

    /// Stops the sandbox: SIGTERM, then SIGKILL after `grace`; then removes
    /// the namespace's name. Idempotent.
    pub fn stop(mut self, grace: Duration) -> Result<(), SandboxError> {
        let pid = Pid::from_raw(self.pid);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while self.is_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.is_alive() {
            let _ = kill(pid, Signal::SIGKILL);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        NetNs::delete(&self.name).map_err(|source| SandboxError::Netns {
            pod: self.name.clone(),
            source,
        })
    }
}

/// Sets `cmd` up to enter the network and UTS namespaces of `pid` before
/// exec. The namespace files are opened now and stay open in the returned
/// closure's captures until the command is dropped.
pub fn join_namespaces(cmd: &mut Command, pid: i32) -> std::io::Result<&mut Command> {
    let net = File::open(format!("/proc/{pid}/ns/net"))?;
    let uts = File::open(format!("/proc/{pid}/ns/uts"))?;
    // SAFETY: only setns, which is async-signal-safe, runs between fork and
    // exec; the files live in the closure, which the Command owns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(net.as_raw_fd(), libc::CLONE_NEWNET) != 0
                || libc::setns(uts.as_raw_fd(), libc::CLONE_NEWUTS) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}
