//! The controllers the API server runs, in kube-controller-manager's style: each one lists
//! and watches the kinds it cares about into a local cache (re-listing after a `410 Gone`
//! or a broken stream), turns every change into keys on a de-duplicating work queue, and
//! reconciles one key at a time by reading the current state and writing only the
//! difference (through [`Registry::update_with`], `create` and `delete`, which retry or
//! fail on conflicts; a failed key is retried with a per-key back-off). Every key is also
//! reconciled periodically (`resync`), so a lost trigger is repaired.
//!
//! - [`endpoints`]: Service selector → `Endpoints` and `EndpointSlice`s;
//! - [`scheduler`]: binds pending Pods to the least-loaded fitting Ready node;
//! - [`node_lifecycle`]: marks nodes whose heartbeat stopped `Unknown` and taints them;
//! - [`namespace`]: empties and removes Namespaces being deleted.
//!
//! Start them with [`spawn_all`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use podnet_api::k8s::kinds::{POD, ResourceKind};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::registry::{EventType, Registry, revision_of};

pub mod endpoints;
pub mod namespace;
pub mod node_lifecycle;
pub mod scheduler;

/// Settings of the controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    /// How long a node may go without a heartbeat (Lease renewal or node status) before it is
    /// marked `Unknown` (kube-controller-manager's `--node-monitor-grace-period`, 40 s).
    pub node_monitor_grace: Duration,
    /// How often every controller reconciles all its keys, changed or not (30 s).
    pub resync: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            node_monitor_grace: Duration::from_secs(40),
            resync: Duration::from_secs(30),
        }
    }
}

/// Spawns all controllers (endpoints, scheduler, node lifecycle, namespace) on the current
/// tokio runtime and returns their tasks.
///
/// They stop when `shutdown` becomes `true` (send `true` on the `watch::Sender`) or when
/// its sender is dropped; the returned tasks then finish (their list/watch tasks are
/// stopped with them). Must be called within a tokio runtime.
pub fn spawn_all(
    registry: Registry,
    config: ControllerConfig,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    vec![
        endpoints::spawn(registry.clone(), &config, shutdown.clone()),
        scheduler::spawn(registry.clone(), &config, shutdown.clone()),
        node_lifecycle::spawn(registry.clone(), &config, shutdown.clone()),
        namespace::spawn(registry, &config, shutdown),
    ]
}

/// The default grace period of a pod (`terminationGracePeriodSeconds`).
const DEFAULT_POD_GRACE_SECONDS: i64 = 30;

/// Deletes a pod as Kubernetes does: a pod bound to a node and not in a terminal phase is
/// only marked (`deletionTimestamp` = now + grace, `deletionGracePeriodSeconds` = grace;
/// its node's agent stops it and then deletes it); any other pod is deleted now. `grace`
/// defaults to the pod's `spec.terminationGracePeriodSeconds` (else 30); `Some(0)` deletes
/// now (a forced delete). A pod already marked keeps its deletion time unless `grace`
/// shortens it. A pod with `metadata.finalizers` is marked and kept, never deleted here.
///
/// Returns `Some(pod)` as stored when the pod was marked (or already was), `None` when it
/// was deleted; 404 if there is no such pod.
pub async fn delete_pod_gracefully(
    registry: &Registry,
    namespace: &str,
    name: &str,
    grace: Option<i64>,
) -> ApiResult<Option<Value>> {
    const ATTEMPTS: usize = 32;
    for _ in 0..ATTEMPTS {
        let pod = registry.get(&POD, namespace, name).await?;
        let revision = revision_of(&pod)?;
        let grace = grace
            .or_else(|| {
                pod.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(DEFAULT_POD_GRACE_SECONDS)
            .max(0);
        let bound = !str_at(&pod, "/spec/nodeName").is_empty();
        let graceful = bound && !pod_is_terminal(&pod) && grace > 0;
        let result = if graceful || has_finalizers(&pod) {
            let grace = if graceful { grace } else { 0 };
            let Some(marked) = mark_deleted(&pod, grace) else {
                return Ok(Some(pod));
            };
            registry.update(&POD, marked, revision).await.map(Some)
        } else {
            match registry.delete(&POD, namespace, name, Some(revision)).await {
                Ok(_) => Ok(None),
                Err(e) => Err(e),
            }
        };
        match result {
            Err(e) if e.reason == "Conflict" => continue,
            other => return other,
        }
    }
    Err(ApiError::conflict(POD.plural, POD.group, name))
}

/// The object with `deletionTimestamp` = now + `grace` and `deletionGracePeriodSeconds`,
/// or `None` when it is already marked with a grace no longer than `grace`.
fn mark_deleted(obj: &Value, grace: i64) -> Option<Value> {
    let current = meta::get(obj, "deletionGracePeriodSeconds").and_then(Value::as_i64);
    let marked = meta::get(obj, "deletionTimestamp").is_some();
    if marked && current.is_none_or(|c| c <= grace) {
        return None;
    }
    let mut new = obj.clone();
    let at = SystemTime::now() + Duration::from_secs(grace.unsigned_abs());
    meta::set(&mut new, "deletionTimestamp", meta::timestamp(at));
    meta::set(&mut new, "deletionGracePeriodSeconds", grace);
    if let Some(generation) = meta::get(obj, "generation").and_then(Value::as_i64) {
        meta::set(&mut new, "generation", generation + 1);
    }
    Some(new)
}

/// Deletes any object now, except one with `metadata.finalizers`, which is only marked
/// with a `deletionTimestamp`. Returns whether the object is gone (404 counts as gone).
pub(crate) async fn delete_object(
    registry: &Registry,
    kind: &ResourceKind,
    namespace: &str,
    name: &str,
) -> ApiResult<bool> {
    const ATTEMPTS: usize = 32;
    for _ in 0..ATTEMPTS {
        let Some(obj) = registry.try_get(kind, namespace, name).await? else {
            return Ok(true);
        };
        let revision = revision_of(&obj)?;
        let result = if has_finalizers(&obj) {
            match mark_deleted(&obj, 0) {
                Some(marked) => registry.update(kind, marked, revision).await.map(|_| false),
                None => Ok(false),
            }
        } else {
            registry
                .delete(kind, namespace, name, Some(revision))
                .await
                .map(|_| true)
        };
        match result {
            Err(e) if e.reason == "Conflict" => continue,
            Err(e) if e.code == 404 => return Ok(true),
            other => return other,
        }
    }
    Err(ApiError::conflict(kind.plural, kind.group, name))
}

fn has_finalizers(obj: &Value) -> bool {
    meta::get(obj, "finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// The string at a JSON pointer, or "".
pub(crate) fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// A pod in phase `Succeeded` or `Failed`.
pub(crate) fn pod_is_terminal(pod: &Value) -> bool {
    matches!(str_at(pod, "/status/phase"), "Succeeded" | "Failed")
}

/// The condition of `type` in `status.conditions`.
pub(crate) fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
}

/// The `status` of condition `type`, or "" when absent.
pub(crate) fn condition_status<'a>(obj: &'a Value, type_: &str) -> &'a str {
    condition(obj, type_)
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `status.conditions`, created if missing.
pub(crate) fn conditions_mut(obj: &mut Value) -> &mut Vec<Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    let status = &mut obj["status"];
    if !status.get("conditions").is_some_and(Value::is_array) {
        status["conditions"] = json!([]);
    }
    match status["conditions"].as_array_mut() {
        Some(conditions) => conditions,
        // Unreachable: made an array just above.
        None => unreachable!("conditions was just made an array"),
    }
}

/// Now, as Kubernetes writes it.
pub(crate) fn now_timestamp() -> String {
    meta::timestamp(SystemTime::now())
}

// ---------------------------------------------------------------------------------------
// The machinery every controller shares: informers (list + watch into a cache), a work
// queue and the loop that drives a `Reconciler`.

/// One list+watch a controller runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watched {
    pub kind: &'static ResourceKind,
    /// Only this namespace, or all.
    pub namespace: Option<&'static str>,
}

/// One object as the cache saw it change: `old` before, `new` after (`None`: absent).
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub kind: &'static ResourceKind,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

impl Change {
    /// The object after the change, else before it.
    pub fn object(&self) -> Option<&Value> {
        self.new.as_ref().or(self.old.as_ref())
    }
}

/// The objects of one kind, by (namespace, name).
#[derive(Debug, Default)]
pub(crate) struct Cache {
    objects: BTreeMap<(String, String), Value>,
}

impl Cache {
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// Every object, ordered by namespace and name.
    pub fn iter(&self) -> impl Iterator<Item = &Value> {
        self.objects.values()
    }

    /// Records `obj` unless the cache holds a newer version; returns the change, if any.
    fn put(&mut self, kind: &'static ResourceKind, obj: Value) -> Option<Change> {
        let key = cache_key(&obj);
        let old = self.objects.get(&key);
        if let Some(old) = old {
            let (old_rv, new_rv) = (revision_of(old).ok(), revision_of(&obj).ok());
            if let (Some(o), Some(n)) = (old_rv, new_rv)
                && n <= o
            {
                return None;
            }
        }
        let old = self.objects.insert(key, obj.clone());
        Some(Change {
            kind,
            old,
            new: Some(obj),
        })
    }

    fn remove(&mut self, kind: &'static ResourceKind, obj: &Value) -> Option<Change> {
        let old = self.objects.remove(&cache_key(obj))?;
        Some(Change {
            kind,
            old: Some(old),
            new: None,
        })
    }

    /// Replaces the contents with a fresh list; returns what changed.
    fn replace(&mut self, kind: &'static ResourceKind, items: Vec<Value>) -> Vec<Change> {
        let mut fresh: BTreeMap<(String, String), Value> = BTreeMap::new();
        for item in items {
            fresh.insert(cache_key(&item), item);
        }
        let mut changes = Vec::new();
        for (key, old) in &self.objects {
            if !fresh.contains_key(key) {
                changes.push(Change {
                    kind,
                    old: Some(old.clone()),
                    new: None,
                });
            }
        }
        for (key, new) in &fresh {
            let old = self.objects.get(key);
            if old.is_none_or(|o| meta::resource_version(o) != meta::resource_version(new)) {
                changes.push(Change {
                    kind,
                    old: old.cloned(),
                    new: Some(new.clone()),
                });
            }
        }
        self.objects = fresh;
        changes
    }
}

fn cache_key(obj: &Value) -> (String, String) {
    (meta::namespace(obj).to_owned(), meta::name(obj).to_owned())
}

/// The caches of one controller, one per watched kind.
#[derive(Debug, Default)]
pub(crate) struct Caches {
    caches: Vec<(&'static ResourceKind, Cache)>,
}

static EMPTY_CACHE: std::sync::LazyLock<Cache> = std::sync::LazyLock::new(Cache::default);

impl Caches {
    fn new(watched: &[Watched]) -> Self {
        Caches {
            caches: watched.iter().map(|w| (w.kind, Cache::default())).collect(),
        }
    }

    /// The cache of `kind` (empty if the controller does not watch it).
    pub fn of(&self, kind: &ResourceKind) -> &Cache {
        self.caches
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, c)| c)
            .unwrap_or(&EMPTY_CACHE)
    }

    fn of_mut(&mut self, kind: &ResourceKind) -> Option<&mut Cache> {
        self.caches
            .iter_mut()
            .find(|(k, _)| *k == kind)
            .map(|(_, c)| c)
    }

    pub fn get(&self, kind: &ResourceKind, namespace: &str, name: &str) -> Option<&Value> {
        self.of(kind).get(namespace, name)
    }
}

/// What a reconcile asks of the loop besides success.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Reconcile the key again after this long (unless triggered earlier).
    pub requeue_after: Option<Duration>,
    /// Objects the reconcile wrote, recorded in the cache now (before their watch events
    /// arrive) so that the next reconcile sees them, as kube-scheduler "assumes" a binding.
    pub assumed: Vec<(&'static ResourceKind, Value)>,
}

/// One controller: what it watches, which keys a change touches, and how a key is
/// reconciled.
pub(crate) trait Reconciler: Send + 'static {
    type Key: Clone + Eq + Hash + Debug + Send + Sync + 'static;

    fn name(&self) -> &'static str;

    fn watches(&self) -> Vec<Watched>;

    /// How often every key is reconciled, changed or not.
    fn resync_period(&self) -> Duration;

    /// Sees every change as the cache records it (including `assumed` objects), before
    /// `keys_for`; for derived state such as per-node pod counts.
    fn observe(&mut self, _change: &Change) {}

    /// The keys a change touches (called only once every cache has listed).
    fn keys_for(&self, caches: &Caches, change: &Change) -> Vec<Self::Key>;

    /// Every key, for the initial and the periodic full reconcile.
    fn all_keys(&self, caches: &Caches) -> Vec<Self::Key>;

    fn reconcile(
        &mut self,
        caches: &Caches,
        key: &Self::Key,
    ) -> impl Future<Output = ApiResult<Outcome>> + Send;
}

/// A de-duplicating work queue with delayed and rate-limited (per-key back-off) adds.
#[derive(Debug)]
pub(crate) struct WorkQueue<K: Clone + Eq + Hash> {
    queue: VecDeque<K>,
    queued: HashSet<K>,
    delayed: HashMap<K, Instant>,
    failures: HashMap<K, u32>,
}

impl<K: Clone + Eq + Hash> Default for WorkQueue<K> {
    fn default() -> Self {
        WorkQueue {
            queue: VecDeque::new(),
            queued: HashSet::new(),
            delayed: HashMap::new(),
            failures: HashMap::new(),
        }
    }
}

const BACKOFF_BASE: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl<K: Clone + Eq + Hash> WorkQueue<K> {
    /// Queues `key` unless it is queued already.
    pub fn add(&mut self, key: K) {
        if self.queued.insert(key.clone()) {
            self.delayed.remove(&key);
            self.queue.push_back(key);
        }
    }

    /// Queues `key` after `delay` (the earliest of several delays wins).
    pub fn add_after(&mut self, key: K, delay: Duration) {
        if self.queued.contains(&key) {
            return;
        }
        let at = Instant::now() + delay;
        let entry = self.delayed.entry(key).or_insert(at);
        if at < *entry {
            *entry = at;
        }
    }

    /// Queues `key` after a back-off that doubles with each failure in a row.
    pub fn add_rate_limited(&mut self, key: K) -> Duration {
        let failures = self.failures.entry(key.clone()).or_insert(0);
        let delay = BACKOFF_BASE
            .saturating_mul(2u32.saturating_pow((*failures).min(20)))
            .min(BACKOFF_MAX);
        *failures = failures.saturating_add(1);
        self.add_after(key, delay);
        delay
    }

    /// Clears the failure count of `key`.
    pub fn forget(&mut self, key: &K) {
        self.failures.remove(key);
    }

    /// Moves delayed keys that are due onto the queue.
    pub fn promote_due(&mut self, now: Instant) {
        let due: Vec<K> = self
            .delayed
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.delayed.remove(&key);
            self.add(key);
        }
    }

    /// When the next delayed key is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.delayed.values().min().copied()
    }

    pub fn pop(&mut self) -> Option<K> {
        let key = self.queue.pop_front()?;
        self.queued.remove(&key);
        Some(key)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.queue.len()
    }
}

/// What an informer tells its controller.
enum Input {
    Listed {
        index: usize,
        items: Vec<Value>,
    },
    Event {
        index: usize,
        kind: EventType,
        object: Value,
    },
}

/// Waits until `shutdown` is `true` or its sender is gone.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn is_stopped(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Lists and watches one kind into `tx`, re-listing after a `410 Gone` or a broken stream,
/// until `shutdown` or until the controller is gone.
async fn informer(
    registry: Registry,
    controller: &'static str,
    index: usize,
    watched: Watched,
    tx: mpsc::UnboundedSender<Input>,
    mut shutdown: watch::Receiver<bool>,
) {
    let what = watched.kind.plural;
    let mut backoff = BACKOFF_BASE;
    loop {
        let failed_at = Instant::now();
        let listed = tokio::select! {
            () = stopped(&mut shutdown) => return,
            listed = registry.list(watched.kind, watched.namespace, None) => listed,
        };
        match listed {
            Ok(listed) => {
                let revision = listed.revision;
                tracing::debug!(
                    controller,
                    what,
                    revision,
                    count = listed.items.len(),
                    "listed"
                );
                if tx
                    .send(Input::Listed {
                        index,
                        items: listed.items,
                    })
                    .is_err()
                {
                    return;
                }
                let stream = tokio::select! {
                    () = stopped(&mut shutdown) => return,
                    stream = registry.watch(watched.kind, watched.namespace, revision) => stream,
                };
                match stream {
                    Ok(stream) => {
                        let mut stream = Box::pin(stream);
                        loop {
                            let item = tokio::select! {
                                () = stopped(&mut shutdown) => return,
                                item = stream.next() => item,
                            };
                            match item {
                                Some(Ok(event)) => {
                                    backoff = BACKOFF_BASE;
                                    let input = Input::Event {
                                        index,
                                        kind: event.kind,
                                        object: event.object,
                                    };
                                    if tx.send(input).is_err() {
                                        return;
                                    }
                                }
                                Some(Err(e)) if e.code == 410 => {
                                    tracing::info!(controller, what, error = %e, "watch expired; re-listing");
                                    backoff = Duration::ZERO;
                                    break;
                                }
                                Some(Err(e)) => {
                                    tracing::warn!(controller, what, error = %e, "watch failed; re-listing");
                                    break;
                                }
                                None => {
                                    tracing::warn!(controller, what, "watch ended; re-listing");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(controller, what, error = %e, "cannot watch; re-listing");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(controller, what, error = %e, "cannot list; retrying");
            }
        }
        // Back off only when failures come quickly one after another.
        if failed_at.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_BASE;
        }
        tokio::select! {
            () = stopped(&mut shutdown) => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).clamp(BACKOFF_BASE, Duration::from_secs(5));
    }
}

/// Spawns the loop of one controller.
pub(crate) fn spawn_controller<R: Reconciler>(
    reconciler: R,
    registry: Registry,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(run(reconciler, registry, shutdown))
}

/// Drives a controller until `shutdown`.
async fn run<R: Reconciler>(
    mut reconciler: R,
    registry: Registry,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = reconciler.name();
    let watched = reconciler.watches();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut informers = JoinSet::new();
    for (index, w) in watched.iter().enumerate() {
        informers.spawn(informer(
            registry.clone(),
            name,
            index,
            *w,
            tx.clone(),
            shutdown.clone(),
        ));
    }
    drop(tx);

    let mut caches = Caches::new(&watched);
    let mut listed = vec![false; watched.len()];
    let mut synced = watched.is_empty();
    let mut queue: WorkQueue<R::Key> = WorkQueue::default();
    let resync = reconciler.resync_period().max(Duration::from_millis(10));
    let mut next_resync = Instant::now() + resync;
    if synced {
        for key in reconciler.all_keys(&caches) {
            queue.add(key);
        }
    }
    tracing::info!(controller = name, "started");

    loop {
        if is_stopped(&shutdown) {
            break;
        }
        // Take in everything the informers have delivered so far.
        loop {
            match rx.try_recv() {
                Ok(input) => {
                    handle_input(
                        &mut reconciler,
                        &mut caches,
                        &mut listed,
                        &mut synced,
                        &mut queue,
                        &watched,
                        input,
                    );
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    tracing::info!(controller = name, "stopped");
                    return;
                }
            }
        }
        let now = Instant::now();
        if synced && now >= next_resync {
            for key in reconciler.all_keys(&caches) {
                queue.add(key);
            }
            next_resync = now + resync;
        }
        queue.promote_due(now);

        if synced && let Some(key) = queue.pop() {
            match reconciler.reconcile(&caches, &key).await {
                Ok(outcome) => {
                    queue.forget(&key);
                    for (kind, obj) in outcome.assumed {
                        if let Some(change) = caches.of_mut(kind).and_then(|c| c.put(kind, obj)) {
                            reconciler.observe(&change);
                        }
                    }
                    if let Some(after) = outcome.requeue_after {
                        queue.add_after(key, after);
                    }
                }
                Err(e) => {
                    let delay = queue.add_rate_limited(key.clone());
                    tracing::warn!(controller = name, ?key, error = %e, retry_in = ?delay, "reconcile failed");
                }
            }
            continue;
        }

        // Nothing to do now: wait for input, a due key, the resync or shutdown.
        let mut wake = next_resync;
        if let Some(due) = queue.next_due() {
            wake = wake.min(due);
        }
        tokio::select! {
            () = stopped(&mut shutdown) => break,
            input = rx.recv() => match input {
                Some(input) => handle_input(
                    &mut reconciler,
                    &mut caches,
                    &mut listed,
                    &mut synced,
                    &mut queue,
                    &watched,
                    input,
                ),
                None => break,
            },
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    informers.shutdown().await;
    tracing::info!(controller = name, "stopped");
}

fn handle_input<R: Reconciler>(
    reconciler: &mut R,
    caches: &mut Caches,
    listed: &mut [bool],
    synced: &mut bool,
    queue: &mut WorkQueue<R::Key>,
    watched: &[Watched],
    input: Input,
) {
    let (index, changes) = match input {
        Input::Listed { index, items } => {
            let Some(w) = watched.get(index) else { return };
            let changes = caches
                .of_mut(w.kind)
                .map(|c| c.replace(w.kind, items))
                .unwrap_or_default();
            (index, changes)
        }
        Input::Event {
            index,
            kind,
            object,
        } => {
            let Some(w) = watched.get(index) else { return };
            let change = caches.of_mut(w.kind).and_then(|c| match kind {
                EventType::Deleted => c.remove(w.kind, &object),
                EventType::Added | EventType::Modified => c.put(w.kind, object),
            });
            (index, change.into_iter().collect())
        }
    };
    for change in &changes {
        reconciler.observe(change);
    }
    if *synced {
        for change in &changes {
            for key in reconciler.keys_for(caches, change) {
                queue.add(key);
            }
        }
    } else if let Some(l) = listed.get_mut(index) {
        *l = true;
        if listed.iter().all(|l| *l) {
            *synced = true;
            tracing::debug!(controller = reconciler.name(), "caches synced");
            for key in reconciler.all_keys(caches) {
                queue.add(key);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the controllers' tests.

    use std::sync::Arc;
    use std::time::Duration;

    use podnet_store::MemoryStore;
    use tokio::sync::watch;

    use crate::registry::Registry;

    pub fn registry() -> Registry {
        Registry::new(Arc::new(MemoryStore::new()))
    }

    pub fn shutdown() -> (watch::Sender<bool>, watch::Receiver<bool>) {
        watch::channel(false)
    }

    /// Polls `check` until it returns `Some`, for at most `timeout`.
    pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use podnet_api::k8s::kinds::{NAMESPACE, NODE};

    #[test]
    fn work_queue_dedups_and_delays() {
        let mut q: WorkQueue<&str> = WorkQueue::default();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop(), Some("a"));
        q.add_after("c", Duration::from_secs(3600));
        assert!(q.next_due().is_some());
        q.promote_due(Instant::now());
        assert_eq!(q.pop(), Some("b"));
        assert_eq!(q.pop(), None);
        q.promote_due(Instant::now() + Duration::from_secs(3601));
        assert_eq!(q.pop(), Some("c"));
        let d1 = q.add_rate_limited("x");
        let d2 = q.add_rate_limited("x");
        assert!(d2 > d1);
        q.forget(&"x");
        assert_eq!(q.add_rate_limited("x"), d1);
    }

    #[test]
    fn cache_replace_reports_differences() {
        let mut c = Cache::default();
        let a = json!({"metadata": {"name": "a", "namespace": "x", "resourceVersion": "2"}});
        let b = json!({"metadata": {"name": "b", "namespace": "x", "resourceVersion": "3"}});
        assert_eq!(c.replace(&POD, vec![a.clone(), b.clone()]).len(), 2);
        let a2 = json!({"metadata": {"name": "a", "namespace": "x", "resourceVersion": "4"}});
        let changes = c.replace(&POD, vec![a2]);
        // a modified, b deleted.
        assert_eq!(changes.len(), 2);
        assert!(
            changes
                .iter()
                .any(|ch| ch.new.is_none() && ch.old == Some(b.clone()))
        );
        // An older version never replaces a newer one.
        assert!(c.put(&POD, a).is_none());
        assert_eq!(c.iter().count(), 1);
        assert!(c.get("x", "a").is_some() && c.get("x", "b").is_none());
    }

    /// A watcher that falls behind a compacting store gets a 410 and re-lists.
    #[tokio::test]
    async fn informer_relists_after_410() {
        let store = podnet_store::MemoryStore::with_options(podnet_store::LocalOptions {
            keep_revisions: Some(2),
            watch_broadcast_capacity: 1,
            watch_channel_capacity: 1,
            history_chunk: 1,
        });
        let r = Registry::new(std::sync::Arc::new(store));
        let (_stop, rx) = shutdown();
        let (tx, mut inputs) = mpsc::unbounded_channel();
        let watched = Watched {
            kind: &NODE,
            namespace: None,
        };
        let task = tokio::spawn(informer(r.clone(), "test", 0, watched, tx, rx));
        let Some(Input::Listed { items, .. }) = inputs.recv().await else {
            panic!("no list first")
        };
        assert!(items.is_empty());
        // Many writes from another thread while this runtime (which runs the informer and
        // its watch) is blocked: the watch falls behind the compaction.
        let writer = r.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                for i in 0..200 {
                    writer
                        .create(&NODE, json!({"metadata": {"name": format!("n{i}")}}))
                        .await
                        .unwrap();
                }
            });
        })
        .join()
        .unwrap();
        // The informer's view: re-listed at least once, and complete in the end.
        let mut names: HashSet<String> = HashSet::new();
        let mut relists = 0;
        tokio::time::timeout(Duration::from_secs(10), async {
            while names.len() < 200 {
                match inputs.recv().await {
                    Some(Input::Listed { items, .. }) => {
                        relists += 1;
                        names = items.iter().map(|n| meta::name(n).to_owned()).collect();
                    }
                    Some(Input::Event { object, .. }) => {
                        names.insert(meta::name(&object).to_owned());
                    }
                    None => panic!("the informer stopped"),
                }
            }
        })
        .await
        .unwrap();
        assert!(relists >= 1);
        task.abort();
    }

    #[tokio::test]
    async fn pods_are_deleted_gracefully_when_bound() {
        let r = registry();
        let pod = |name: &str, node: Option<&str>, phase: &str| {
            let mut p = json!({"metadata": {"name": name, "namespace": "default"},
                "spec": {"containers": [{"name": "c"}]}, "status": {"phase": phase}});
            if let Some(n) = node {
                p["spec"]["nodeName"] = json!(n);
            }
            p
        };
        r.create(&POD, pod("pending", None, "Pending"))
            .await
            .unwrap();
        r.create(&POD, pod("running", Some("n1"), "Running"))
            .await
            .unwrap();
        r.create(&POD, pod("done", Some("n1"), "Succeeded"))
            .await
            .unwrap();
        r.create(&POD, pod("forced", Some("n1"), "Running"))
            .await
            .unwrap();

        assert_eq!(
            delete_pod_gracefully(&r, "default", "pending", None)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            delete_pod_gracefully(&r, "default", "done", None)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            delete_pod_gracefully(&r, "default", "forced", Some(0))
                .await
                .unwrap(),
            None
        );
        let marked = delete_pod_gracefully(&r, "default", "running", None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
        let at = meta::parse_timestamp(marked["metadata"]["deletionTimestamp"].as_str().unwrap())
            .unwrap();
        assert!(at > SystemTime::now() + Duration::from_secs(20));
        // Asking again with a longer grace changes nothing; a shorter one shortens it.
        let again = delete_pod_gracefully(&r, "default", "running", Some(60))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again, marked);
        let shorter = delete_pod_gracefully(&r, "default", "running", Some(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 5);
        assert_eq!(r.list(&POD, None, None).await.unwrap().items.len(), 1);
        let missing = delete_pod_gracefully(&r, "default", "nope", None)
            .await
            .unwrap_err();
        assert_eq!(missing.code, 404);
    }

    #[tokio::test]
    async fn spawn_all_runs_and_stops() {
        let r = registry();
        r.create(&NAMESPACE, json!({"metadata": {"name": "default"}}))
            .await
            .unwrap();
        r.create(
            &NODE,
            json!({"metadata": {"name": "n1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .await
        .unwrap();
        r.create(
            &POD,
            json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [{"name": "c"}]}}),
        )
        .await
        .unwrap();
        let (stop, rx) = shutdown();
        let handles = spawn_all(r.clone(), ControllerConfig::default(), rx);
        assert_eq!(handles.len(), 4);
        wait_for(
            "the pod to be scheduled",
            Duration::from_secs(10),
            async || {
                let pod = r.get(&POD, "default", "p").await.unwrap();
                (pod["spec"]["nodeName"] == "n1").then_some(())
            },
        )
        .await;
        stop.send(true).unwrap();
        for h in handles {
            tokio::time::timeout(Duration::from_secs(5), h)
                .await
                .unwrap()
                .unwrap();
        }
    }
}
