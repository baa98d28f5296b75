//! The agent's pod runtime: what kubelet and a container runtime do, for
//! processes. For every Pod bound to this node (`spec.nodeName`), a worker
//! starts the pod's sandbox (`podnet pause`), wires it by executing the CNI
//! plugin as a container runtime does, starts each container's
//! `command`/`args` as a process inside the pod (`podnet sandbox exec`),
//! restarts containers per `restartPolicy` with kubelet's back-off, runs their
//! probes and reports the pod's status. Deleting the pod stops it (SIGTERM,
//! grace period, SIGKILL, CNI DEL, sandbox stopped) before the object is
//! removed. The runtime records what runs, so an agent restarted after a
//! crash adopts its pods (same processes, same addresses) instead of starting
//! them again.
//!
//! It talks to the control plane only through the Kubernetes API (a watch on
//! Pods with `fieldSelector=spec.nodeName=<node>`, status patches, deletes
//! and one read of its Node for the host address), so it runs unchanged
//! against a real Kubernetes API server.
//!
//! # On-disk layout (stable: `podnet exec` and `podnet logs` read it)
//!
//! - `<state_dir>/pods/<uid>.json`: one record per pod that has a sandbox,
//!   written atomically (temporary file renamed into place), see
//!   [`PodState`]. Fields: `namespace`, `name`, `uid`, `sandbox_name` (the
//!   network namespace `/run/netns/<sandbox_name>`), `sandbox_pid` (the pod's
//!   PID 1 as the host sees it: run a command in the pod with
//!   `podnet sandbox exec --pid <sandbox_pid> -- CMD…`), `sandbox_start_ticks`
//!   (its start time, `/proc/<pid>/stat` field 22), `netns`, `pod_ip`,
//!   `cni_result`, and `containers`: a list of `{name, init, pid,
//!   start_ticks, restart_count, ever_started, started_at, log_path,
//!   exit_file, last_terminated, terminated, backoff_ms}` where `pid` (set
//!   while the container runs) is the host pid of the container's
//!   `podnet sandbox exec` supervisor, whose only child is the program.
//! - `<state_dir>/pods/<uid>/<container>-<restartCount>.exit`: how each
//!   attempt ended (`{"exit_code": N, "error": "…"}`), written by the
//!   supervisor.
//! - `<log_dir>/<namespace>_<pod>_<uid>/<container>/<restartCount>.log`:
//!   kubelet's layout, one file per attempt; the program's stdout and stderr,
//!   raw and interleaved as written (no CRI timestamps). The current
//!   attempt's file is the one with the highest number (also `log_path` in
//!   the record). Removed when the pod is deleted.
//! - Sandboxes are named `<node>-pod-<first 8 characters of the uid>` (the
//!   full uid on a clash), so `ip netns list` shows which node they belong
//!   to and the runtime finds its orphans.
//!
//! `PODNET_AGENT_BACKOFF_BASE_MS` sets the restart back-off's first delay
//! (default 10000: kubelet's 10 s, doubling up to 30 times the base, reset
//! after a run of 60 times the base); tests make it short.

mod containers;
pub mod dns;
mod gc;
mod probes;
mod service_env;
pub mod state;
mod status;
mod worker;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::watcher::{self, Event as WatchEvent};
use podnet_api::cni::NetConfList;
use podnet_kernel::NetNs;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use state::{ContainerState, PodState, Terminated};

use crate::runtime::cni::CniNetwork;

/// Where the pod runtime finds its tools and keeps its files.
#[derive(Debug, Clone)]
pub struct PodRuntimeConfig {
    /// This node's name: pods with this `spec.nodeName` are run here.
    pub node_name: String,
    /// The `podnet` binary (`podnet pause`, `podnet sandbox exec`).
    pub podnet_bin: PathBuf,
    /// Where CNI plugins are found (`CNI_PATH`).
    pub cni_bin_dir: PathBuf,
    /// Where the network's `*.conflist` is (the first by name is used).
    pub cni_conf_dir: PathBuf,
    /// The runtime's records (`pods/<uid>.json`).
    pub state_dir: PathBuf,
    /// Container logs.
    pub log_dir: PathBuf,
    /// Pods' name resolution (kubelet's --cluster-dns, --cluster-domain, --resolv-conf).
    pub dns: dns::PodDns,
}

#[derive(Debug, thiserror::Error)]
pub enum PodRuntimeError {
    #[error(
        "create the pod runtime's directory {path}: {source}: check that the agent may write there"
    )]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("open the agent's network namespace (where CNI plugins run): {0}")]
    HostNs(#[source] podnet_kernel::KernelError),
    #[error("pod record {path}: {why}")]
    State { path: PathBuf, why: String },
    #[error(
        "the podnet binary {0} does not exist: give the path of `podnet` (it runs pod sandboxes)"
    )]
    NoPodnet(PathBuf),
}

/// The restart back-off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub base: Duration,
    pub max: Duration,
    /// A container that ran this long starts over from `base`.
    pub reset: Duration,
}

impl Backoff {
    fn from_env() -> Backoff {
        let base_ms = std::env::var("PODNET_AGENT_BACKOFF_BASE_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .unwrap_or(10_000);
        let base = Duration::from_millis(base_ms);
        Backoff {
            base,
            max: base * 30,
            reset: base * 60,
        }
    }
}

/// What every worker shares.
pub(crate) struct Ctx {
    pub config: PodRuntimeConfig,
    pub client: kube::Client,
    /// The namespace CNI plugins run in (the agent's, captured at start).
    pub host_ns: NetNs,
    pub backoff: Backoff,
    host_ip: tokio::sync::Mutex<(Option<String>, Option<Instant>)>,
    /// Every Service, for the containers' Service environment variables.
    pub services: kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Service>,
}

impl Ctx {
    /// The network to attach pods to: the first `*.conflist` (by name) in
    /// the CNI config dir, read afresh each time (the node agent may write
    /// it after the runtime started).
    pub fn network(&self) -> Result<CniNetwork, String> {
        let dir = &self.config.cni_conf_dir;
        let mut lists: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("read the CNI config dir {}: {e}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conflist"))
            .collect();
        lists.sort();
        let file = lists.first().ok_or_else(|| {
            format!(
                "no *.conflist in {}: the node agent writes it once the node has a pod subnet; wait, or check the CNI config dir",
                dir.display()
            )
        })?;
        let bytes = std::fs::read(file).map_err(|e| format!("read {}: {e}", file.display()))?;
        let list =
            NetConfList::parse(&bytes).map_err(|e| format!("{}: {}", file.display(), e.msg))?;
        let host_ns = self
            .host_ns
            .try_clone()
            .map_err(|e| format!("the node's network namespace: {e}"))?;
        Ok(CniNetwork {
            list,
            bin_dirs: vec![self.config.cni_bin_dir.clone()],
            host_ns: Some(host_ns),
        })
    }

    /// The prefix of this node's sandbox names.
    pub fn sandbox_prefix(&self) -> String {
        let mut node = self.config.node_name.clone();
        node.truncate(150);
        format!("{node}-pod-")
    }

    /// A free sandbox name for the pod.
    pub fn sandbox_name(&self, uid: &str) -> String {
        let short: String = uid.chars().take(8).collect();
        let name = format!("{}{short}", self.sandbox_prefix());
        if NetNs::path_of(&name).exists() {
            format!("{}{uid}", self.sandbox_prefix())
        } else {
            name
        }
    }

    /// `<log_dir>/<namespace>_<pod>_<uid>`.
    pub fn log_dir(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.config
            .log_dir
            .join(format!("{namespace}_{name}_{uid}"))
    }

    /// The node's InternalIP (else its first address), read from the Node
    /// once it has one; `None` until then.
    pub async fn host_ip(&self) -> Option<String> {
        let mut cache = self.host_ip.lock().await;
        if cache.0.is_some() {
            return cache.0.clone();
        }
        if cache
            .1
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return None;
        }
        cache.1 = Some(Instant::now());
        let api: Api<Node> = Api::all(self.client.clone());
        let node = match api.get_opt(&self.config.node_name).await {
            Ok(node) => node?,
            Err(e) => {
                tracing::debug!(error = %e, "read this node's addresses");
                return None;
            }
        };
        let addresses = node.status?.addresses.unwrap_or_default();
        let ip = addresses
            .iter()
            .find(|a| a.type_ == "InternalIP")
            .or_else(|| addresses.iter().find(|a| a.type_ == "ExternalIP"))
            .map(|a| a.address.clone())?;
        cache.0 = Some(ip.clone());
        Some(ip)
    }
}

/// The current time as the API writes it (RFC 3339, whole seconds, UTC).
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn ensure_dir(path: &Path) -> Result<(), PodRuntimeError> {
    std::fs::create_dir_all(path).map_err(|source| PodRuntimeError::Dir {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs the pod runtime until `shutdown` becomes true (or its sender is
/// dropped). Stopping leaves the pods running, to be adopted by the next
/// start. CNI plugins run in the network namespace of the thread that first
/// polls this future (the node's).
pub async fn run(
    config: PodRuntimeConfig,
    client: kube::Client,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), PodRuntimeError> {
    if !config.podnet_bin.is_file() {
        return Err(PodRuntimeError::NoPodnet(config.podnet_bin.clone()));
    }
    ensure_dir(&state::pods_dir(&config.state_dir))?;
    ensure_dir(&config.log_dir)?;
    let host_ns = NetNs::current().map_err(PodRuntimeError::HostNs)?;
    let node = config.node_name.clone();
    let (services, services_w) = kube::runtime::reflector::store();
    let services_watch = tokio::spawn(watch_services(client.clone(), services_w));
    let ctx = Arc::new(Ctx {
        config,
        client: client.clone(),
        host_ns,
        backoff: Backoff::from_env(),
        host_ip: tokio::sync::Mutex::new((None, None)),
        services,
    });

    let records = state::load_all(&ctx.config.state_dir)?;
    tracing::info!(node = %node, pods = records.len(), "pod runtime starting: adopting recorded pods");
    gc::collect_orphans(&ctx, &records).await;
    let mut adopted: HashMap<String, PodState> =
        records.into_iter().map(|r| (r.uid.clone(), r)).collect();

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers: HashMap<String, watch::Sender<Option<Arc<Pod>>>> = HashMap::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut listing: Option<HashSet<String>> = None;

    let spawn = |uid: String,
                 pod: Option<Arc<Pod>>,
                 record: Option<PodState>,
                 workers: &mut HashMap<String, watch::Sender<Option<Arc<Pod>>>>,
                 tasks: &mut JoinSet<String>| {
        let (tx, rx) = watch::channel(pod);
        let w = worker::Worker::new(ctx.clone(), uid.clone(), rx, stop_rx.clone());
        tasks.spawn(w.run(record));
        workers.insert(uid, tx);
    };

    let api: Api<Pod> = Api::all(client);
    let selector = format!("spec.nodeName={node}");
    let stream = podnet_watch::backed_off(watcher::watcher(
        api,
        watcher::Config::default().fields(&selector),
    ));
    let mut stream = std::pin::pin!(stream);
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(uid) = done {
                    workers.remove(&uid);
                }
            }
            event = stream.next() => {
                let Some(event) = event else { break };
                let event = match event {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(error = %e, "watching this node's pods (retrying)");
                        continue;
                    }
                };
                match event {
                    WatchEvent::Init => listing = Some(HashSet::new()),
                    WatchEvent::InitApply(pod) | WatchEvent::Apply(pod) => {
                        let Some(uid) = pod.metadata.uid.clone() else { continue };
                        if let Some(seen) = &mut listing {
                            seen.insert(uid.clone());
                        }
                        let pod = Some(Arc::new(pod));
                        match workers.get(&uid) {
                            Some(tx) => {
                                let _ = tx.send(pod);
                            }
                            None => {
                                let record = adopted.remove(&uid);
                                spawn(uid, pod, record, &mut workers, &mut tasks);
                            }
                        }
                    }
                    WatchEvent::Delete(pod) => {
                        if let Some(tx) = pod.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                            let _ = tx.send(None);
                        }
                    }
                    WatchEvent::InitDone => {
                        let seen = listing.take().unwrap_or_default();
                        for (uid, tx) in &workers {
                            if !seen.contains(uid) {
                                let _ = tx.send(None);
                            }
                        }
                        // Recorded pods the API does not bind here any more.
                        for (uid, record) in std::mem::take(&mut adopted) {
                            spawn(uid, None, Some(record), &mut workers, &mut tasks);
                        }
                    }
                }
            }
        }
    }
    tracing::info!(node = %node, "pod runtime stopping: pods keep running");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    services_watch.abort();
    Ok(())
}

/// Keeps the Services store filled (kubelet's service informer).
async fn watch_services(
    client: kube::Client,
    writer: kube::runtime::reflector::store::Writer<k8s_openapi::api::core::v1::Service>,
) {
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::all(client);
    let stream = podnet_watch::backed_off(kube::runtime::reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default()),
    ));
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        if let Err(e) = event {
            tracing::warn!(error = %e, "watching Services for the containers' environment (retrying)");
        }
    }
}
