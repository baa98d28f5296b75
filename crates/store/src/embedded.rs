//! The embedded backend: one `redb` file.
//!
//! Tables:
//! - `kvs`: key -> record (revisions, lease, value),
//! - `history`: revision -> the events of that revision (with prev_kv, so a list at an older
//!   revision is the current state with newer events undone),
//! - `leases`: lease id -> TTL and wall-clock expiry; `lease_keys`: (lease, key) -> (),
//! - `meta`: the revision counter, the compacted revision, the next lease id.
//!
//! Every write is one redb transaction, committed with `Durability::Immediate` by default.

use std::path::{Path, PathBuf};

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};

use crate::codec::{self, LeaseRecord};
use crate::local::{Backend, Local, LocalOptions, ReadTxn, WriteTxn, delegate_store};
use crate::{Event, KeyValue, LeaseId, Op, Result, StoreError};

const KVS: TableDefinition<&str, &[u8]> = TableDefinition::new("kvs");
const HISTORY: TableDefinition<i64, &[u8]> = TableDefinition::new("history");
const LEASES: TableDefinition<i64, &[u8]> = TableDefinition::new("leases");
const LEASE_KEYS: TableDefinition<(i64, &str), ()> = TableDefinition::new("lease_keys");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

const META_FORMAT: &str = "format";
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";
const META_NEXT_LEASE: &str = "next_lease";
const FORMAT: i64 = 1;

/// Options of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Watch and compaction tuning. The default keeps the last 10 000 revisions of history.
    pub local: LocalOptions,
    /// Fsync every commit (default). Turning it off trades durability of the last writes
    /// after a crash for speed; the file stays consistent either way.
    pub durable: bool,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            local: LocalOptions {
                keep_revisions: Some(10_000),
                ..LocalOptions::default()
            },
            durable: true,
        }
    }
}

/// A [`crate::Store`] in one `redb` file: data, revision counter, history and leases survive
/// restarts. Only one `EmbeddedStore` may have a given file open; it is closed when the last
/// reference (including running watch streams' tasks) is dropped.
pub struct EmbeddedStore {
    local: Local<RedbBackend>,
    path: PathBuf,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store file at `path`. Needs a tokio runtime.
    pub async fn open(path: impl AsRef<Path>, opts: EmbeddedOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        let durable = opts.durable;
        // A store of this process that was just dropped releases the file once its last
        // in-flight blocking read finishes (milliseconds); wait for that, briefly, rather
        // than fail a restart in the same process.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        let backend = loop {
            let p = p.clone();
            let opened = tokio::task::spawn_blocking(move || RedbBackend::open(&p, durable))
                .await
                .map_err(|e| StoreError::backend(Op::Open, &path.display().to_string(), e))?;
            match opened {
                Err(e) if is_already_open(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                other => break other?,
            }
        };
        Ok(EmbeddedStore {
            local: Local::start(backend, opts.local),
            path,
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

delegate_store!(EmbeddedStore);

/// Whether opening failed because the file is open elsewhere (another store object in this
/// process, or another process).
fn is_already_open(err: &StoreError) -> bool {
    match err {
        StoreError::Backend { source, .. } => matches!(
            source.downcast_ref::<redb::Error>(),
            Some(redb::Error::DatabaseAlreadyOpen)
        ),
        _ => false,
    }
}

/// Makes the store file readable by its owner only (created so, or tightened), as etcd keeps
/// its data directory: it holds every object of the cluster.
fn keep_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

struct RedbBackend {
    db: Database,
    durable: bool,
}

impl RedbBackend {
    fn open(path: &Path, durable: bool) -> Result<Self> {
        let ctx = path.display().to_string();
        let err = |e: redb::Error| StoreError::backend(Op::Open, &ctx, e);
        keep_private(path).map_err(|e| StoreError::backend(Op::Open, &ctx, e))?;
        let db = Database::create(path).map_err(|e| err(e.into()))?;
        let txn = db.begin_write().map_err(|e| err(e.into()))?;
        {
            // Create the tables and the counters on first open.
            txn.open_table(KVS).map_err(|e| err(e.into()))?;
            txn.open_table(HISTORY).map_err(|e| err(e.into()))?;
            txn.open_table(LEASES).map_err(|e| err(e.into()))?;
            txn.open_table(LEASE_KEYS).map_err(|e| err(e.into()))?;
            let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            let format = meta
                .get(META_FORMAT)
                .map_err(|e| err(e.into()))?
                .map(|g| g.value());
            match format {
                None => {
                    for (k, v) in [
                        (META_FORMAT, FORMAT),
                        (META_REVISION, 1),
                        (META_COMPACTED, 0),
                        (META_NEXT_LEASE, 1),
                    ] {
                        meta.insert(k, v).map_err(|e| err(e.into()))?;
                    }
                }
                Some(FORMAT) => {}
                Some(other) => {
                    return Err(StoreError::Corrupt {
                        op: Op::Open,
                        key: ctx.clone(),
                        reason: format!("unknown store format {other} (this build reads {FORMAT})"),
                    });
                }
            }
        }
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(RedbBackend { db, durable })
    }
}

impl Backend for RedbBackend {
    fn read<T>(&self, op: Op, key: &str, f: impl FnOnce(&dyn ReadTxn) -> Result<T>) -> Result<T> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| StoreError::backend(op, key, e))?;
        f(&RedbRead {
            txn,
            op,
            key: key.to_owned(),
        })
    }

    fn write<T>(
        &self,
        op: Op,
        key: &str,
        f: impl FnOnce(&mut dyn WriteTxn) -> Result<T>,
    ) -> Result<T> {
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| StoreError::backend(op, key, e))?;
        if !self.durable {
            txn.set_durability(Durability::None)
                .map_err(|e| StoreError::backend(op, key, e))?;
        }
        let mut w = RedbWrite {
            txn,
            op,
            key: key.to_owned(),
        };
        match f(&mut w) {
            Ok(out) => {
                w.txn
                    .commit()
                    .map_err(|e| StoreError::backend(op, key, e))?;
                Ok(out)
            }
            Err(e) => {
                if let Err(abort) = w.txn.abort() {
                    tracing::warn!(error = %abort, "aborting a failed store transaction failed");
                }
                Err(e)
            }
        }
    }
}

struct RedbRead {
    txn: ReadTransaction,
    op: Op,
    key: String,
}

struct RedbWrite {
    txn: WriteTransaction,
    op: Op,
    key: String,
}

fn backend_err(op: Op, key: &str, e: impl Into<redb::Error>) -> StoreError {
    StoreError::backend(op, key, e.into())
}

fn corrupt(op: Op, key: &str, what: &str, reason: String) -> StoreError {
    StoreError::Corrupt {
        op,
        key: key.to_owned(),
        reason: format!("{what}: {reason}"),
    }
}

/// The reads are the same over a read and a write transaction.
macro_rules! impl_read_txn {
    ($ty:ty) => {
        impl $ty {
            fn err(&self, e: impl Into<redb::Error>) -> StoreError {
                backend_err(self.op, &self.key, e)
            }

            fn meta(&self, name: &str) -> Result<i64> {
                let t = self.txn.open_table(META).map_err(|e| self.err(e))?;
                let v = t.get(name).map_err(|e| self.err(e))?;
                v.map(|g| g.value()).ok_or_else(|| {
                    corrupt(self.op, &self.key, "meta", format!("{name} is missing"))
                })
            }
        }

        impl ReadTxn for $ty {
            fn revision(&self) -> Result<i64> {
                self.meta(META_REVISION)
            }

            fn compacted(&self) -> Result<i64> {
                self.meta(META_COMPACTED)
            }

            fn get(&self, key: &str) -> Result<Option<KeyValue>> {
                let t = self.txn.open_table(KVS).map_err(|e| self.err(e))?;
                let Some(g) = t.get(key).map_err(|e| self.err(e))? else {
                    return Ok(None);
                };
                codec::decode_kv_record(key, g.value())
                    .map(Some)
                    .map_err(|r| corrupt(self.op, key, "key record", r))
            }

            fn range(&self, prefix: &str) -> Result<Vec<KeyValue>> {
                let t = self.txn.open_table(KVS).map_err(|e| self.err(e))?;
                let mut out = Vec::new();
                for item in t.range::<&str>(prefix..).map_err(|e| self.err(e))? {
                    let (k, v) = item.map_err(|e| self.err(e))?;
                    let k = k.value();
                    if !k.starts_with(prefix) {
                        break;
                    }
                    out.push(
                        codec::decode_kv_record(k, v.value())
                            .map_err(|r| corrupt(self.op, k, "key record", r))?,
                    );
                }
                Ok(out)
            }

            fn history(&self, after: i64, limit: usize) -> Result<Vec<(i64, Vec<Event>)>> {
                let t = self.txn.open_table(HISTORY).map_err(|e| self.err(e))?;
                let mut out = Vec::new();
                for item in t
                    .range(after.saturating_add(1)..)
                    .map_err(|e| self.err(e))?
                    .take(limit)
                {
                    let (r, v) = item.map_err(|e| self.err(e))?;
                    let r = r.value();
                    let events = codec::decode_events(v.value()).map_err(|reason| {
                        corrupt(
                            self.op,
                            &self.key,
                            &format!("history of revision {r}"),
                            reason,
                        )
                    })?;
                    out.push((r, events));
                }
                Ok(out)
            }

            fn lease(&self, id: LeaseId) -> Result<Option<LeaseRecord>> {
                let t = self.txn.open_table(LEASES).map_err(|e| self.err(e))?;
                let Some(g) = t.get(id.0).map_err(|e| self.err(e))? else {
                    return Ok(None);
                };
                codec::decode_lease(g.value())
                    .map(Some)
                    .map_err(|r| corrupt(self.op, &self.key, &format!("lease {id}"), r))
            }

            fn leases(&self) -> Result<Vec<(LeaseId, LeaseRecord)>> {
                let t = self.txn.open_table(LEASES).map_err(|e| self.err(e))?;
                let mut out = Vec::new();
                for item in t.iter().map_err(|e| self.err(e))? {
                    let (k, v) = item.map_err(|e| self.err(e))?;
                    let id = LeaseId(k.value());
                    let rec = codec::decode_lease(v.value())
                        .map_err(|r| corrupt(self.op, &self.key, &format!("lease {id}"), r))?;
                    out.push((id, rec));
                }
                Ok(out)
            }

            fn lease_keys(&self, id: LeaseId) -> Result<Vec<String>> {
                let t = self.txn.open_table(LEASE_KEYS).map_err(|e| self.err(e))?;
                let mut out = Vec::new();
                for item in t.range((id.0, "")..).map_err(|e| self.err(e))? {
                    let (k, _) = item.map_err(|e| self.err(e))?;
                    let (lease, key) = k.value();
                    if lease != id.0 {
                        break;
                    }
                    out.push(key.to_owned());
                }
                Ok(out)
            }

            fn next_lease_id(&self) -> Result<i64> {
                self.meta(META_NEXT_LEASE)
            }
        }
    };
}

impl_read_txn!(RedbRead);
impl_read_txn!(RedbWrite);

impl RedbWrite {
    fn set_meta(&mut self, name: &str, v: i64) -> Result<()> {
        let mut t = self.txn.open_table(META).map_err(|e| self.err(e))?;
        t.insert(name, v).map_err(|e| self.err(e))?;
        Ok(())
    }
}

impl WriteTxn for RedbWrite {
    fn set_revision(&mut self, rev: i64) -> Result<()> {
        self.set_meta(META_REVISION, rev)
    }

    fn put(&mut self, kv: &KeyValue) -> Result<()> {
        let mut t = self.txn.open_table(KVS).map_err(|e| self.err(e))?;
        t.insert(kv.key.as_str(), codec::encode_kv_record(kv).as_slice())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<()> {
        let mut t = self.txn.open_table(KVS).map_err(|e| self.err(e))?;
        t.remove(key).map_err(|e| self.err(e))?;
        Ok(())
    }

    fn push_history(&mut self, rev: i64, events: &[Event]) -> Result<()> {
        let mut t = self.txn.open_table(HISTORY).map_err(|e| self.err(e))?;
        t.insert(rev, codec::encode_events(events).as_slice())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn compact(&mut self, upto: i64) -> Result<()> {
        {
            let mut t = self.txn.open_table(HISTORY).map_err(|e| self.err(e))?;
            t.retain_in(..=upto, |_, _| false)
                .map_err(|e| self.err(e))?;
        }
        self.set_meta(META_COMPACTED, upto)
    }

    fn put_lease(&mut self, id: LeaseId, rec: &LeaseRecord) -> Result<()> {
        let mut t = self.txn.open_table(LEASES).map_err(|e| self.err(e))?;
        t.insert(id.0, codec::encode_lease(rec).as_slice())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn remove_lease(&mut self, id: LeaseId) -> Result<()> {
        let mut t = self.txn.open_table(LEASES).map_err(|e| self.err(e))?;
        t.remove(id.0).map_err(|e| self.err(e))?;
        Ok(())
    }

    fn attach(&mut self, id: LeaseId, key: &str) -> Result<()> {
        let mut t = self.txn.open_table(LEASE_KEYS).map_err(|e| self.err(e))?;
        t.insert((id.0, key), ()).map_err(|e| self.err(e))?;
        Ok(())
    }

    fn detach(&mut self, id: LeaseId, key: &str) -> Result<()> {
        let mut t = self.txn.open_table(LEASE_KEYS).map_err(|e| self.err(e))?;
        t.remove((id.0, key)).map_err(|e| self.err(e))?;
        Ok(())
    }

    fn set_next_lease_id(&mut self, next: i64) -> Result<()> {
        self.set_meta(META_NEXT_LEASE, next)
    }
}
