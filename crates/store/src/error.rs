//! The store's error type.

use std::fmt;

use crate::LeaseId;

/// The operation that failed, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Open,
    Get,
    List,
    Create,
    Update,
    Delete,
    CurrentRevision,
    Compact,
    Watch,
    GrantLease,
    KeepAlive,
    RevokeLease,
    ExpireLeases,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Open => "open store",
            Op::Get => "get",
            Op::List => "list",
            Op::Create => "create",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::CurrentRevision => "read current revision",
            Op::Compact => "compact",
            Op::Watch => "watch",
            Op::GrantLease => "grant lease",
            Op::KeepAlive => "keep lease alive",
            Op::RevokeLease => "revoke lease",
            Op::ExpireLeases => "expire leases",
        })
    }
}

/// Everything that can go wrong in a store operation. Every variant says what was being done
/// (`op`) to which key (for list and watch: the prefix).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {key:?}: the key already exists")]
    AlreadyExists { op: Op, key: String },

    #[error("{op} {key:?}: the key does not exist")]
    NotFound { op: Op, key: String },

    #[error(
        "{op} {key:?}: conflict: expected mod_revision {expected}, but the key is at {current}"
    )]
    Conflict {
        op: Op,
        key: String,
        expected: i64,
        current: i64,
    },

    #[error(
        "{op} {key:?} at revision {requested}: that revision has been compacted (compacted revision {compacted_revision})"
    )]
    Compacted {
        op: Op,
        key: String,
        requested: i64,
        compacted_revision: i64,
    },

    #[error(
        "{op} {key:?} at revision {requested}: that revision is in the future (current revision {current})"
    )]
    FutureRevision {
        op: Op,
        key: String,
        requested: i64,
        current: i64,
    },

    #[error("{op}: lease {lease} does not exist (expired or revoked)")]
    LeaseNotFound { op: Op, lease: LeaseId },

    #[error("{op} {key:?}: invalid argument: {reason}")]
    InvalidArgument { op: Op, key: String, reason: String },

    #[error("{op} {key:?}: the watcher fell behind and cannot catch up: {reason}")]
    WatchLagged { op: Op, key: String, reason: String },

    #[error("{op} {key:?}: the store is closed")]
    Closed { op: Op, key: String },

    #[error("{op} {key:?}: stored data is corrupt: {reason}")]
    Corrupt { op: Op, key: String, reason: String },

    #[error("{op} {key:?}: {source}")]
    Backend {
        op: Op,
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl StoreError {
    pub(crate) fn backend(
        op: Op,
        key: &str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        StoreError::Backend {
            op,
            key: key.to_owned(),
            source: source.into(),
        }
    }

    /// True for [`StoreError::Compacted`]: the caller must re-list.
    pub fn is_compacted(&self) -> bool {
        matches!(self, StoreError::Compacted { .. })
    }
}
