//! The sync loop: Pods, Namespaces, NetworkPolicies and ClusterNetworkPolicies (where the
//! API serves them) watched into reflector stores; after
//! a change (and once every list is in), the desired table is computed from the stores and
//! the kernel moved to it in one netlink transaction ([`podnet_kernel::ruleset::plan`]):
//! whole at start and after a failure, otherwise only what differs. Every `resync` the
//! kernel's table is read back and compared with what was written; one that drifted (a
//! hand edit, a flushed ruleset) is written whole again.

use std::pin::pin;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use podnet_api::k8s::policy_api::ClusterNetworkPolicy;
use podnet_kernel::NetNs;
use podnet_kernel::nftnl::NftSocket;
use podnet_kernel::ruleset::{self, Action, PlanKind, Table};
use tokio::sync::watch;

use crate::cluster::{Cluster, PodInfo, namespace_labels};
use crate::model::{Note, PolicyConfig, TABLE, compile};

/// Errors of the policy engine, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("writing the NetworkPolicy rules: {0}")]
    Kernel(#[from] podnet_kernel::KernelError),
    #[error("the sync thread ended: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A watch the engine needs fails (the API may not serve NetworkPolicy).
    #[error("watching {what} failed: {error}")]
    Watch { what: &'static str, error: String },
}

/// How the loop runs.
#[derive(Debug)]
pub struct RunConfig {
    pub policy: PolicyConfig,
    /// The node's namespace (`None`: the calling thread's).
    pub netns: Option<NetNs>,
    /// How often the kernel's table is checked against what was written.
    pub resync: Duration,
    /// How long a burst of changes is gathered before a sync.
    pub debounce: Duration,
}

impl RunConfig {
    pub fn new(node: impl Into<String>) -> RunConfig {
        RunConfig {
            policy: PolicyConfig {
                node: node.into(),
                log_group: 100,
            },
            netns: None,
            resync: Duration::from_secs(60),
            debounce: Duration::from_millis(5),
        }
    }
}

/// What one sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub kind: PlanKind,
    pub elapsed: Duration,
    /// What the policies ask that the table cannot express.
    pub notes: Vec<crate::model::Note>,
}

/// What the kernel holds and how to reach it; moved to the blocking pool for each sync.
pub struct Syncer {
    config: PolicyConfig,
    netns: Option<NetNs>,
    socket: Option<NftSocket>,
    /// What the last sync wrote (`None`: no table); unknown after a failure.
    installed: Option<Option<Table>>,
}

impl Syncer {
    pub fn new(config: PolicyConfig, netns: Option<NetNs>) -> Syncer {
        Syncer {
            config,
            netns,
            socket: None,
            installed: None,
        }
    }

    /// Moves the kernel to the table `cluster` calls for.
    pub fn sync(&mut self, cluster: &Cluster) -> Result<SyncReport, PolicyError> {
        let started = Instant::now();
        let (wanted, notes) = compile(cluster, &self.config);
        if self.installed.is_none() {
            self.adopt(wanted.as_ref())?;
        }
        let (batch, kind) = match &self.installed {
            Some(installed) => ruleset::plan(installed.as_ref(), wanted.as_ref()),
            // Unknown and not what is wanted: whatever is there goes.
            None => match &wanted {
                Some(t) => (t.replacing_batch(), PlanKind::Full),
                None => (
                    ruleset::delete_table_batch(podnet_kernel::nftnl::Family::Inet, TABLE),
                    PlanKind::Delete,
                ),
            },
        };
        self.installed = None;
        if kind != PlanKind::Nothing {
            self.socket()?
                .apply(&batch)
                .inspect_err(|_| self.socket = None)?;
        }
        self.installed = Some(wanted);
        Ok(SyncReport {
            kind,
            elapsed: started.elapsed(),
            notes,
        })
    }

    /// Takes what the kernel holds as installed when it is what is wanted (an agent
    /// restarted over its own table: nothing is rewritten, the counters go on).
    fn adopt(&mut self, wanted: Option<&Table>) -> Result<(), PolicyError> {
        let found = ruleset::get(
            self.netns.as_ref(),
            podnet_kernel::nftnl::Family::Inet,
            TABLE,
        )?
        .map(comparable);
        if found.as_ref() == wanted.cloned().map(comparable).as_ref() {
            self.installed = Some(wanted.cloned());
        }
        Ok(())
    }

    /// Whether the kernel still holds what the last sync wrote; when not, the next sync
    /// writes the table whole.
    pub fn verify(&mut self) -> Result<bool, PolicyError> {
        let Some(installed) = &self.installed else {
            return Ok(false);
        };
        let found = ruleset::get(
            self.netns.as_ref(),
            podnet_kernel::nftnl::Family::Inet,
            TABLE,
        )?
        .map(comparable);
        let same = found == installed.clone().map(comparable);
        if !same {
            self.installed = None;
        }
        Ok(same)
    }

    fn socket(&mut self) -> Result<&mut NftSocket, PolicyError> {
        if self.socket.is_none() {
            self.socket = Some(NftSocket::open(self.netns.as_ref())?);
        }
        self.socket.as_mut().ok_or_else(|| {
            PolicyError::Kernel(podnet_kernel::KernelError::Nftables {
                message: "no netfilter socket".into(),
            })
        })
    }
}

/// The table as two holding the same compare: in name order (a partial sync's new sets
/// and chains are listed last) and with its counters at zero (what a rule counted is not
/// a difference).
fn comparable(mut t: Table) -> Table {
    t = t.by_name();
    for c in &mut t.chains {
        for r in &mut c.rules {
            for a in &mut r.actions {
                if let Action::Counter { packets, bytes } = a {
                    (*packets, *bytes) = (0, 0);
                }
            }
        }
    }
    t
}

/// The reflector stores.
struct Stores {
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
    policies: Store<NetworkPolicy>,
    cluster_policies: Store<ClusterNetworkPolicy>,
}

impl Stores {
    fn cluster(&self) -> Cluster {
        Cluster {
            pods: self
                .pods
                .state()
                .iter()
                .map(|p| PodInfo::from_pod(p))
                .collect(),
            namespaces: self
                .namespaces
                .state()
                .iter()
                .map(|n| namespace_labels(n))
                .collect(),
            policies: self
                .policies
                .state()
                .iter()
                .map(|p| (**p).clone())
                .collect(),
            cluster_policies: self
                .cluster_policies
                .state()
                .iter()
                .map(|p| (**p).clone())
                .collect(),
        }
    }
}

/// What a watch told the loop.
enum Signal {
    /// Its first list is in (`index`: which watch).
    Listed(usize),
    Changed,
    Failed(PolicyError),
    /// The API does not serve the kind (`index`: which watch); it counts as listed and
    /// empty while that lasts.
    NotServed(usize),
}

const WATCHED: [&str; 4] = [
    "Pods",
    "Namespaces",
    "NetworkPolicies",
    "ClusterNetworkPolicies",
];
/// The watch of a kind a cluster may not serve (a CRD upstream): ClusterNetworkPolicy.
const OPTIONAL: usize = 3;

/// Whether the API answered that it does not serve the kind.
fn not_served(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => s.is_not_found(),
        _ => false,
    }
}

fn signals<K>(
    index: usize,
    writer: reflector::store::Writer<K>,
    api: Api<K>,
) -> impl Stream<Item = Signal> + Send
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    podnet_watch::backed_off(reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default()),
    ))
    .map(move |e| match e {
        Ok(Event::InitDone) => Signal::Listed(index),
        Ok(_) => Signal::Changed,
        Err(e) if index == OPTIONAL && not_served(&e) => Signal::NotServed(index),
        Err(e) => Signal::Failed(PolicyError::Watch {
            what: WATCHED[index],
            error: e.to_string(),
        }),
    })
}

/// What the loop reports after each sync attempt (to the node's health).
pub type Report = Box<dyn Fn(Result<&SyncReport, &PolicyError>) + Send + Sync>;

/// Runs until `stop` turns true.
pub async fn run(
    client: kube::Client,
    config: RunConfig,
    report: Report,
    mut stop: watch::Receiver<bool>,
) -> Result<(), PolicyError> {
    let (pods, pods_w) = reflector::store();
    let (namespaces, ns_w) = reflector::store();
    let (policies, pol_w) = reflector::store();
    let (cluster_policies, cnp_w) = reflector::store();
    let stores = Stores {
        pods,
        namespaces,
        policies,
        cluster_policies,
    };
    let events_api = client.clone();
    let mut told: std::collections::BTreeSet<Note> = std::collections::BTreeSet::new();
    let events = futures::stream::select_all([
        signals(0, pods_w, Api::<Pod>::all(client.clone())).boxed(),
        signals(1, ns_w, Api::<Namespace>::all(client.clone())).boxed(),
        signals(2, pol_w, Api::<NetworkPolicy>::all(client.clone())).boxed(),
        signals(3, cnp_w, Api::<ClusterNetworkPolicy>::all(client)).boxed(),
    ]);
    let mut events = pin!(events);
    let mut syncer = Some(Syncer::new(config.policy.clone(), config.netns));
    let mut schedule = Schedule::new(config.debounce, config.resync);
    let mut listed = [false; 4];
    let mut absent_logged = false;
    loop {
        let wait = schedule.wait(Instant::now(), listed.iter().all(|l| *l));
        tokio::select! {
            _ = stop.changed() => {
                if *stop.borrow() {
                    return Ok(());
                }
            }
            signal = events.next() => match signal {
                Some(Signal::Listed(i)) => { listed[i] = true; schedule.changed(Instant::now()); }
                Some(Signal::Changed) => schedule.changed(Instant::now()),
                Some(Signal::NotServed(i)) => {
                    if !absent_logged {
                        tracing::info!("the API does not serve ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2): only NetworkPolicies apply");
                        absent_logged = true;
                    }
                    if !listed[i] {
                        listed[i] = true;
                        schedule.changed(Instant::now());
                    }
                }
                Some(Signal::Failed(e)) => {
                    tracing::warn!(error = %e, "retrying");
                    report(Err(&e));
                }
                None => return Ok(()),
            },
            _ = tokio::time::sleep(wait) => {
                let due = schedule.due(Instant::now());
                let Some(mut s) = syncer.take() else { return Ok(()) };
                let cluster = stores.cluster();
                let (s, result) = tokio::task::spawn_blocking(move || {
                    let result = step(&mut s, &cluster, due);
                    (s, result)
                })
                .await?;
                syncer = Some(s);
                schedule.done(Instant::now(), due, result.as_ref().is_ok());
                if let Some(r) = result.as_ref().ok().and_then(|r| r.as_ref()) {
                    report(Ok(r));
                    tell(&events_api, &config.policy.node, &r.notes, &mut told).await;
                } else if let Err(e) = &result {
                    tracing::warn!(error = %e, "NetworkPolicy sync failed; retrying");
                    report(Err(e));
                }
            }
        }
    }
}

/// Posts a Warning Event on each policy with a part the table cannot express, once per
/// note (a note that went away and comes back is told again).
async fn tell(
    client: &kube::Client,
    node: &str,
    notes: &[Note],
    told: &mut std::collections::BTreeSet<Note>,
) {
    told.retain(|n| notes.contains(n));
    let new: Vec<&Note> = notes.iter().filter(|n| !told.contains(*n)).collect();
    for note in new {
        let namespace = if note.namespace.is_empty() {
            "default"
        } else {
            &note.namespace
        };
        let api: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(client.clone(), namespace);
        match api
            .create(&kube::api::PostParams::default(), &event(node, note))
            .await
        {
            Ok(_) => {
                told.insert(note.clone());
            }
            Err(e) => tracing::warn!(error = %e, policy = %note.name, "cannot post the Event"),
        }
        tracing::warn!(kind = note.kind, policy = %note.name, "{}", note.message);
    }
}

fn event(node: &str, note: &Note) -> k8s_openapi::api::core::v1::Event {
    use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let api_version = match note.kind {
        "NetworkPolicy" => "networking.k8s.io/v1",
        _ => "policy.networking.k8s.io/v1alpha2",
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{node} {}", note.message).bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{h:016x}", note.name)),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(api_version.into()),
            kind: Some(note.kind.into()),
            name: Some(note.name.clone()),
            namespace: (!note.namespace.is_empty()).then(|| note.namespace.clone()),
            ..ObjectReference::default()
        },
        reason: Some("NotEnforced".into()),
        message: Some(note.message.clone()),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some("podnet-agent".into()),
            host: Some(node.into()),
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some("podnet-agent".into()),
        reporting_instance: Some(node.into()),
        ..Event::default()
    }
}

/// What is due: a sync, a check of the kernel, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub sync: bool,
    pub verify: bool,
}

fn step(s: &mut Syncer, cluster: &Cluster, due: Due) -> Result<Option<SyncReport>, PolicyError> {
    let mut sync = due.sync;
    if due.verify && !s.verify()? {
        tracing::warn!(
            "the NetworkPolicy table in the kernel is not what was written; rewriting it"
        );
        sync = true;
    }
    if !sync {
        return Ok(None);
    }
    let report = s.sync(cluster)?;
    if report.kind != PlanKind::Nothing {
        tracing::debug!(kind = ?report.kind, elapsed = ?report.elapsed, "NetworkPolicy sync done");
    }
    Ok(Some(report))
}

mod schedule;
pub use schedule::Schedule;
