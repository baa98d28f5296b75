//! The sync loop: watch Services and EndpointSlices, feed the change tracker, and sync —
//! at most once per `min_sync_interval`, a full sync at start, after any failure and every
//! `sync_period`, otherwise a partial sync of what changed. After each successful sync the
//! stale UDP conntrack entries of removed endpoints go, and the health check servers
//! follow.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::pin::pin;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::watcher::{self, Event};
use podnet_kernel::NetNs;
use podnet_kernel::conntrack;
use podnet_kernel::nftnl;
use tokio::sync::watch;

use crate::apis;
use crate::healthcheck::{HealthServers, HealthStatus};
use crate::model::{self, NodeContext, Protocol, ServicePortName, ServiceState, categorize};
use crate::nftables::{self, Installed, TableConfig};
use crate::tracker::{ChangeTracker, PortChange};
use crate::userspace::{self, UserspaceConfig, UserspaceProxy};
use crate::{Changes, ProxyConfig, ProxyError, ProxyEvent, ProxyMode, SyncObserver};
use crate::{fastpath, fullsync};
use podnet_watch::{Trouble, backed_off};

/// How long to wait before retrying a failed sync (doubling up to the maximum).
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What the kernel holds, and how to reach it. Lives on the blocking pool during a sync.
pub struct Syncer {
    ctx: NodeContext,
    table: TableConfig,
    netns: Option<NetNs>,
    installed: Installed,
    /// The next sync must rebuild the table (start, after a failure, periodically).
    pub need_full: bool,
    /// healthCheckNodePort per service port, with the local endpoint count.
    health: BTreeMap<ServicePortName, (u16, usize)>,
    /// The userspace mode's proxy: set, the rules are its four chains instead of the
    /// nftables mode's table, and every sync hands it every service port.
    userspace: Option<UserspaceProxy>,
    /// The netlink socket of the fast path, kept open: closing one after a commit costs
    /// an RCU grace period.
    nftnl: Option<nftnl::NftSocket>,
}

/// What one sync did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub full: bool,
    pub changed_ports: usize,
    pub conntrack_deleted: usize,
    pub elapsed: Duration,
}

impl Syncer {
    pub fn new(ctx: NodeContext, table: TableConfig, netns: Option<NetNs>) -> Syncer {
        Syncer {
            ctx,
            table,
            netns,
            installed: Installed::default(),
            need_full: true,
            health: BTreeMap::new(),
            userspace: None,
            nftnl: None,
        }
    }

    /// A syncer for the userspace mode.
    pub fn with_userspace(mut self, proxy: UserspaceProxy) -> Syncer {
        self.userspace = Some(proxy);
        self
    }

    /// Whether every sync needs every service port (the userspace mode diffs its
    /// listeners itself and rewrites its small table whole).
    pub fn wants_all(&self) -> bool {
        self.need_full || self.userspace.is_some()
    }

    fn sync_userspace(
        &mut self,
        proxy: &UserspaceProxy,
        states: BTreeMap<ServicePortName, ServiceState>,
        changed_ports: usize,
        started: Instant,
    ) -> Result<SyncReport, ProxyError> {
        let ports = states
            .values()
            .map(|s| userspace::from_state(s, &self.ctx.node_name))
            .collect();
        futures::executor::block_on(proxy.sync(ports))
            .map_err(|e| ProxyError::Userspace(e.to_string()))?;
        self.need_full = false;
        Ok(SyncReport {
            full: true,
            changed_ports,
            conntrack_deleted: 0,
            elapsed: started.elapsed(),
        })
    }

    /// One sync: `all` is every service port (only read for a full sync), `changes` what
    /// changed since the last one. Blocking (one netlink transaction, or `nft -f` of the same
    /// steps if the kernel refuses it and `nft` is installed). On failure the next sync is
    /// full.
    pub fn sync(
        &mut self,
        all: impl FnOnce() -> BTreeMap<ServicePortName, ServiceState>,
        changes: &[PortChange],
    ) -> Result<SyncReport, ProxyError> {
        let started = Instant::now();
        if let Some(proxy) = self.userspace.take() {
            let result = self.sync_userspace(&proxy, all(), changes.len(), started);
            self.userspace = Some(proxy);
            return result;
        }
        let full = self.need_full;
        // A failure leaves the kernel and `installed` in doubt: rebuild next time.
        self.need_full = true;
        if full {
            let states = all();
            let rules = states
                .iter()
                .map(|(n, s)| (n.clone(), model::service_rules(s, &self.ctx)))
                .collect();
            let kept = self.affinity_to_keep(&rules);
            self.installed = self.full_sync(rules, &kept)?;
            self.health = states
                .iter()
                .filter_map(|(n, s)| self.health_of(s).map(|h| (n.clone(), h)))
                .collect();
        } else if !changes.is_empty() {
            let changed = changes
                .iter()
                .map(|c| {
                    let rules = c.new.as_ref().map(|s| model::service_rules(s, &self.ctx));
                    (c.name.clone(), rules)
                })
                .collect();
            // Decided before `plan_partial` moves `installed` on to the new state.
            let fast = fastpath::partial_batch(&self.installed, &changed);
            let ops = nftables::plan_partial(&mut self.installed, changed);
            let batch = fast.unwrap_or_else(|| fastpath::ops_batch(&ops));
            if let Err(e) = self.apply_batch(&batch) {
                if !podnet_kernel::nft::available() {
                    return Err(e);
                }
                tracing::warn!(error = %e, "partial sync over netlink refused; writing it through nft");
                nftables::apply(self.netns.as_ref(), &nftables::render_ops(&ops))?;
            }
            for c in changes {
                match c.new.as_ref().and_then(|s| self.health_of(s)) {
                    Some(h) => self.health.insert(c.name.clone(), h),
                    None => self.health.remove(&c.name),
                };
            }
        }
        self.need_full = false;
        let conntrack_deleted = self.clear_stale_udp(changes);
        Ok(SyncReport {
            full,
            changed_ports: changes.len(),
            conntrack_deleted,
            elapsed: started.elapsed(),
        })
    }

    /// Rebuilds every table in one transaction over netlink; if the kernel refuses it and
    /// the `nft` program is installed, the same through `nft -f` (whose error says more),
    /// so a kernel that takes `nft`'s encoding but not ours still gets its rules.
    fn full_sync(
        &mut self,
        rules: BTreeMap<ServicePortName, model::ServiceRules>,
        kept: &nftables::KeptAffinity,
    ) -> Result<nftables::Installed, ProxyError> {
        let (batch, installed) = fullsync::full_batch(&self.table, rules, kept);
        match self.apply_batch(&batch) {
            Ok(()) => Ok(installed),
            Err(e) if !podnet_kernel::nft::available() => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "full sync over netlink refused; writing it through nft");
                let rules = installed.services;
                let (text, installed) = nftables::render_full_keeping(&self.table, rules, kept);
                nftables::apply(self.netns.as_ref(), &text)?;
                Ok(installed)
            }
        }
    }

    /// The clients in the affinity sets the full sync is about to replace, with the time
    /// they have left. A set that cannot be read loses its clients (logged): they are
    /// balanced afresh, nothing breaks.
    fn affinity_to_keep(
        &mut self,
        rules: &BTreeMap<ServicePortName, model::ServiceRules>,
    ) -> nftables::KeptAffinity {
        let mut kept = nftables::KeptAffinity::new();
        for (name, r) in rules.iter().filter(|(_, r)| !r.sets.is_empty()) {
            let table = nftables::shard_table(nftables::shard_of(name));
            for set in &r.sets {
                match self
                    .socket()
                    .and_then(|s| Ok(s.set_elements(&table, &set.name)?))
                {
                    Ok(elements) => {
                        let clients: Vec<_> = elements
                            .into_iter()
                            .filter_map(|e| {
                                let ip: [u8; 4] = e.key.as_slice().try_into().ok()?;
                                Some((Ipv4Addr::from(ip), e.expires?))
                            })
                            .collect();
                        if !clients.is_empty() {
                            kept.insert(set.name.clone(), clients);
                        }
                    }
                    Err(e) => {
                        self.nftnl = None;
                        tracing::warn!(set = %set.name, error = %e, "cannot read ClientIP affinity clients; they start afresh");
                    }
                }
            }
        }
        kept
    }

    /// The kept netlink socket, opened on first use.
    fn socket(&mut self) -> Result<&mut nftnl::NftSocket, ProxyError> {
        let socket = match self.nftnl.take() {
            Some(s) => s,
            None => nftnl::NftSocket::open(self.netns.as_ref())?,
        };
        Ok(self.nftnl.insert(socket))
    }

    /// Commits a batch on the kept socket (dropped after a failure so the next
    /// one starts clean).
    fn apply_batch(&mut self, batch: &nftnl::Batch) -> Result<(), ProxyError> {
        let result = self.socket()?.apply(batch);
        if result.is_err() {
            self.nftnl = None;
        }
        Ok(result?)
    }

    fn health_of(&self, s: &ServiceState) -> Option<(u16, usize)> {
        let port = s.port.health_check_node_port?;
        Some((port, categorize(s, &self.ctx.node_name).local.len()))
    }

    /// The health check ports to serve.
    pub fn health_ports(&self) -> BTreeMap<u16, HealthStatus> {
        let mut out: BTreeMap<u16, HealthStatus> = BTreeMap::new();
        for (name, (port, count)) in &self.health {
            let e = out.entry(*port).or_insert_with(|| HealthStatus {
                namespace: name.namespace.clone(),
                name: name.name.clone(),
                local_endpoints: 0,
            });
            e.local_endpoints = e.local_endpoints.max(*count);
        }
        out
    }

    /// Deletes the conntrack entries of UDP service ports that would keep sending to an
    /// endpoint that is no longer used (UDP has no connection end to clear them), and the
    /// entries of a service that had no endpoint before. Failures are logged, not fatal:
    /// the rules are right, only old flows linger.
    fn clear_stale_udp(&self, changes: &[PortChange]) -> usize {
        let filters = stale_udp_filters(changes, &self.ctx);
        if filters.is_empty() {
            return 0;
        }
        match conntrack::delete(self.netns.as_ref(), &filters) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "clearing stale UDP conntrack entries failed");
                0
            }
        }
    }
}

/// The conntrack filters for UDP endpoints that stopped being used.
pub fn stale_udp_filters(changes: &[PortChange], ctx: &NodeContext) -> Vec<conntrack::Filter> {
    let mut filters = Vec::new();
    for c in changes {
        if c.name.protocol != Protocol::Udp {
            continue;
        }
        let Some(old) = &c.old else { continue };
        let used = |s: &ServiceState| -> BTreeSet<Ipv4Addr> {
            let cat = categorize(s, &ctx.node_name);
            cat.cluster
                .iter()
                .chain(cat.local.iter())
                .map(|e| e.ip)
                .collect()
        };
        let before = used(old);
        let after = c.new.as_ref().map(used).unwrap_or_default();
        let dsts: Vec<Ipv4Addr> = std::iter::once(old.port.cluster_ip)
            .chain(old.port.external_ips.iter().copied())
            .chain(old.port.load_balancer_ips.iter().copied())
            .collect();
        let proto = Protocol::Udp.number();
        for gone in before.difference(&after) {
            for dst in &dsts {
                filters.push(conntrack::Filter {
                    protocol: proto,
                    original_dst: Some(*dst),
                    original_dst_port: Some(old.port.port),
                    reply_src: Some(*gone),
                });
            }
            if let Some(np) = old.port.node_port {
                filters.push(conntrack::Filter {
                    protocol: proto,
                    original_dst: None,
                    original_dst_port: Some(np),
                    reply_src: Some(*gone),
                });
            }
        }
        if before.is_empty() && !after.is_empty() {
            for dst in &dsts {
                filters.push(conntrack::Filter {
                    protocol: proto,
                    original_dst: Some(*dst),
                    original_dst_port: Some(old.port.port),
                    reply_src: None,
                });
            }
        }
    }
    filters
}

/// The state of the two watches.
#[derive(Default)]
struct Watches {
    services_synced: bool,
    slices_synced: bool,
    services_buf: Vec<Service>,
    slices_buf: Vec<EndpointSlice>,
    logged_synced: bool,
    services_trouble: Trouble,
    slices_trouble: Trouble,
}

/// Notes a Service watch event; how many Service changes it brought.
fn on_service(
    ev: Option<Result<Event<Service>, watcher::Error>>,
    w: &mut Watches,
    t: &mut ChangeTracker,
) -> Result<usize, ProxyError> {
    match ev {
        None => return Err(ProxyError::Watch("the watch of Services ended".into())),
        Some(Ok(Event::Init)) => w.services_buf.clear(),
        Some(Ok(Event::InitApply(s))) => w.services_buf.push(s),
        Some(Ok(Event::InitDone)) => {
            let listed = w.services_buf.len();
            t.reset_services(std::mem::take(&mut w.services_buf));
            w.services_synced = true;
            w.services_trouble.listed(&apis::SERVICES);
            return Ok(listed);
        }
        Some(Ok(Event::Apply(s))) => {
            t.service_updated(s);
            return Ok(1);
        }
        Some(Ok(Event::Delete(s))) => {
            t.service_deleted(&s);
            return Ok(1);
        }
        Some(Err(e)) => {
            w.services_trouble.failed(&apis::SERVICES, &e);
        }
    }
    Ok(0)
}

/// Notes an EndpointSlice watch event; how many slice changes it brought.
fn on_slice(
    ev: Option<Result<Event<EndpointSlice>, watcher::Error>>,
    w: &mut Watches,
    t: &mut ChangeTracker,
) -> Result<usize, ProxyError> {
    match ev {
        None => {
            return Err(ProxyError::Watch(
                "the watch of EndpointSlices ended".into(),
            ));
        }
        Some(Ok(Event::Init)) => w.slices_buf.clear(),
        Some(Ok(Event::InitApply(s))) => w.slices_buf.push(s),
        Some(Ok(Event::InitDone)) => {
            let listed = w.slices_buf.len();
            t.reset_slices(std::mem::take(&mut w.slices_buf));
            w.slices_synced = true;
            w.slices_trouble.listed(&apis::ENDPOINT_SLICES);
            return Ok(listed);
        }
        Some(Ok(Event::Apply(s))) => {
            t.slice_updated(s);
            return Ok(1);
        }
        Some(Ok(Event::Delete(s))) => {
            t.slice_deleted(&s);
            return Ok(1);
        }
        Some(Err(e)) => {
            let lasting = w.slices_trouble.failed(&apis::ENDPOINT_SLICES, &e);
            // Slices that cannot come for now (not served, forbidden) must not hold back the
            // Services: they get their rules without endpoints, and the slices when they come.
            if lasting.is_some() && !w.slices_synced {
                t.reset_slices(Vec::new());
                w.slices_synced = true;
            }
        }
    }
    Ok(0)
}

/// Tells the observer of events that changed something, with what now waits for a sync.
fn tell_changes(
    observer: Option<&SyncObserver>,
    t: &ChangeTracker,
    service_events: usize,
    endpoint_events: usize,
) {
    let Some(o) = observer else { return };
    if service_events == 0 && endpoint_events == 0 {
        return;
    }
    let (services_pending, endpoints_pending) = t.pending();
    o.tell(&ProxyEvent::Changes(Changes {
        service_events,
        endpoint_events,
        services_pending,
        endpoints_pending,
    }));
}

/// Makes bridged pod traffic pass through the IP hooks, so a reply from a pod to a pod on
/// the same bridge is un-NATed (without it, same-node pod → ClusterIP → pod breaks).
fn enable_bridge_netfilter(netns: Option<&NetNs>) {
    const KEY: &str = "net.bridge.bridge-nf-call-iptables";
    let r = match netns {
        Some(ns) => podnet_kernel::sysctl::write(ns, KEY, "1"),
        None => podnet_kernel::sysctl::write_here(KEY, "1"),
    };
    if let Err(e) = r {
        tracing::warn!(error = %e, "cannot enable {KEY} (load the br_netfilter module): same-node pod-to-service traffic may fail");
    }
}

/// The syncer of the configured mode; the other mode's rules are removed first (a node
/// switched between modes keeps no stale rules, as kube-proxy cleans up other modes).
fn start_dataplane(
    config: &ProxyConfig,
    ctx: NodeContext,
    table: TableConfig,
    netns: Option<NetNs>,
) -> Result<Syncer, ProxyError> {
    match config.mode {
        ProxyMode::Nftables => {
            userspace::cleanup(netns.as_ref()).map_err(|e| ProxyError::Userspace(e.to_string()))?;
            Ok(Syncer::new(ctx, table, netns))
        }
        ProxyMode::Userspace => {
            nftables::cleanup(netns.as_ref())?;
            let node_ip = config.node_ips.first().copied().ok_or_else(|| {
                ProxyError::Config("the userspace mode needs the node's IP".into())
            })?;
            let proxy = UserspaceProxy::start(UserspaceConfig {
                netns: match &netns {
                    Some(ns) => Some(ns.try_clone()?),
                    None => None,
                },
                node_ip,
                udp_idle_timeout: userspace::udp::DEFAULT_IDLE_TIMEOUT,
                state_file: config
                    .state_dir
                    .as_ref()
                    .map(|d| d.join("userspace-proxy-ports.json")),
            })
            .map_err(|e| ProxyError::Userspace(e.to_string()))?;
            Ok(Syncer::new(ctx, table, netns).with_userspace(proxy))
        }
    }
}

pub(crate) async fn run(
    client: kube::Client,
    config: ProxyConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ProxyError> {
    let netns = match &config.netns {
        Some(ns) => Some(ns.try_clone()?),
        None => None,
    };
    enable_bridge_netfilter(netns.as_ref());
    let ctx = NodeContext {
        node_name: config.node_name.clone(),
        cluster_cidr: config.cluster_cidr,
        layout: model::Layout::default(),
    };
    let table = TableConfig {
        node_ips: config.node_ips.clone(),
        service_cidr: config.service_cidr,
    };
    let health_addrs: Vec<IpAddr> = match config.healthz_bind {
        Some(a) => vec![a.ip()],
        None if config.node_ips.is_empty() => vec![IpAddr::from(Ipv4Addr::UNSPECIFIED)],
        None => config.node_ips.iter().map(|i| IpAddr::V4(*i)).collect(),
    };
    let health_netns = match &netns {
        Some(ns) => Some(ns.try_clone()?),
        None => None,
    };
    let mut health = HealthServers::new(health_netns, health_addrs);
    let mut syncer = Some(start_dataplane(&config, ctx, table, netns)?);
    let mut tracker = ChangeTracker::new();
    let mut watches = Watches::default();

    let services = backed_off(watcher::watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    ));
    let slices = backed_off(watcher::watcher(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default(),
    ));
    let mut services = pin!(services);
    let mut slices = pin!(slices);

    let started = Instant::now();
    let min_interval = config.min_sync_interval;
    let mut last_sync: Option<Instant> = None;
    let mut last_full = Instant::now();
    let mut retry = RETRY_FIRST;
    let mut retry_at: Option<Instant> = None;
    let far = Duration::from_secs(3600);

    loop {
        if *shutdown.borrow() {
            break;
        }
        let synced = watches.services_synced && watches.slices_synced;
        if synced && !watches.logged_synced {
            watches.logged_synced = true;
            tracing::info!(
                services = tracker.service_count(),
                endpoint_slices = tracker.slice_count(),
                after_ms = started.elapsed().as_millis() as u64,
                "listed Services and EndpointSlices; syncing the rules"
            );
        }
        let mut due: Option<Instant> = None;
        if synced {
            let syncer_ref = syncer.as_ref();
            let full_due = syncer_ref.is_some_and(|s| s.need_full)
                || last_full.elapsed() >= config.sync_period;
            if full_due || tracker.has_changes() {
                let earliest = last_sync.map_or_else(Instant::now, |t| t + min_interval);
                due = Some(retry_at.map_or(earliest, |r| r.max(earliest)));
            } else {
                due = Some(last_full + config.sync_period);
            }
        }
        let sleep_for = due.map_or(far, |d| d.saturating_duration_since(Instant::now()));
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
            ev = services.next() => {
                let n = on_service(ev, &mut watches, &mut tracker)?;
                tell_changes(config.on_sync.as_ref(), &tracker, n, 0);
                continue;
            }
            ev = slices.next() => {
                let n = on_slice(ev, &mut watches, &mut tracker)?;
                tell_changes(config.on_sync.as_ref(), &tracker, 0, n);
                continue;
            }
            _ = tokio::time::sleep(sleep_for) => {}
        }
        if due.is_none() {
            continue;
        }
        // Fold everything that has already arrived into this sync.
        let (mut service_events, mut endpoint_events) = (0, 0);
        while let Some(ev) = services.next().now_or_never() {
            service_events += on_service(ev, &mut watches, &mut tracker)?;
        }
        while let Some(ev) = slices.next().now_or_never() {
            endpoint_events += on_slice(ev, &mut watches, &mut tracker)?;
        }
        tell_changes(
            config.on_sync.as_ref(),
            &tracker,
            service_events,
            endpoint_events,
        );
        let Some(mut s) = syncer.take() else {
            return Err(ProxyError::Task("the syncer was lost".into()));
        };
        if last_full.elapsed() >= config.sync_period {
            s.need_full = true;
        }
        let changes = tracker.take_changes();
        let full = s.wants_all();
        let sync_started = Instant::now();
        let all = if full {
            tracker.all_states()
        } else {
            BTreeMap::new()
        };
        let (s, result) = tokio::task::spawn_blocking(move || {
            let r = s.sync(move || all, &changes);
            (s, r)
        })
        .await
        .map_err(|e| ProxyError::Task(format!("the sync task failed: {e}")))?;
        last_sync = Some(Instant::now());
        match result {
            Ok(report) => {
                if report.full {
                    last_full = Instant::now();
                }
                retry = RETRY_FIRST;
                retry_at = None;
                let level_info = report.full;
                if level_info {
                    tracing::info!(
                        changed = report.changed_ports,
                        elapsed_ms = report.elapsed.as_secs_f64() * 1000.0,
                        "full sync of the service rules done"
                    );
                }
                tracing::debug!(
                    full = report.full,
                    changed = report.changed_ports,
                    conntrack_deleted = report.conntrack_deleted,
                    elapsed_ms = report.elapsed.as_secs_f64() * 1000.0,
                    "synced service rules"
                );
                health.sync(&s.health_ports());
                if let Some(o) = &config.on_sync {
                    o.tell(&ProxyEvent::Synced(&report));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, retry_in = ?retry, "syncing service rules failed; a full sync follows");
                if let Some(o) = &config.on_sync {
                    o.tell(&ProxyEvent::Failed {
                        full,
                        elapsed: sync_started.elapsed(),
                        error: &format!("syncing the service rules failed: {e}"),
                    });
                }
                retry_at = Some(Instant::now() + retry);
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
        syncer = Some(s);
    }
    health.stop();
    Ok(())
}
