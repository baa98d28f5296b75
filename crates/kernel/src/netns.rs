//! Named network namespaces, created the way `ip netns add` does so that
//! `ip netns list` shows them: a file under `/run/netns` with the namespace
//! bind-mounted on it.

use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::error::{KernelError, Result, netns_err};

/// Where named namespaces live, as for iproute2.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// An open handle on a network namespace. Holding it keeps the namespace
/// alive even if its name is removed.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    label: String,
}

impl NetNs {
    /// The path of a named namespace.
    pub fn path_of(name: &str) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(name)
    }

    /// Creates a new named network namespace. Fails if the name is taken.
    pub fn create(name: &str) -> Result<NetNs> {
        validate_name(name)?;
        let path = mount_point(name)?;
        if let Err(e) = bind_new_netns(&path) {
            let _ = fs::remove_file(&path);
            return Err(netns_err(format!("create network namespace {name}"), e));
        }
        Self::open_path(&path).map(|ns| ns.labelled(name))
    }

    /// Gives the namespace of process `pid` the name `name` (bind-mounts
    /// `/proc/PID/ns/net` under `/run/netns`), as `ip netns attach` does.
    pub fn attach_pid(name: &str, pid: i32) -> Result<NetNs> {
        validate_name(name)?;
        let path = mount_point(name)?;
        let source = format!("/proc/{pid}/ns/net");
        if let Err(e) = nix::mount::mount(
            Some(source.as_str()),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ) {
            let _ = fs::remove_file(&path);
            return Err(netns_err(
                format!("bind-mount {source} on {}", path.display()),
                e.into(),
            ));
        }
        Self::open_path(&path).map(|ns| ns.labelled(name))
    }

    /// Opens the named namespace, creating it if it does not exist.
    pub fn ensure(name: &str) -> Result<NetNs> {
        match Self::open(name) {
            Ok(ns) => Ok(ns),
            Err(e) if e.is_not_found() => Self::create(name),
            Err(e) => Err(e),
        }
    }

    /// Opens a named namespace (`/run/netns/NAME`).
    pub fn open(name: &str) -> Result<NetNs> {
        validate_name(name)?;
        Self::open_path(&Self::path_of(name)).map(|ns| ns.labelled(name))
    }

    /// Opens a namespace by path (a bind mount or `/proc/PID/ns/net`).
    pub fn open_path(path: &Path) -> Result<NetNs> {
        let file = File::open(path)
            .map_err(|e| netns_err(format!("open network namespace {}", path.display()), e))?;
        if !is_netns_file(&file) {
            return Err(KernelError::Netns {
                action: format!("open network namespace {}", path.display()),
                source: std::io::Error::other(
                    "not a network namespace (is the namespace mounted there?)",
                ),
            });
        }
        Ok(NetNs {
            file,
            label: path.display().to_string(),
        })
    }

    /// Opens the network namespace of a process.
    pub fn open_pid(pid: i32) -> Result<NetNs> {
        Self::open_path(Path::new(&format!("/proc/{pid}/ns/net")))
            .map(|ns| ns.labelled(&format!("pid:{pid}")))
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<NetNs> {
        Self::open_path(Path::new("/proc/thread-self/ns/net")).map(|ns| ns.labelled("current"))
    }

    /// Removes a named namespace: unmounts and deletes its file. Succeeds when
    /// it is already gone. Processes still inside keep it alive until they exit.
    pub fn delete(name: &str) -> Result<()> {
        validate_name(name)?;
        let path = Self::path_of(name);
        match nix::mount::umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => {
                return Err(netns_err(
                    format!("unmount network namespace {name}"),
                    e.into(),
                ));
            }
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(netns_err(
                format!("remove network namespace file {}", path.display()),
                e,
            )),
        }
    }

    /// Names of the namespaces under `/run/netns`.
    pub fn list_named() -> Result<Vec<String>> {
        let entries = match fs::read_dir(NETNS_RUN_DIR) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(netns_err(format!("list {NETNS_RUN_DIR}"), e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// A name for messages: the namespace name, path or pid.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// (device, inode) identifying the namespace: equal for two handles on the
    /// same namespace.
    pub fn id(&self) -> Result<(u64, u64)> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| netns_err(format!("stat network namespace {}", self.label), e))?;
        Ok((meta.dev(), meta.ino()))
    }

    pub fn try_clone(&self) -> Result<NetNs> {
        let file = self.file.try_clone().map_err(|e| {
            netns_err(
                format!("duplicate handle of network namespace {}", self.label),
                e,
            )
        })?;
        Ok(NetNs {
            file,
            label: self.label.clone(),
        })
    }

    /// Moves the calling thread into this namespace. Prefer [`NetNs::run`],
    /// which confines the switch to a thread of its own.
    pub fn enter(&self) -> Result<()> {
        nix::sched::setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| netns_err(format!("enter network namespace {}", self.label), e.into()))
    }

    /// Runs `f` on a thread that has entered this namespace and returns its
    /// result. The caller's own thread never changes namespace.
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| -> Result<R> {
                self.enter()?;
                Ok(f())
            });
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Makes `cmd` enter this namespace between fork and exec, so a program
    /// runs inside it (a CNI plugin in the node's namespace, say).
    pub fn enter_on_exec(&self, cmd: &mut Command) -> Result<()> {
        let file = self.file.try_clone().map_err(|e| {
            netns_err(
                format!("duplicate handle of network namespace {}", self.label),
                e,
            )
        })?;
        // SAFETY: only setns, which is async-signal-safe, runs between fork
        // and exec; the closure owns its own handle on the namespace.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(())
    }

    fn labelled(mut self, label: &str) -> NetNs {
        self.label = label.to_string();
        self
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for NetNs {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// A named network namespace that is deleted when the guard drops.
///
/// Tests and labs create namespaces on a shared machine and must leave
/// nothing behind, also when they panic halfway: unwinding runs `Drop`, so
/// holding the namespace in this guard is what removes it. It derefs to the
/// [`NetNs`] handle, so `&*guard` (or plain `&guard` where a `&NetNs` is
/// expected) and `guard.run(..)` work as on the handle.
#[derive(Debug)]
pub struct OwnedNetNs {
    name: String,
    ns: NetNs,
}

impl OwnedNetNs {
    /// Creates the named namespace (as [`NetNs::create`]: fails if the name
    /// is taken) and takes charge of deleting it.
    pub fn create(name: &str) -> Result<OwnedNetNs> {
        let ns = NetNs::create(name)?;
        Ok(OwnedNetNs {
            name: name.to_string(),
            ns,
        })
    }

    /// The namespace's name, as `ip netns list` and `ip -n NAME` know it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the namespace is mounted (`/run/netns/NAME`), the path a CNI
    /// plugin is given as `CNI_NETNS`.
    pub fn path(&self) -> PathBuf {
        NetNs::path_of(&self.name)
    }
}

impl std::ops::Deref for OwnedNetNs {
    type Target = NetNs;

    fn deref(&self) -> &NetNs {
        &self.ns
    }
}

impl Drop for OwnedNetNs {
    fn drop(&mut self) {
        // `delete` already succeeds when the name is gone (a test may delete
        // it itself); any other failure cannot be reported from a drop, and
        // panicking here could abort a test that is already unwinding.
        if let Err(e) = NetNs::delete(&self.name) {
            eprintln!("podnet: {e}; remove it with `ip netns del {}`", self.name);
        }
    }
}

/// Creates the empty file `/run/netns/NAME` a namespace is mounted on;
/// fails if the name is taken.
fn mount_point(name: &str) -> Result<PathBuf> {
    let path = NetNs::path_of(name);
    fs::create_dir_all(NETNS_RUN_DIR)
        .map_err(|e| netns_err(format!("create directory {NETNS_RUN_DIR}"), e))?;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| {
            netns_err(
                format!("create network namespace {name} at {}", path.display()),
                e,
            )
        })?;
    Ok(path)
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(netns_err(
            format!("use network namespace name {name:?}"),
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a namespace name must be a plain file name",
            ),
        ))
    }
}

/// Unshares a new network namespace on a throwaway thread and bind-mounts it
/// on `path`; the thread (and with it the namespace switch) then ends.
fn bind_new_netns(path: &Path) -> std::io::Result<()> {
    let path = path.to_path_buf();
    std::thread::spawn(move || -> std::io::Result<()> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        Ok(())
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn is_netns_file(file: &File) -> bool {
    // NS_GET_NSTYPE (0xb703) tells the namespace type of an nsfs file.
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: the ioctl takes no argument and only reads the fd.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    kind == libc::CLONE_NEWNET
}
