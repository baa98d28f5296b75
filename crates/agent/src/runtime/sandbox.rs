//! Starting, joining and stopping pod sandboxes.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use podnet_kernel::NetNs;

use super::pause::{PodFiles, READY_WORD};

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

/// A running pod sandbox: the processes holding the pod's namespaces, and the
/// name under which its network namespace is mounted in `/run/netns`. Both
/// the sandbox and the processes run in it are driven through the `podnet`
/// binary (`podnet pause`, `podnet sandbox exec`).
#[derive(Debug)]
pub struct Sandbox {
    name: String,
    /// The pod's PID 1, as the host sees it: holds every namespace of the pod.
    pid: i32,
    podnet: PathBuf,
    child: Option<Child>,
}

impl Sandbox {
    /// Starts `podnet pause --hostname HOSTNAME`, waits until it reports its
    /// namespaces ready, and names its network namespace `name`.
    pub fn start(podnet: &Path, name: &str, hostname: &str) -> Result<Sandbox, SandboxError> {
        Sandbox::start_with(podnet, name, hostname, &PodFiles::default())
    }

    /// [`Sandbox::start`] with the pod's own resolv.conf and hosts files, bind-mounted in
    /// its mount namespace.
    pub fn start_with(
        podnet: &Path,
        name: &str,
        hostname: &str,
        files: &PodFiles,
    ) -> Result<Sandbox, SandboxError> {
        let start_err = |why: String| SandboxError::Start {
            pod: name.to_string(),
            why,
        };
        let mut cmd = Command::new(podnet);
        cmd.args(["pause", "--hostname", hostname]);
        if let Some(p) = &files.resolv_conf {
            cmd.arg("--resolv-conf").arg(p);
        }
        if let Some(p) = &files.hosts {
            cmd.arg("--hosts").arg(p);
        }
        let mut child = cmd
            // Its own process group: a Ctrl-C meant for the runtime that
            // started it does not stop the pod.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| start_err(format!("run {}: {e}", podnet.display())))?;
        let Some(pid) = child.stdout.take().and_then(read_ready) else {
            let _ = child.kill();
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            return Err(start_err(format!(
                "the sandbox process exited before it was ready ({status})"
            )));
        };
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
            podnet: podnet.to_path_buf(),
            child: Some(child),
        })
    }

    /// Takes over a sandbox started earlier (by a previous agent), checking
    /// that `pid` still holds the namespace mounted as `name`.
    pub fn adopt(podnet: &Path, name: &str, pid: i32) -> Result<Sandbox, SandboxError> {
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
            podnet: podnet.to_path_buf(),
            child: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pod's PID 1 as the host sees it.
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

    /// Whether the sandbox is still running.
    pub fn is_alive(&mut self) -> bool {
        if let Some(child) = &mut self.child {
            return matches!(child.try_wait(), Ok(None));
        }
        kill(Pid::from_raw(self.pid), None).is_ok()
    }

    /// A command that runs `program` as a process of the pod: in its network,
    /// UTS and PID namespaces, so it shares the pod's `localhost` and its
    /// orphans are reaped by the pod's PID 1. Add arguments, environment and
    /// stdio as for any command.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        pod_command(&self.podnet, self.pid, program)
    }

    /// Stops the sandbox: SIGTERM, then SIGKILL after `grace`; then removes
    /// the namespace's name. Every process left in the pod dies with its PID
    /// 1. Idempotent.
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

/// What [`Sandbox::command`] builds, for the sandbox whose PID 1 is `pid`,
/// run through the `podnet` binary at `podnet` (for callers that keep the
/// pid rather than the [`Sandbox`]).
pub fn pod_command(podnet: &Path, pid: i32, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(podnet);
    cmd.args(["sandbox", "exec", "--pid", &pid.to_string(), "--"])
        .arg(program);
    super::exec::block_supervised_signals_on_exec(&mut cmd);
    cmd
}

/// Reads `ready <pid>` from the sandbox's stdout.
fn read_ready(out: ChildStdout) -> Option<i32> {
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).ok()?;
    let (word, pid) = line.trim().split_once(' ')?;
    (word == READY_WORD).then(|| pid.parse().ok()).flatten()
}
