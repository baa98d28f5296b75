//! The `Store` trait: a versioned key-value store in etcd's revision model.
//!
//! # The model
//!
//! A store holds keys (`String`, e.g. `/registry/pods/default/web-0`) mapped to opaque
//! values (`Vec<u8>`; the apiserver stores JSON). Every successful write (create, update,
//! delete, or the deletion of a lease's keys) advances one **global revision** by exactly
//! one; an empty store is at revision 1, so the first write is revision 2 (as in etcd).
//! Every key carries:
//!
//! - `create_revision`: the revision that created it (a deleted and re-created key gets a new one),
//! - `mod_revision`: the revision of its last change; this is the key's optimistic-concurrency
//!   token (Kubernetes' `resourceVersion`),
//! - `version`: how many times it was written since it was created (1 after create).
//!
//! Writes are conditional where the apiserver needs them: [`Store::create`] only if the key is
//! absent, [`Store::update`] and [`Store::delete`] compare-and-swap on `mod_revision`.
//!
//! **History.** The store keeps the change history, so [`Store::list`] can read a consistent
//! snapshot at an older revision and [`Store::watch`] can replay every change after a
//! revision, then continue live, without losing or repeating one. [`Store::compact`] discards
//! history: after `compact(c)`, reads at revisions `>= c` and watches from revisions `>= c`
//! work, and older ones fail with [`StoreError::Compacted`] (a client must then re-list).
//!
//! **Watch.** A watch stream yields [`Event`]s strictly after `from_revision`, in revision
//! order. One revision may carry several events (when a lease expires, all its keys are
//! deleted in one revision). A watcher that does not keep up never blocks writers: the local
//! backends re-read the history it missed, and if that history has been compacted meanwhile
//! the stream ends with a visible error. An `Err` item is always the last item of a stream.
//!
//! **Leases.** [`Store::grant_lease`] creates a lease with a TTL; keys created with it are
//! deleted (with `Delete` watch events) when it expires or is revoked. [`Store::keep_alive`]
//! renews it. `update` keeps the key's lease.
//!
//! # Backends
//!
//! - [`MemoryStore`]: everything in memory, for unit tests.
//! - [`EmbeddedStore`]: the default; one `redb` file, every write a durable transaction,
//!   history and leases persisted, optional auto-compaction.
//! - `EtcdStore` (feature `etcd`, on by default): etcd v3 through `etcd-client`, with a key
//!   prefix, TLS and user/password options.
//!
//! All backends are used as `Arc<dyn Store>` from tokio code.
//!
//! # Testing
//!
//! `tests/conformance.rs` is one suite instantiated for every backend. The etcd instance of
//! it starts a private `/usr/bin/etcd` per test (Debian `etcd-server`; loopback ports, temp
//! dir, killed by PID on drop) and fails, rather than skips, when etcd is missing. Building
//! the `etcd` feature needs `protoc` (Debian `protobuf-compiler`); the TLS test needs the
//! `openssl` command.

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;

mod codec;
mod embedded;
mod error;
#[cfg(feature = "etcd")]
mod etcd;
mod local;
mod memory;
#[cfg(feature = "testing")]
pub mod testing;

pub use embedded::{EmbeddedOptions, EmbeddedStore};
pub use error::{Op, StoreError};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdOptions, EtcdStore, EtcdTls};
pub use local::LocalOptions;
pub use memory::MemoryStore;

/// Result type of every store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Identifies a TTL lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// One key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision that created the key.
    pub create_revision: i64,
    /// Revision of the key's last change.
    pub mod_revision: i64,
    /// Number of writes since creation (1 after create).
    pub version: i64,
    /// Lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// The result of a list: the items (sorted by key) and the revision they were read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    /// The revision of the snapshot; watch from it to follow the list without gaps.
    pub revision: i64,
}

/// The result of a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// The key as it was just before the delete.
    pub prev_kv: KeyValue,
    /// The revision of the delete.
    pub revision: i64,
}

/// A change, as seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key was created or updated; `kv.mod_revision` is the event's revision.
    Put {
        kv: KeyValue,
        /// The key before the change (`None` on create).
        prev_kv: Option<KeyValue>,
    },
    /// A key was deleted.
    Delete {
        key: String,
        /// The key as it was before the delete.
        prev_kv: KeyValue,
        /// The revision of the delete.
        revision: i64,
    },
}

impl Event {
    /// The revision at which the change happened.
    pub fn revision(&self) -> i64 {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }

    /// The key that changed.
    pub fn key(&self) -> &str {
        match self {
            Event::Put { kv, .. } => &kv.key,
            Event::Delete { key, .. } => key,
        }
    }
}

/// A stream of watch events. An `Err` item ends the stream.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event>> + Send + 'static>>;

/// A versioned key-value store with a global revision, compare-and-swap, watch from a
/// revision and TTL leases. See the crate documentation for the model.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key at the current revision.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Lists the keys starting with `prefix` (all keys if empty), at `at_revision` or, if
    /// `None`, at the current revision. Fails with [`StoreError::Compacted`] if that revision
    /// was compacted and [`StoreError::FutureRevision`] if it does not exist yet.
    async fn list(&self, prefix: &str, at_revision: Option<i64>) -> Result<ListResult>;

    /// Creates `key` if it does not exist ([`StoreError::AlreadyExists`] otherwise),
    /// optionally attached to a lease. Returns the new key.
    async fn create(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<KeyValue>;

    /// Replaces the value of `key` if its `mod_revision` is `expected_mod_revision`
    /// ([`StoreError::Conflict`] with the current one otherwise, [`StoreError::NotFound`] if
    /// absent). The key keeps its lease. Returns the new key.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: i64,
    ) -> Result<KeyValue>;

    /// Deletes `key`, if `expected_mod_revision` is given only if it matches.
    async fn delete(&self, key: &str, expected_mod_revision: Option<i64>) -> Result<Deleted>;

    /// The store's current revision.
    async fn current_revision(&self) -> Result<i64>;

    /// Discards the history before `revision`; reads and watches at revisions `>= revision`
    /// keep working. Compacting at or below an earlier compaction is a no-op.
    async fn compact(&self, revision: i64) -> Result<()>;

    /// Watches the keys starting with `prefix` for changes strictly after `from_revision`:
    /// history first, then live. Fails with [`StoreError::Compacted`] if `from_revision` is
    /// older than the last compaction.
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream>;

    /// Grants a lease that expires after `ttl` unless kept alive (etcd rounds up to whole
    /// seconds and enforces its own minimum).
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;

    /// Renews a lease for its full TTL. [`StoreError::LeaseNotFound`] if it already expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<()>;

    /// Revokes a lease now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;
}

/// Checks a key argument: it must not be empty.
pub(crate) fn check_key(op: Op, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(StoreError::InvalidArgument {
            op,
            key: String::new(),
            reason: "the key is empty".into(),
        });
    }
    Ok(())
}

/// Checks the revision argument of a list: revisions start at 1.
pub(crate) fn check_list_revision(prefix: &str, at: Option<i64>) -> Result<()> {
    match at {
        Some(at) if at < 1 => Err(StoreError::InvalidArgument {
            op: Op::List,
            key: prefix.to_owned(),
            reason: format!("revision {at} is not a revision (must be >= 1)"),
        }),
        _ => Ok(()),
    }
}

/// Checks the revision a watch starts after (0 watches everything).
pub(crate) fn check_watch_revision(prefix: &str, from: i64) -> Result<()> {
    if from < 0 {
        return Err(StoreError::InvalidArgument {
            op: Op::Watch,
            key: prefix.to_owned(),
            reason: format!("from_revision {from} is negative"),
        });
    }
    Ok(())
}

/// Checks a mod_revision precondition: revisions start at 1.
pub(crate) fn check_expected(op: Op, key: &str, expected: i64) -> Result<()> {
    if expected < 1 {
        return Err(StoreError::InvalidArgument {
            op,
            key: key.to_owned(),
            reason: format!("expected mod_revision {expected} is not a revision (must be >= 1)"),
        });
    }
    Ok(())
}
