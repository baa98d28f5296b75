//! One worker per pod (by uid), level-triggered: on every change of the pod,
//! of one of its processes or of a probe verdict, and at least every few
//! seconds, it compares what the pod asks for with what runs, acts on the
//! difference, records what runs on disk and reports the status.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::containers::{self, Exit, Exited, LaunchError, PodFacts};
use super::probes::{self, ProbeEvent, ProbeKind, ProbeTarget};
use super::state::{self, ContainerState, PodState, Terminated};
use super::status::{self, ContainerView, RestartPolicy, StatusInput};
use super::{Ctx, dns, now_rfc3339};
use crate::runtime::Sandbox;
use crate::runtime::cni::AttachmentRef;

/// What the worker hears about.
#[derive(Debug)]
pub enum Event {
    Exited(Exited),
    Probe(ProbeEvent),
}

/// A task aborted when its handle is dropped, so that dropping a worker
/// (the agent stopping, or crashing in a test) stops its watchers and probes.
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The pod's sandbox and network.
struct SandboxRt {
    sandbox: Sandbox,
    start_ticks: Option<u64>,
    pod_ip: Option<String>,
    cni_result: Option<Value>,
}

/// One container: its record (persisted) and what only lives in memory.
struct ContainerRt {
    rec: ContainerState,
    image: String,
    /// Why it is not running, when it is not (and not terminated).
    waiting: Option<(String, Option<String>)>,
    next_start: Option<Instant>,
    started_instant: Option<Instant>,
    /// Startup probe passed (or there is none).
    started: bool,
    /// Readiness probe verdict.
    probe_ready: bool,
    /// An exit seen while adopting, handled once the pod's policy is known.
    pending_exit: Option<Exit>,
    /// Probes must be (re)started for the running process.
    needs_probes: bool,
    /// The running process was adopted from an earlier agent.
    adopted: bool,
    /// Exit watcher, probes, kill timers of the running process.
    tasks: Vec<Task>,
}

impl ContainerRt {
    fn new(name: &str, init: bool) -> ContainerRt {
        ContainerRt {
            rec: ContainerState {
                name: name.to_string(),
                init,
                pid: None,
                start_ticks: None,
                restart_count: 0,
                ever_started: false,
                started_at: None,
                log_path: None,
                exit_file: None,
                last_terminated: None,
                terminated: None,
                backoff_ms: 0,
            },
            image: String::new(),
            waiting: None,
            next_start: None,
            started_instant: None,
            started: false,
            probe_ready: false,
            pending_exit: None,
            needs_probes: false,
            adopted: false,
            tasks: Vec::new(),
        }
    }

    fn running(&self) -> Option<(i32, u64)> {
        self.rec
            .pid
            .map(|p| (p, self.rec.start_ticks.unwrap_or_default()))
    }

    fn done_ok(&self) -> bool {
        self.rec
            .terminated
            .as_ref()
            .is_some_and(|t| t.exit_code == 0)
    }
}

enum Flow {
    Continue,
    /// The pod is finished with (deleted): the worker ends.
    Done,
}

pub struct Worker {
    ctx: Arc<Ctx>,
    uid: String,
    namespace: String,
    name: String,
    pod_rx: watch::Receiver<Option<Arc<Pod>>>,
    stop: watch::Receiver<bool>,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    pod: Option<Arc<Pod>>,
    sandbox: Option<SandboxRt>,
    /// A recorded sandbox found dead: its network is still to be released.
    stale: Option<PodState>,
    containers: Vec<ContainerRt>,
    sandbox_error: Option<String>,
    sandbox_retry: Option<Instant>,
    sandbox_backoff: Duration,
    start_time: Option<String>,
    /// Terminal: the sandbox and network were released, nothing runs again.
    released: bool,
    /// Tearing down: exits are recorded, never restarted.
    stopping_all: bool,
    last_written: Option<PodState>,
    last_patched: Option<(Value, Instant)>,
    delete_retry: Option<Instant>,
}

impl Worker {
    pub fn new(
        ctx: Arc<Ctx>,
        uid: String,
        pod_rx: watch::Receiver<Option<Arc<Pod>>>,
        stop: watch::Receiver<bool>,
    ) -> Worker {
        let (tx, rx) = mpsc::unbounded_channel();
        let base = ctx.backoff.base;
        Worker {
            ctx,
            uid,
            namespace: String::new(),
            name: String::new(),
            pod_rx,
            stop,
            tx,
            rx,
            pod: None,
            sandbox: None,
            stale: None,
            containers: Vec::new(),
            sandbox_error: None,
            sandbox_retry: None,
            sandbox_backoff: base,
            start_time: None,
            released: false,
            stopping_all: false,
            last_written: None,
            last_patched: None,
            delete_retry: None,
        }
    }

    /// Runs the worker until its pod is gone; returns its uid.
    pub async fn run(mut self, adopted: Option<PodState>) -> String {
        if let Some(state) = adopted {
            self.adopt(state);
        }
        loop {
            if *self.stop.borrow() {
                self.persist();
                return self.uid;
            }
            let pod = self.pod_rx.borrow_and_update().clone();
            let flow = match pod {
                None => {
                    self.gone().await;
                    Flow::Done
                }
                Some(pod) => {
                    self.pod = Some(pod.clone());
                    self.reconcile(&pod).await
                }
            };
            if matches!(flow, Flow::Done) {
                return self.uid;
            }
            let wait = self.next_wakeup();
            let event = tokio::select! {
                changed = self.pod_rx.changed() => {
                    if changed.is_err() {
                        self.persist();
                        return self.uid;
                    }
                    None
                }
                ev = self.rx.recv() => ev,
                _ = tokio::time::sleep(wait) => None,
                stopped = self.stop.changed() => {
                    if stopped.is_err() {
                        self.persist();
                        return self.uid;
                    }
                    None
                }
            };
            if let Some(ev) = event {
                self.handle_event(ev);
            }
            while let Ok(ev) = self.rx.try_recv() {
                self.handle_event(ev);
            }
        }
    }

    fn next_wakeup(&self) -> Duration {
        let now = Instant::now();
        let mut wait = Duration::from_secs(2);
        let deadlines = self
            .containers
            .iter()
            .filter_map(|c| c.next_start)
            .chain(self.sandbox_retry)
            .chain(self.delete_retry);
        for t in deadlines {
            wait = wait.min(t.saturating_duration_since(now));
        }
        wait.max(Duration::from_millis(10))
    }

    fn policy(&self) -> RestartPolicy {
        self.pod
            .as_deref()
            .map(RestartPolicy::of)
            .unwrap_or(RestartPolicy::Always)
    }

    fn grace(&self) -> Duration {
        let secs = self
            .pod
            .as_deref()
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0);
        Duration::from_secs(secs as u64)
    }

    // ---- adoption -------------------------------------------------------

    /// Takes over what an earlier agent recorded: the sandbox if it still
    /// holds the pod's namespace, each container process if it is still the
    /// one recorded.
    fn adopt(&mut self, state: PodState) {
        self.namespace = state.namespace.clone();
        self.name = state.name.clone();
        let same_process = match state.sandbox_start_ticks {
            Some(ticks) => state::proc_alive(state.sandbox_pid, ticks),
            None => true,
        };
        let adopted = if same_process {
            Sandbox::adopt(
                &self.ctx.config.podnet_bin,
                &state.sandbox_name,
                state.sandbox_pid,
            )
        } else {
            Err(crate::runtime::SandboxError::Process {
                pod: state.sandbox_name.clone(),
                pid: state.sandbox_pid,
                why: "the process is not the recorded sandbox any more".into(),
            })
        };
        let sandbox_alive = match adopted {
            Ok(sandbox) => {
                tracing::info!(pod = %self.pod_label(), sandbox = %state.sandbox_name,
                    pid = state.sandbox_pid, ip = ?state.pod_ip, "adopted the pod's sandbox");
                self.sandbox = Some(SandboxRt {
                    sandbox,
                    start_ticks: state.sandbox_start_ticks,
                    pod_ip: state.pod_ip.clone(),
                    cni_result: state.cni_result.clone(),
                });
                true
            }
            Err(e) => {
                tracing::warn!(pod = %self.pod_label(), error = %e,
                    "the recorded sandbox is gone: its network is released and a new one started");
                self.stale = Some(state.clone());
                false
            }
        };
        for rec in &state.containers {
            let mut c = ContainerRt::new(&rec.name, rec.init);
            c.rec = rec.clone();
            if let Some((pid, ticks)) = c.running() {
                if sandbox_alive && state::proc_alive(pid, ticks) {
                    let exit_file = rec.exit_file.clone().unwrap_or_default();
                    let attempt = c.rec.restart_count;
                    c.tasks.push(Task(tokio::spawn(containers::watch_adopted(
                        pid,
                        ticks,
                        exit_file,
                        rec.name.clone(),
                        attempt,
                        self.tx.clone(),
                    ))));
                    c.started_instant = Some(Instant::now());
                    c.needs_probes = true;
                    c.adopted = true;
                    tracing::info!(pod = %self.pod_label(), container = %rec.name, pid,
                        "adopted a running container");
                } else {
                    c.pending_exit = Some(containers::exit_of_vanished(rec.exit_file.as_deref()));
                }
            }
            self.containers.push(c);
        }
        self.last_written = Some(state);
    }

    fn pod_label(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    // ---- the loop's body ------------------------------------------------

    async fn reconcile(&mut self, pod: &Pod) -> Flow {
        self.namespace = pod.metadata.namespace.clone().unwrap_or_default();
        self.name = pod.metadata.name.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            return self.delete(pod).await;
        }
        self.sync_specs(pod);
        let api_phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or_default();
        if self.released || (status::is_terminal(api_phase) && self.start_time.is_none()) {
            // A finished pod never runs again (also after an agent restart).
            if !self.released {
                self.teardown(self.grace(), false).await;
                self.released = true;
            }
            return Flow::Continue;
        }
        if self.start_time.is_none() {
            self.start_time = Some(
                pod.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .and_then(|t| serde_json::to_value(t).ok())
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(now_rfc3339),
            );
        }
        let pending: Vec<(usize, Exit)> = self
            .containers
            .iter_mut()
            .enumerate()
            .filter_map(|(i, c)| c.pending_exit.take().map(|e| (i, e)))
            .collect();
        for (i, exit) in pending {
            self.container_ended(i, exit);
        }
        self.check_sandbox().await;
        if self.sandbox_ready() {
            self.start_probes_where_needed(pod);
        } else {
            self.ensure_sandbox(pod).await;
        }
        if self.sandbox_ready() {
            self.start_due(pod).await;
        }
        self.persist();
        let phase = self.publish(pod).await;
        if let Some(phase) = phase
            && status::is_terminal(phase)
        {
            tracing::info!(pod = %self.pod_label(), phase, "pod finished: releasing its network and sandbox");
            self.teardown(self.grace(), false).await;
            self.released = true;
        }
        Flow::Continue
    }

    /// Makes the runtime's containers match the spec's (init containers first).
    fn sync_specs(&mut self, pod: &Pod) {
        let Some(spec) = &pod.spec else {
            return;
        };
        let wanted: Vec<(&Container, bool)> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| (c, true))
            .chain(spec.containers.iter().map(|c| (c, false)))
            .collect();
        let mut old = std::mem::take(&mut self.containers);
        for (c, init) in wanted {
            let mut rt = match old
                .iter()
                .position(|o| o.rec.name == c.name && o.rec.init == init)
            {
                Some(i) => old.swap_remove(i),
                None => ContainerRt::new(&c.name, init),
            };
            rt.image = c.image.clone().unwrap_or_default();
            self.containers.push(rt);
        }
        for gone in old {
            if let Some((pid, ticks)) = gone.running() {
                containers::kill_hard(pid, ticks);
            }
        }
    }

    fn spec_of(&self, pod: &Pod, i: usize) -> Option<Container> {
        let c = self.containers.get(i)?;
        let spec = pod.spec.as_ref()?;
        let list: &[Container] = if c.rec.init {
            spec.init_containers.as_deref().unwrap_or_default()
        } else {
            &spec.containers
        };
        list.iter().find(|s| s.name == c.rec.name).cloned()
    }

    fn sandbox_ready(&self) -> bool {
        self.sandbox
            .as_ref()
            .is_some_and(|s| s.cni_result.is_some())
    }

    // ---- sandbox and network --------------------------------------------

    /// A sandbox that died takes its containers with it: release its network
    /// so that a new one is started.
    async fn check_sandbox(&mut self) {
        let Some(sb) = &mut self.sandbox else {
            return;
        };
        if sb.sandbox.is_alive() {
            return;
        }
        tracing::warn!(pod = %self.pod_label(), "the pod's sandbox died: starting a new one");
        for c in &self.containers {
            if let Some((pid, ticks)) = c.running() {
                containers::kill_hard(pid, ticks);
            }
        }
        self.release_sandbox().await;
    }

    fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.namespace, self.name, self.uid, self.uid
        )
    }

    fn sandbox_failed(&mut self, why: String) {
        tracing::warn!(pod = %self.pod_label(), error = %why, retry_in = ?self.sandbox_backoff, "pod sandbox");
        self.sandbox_error = Some(why);
        self.sandbox_retry = Some(Instant::now() + self.sandbox_backoff);
        self.sandbox_backoff = (self.sandbox_backoff * 2).min(self.ctx.backoff.max);
    }

    async fn ensure_sandbox(&mut self, pod: &Pod) {
        if self.sandbox_retry.is_some_and(|t| Instant::now() < t) {
            return;
        }
        if let Some(stale) = self.stale.take()
            && let Err(e) = self.release_network(&stale).await
        {
            self.stale = Some(stale);
            self.sandbox_failed(format!("release the old sandbox's network: {e}"));
            return;
        }
        if self.sandbox.is_none() {
            let name = self.ctx.sandbox_name(&self.uid);
            let hostname = pod_hostname(pod);
            let podnet = self.ctx.config.podnet_bin.clone();
            let files = match self.write_pod_files(pod, None) {
                Ok(f) => f,
                Err(e) => return self.sandbox_failed(e),
            };
            let started = tokio::task::spawn_blocking(move || {
                // A leftover mount of the same name (a crash before the
                // record was written) is ours: free the name.
                let _ = podnet_kernel::NetNs::delete(&name);
                Sandbox::start_with(&podnet, &name, &hostname, &files)
            })
            .await;
            match started {
                Ok(Ok(sandbox)) => {
                    tracing::info!(pod = %self.pod_label(), sandbox = %sandbox.name(),
                        pid = sandbox.pid(), "started the pod's sandbox");
                    self.sandbox = Some(SandboxRt {
                        start_ticks: state::proc_start(sandbox.pid()).map(|(t, _)| t),
                        sandbox,
                        pod_ip: None,
                        cni_result: None,
                    });
                    self.persist();
                }
                Ok(Err(e)) => return self.sandbox_failed(format!("start the pod sandbox: {e}")),
                Err(e) => return self.sandbox_failed(format!("start the pod sandbox: {e}")),
            }
        }
        let Some(sb) = &self.sandbox else {
            return;
        };
        let ctx = self.ctx.clone();
        let uid = self.uid.clone();
        let netns = sb.sandbox.netns_path();
        let args = self.cni_args();
        let added = tokio::task::spawn_blocking(move || {
            let network = ctx.network()?;
            network
                .add_with_args(
                    &AttachmentRef {
                        container_id: &uid,
                        netns: &netns,
                        ifname: "eth0",
                    },
                    &args,
                )
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match added {
            Ok(result) => {
                let ip = first_ipv4(&result);
                tracing::info!(pod = %self.pod_label(), ip = ?ip, "pod network is set up");
                if let Some(sb) = &mut self.sandbox {
                    sb.pod_ip = ip.map(|ip| ip.to_string());
                    sb.cni_result = Some(result);
                }
                // The hosts file learns the pod's address (written in place: the pod's
                // bind mount holds the file).
                let ip = ip.map(|ip| ip.to_string());
                if let Err(e) = self.write_pod_files(pod, ip.as_deref()) {
                    tracing::warn!(pod = %self.pod_label(), error = %e, "write the pod's hosts file");
                }
                self.sandbox_error = None;
                self.sandbox_retry = None;
                self.sandbox_backoff = self.ctx.backoff.base;
                self.persist();
            }
            Err(e) => self.sandbox_failed(format!("set up the pod network (CNI ADD): {e}")),
        }
    }

    /// Writes the pod's resolv.conf and hosts (kubelet's) into its state directory;
    /// `pod_ip` set: the hosts file only, with the address.
    fn write_pod_files(
        &self,
        pod: &Pod,
        pod_ip: Option<&str>,
    ) -> Result<crate::runtime::pause::PodFiles, String> {
        let dir = state::pod_dir(&self.ctx.config.state_dir, &self.uid);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("create the pod's directory {}: {e}", dir.display()))?;
        let dns_cfg = &self.ctx.config.dns;
        let files = crate::runtime::pause::PodFiles {
            resolv_conf: Some(dir.join("resolv.conf")),
            hosts: Some(dir.join("hosts")),
        };
        let write = |path: &std::path::Path, text: String| {
            std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
        };
        let hostname = pod_hostname(pod);
        if let Some(path) = &files.hosts {
            write(path, dns::hosts_file(pod, &hostname, pod_ip, dns_cfg))?;
        }
        if pod_ip.is_none()
            && let Some(path) = &files.resolv_conf
        {
            let host = std::fs::read_to_string(&dns_cfg.resolv_conf)
                .map(|t| dns::Resolv::parse(&t))
                .unwrap_or_default();
            write(path, dns::resolv_conf(pod, dns_cfg, &host).render())?;
        }
        Ok(files)
    }

    /// CNI DEL for a recorded attachment, and the namespace's name removed.
    async fn release_network(&self, rec: &PodState) -> Result<(), String> {
        let ctx = self.ctx.clone();
        let uid = self.uid.clone();
        let netns = rec.netns.clone();
        let prev = rec.cni_result.clone();
        let name = rec.sandbox_name.clone();
        let args = self.cni_args();
        tokio::task::spawn_blocking(move || {
            let network = ctx.network()?;
            network
                .del_with_args(
                    &AttachmentRef {
                        container_id: &uid,
                        netns: &netns,
                        ifname: "eth0",
                    },
                    prev.as_ref(),
                    &args,
                )
                .map_err(|e| e.to_string())?;
            podnet_kernel::NetNs::delete(&name).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
    }

    /// CNI DEL and the sandbox stopped (its processes die with it).
    async fn release_sandbox(&mut self) {
        let Some(sb) = self.sandbox.take() else {
            return;
        };
        let rec = self.record_of(&sb);
        if let Err(e) = self.release_network(&rec).await {
            tracing::warn!(pod = %self.pod_label(), error = %e,
                "CNI DEL failed: the address is released by the CNI GC at the next agent start");
        }
        let name = sb.sandbox.name().to_string();
        let stopped =
            tokio::task::spawn_blocking(move || sb.sandbox.stop(Duration::from_secs(2))).await;
        match stopped {
            Ok(Ok(())) => {
                tracing::info!(pod = %self.pod_label(), sandbox = %name, "stopped the pod's sandbox")
            }
            Ok(Err(e)) => {
                tracing::warn!(pod = %self.pod_label(), error = %e, "stop the pod's sandbox")
            }
            Err(e) => tracing::warn!(pod = %self.pod_label(), error = %e, "stop the pod's sandbox"),
        }
    }

    // ---- containers -----------------------------------------------------

    /// Starts what is due: init containers one at a time in order, then every
    /// regular container that is not running and not finished.
    async fn start_due(&mut self, pod: &Pod) {
        let now = Instant::now();
        let due = |c: &ContainerRt| c.next_start.is_none_or(|t| t <= now);
        let mut to_start = Vec::new();
        let mut init_done = true;
        for (i, c) in self
            .containers
            .iter()
            .enumerate()
            .filter(|(_, c)| c.rec.init)
        {
            if c.done_ok() {
                continue;
            }
            init_done = false;
            if c.running().is_none() && c.rec.terminated.is_none() && due(c) {
                to_start.push(i);
            }
            break;
        }
        if init_done {
            for (i, c) in self.containers.iter().enumerate() {
                if !c.rec.init && c.running().is_none() && c.rec.terminated.is_none() && due(c) {
                    to_start.push(i);
                }
            }
        }
        if to_start.is_empty() {
            return;
        }
        // kubelet starts no container before it has read the Services once (their
        // variables are part of the environment); a watch that cannot list does not
        // hold the pod for ever.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.ctx.services.wait_until_ready())
            .await;
        let host_ip = self.ctx.host_ip().await;
        for i in to_start {
            self.start_container(pod, i, host_ip.clone());
        }
    }

    fn start_container(&mut self, pod: &Pod, i: usize, host_ip: Option<String>) {
        let Some(spec) = self.spec_of(pod, i) else {
            return;
        };
        let Some((sandbox_pid, pod_ip)) = self
            .sandbox
            .as_ref()
            .map(|s| (s.sandbox.pid(), s.pod_ip.clone()))
        else {
            return;
        };
        let label = self.pod_label();
        let facts = PodFacts {
            pod,
            pod_ip,
            host_ip,
            hostname: pod_hostname(pod),
            service_env: self.service_env(pod),
        };
        let launch = match containers::resolve(&facts, &spec) {
            Ok(l) => l,
            Err(LaunchError::Create(msg)) | Err(LaunchError::Start(msg)) => {
                // The spec cannot run: say why and look again later, without
                // counting an attempt (kubelet's CreateContainerError).
                let retry = Instant::now() + self.ctx.backoff.base;
                let c = &mut self.containers[i];
                if c.waiting
                    .as_ref()
                    .is_none_or(|(_, m)| m.as_deref() != Some(&msg))
                {
                    tracing::warn!(pod = %label, container = %spec.name, error = %msg, "cannot create container");
                }
                c.waiting = Some(("CreateContainerError".into(), Some(msg)));
                c.next_start = Some(retry);
                return;
            }
        };
        let attempt = match &self.containers[i].rec {
            r if r.ever_started => r.restart_count + 1,
            _ => 0,
        };
        let log_path = self
            .ctx
            .log_dir(&self.namespace, &self.name, &self.uid)
            .join(&spec.name)
            .join(format!("{attempt}.log"));
        let exit_file = state::pod_dir(&self.ctx.config.state_dir, &self.uid)
            .join(format!("{}-{attempt}.exit", spec.name));
        {
            let c = &mut self.containers[i];
            c.rec.restart_count = attempt;
            c.rec.ever_started = true;
            c.rec.log_path = Some(log_path.clone());
            c.next_start = None;
        }
        let spawned = containers::check_runnable(&launch)
            .map_err(|e| match e {
                LaunchError::Create(m) | LaunchError::Start(m) => m,
            })
            .and_then(|()| {
                containers::spawn(
                    &self.ctx.config.podnet_bin,
                    sandbox_pid,
                    &launch,
                    &log_path,
                    &exit_file,
                )
            });
        let started = match spawned {
            Ok(s) => s,
            Err(msg) => {
                tracing::warn!(pod = %label, container = %spec.name, error = %msg, "cannot start container");
                // Also in the container's log, as a runtime would say it.
                append_line(&log_path, &format!("podnet: {msg}"));
                self.containers[i].rec.started_at = Some(now_rfc3339());
                self.container_ended(
                    i,
                    Exit {
                        code: 128,
                        start_error: Some(msg),
                        unknown: false,
                    },
                );
                self.persist();
                return;
            }
        };
        tracing::info!(pod = %label, container = %spec.name, pid = started.pid, attempt, "started container");
        let c = &mut self.containers[i];
        c.rec.pid = Some(started.pid);
        c.rec.start_ticks = Some(started.start_ticks);
        c.rec.started_at = Some(now_rfc3339());
        c.rec.exit_file = Some(exit_file.clone());
        c.waiting = None;
        c.started_instant = Some(Instant::now());
        c.started = false;
        c.probe_ready = false;
        c.needs_probes = true;
        c.tasks.push(Task(tokio::spawn(containers::watch_child(
            started.child,
            exit_file,
            spec.name.clone(),
            attempt,
            self.tx.clone(),
        ))));
        self.start_probes_where_needed(pod);
        self.persist();
    }

    /// Starts the probes of running containers that have none yet: the
    /// startup probe first; readiness and liveness once started.
    fn start_probes_where_needed(&mut self, pod: &Pod) {
        let service_env = self.service_env(pod);
        let Some(sb) = &self.sandbox else {
            return;
        };
        let current = pod
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(Value::Null);
        for i in 0..self.containers.len() {
            if !self.containers[i].needs_probes || self.containers[i].running().is_none() {
                continue;
            }
            let Some(spec) = self.spec_of(pod, i) else {
                continue;
            };
            let c = &mut self.containers[i];
            c.needs_probes = false;
            let attempt = c.rec.restart_count;
            if std::mem::take(&mut c.adopted) {
                // After an agent restart, carry on from what the API says
                // about this very process rather than flapping to NotReady.
                let id = c.rec.pid.map(|p| format!("podnet://{p}"));
                let reported = current
                    .get(if c.rec.init {
                        "initContainerStatuses"
                    } else {
                        "containerStatuses"
                    })
                    .and_then(Value::as_array)
                    .and_then(|cs| cs.iter().find(|s| s["name"] == c.rec.name.as_str()))
                    .filter(|s| s.get("containerID").and_then(Value::as_str) == id.as_deref());
                if let Some(s) = reported {
                    c.started = s["started"].as_bool().unwrap_or(false);
                    c.probe_ready = s["ready"].as_bool().unwrap_or(false);
                }
            }
            let env = containers::resolve(
                &PodFacts {
                    pod,
                    pod_ip: sb.pod_ip.clone(),
                    host_ip: None,
                    hostname: pod_hostname(pod),
                    service_env: service_env.clone(),
                },
                &spec,
            )
            .map(|l| l.env)
            .unwrap_or_default();
            let target = Arc::new(ProbeTarget {
                netns: sb.sandbox.netns_path(),
                pod_ip: sb.pod_ip.as_deref().and_then(|ip| ip.parse().ok()),
                podnet: self.ctx.config.podnet_bin.clone(),
                sandbox_pid: sb.sandbox.pid(),
                env,
                ports: spec.ports.clone().unwrap_or_default(),
            });
            let mut spawn = |kind: ProbeKind, probe: &Option<k8s_openapi::api::core::v1::Probe>| {
                if let Some(p) = probe {
                    c.tasks.push(Task(tokio::spawn(probes::run(
                        kind,
                        p.clone(),
                        target.clone(),
                        spec.name.clone(),
                        attempt,
                        self.tx.clone(),
                    ))));
                }
            };
            if spec.startup_probe.is_some() && !c.started {
                spawn(ProbeKind::Startup, &spec.startup_probe);
            } else {
                c.started = true;
                spawn(ProbeKind::Readiness, &spec.readiness_probe);
                spawn(ProbeKind::Liveness, &spec.liveness_probe);
            }
        }
    }

    fn handle_event(&mut self, ev: Event) {
        match ev {
            Event::Exited(e) => {
                let Some(i) = self.running_index(&e.container, e.attempt) else {
                    return;
                };
                tracing::info!(pod = %self.pod_label(), container = %e.container,
                    exit_code = e.exit.code, "container ended");
                self.container_ended(i, e.exit);
                self.persist();
            }
            Event::Probe(p) => {
                let Some(i) = self.running_index(&p.container, p.attempt) else {
                    return;
                };
                self.probe_changed(i, p);
            }
        }
    }

    fn running_index(&self, name: &str, attempt: u32) -> Option<usize> {
        self.containers.iter().position(|c| {
            c.rec.name == name && c.rec.pid.is_some() && c.rec.restart_count == attempt
        })
    }

    fn probe_changed(&mut self, i: usize, p: ProbeEvent) {
        let pod = self.pod.clone();
        let label = self.pod_label();
        let c = &mut self.containers[i];
        match (p.kind, p.ok) {
            (ProbeKind::Readiness, ok) => {
                tracing::info!(pod = %label, container = %c.rec.name, ready = ok,
                    message = ?p.message, "readiness changed");
                c.probe_ready = ok;
            }
            (ProbeKind::Startup, true) => {
                // Readiness and liveness probes start now.
                c.started = true;
                c.needs_probes = true;
                c.tasks.truncate(1);
                if let Some(pod) = pod {
                    self.start_probes_where_needed(&pod);
                }
            }
            (ProbeKind::Liveness, false) | (ProbeKind::Startup, false) => {
                let what = if p.kind == ProbeKind::Liveness {
                    "liveness"
                } else {
                    "startup"
                };
                tracing::info!(pod = %label, container = %c.rec.name, message = ?p.message,
                    "container failed its {what} probe, will be restarted");
                let grace = pod
                    .as_deref()
                    .and_then(|pod| pod.spec.as_ref())
                    .and_then(|s| {
                        let spec = s.containers.iter().find(|x| x.name == c.rec.name)?;
                        let probe = if p.kind == ProbeKind::Liveness {
                            spec.liveness_probe.as_ref()
                        } else {
                            spec.startup_probe.as_ref()
                        };
                        probe?
                            .termination_grace_period_seconds
                            .or(s.termination_grace_period_seconds)
                    })
                    .unwrap_or(30)
                    .max(0) as u64;
                if let Some((pid, ticks)) = c.running() {
                    containers::terminate(pid, ticks);
                    c.tasks.push(Task(tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(grace)).await;
                        containers::kill_hard(pid, ticks);
                    })));
                }
            }
            (ProbeKind::Liveness, true) => {}
        }
    }

    /// A container's process ended (or could not start): record it, and
    /// schedule the next attempt per the restart policy, with back-off.
    fn container_ended(&mut self, i: usize, exit: Exit) {
        let policy = self.policy();
        let backoff = self.ctx.backoff;
        let pod_desc = format!("{}_{}({})", self.name, self.namespace, self.uid);
        let stopping = self.stopping_all;
        let c = &mut self.containers[i];
        let (reason, message) = if let Some(e) = &exit.start_error {
            ("StartError", Some(e.clone()))
        } else if exit.unknown {
            (
                "ContainerStatusUnknown",
                Some("The container could not be located when the agent looked for it".to_string()),
            )
        } else if exit.code == 0 {
            ("Completed", None)
        } else {
            ("Error", None)
        };
        let ended = Terminated {
            exit_code: exit.code,
            reason: reason.into(),
            message,
            started_at: c.rec.started_at.take(),
            finished_at: now_rfc3339(),
            container_id: c.rec.pid.map(|p| format!("podnet://{p}")),
        };
        let ran = c.started_instant.take().map(|t| t.elapsed());
        c.rec.pid = None;
        c.rec.start_ticks = None;
        c.tasks.clear();
        c.started = false;
        c.probe_ready = false;
        c.needs_probes = false;
        if stopping || !policy.restarts(c.rec.init, exit.code) {
            c.rec.terminated = Some(ended);
            c.waiting = None;
            c.next_start = None;
            return;
        }
        if ran.is_some_and(|r| r >= backoff.reset) {
            c.rec.backoff_ms = 0;
        }
        let delay = if c.rec.backoff_ms == 0 {
            backoff.base
        } else {
            (Duration::from_millis(c.rec.backoff_ms) * 2).min(backoff.max)
        };
        c.rec.backoff_ms = delay.as_millis() as u64;
        c.next_start = Some(Instant::now() + delay);
        c.waiting = Some(match &exit.start_error {
            Some(e) => ("RunContainerError".into(), Some(e.clone())),
            None => (
                "CrashLoopBackOff".into(),
                Some(format!(
                    "back-off {} restarting failed container={} pod={pod_desc}",
                    go_duration(delay),
                    c.rec.name
                )),
            ),
        });
        c.rec.last_terminated = Some(ended);
        c.rec.terminated = None;
    }

    // ---- records and status ---------------------------------------------

    fn record_of(&self, sb: &SandboxRt) -> PodState {
        PodState {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            sandbox_name: sb.sandbox.name().to_string(),
            sandbox_pid: sb.sandbox.pid(),
            sandbox_start_ticks: sb.start_ticks,
            netns: sb.sandbox.netns_path(),
            pod_ip: sb.pod_ip.clone(),
            cni_result: sb.cni_result.clone(),
            containers: self.containers.iter().map(|c| c.rec.clone()).collect(),
        }
    }

    /// Writes the pod's record when it changed.
    fn persist(&mut self) {
        let Some(sb) = &self.sandbox else {
            return;
        };
        let rec = self.record_of(sb);
        if self.last_written.as_ref() == Some(&rec) {
            return;
        }
        match state::write(&self.ctx.config.state_dir, &rec) {
            Ok(()) => self.last_written = Some(rec),
            Err(e) => tracing::warn!(pod = %self.pod_label(), error = %e, "record the pod's state"),
        }
    }

    fn views(&self) -> Vec<ContainerView> {
        let sandbox_error = self.sandbox_error.clone();
        self.containers
            .iter()
            .map(|c| {
                let running = c
                    .rec
                    .pid
                    .map(|p| (p, c.rec.started_at.clone().unwrap_or_default()));
                let waiting = c.waiting.clone().or_else(|| {
                    (running.is_none() && c.rec.terminated.is_none())
                        .then(|| {
                            sandbox_error
                                .clone()
                                .map(|e| ("ContainerCreating".to_string(), Some(e)))
                        })
                        .flatten()
                });
                ContainerView {
                    name: c.rec.name.clone(),
                    image: c.image.clone(),
                    init: c.rec.init,
                    started: running.is_some() && c.started,
                    ready: running.is_some()
                        && c.started
                        && c.probe_ready_or_default(self.pod.as_deref()),
                    running,
                    terminated: c.rec.terminated.clone(),
                    last_terminated: c.rec.last_terminated.clone(),
                    waiting,
                    restart_count: c.rec.restart_count,
                }
            })
            .collect()
    }

    /// Reports the status when it changed; returns the phase once the API
    /// has it.
    async fn publish(&mut self, pod: &Pod) -> Option<&'static str> {
        let current = pod
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(Value::Null);
        let views = self.views();
        let policy = self.policy();
        let input = StatusInput {
            pod,
            policy,
            containers: &views,
            sandbox_ready: self.sandbox_ready(),
            pod_ip: self.sandbox.as_ref().and_then(|s| s.pod_ip.clone()),
            host_ip: self.ctx.host_ip().await,
            start_time: self.start_time.clone().unwrap_or_else(now_rfc3339),
            now: now_rfc3339(),
        };
        let desired = status::build(&input, &current);
        let phase = status::phase(policy, &views);
        if !status::differs(&desired, &current) {
            return Some(phase);
        }
        if let Some((last, at)) = &self.last_patched
            && *last == desired
            && at.elapsed() < Duration::from_secs(5)
        {
            // Sent already; the watch has not caught up yet.
            return None;
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let patch = serde_json::json!({ "status": desired });
        match api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                self.last_patched = Some((desired, Instant::now()));
                Some(phase)
            }
            Err(kube::Error::Api(e)) if e.code == 404 => None,
            Err(e) => {
                tracing::warn!(pod = %self.pod_label(), error = %e, "report the pod's status (will retry)");
                None
            }
        }
    }

    // ---- stopping -------------------------------------------------------

    /// Stops every container (SIGTERM, `grace`, SIGKILL), releases the
    /// network and the sandbox, and forgets the pod's record. With
    /// `forget_logs`, the pod's log directory goes too.
    async fn teardown(&mut self, grace: Duration, forget_logs: bool) {
        self.stopping_all = true;
        for c in &mut self.containers {
            // Probes and kill timers go; exit watchers stay.
            c.tasks.truncate(1);
            if let Some((pid, ticks)) = c.running() {
                containers::terminate(pid, ticks);
            }
        }
        let deadline = Instant::now() + grace;
        self.wait_for_exits(deadline).await;
        let mut killed = false;
        for c in &self.containers {
            if let Some((pid, ticks)) = c.running() {
                containers::kill_hard(pid, ticks);
                killed = true;
            }
        }
        if killed {
            self.wait_for_exits(Instant::now() + Duration::from_secs(3))
                .await;
        }
        for i in 0..self.containers.len() {
            if self.containers[i].running().is_some() {
                self.container_ended(
                    i,
                    Exit {
                        code: 137,
                        start_error: None,
                        unknown: true,
                    },
                );
            }
        }
        if let Some(stale) = self.stale.take()
            && let Err(e) = self.release_network(&stale).await
        {
            tracing::warn!(pod = %self.pod_label(), error = %e,
                "CNI DEL failed: the address is released by the CNI GC at the next agent start");
        }
        self.release_sandbox().await;
        if let Err(e) = state::remove(&self.ctx.config.state_dir, &self.uid) {
            tracing::warn!(pod = %self.pod_label(), error = %e, "remove the pod's record");
        }
        self.last_written = None;
        if forget_logs {
            let dir = self.ctx.log_dir(&self.namespace, &self.name, &self.uid);
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(pod = %self.pod_label(), error = %e, dir = %dir.display(), "remove the pod's logs");
            }
        }
    }

    async fn wait_for_exits(&mut self, deadline: Instant) {
        while self.containers.iter().any(|c| c.running().is_some()) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(ev)) => self.handle_event(ev),
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// The pod carries a deletion timestamp: stop it within its grace
    /// period, then remove the API object (grace 0, only this uid).
    async fn delete(&mut self, pod: &Pod) -> Flow {
        if self.delete_retry.is_some_and(|t| Instant::now() < t) {
            return Flow::Continue;
        }
        if self.delete_retry.is_none() {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
                .unwrap_or(30)
                .max(0) as u64;
            tracing::info!(pod = %self.pod_label(), grace, "pod deleted: stopping it");
            self.teardown(Duration::from_secs(grace), true).await;
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&self.name, &params).await {
            Ok(_) => Flow::Done,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Flow::Done,
            Err(e) => {
                tracing::warn!(pod = %self.pod_label(), error = %e, "remove the deleted pod from the API (will retry)");
                self.delete_retry = Some(Instant::now() + Duration::from_secs(1));
                Flow::Continue
            }
        }
    }

    /// The pod is no longer bound here (deleted from the API, or unknown to
    /// it after an agent restart): stop everything.
    async fn gone(&mut self) {
        if self.sandbox.is_none() && self.stale.is_none() && self.last_written.is_none() {
            return;
        }
        tracing::info!(pod = %self.pod_label(), uid = %self.uid, "pod is gone from the API: stopping it");
        self.teardown(Duration::from_secs(2), true).await;
    }
}

impl ContainerRt {
    /// Ready per the readiness probe, or simply running when it has none.
    fn probe_ready_or_default(&self, pod: Option<&Pod>) -> bool {
        let has_probe = pod
            .and_then(|p| p.spec.as_ref())
            .map(|s| {
                let list: &[Container] = if self.rec.init {
                    s.init_containers.as_deref().unwrap_or_default()
                } else {
                    &s.containers
                };
                list.iter()
                    .find(|c| c.name == self.rec.name)
                    .is_some_and(|c| c.readiness_probe.is_some())
            })
            .unwrap_or(false);
        !has_probe || self.probe_ready
    }
}

/// Appends a line to a container's log file (best effort).
impl Worker {
    /// The Service variables of the pod's containers.
    fn service_env(&self, pod: &Pod) -> Vec<(String, String)> {
        let services = self.ctx.services.state();
        super::service_env::for_pod(pod, services.iter().map(|s| s.as_ref()))
    }
}

fn append_line(path: &std::path::Path, line: &str) {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// The pod's hostname: `spec.hostname`, else its name (at most 63 bytes).
fn pod_hostname(pod: &Pod) -> String {
    let mut name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    name.truncate(63);
    name.trim_end_matches(['-', '.']).to_string()
}

/// The first IPv4 address of a CNI result.
fn first_ipv4(result: &Value) -> Option<Ipv4Addr> {
    result
        .get("ips")?
        .as_array()?
        .iter()
        .filter_map(|ip| ip.get("address")?.as_str())
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .next()
}

/// A duration as Go prints it (`10s`, `1m20s`, `5m0s`, `200ms`).
fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if !ms.is_multiple_of(1000) {
        return format!("{:.1}s", d.as_secs_f64());
    }
    let secs = d.as_secs();
    if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m{}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_go_prints_them() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_millis(200)), "200ms");
    }

    #[test]
    fn addresses_from_cni_results() {
        let r = serde_json::json!({"ips": [{"address": "10.244.1.7/24", "gateway": "10.244.1.1"}]});
        assert_eq!(first_ipv4(&r), Some(Ipv4Addr::new(10, 244, 1, 7)));
        assert_eq!(first_ipv4(&serde_json::json!({})), None);
    }
}
