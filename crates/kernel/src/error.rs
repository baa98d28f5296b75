use std::io;

/// A failed kernel operation, naming what was attempted, on which object and in
/// which network namespace.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{action} in network namespace {netns}: {source}")]
    Netlink {
        action: String,
        netns: String,
        #[source]
        source: io::Error,
    },
    #[error("{action}: {source}")]
    Netns {
        action: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} not found in network namespace {netns}")]
    NotFound { what: String, netns: String },
    #[error("{what} in network namespace {netns} is in the way: {why}")]
    Conflict {
        what: String,
        netns: String,
        why: String,
    },
    #[error("sysctl {key} in network namespace {netns}: {source}")]
    Sysctl {
        key: String,
        netns: String,
        #[source]
        source: io::Error,
    },
    #[error("nftables transaction failed: {message}")]
    Nftables { message: String },
}

pub type Result<T> = std::result::Result<T, KernelError>;

impl KernelError {
    /// The OS error number behind this error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelError::Netlink { source, .. }
            | KernelError::Netns { source, .. }
            | KernelError::Sysctl { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, KernelError::NotFound { .. })
            || matches!(
                self.errno(),
                Some(libc::ENODEV)
                    | Some(libc::ENOENT)
                    | Some(libc::ESRCH)
                    | Some(libc::EADDRNOTAVAIL)
            )
    }

    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }
}

pub(crate) fn netns_err(action: impl Into<String>, source: io::Error) -> KernelError {
    KernelError::Netns {
        action: action.into(),
        source,
    }
}
