//! The store logic shared by the in-process backends (memory and embedded).
//!
//! A backend only provides transactions over a few tables (keys, history, leases, counters);
//! everything else lives here: revision bookkeeping, preconditions, list-at-revision (the
//! current state with newer history undone), watch fan-out, lease expiry and
//! auto-compaction.
//!
//! Writes run on a blocking thread under one mutex, so revisions are gap-free and the
//! broadcast of each committed revision happens in revision order. Watchers subscribe to that
//! broadcast; a watcher that falls behind (broadcast lag) re-reads what it missed from the
//! history table, so no event is lost unless the history was compacted, which ends its stream
//! with [`StoreError::Compacted`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::codec::LeaseRecord;
use crate::{
    Deleted, Event, KeyValue, LeaseId, ListResult, Op, Result, StoreError, WatchStream,
    check_expected, check_key, check_list_revision, check_watch_revision,
};

/// Tuning of the in-process backends.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Auto-compaction: keep at most this many revisions of history (`None`: keep all until
    /// [`crate::Store::compact`] is called).
    pub keep_revisions: Option<u64>,
    /// How many revisions the live fan-out buffers before a slow watcher has to catch up
    /// from the history table.
    pub watch_broadcast_capacity: usize,
    /// Events buffered per watch stream before the watcher stops pulling.
    pub watch_channel_capacity: usize,
    /// Revisions read from history per catch-up step.
    pub history_chunk: usize,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            keep_revisions: None,
            watch_broadcast_capacity: 1024,
            watch_channel_capacity: 256,
            history_chunk: 512,
        }
    }
}

/// Reads inside one consistent snapshot.
pub(crate) trait ReadTxn {
    fn revision(&self) -> Result<i64>;
    fn compacted(&self) -> Result<i64>;
    fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// All keys starting with `prefix`, sorted.
    fn range(&self, prefix: &str) -> Result<Vec<KeyValue>>;
    /// The events of revisions `> after`, ascending, at most `limit` revisions.
    fn history(&self, after: i64, limit: usize) -> Result<Vec<(i64, Vec<Event>)>>;
    fn lease(&self, id: LeaseId) -> Result<Option<LeaseRecord>>;
    fn leases(&self) -> Result<Vec<(LeaseId, LeaseRecord)>>;
    fn lease_keys(&self, id: LeaseId) -> Result<Vec<String>>;
    fn next_lease_id(&self) -> Result<i64>;
}

/// Writes inside one atomic transaction. Callers check every precondition before the first
/// write, so a failed operation changes nothing.
pub(crate) trait WriteTxn: ReadTxn {
    fn set_revision(&mut self, rev: i64) -> Result<()>;
    fn put(&mut self, kv: &KeyValue) -> Result<()>;
    fn remove(&mut self, key: &str) -> Result<()>;
    fn push_history(&mut self, rev: i64, events: &[Event]) -> Result<()>;
    /// Drops history `<= upto` and records `upto` as the compacted revision.
    fn compact(&mut self, upto: i64) -> Result<()>;
    fn put_lease(&mut self, id: LeaseId, rec: &LeaseRecord) -> Result<()>;
    fn remove_lease(&mut self, id: LeaseId) -> Result<()>;
    fn attach(&mut self, id: LeaseId, key: &str) -> Result<()>;
    fn detach(&mut self, id: LeaseId, key: &str) -> Result<()>;
    fn set_next_lease_id(&mut self, next: i64) -> Result<()>;
}

/// Storage for [`Local`]. Both methods block; they are called from blocking threads.
pub(crate) trait Backend: Send + Sync + 'static {
    fn read<T>(&self, op: Op, key: &str, f: impl FnOnce(&dyn ReadTxn) -> Result<T>) -> Result<T>;
    /// Runs `f` in a write transaction, committing (durably) only if it returns `Ok`.
    fn write<T>(
        &self,
        op: Op,
        key: &str,
        f: impl FnOnce(&mut dyn WriteTxn) -> Result<T>,
    ) -> Result<T>;
}

/// The changes of one revision, as broadcast to watchers.
struct Batch {
    revision: i64,
    events: Vec<Event>,
}

struct Inner<B> {
    backend: B,
    write_lock: Mutex<()>,
    hub: broadcast::Sender<Arc<Batch>>,
    lease_wake: Arc<Notify>,
    opts: LocalOptions,
}

impl<B> Drop for Inner<B> {
    fn drop(&mut self) {
        // Let the lease task notice that the store is gone.
        self.lease_wake.notify_one();
    }
}

/// A store over a [`Backend`].
pub(crate) struct Local<B: Backend> {
    inner: Arc<Inner<B>>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn join_error(op: Op, key: &str, e: tokio::task::JoinError) -> StoreError {
    StoreError::backend(op, key, format!("blocking task failed: {e}"))
}

impl<B: Backend> Local<B> {
    /// Wraps a backend and starts the lease expiry task. Needs a tokio runtime.
    pub(crate) fn start(backend: B, opts: LocalOptions) -> Self {
        let (hub, _) = broadcast::channel(opts.watch_broadcast_capacity.max(1));
        let inner = Arc::new(Inner {
            backend,
            write_lock: Mutex::new(()),
            hub,
            lease_wake: Arc::new(Notify::new()),
            opts,
        });
        tokio::spawn(lease_task(
            Arc::downgrade(&inner),
            Arc::clone(&inner.lease_wake),
        ));
        Local { inner }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        op: Op,
        key: &str,
        f: impl FnOnce(&Inner<B>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| join_error(op, key, e))?
    }

    async fn read<T: Send + 'static>(
        &self,
        op: Op,
        key: &str,
        f: impl FnOnce(&dyn ReadTxn) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let k = key.to_owned();
        self.blocking(op, key, move |inner| inner.backend.read(op, &k, f))
            .await
    }

    /// Runs a write: `f` returns its result and the events of the new revision, if any.
    async fn write<T: Send + 'static>(
        &self,
        op: Op,
        key: &str,
        f: impl FnOnce(&mut dyn WriteTxn) -> Result<(T, Option<Batch>)> + Send + 'static,
    ) -> Result<T> {
        let k = key.to_owned();
        self.blocking(op, key, move |inner| inner.write(op, &k, f))
            .await
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        check_key(Op::Get, key)?;
        let k = key.to_owned();
        self.read(Op::Get, key, move |t| t.get(&k)).await
    }

    pub(crate) async fn list(&self, prefix: &str, at: Option<i64>) -> Result<ListResult> {
        check_list_revision(prefix, at)?;
        let p = prefix.to_owned();
        self.read(Op::List, prefix, move |t| list_at(t, &p, at))
            .await
    }

    pub(crate) async fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<KeyValue> {
        check_key(Op::Create, key)?;
        check_size(Op::Create, key, &value)?;
        let k = key.to_owned();
        self.write(Op::Create, key, move |t| {
            if t.get(&k)?.is_some() {
                return Err(StoreError::AlreadyExists {
                    op: Op::Create,
                    key: k,
                });
            }
            if let Some(id) = lease
                && t.lease(id)?.is_none()
            {
                return Err(StoreError::LeaseNotFound {
                    op: Op::Create,
                    lease: id,
                });
            }
            let rev = t.revision()? + 1;
            let kv = KeyValue {
                key: k.clone(),
                value,
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                lease,
            };
            t.put(&kv)?;
            if let Some(id) = lease {
                t.attach(id, &k)?;
            }
            let ev = Event::Put {
                kv: kv.clone(),
                prev_kv: None,
            };
            Ok((kv, Some(commit_revision(t, rev, vec![ev])?)))
        })
        .await
    }

    pub(crate) async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: i64,
    ) -> Result<KeyValue> {
        check_key(Op::Update, key)?;
        check_expected(Op::Update, key, expected)?;
        check_size(Op::Update, key, &value)?;
        let k = key.to_owned();
        self.write(Op::Update, key, move |t| {
            let prev = current_at(t, Op::Update, &k, Some(expected))?;
            let rev = t.revision()? + 1;
            let kv = KeyValue {
                key: k,
                value,
                create_revision: prev.create_revision,
                mod_revision: rev,
                version: prev.version + 1,
                lease: prev.lease,
            };
            t.put(&kv)?;
            let ev = Event::Put {
                kv: kv.clone(),
                prev_kv: Some(prev),
            };
            Ok((kv, Some(commit_revision(t, rev, vec![ev])?)))
        })
        .await
    }

    pub(crate) async fn delete(&self, key: &str, expected: Option<i64>) -> Result<Deleted> {
        check_key(Op::Delete, key)?;
        if let Some(e) = expected {
            check_expected(Op::Delete, key, e)?;
        }
        let k = key.to_owned();
        self.write(Op::Delete, key, move |t| {
            let prev = current_at(t, Op::Delete, &k, expected)?;
            let rev = t.revision()? + 1;
            t.remove(&k)?;
            if let Some(id) = prev.lease {
                t.detach(id, &k)?;
            }
            let ev = Event::Delete {
                key: k,
                prev_kv: prev.clone(),
                revision: rev,
            };
            let deleted = Deleted {
                prev_kv: prev,
                revision: rev,
            };
            Ok((deleted, Some(commit_revision(t, rev, vec![ev])?)))
        })
        .await
    }

    pub(crate) async fn current_revision(&self) -> Result<i64> {
        self.read(Op::CurrentRevision, "", |t| t.revision()).await
    }

    pub(crate) async fn compact(&self, revision: i64) -> Result<()> {
        self.write(Op::Compact, "", move |t| {
            let cur = t.revision()?;
            if revision > cur {
                return Err(StoreError::FutureRevision {
                    op: Op::Compact,
                    key: String::new(),
                    requested: revision,
                    current: cur,
                });
            }
            if revision > t.compacted()? {
                t.compact(revision)?;
            }
            Ok(((), None))
        })
        .await
    }

    pub(crate) async fn watch(&self, prefix: &str, from: i64) -> Result<WatchStream> {
        check_watch_revision(prefix, from)?;
        // Subscribe first: every revision committed after this point reaches `rx`, every
        // revision before it is in the history the task reads first.
        let rx = self.inner.hub.subscribe();
        let p = prefix.to_owned();
        self.read(Op::Watch, prefix, move |t| {
            check_compacted(t, Op::Watch, &p, from)
        })
        .await?;
        let (tx, out) = mpsc::channel(self.inner.opts.watch_channel_capacity.max(1));
        tokio::spawn(watch_task(
            Arc::downgrade(&self.inner),
            prefix.to_owned(),
            from,
            rx,
            tx,
            self.inner.opts.history_chunk.max(1),
        ));
        Ok(Box::pin(ReceiverStream::new(out)))
    }

    pub(crate) async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        if ttl_ms <= 0 {
            return Err(StoreError::InvalidArgument {
                op: Op::GrantLease,
                key: String::new(),
                reason: "the lease TTL must be positive".into(),
            });
        }
        let id = self
            .write(Op::GrantLease, "", move |t| {
                let id = LeaseId(t.next_lease_id()?);
                t.set_next_lease_id(id.0 + 1)?;
                let rec = LeaseRecord {
                    ttl_ms,
                    expires_at_ms: now_ms().saturating_add(ttl_ms),
                };
                t.put_lease(id, &rec)?;
                Ok((id, None))
            })
            .await?;
        self.inner.lease_wake.notify_one();
        Ok(id)
    }

    pub(crate) async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.write(Op::KeepAlive, "", move |t| {
            let now = now_ms();
            // An expired lease is gone, even if the lease task has not revoked it yet.
            let Some(mut rec) = t.lease(lease)?.filter(|r| r.expires_at_ms > now) else {
                return Err(StoreError::LeaseNotFound {
                    op: Op::KeepAlive,
                    lease,
                });
            };
            rec.expires_at_ms = now.saturating_add(rec.ttl_ms);
            t.put_lease(lease, &rec)?;
            Ok(((), None))
        })
        .await
    }

    pub(crate) async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.write(Op::RevokeLease, "", move |t| {
            if t.lease(lease)?.is_none() {
                return Err(StoreError::LeaseNotFound {
                    op: Op::RevokeLease,
                    lease,
                });
            }
            let batch = revoke(t, lease)?;
            Ok(((), batch))
        })
        .await?;
        self.inner.lease_wake.notify_one();
        Ok(())
    }
}

impl<B: Backend> Inner<B> {
    /// A serialized write: commit, then broadcast the new revision while still holding the
    /// lock, so watchers see revisions in order.
    fn write<T>(
        &self,
        op: Op,
        key: &str,
        f: impl FnOnce(&mut dyn WriteTxn) -> Result<(T, Option<Batch>)>,
    ) -> Result<T> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let keep = self.opts.keep_revisions;
        let (out, batch) = self.backend.write(op, key, |t| {
            let (out, batch) = f(t)?;
            if let (Some(keep), Some(b)) = (keep, &batch) {
                let keep = i64::try_from(keep).unwrap_or(i64::MAX);
                let target = b.revision.saturating_sub(keep);
                if target > t.compacted()? {
                    t.compact(target)?;
                }
            }
            Ok((out, batch))
        })?;
        if let Some(b) = batch {
            // No receivers is fine.
            let _ = self.hub.send(Arc::new(b));
        }
        Ok(out)
    }

    /// Revokes every expired lease (one revision each) and returns the next expiry.
    fn expire_due(&self) -> Result<Option<i64>> {
        let now = now_ms();
        let leases = self.backend.read(Op::ExpireLeases, "", |t| t.leases())?;
        let mut next: Option<i64> = None;
        for (id, rec) in leases {
            if rec.expires_at_ms <= now {
                self.write(Op::ExpireLeases, "", |t| {
                    // Re-check inside the transaction: it may have been kept alive or revoked.
                    match t.lease(id)? {
                        Some(r) if r.expires_at_ms <= now_ms() => Ok(((), revoke(t, id)?)),
                        _ => Ok(((), None)),
                    }
                })?;
                tracing::debug!(lease = %id, "lease expired");
            } else {
                next = Some(next.map_or(rec.expires_at_ms, |n| n.min(rec.expires_at_ms)));
            }
        }
        // Leases kept alive concurrently are found on the next round.
        Ok(next)
    }
}

fn check_size(op: Op, key: &str, value: &[u8]) -> Result<()> {
    if u32::try_from(key.len()).is_err() || u32::try_from(value.len()).is_err() {
        return Err(StoreError::InvalidArgument {
            op,
            key: key.chars().take(64).collect(),
            reason: "key or value larger than 4 GiB".into(),
        });
    }
    Ok(())
}

/// The key as it is now, if its `mod_revision` is `expected` (when given): the precondition
/// of update and delete.
fn current_at<T: ReadTxn + ?Sized>(
    t: &T,
    op: Op,
    key: &str,
    expected: Option<i64>,
) -> Result<KeyValue> {
    let Some(cur) = t.get(key)? else {
        return Err(StoreError::NotFound {
            op,
            key: key.to_owned(),
        });
    };
    if let Some(expected) = expected
        && cur.mod_revision != expected
    {
        return Err(StoreError::Conflict {
            op,
            key: key.to_owned(),
            expected,
            current: cur.mod_revision,
        });
    }
    Ok(cur)
}

/// Fails with [`StoreError::Compacted`] if the state at `requested` is no longer readable.
fn check_compacted<T: ReadTxn + ?Sized>(t: &T, op: Op, key: &str, requested: i64) -> Result<()> {
    let compacted = t.compacted()?;
    if requested < compacted {
        return Err(StoreError::Compacted {
            op,
            key: key.to_owned(),
            requested,
            compacted_revision: compacted,
        });
    }
    Ok(())
}

/// Records revision `rev` with its events.
fn commit_revision(t: &mut dyn WriteTxn, rev: i64, events: Vec<Event>) -> Result<Batch> {
    t.set_revision(rev)?;
    t.push_history(rev, &events)?;
    Ok(Batch {
        revision: rev,
        events,
    })
}

/// Deletes a lease and its keys; the keys' deletion is one revision (none if it had no keys).
fn revoke(t: &mut dyn WriteTxn, id: LeaseId) -> Result<Option<Batch>> {
    let keys = t.lease_keys(id)?;
    let mut events = Vec::new();
    let rev = t.revision()? + 1;
    for k in keys {
        t.detach(id, &k)?;
        if let Some(prev) = t.get(&k)? {
            t.remove(&k)?;
            events.push(Event::Delete {
                key: k,
                prev_kv: prev,
                revision: rev,
            });
        }
    }
    t.remove_lease(id)?;
    if events.is_empty() {
        return Ok(None);
    }
    Ok(Some(commit_revision(t, rev, events)?))
}

/// Reads the keys under `prefix` as they were at `at` (default: now), by undoing the history
/// after `at` on the current state.
fn list_at(t: &dyn ReadTxn, prefix: &str, at: Option<i64>) -> Result<ListResult> {
    let cur = t.revision()?;
    let at = at.unwrap_or(cur);
    if at > cur {
        return Err(StoreError::FutureRevision {
            op: Op::List,
            key: prefix.to_owned(),
            requested: at,
            current: cur,
        });
    }
    check_compacted(t, Op::List, prefix, at)?;
    let items = t.range(prefix)?;
    if at == cur {
        return Ok(ListResult {
            items,
            revision: cur,
        });
    }
    let mut state: BTreeMap<String, KeyValue> =
        items.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
    let newer = t.history(at, usize::MAX)?;
    for (_, events) in newer.into_iter().rev() {
        for ev in events.into_iter().rev() {
            if !ev.key().starts_with(prefix) {
                continue;
            }
            match ev {
                Event::Put { kv, prev_kv: None } => {
                    state.remove(&kv.key);
                }
                Event::Put {
                    prev_kv: Some(p), ..
                }
                | Event::Delete { prev_kv: p, .. } => {
                    state.insert(p.key.clone(), p);
                }
            }
        }
    }
    Ok(ListResult {
        items: state.into_values().collect(),
        revision: at,
    })
}

/// Expires leases: sleeps until the next expiry or until woken by a lease change.
async fn lease_task<B: Backend>(weak: Weak<Inner<B>>, wake: Arc<Notify>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let res = tokio::task::spawn_blocking(move || inner.expire_due()).await;
        let wait = match res {
            Ok(Ok(Some(next))) => {
                Duration::from_millis(u64::try_from(next - now_ms()).unwrap_or(0))
            }
            Ok(Ok(None)) => Duration::from_secs(3600),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "expiring leases failed; retrying");
                Duration::from_secs(1)
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease expiry task failed; retrying");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
        }
    }
}

/// Feeds one watch stream: history after `last` first, then the live broadcast; falls back to
/// history whenever it lags or sees a gap.
async fn watch_task<B: Backend>(
    weak: Weak<Inner<B>>,
    prefix: String,
    mut last: i64,
    mut rx: broadcast::Receiver<Arc<Batch>>,
    tx: mpsc::Sender<Result<Event>>,
    chunk: usize,
) {
    let closed = |prefix: &str| StoreError::Closed {
        op: Op::Watch,
        key: prefix.to_owned(),
    };
    'catch_up: loop {
        // History after `last`, chunk by chunk, until it is exhausted.
        loop {
            let Some(inner) = weak.upgrade() else {
                let _ = tx.send(Err(closed(&prefix))).await;
                return;
            };
            let p = prefix.clone();
            let res = tokio::task::spawn_blocking(move || {
                inner.backend.read(Op::Watch, &p, |t| {
                    check_compacted(t, Op::Watch, &p, last)?;
                    t.history(last, chunk)
                })
            })
            .await
            .unwrap_or_else(|e| Err(join_error(Op::Watch, &prefix, e)));
            let batches = match res {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if batches.is_empty() {
                break;
            }
            for (rev, events) in batches {
                for ev in events {
                    if ev.key().starts_with(prefix.as_str()) && tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                last = rev;
            }
        }
        // Live.
        loop {
            let batch = tokio::select! {
                _ = tx.closed() => return,
                r = rx.recv() => match r {
                    Ok(b) => b,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(prefix = %prefix, missed = n, "watcher lagged; catching up from history");
                        continue 'catch_up;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        let _ = tx.send(Err(closed(&prefix))).await;
                        return;
                    }
                },
            };
            if batch.revision <= last {
                continue;
            }
            if batch.revision > last + 1 {
                // A gap (should not happen without a lag): history has it.
                continue 'catch_up;
            }
            for ev in &batch.events {
                if ev.key().starts_with(prefix.as_str()) && tx.send(Ok(ev.clone())).await.is_err() {
                    return;
                }
            }
            last = batch.revision;
        }
    }
}

/// Implements [`crate::Store`] for a newtype around [`Local`] by delegation.
macro_rules! delegate_store {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::Store for $ty {
            async fn get(&self, key: &str) -> $crate::Result<Option<$crate::KeyValue>> {
                self.local.get(key).await
            }
            async fn list(
                &self,
                prefix: &str,
                at_revision: Option<i64>,
            ) -> $crate::Result<$crate::ListResult> {
                self.local.list(prefix, at_revision).await
            }
            async fn create(
                &self,
                key: &str,
                value: Vec<u8>,
                lease: Option<$crate::LeaseId>,
            ) -> $crate::Result<$crate::KeyValue> {
                self.local.create(key, value, lease).await
            }
            async fn update(
                &self,
                key: &str,
                value: Vec<u8>,
                expected_mod_revision: i64,
            ) -> $crate::Result<$crate::KeyValue> {
                self.local.update(key, value, expected_mod_revision).await
            }
            async fn delete(
                &self,
                key: &str,
                expected_mod_revision: Option<i64>,
            ) -> $crate::Result<$crate::Deleted> {
                self.local.delete(key, expected_mod_revision).await
            }
            async fn current_revision(&self) -> $crate::Result<i64> {
                self.local.current_revision().await
            }
            async fn compact(&self, revision: i64) -> $crate::Result<()> {
                self.local.compact(revision).await
            }
            async fn watch(
                &self,
                prefix: &str,
                from_revision: i64,
            ) -> $crate::Result<$crate::WatchStream> {
                self.local.watch(prefix, from_revision).await
            }
            async fn grant_lease(
                &self,
                ttl: std::time::Duration,
            ) -> $crate::Result<$crate::LeaseId> {
                self.local.grant_lease(ttl).await
            }
            async fn keep_alive(&self, lease: $crate::LeaseId) -> $crate::Result<()> {
                self.local.keep_alive(lease).await
            }
            async fn revoke_lease(&self, lease: $crate::LeaseId) -> $crate::Result<()> {
                self.local.revoke_lease(lease).await
            }
        }
    };
}
pub(crate) use delegate_store;
