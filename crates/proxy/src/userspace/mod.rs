//! The userspace mode, as the article describes kube-proxy's original one: for every
//! service port the node listens on a port chosen at random, NAT rules in the four
//! `KUBE-PORTALS-*`/`KUBE-NODEPORT-*` chains ([`rules`]) send the service's traffic there,
//! and the proxy carries it to a backend pod — TCP spliced without copies ([`splice`]),
//! UDP in per-client sessions ([`udp`]), round-robin with ClientIP affinity
//! ([`balancer`]), another endpoint tried when a connect fails ([`tcp`]).
//!
//! What this mode cannot do, by its nature: the backend sees the node's address as the
//! client (no `externalTrafficPolicy: Local` source preservation), SCTP is not proxied,
//! and connections through the proxy end when the agent restarts (they are the agent's
//! own sockets). The listening ports are kept in a state file and re-bound after a
//! restart, so the rules stay the same.
//!
//! Everything runs on one thread that entered the node's network namespace (sockets and
//! the netlink socket of its rules are created there), with a current-thread tokio runtime; the data
//! path of TCP connections runs on splice threads.

pub mod balancer;
pub mod rules;
pub mod splice;
pub mod tcp;
pub mod udp;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use podnet_kernel::NetNs;
use podnet_kernel::nftnl::Family;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use balancer::Balancer;
use rules::Portal;

pub use crate::model::Protocol;

/// One service port as the userspace proxy serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name:port-name` (the port name may be empty).
    pub name: String,
    pub protocol: Protocol,
    pub cluster_ip: Option<Ipv4Addr>,
    pub port: u16,
    /// externalIPs and load-balancer ingress IPs.
    pub external_ips: Vec<Ipv4Addr>,
    pub node_port: Option<u16>,
    /// `sessionAffinity: ClientIP` with its timeout.
    pub affinity: Option<Duration>,
    /// Ready endpoints (or serving terminating ones when none is ready).
    pub endpoints: Vec<SocketAddrV4>,
}

/// How the userspace proxy runs.
#[derive(Debug)]
pub struct UserspaceConfig {
    /// The node's namespace: `None` for the calling thread's.
    pub netns: Option<NetNs>,
    /// The node's IP: `KUBE-PORTALS-HOST`/`KUBE-NODEPORT-HOST` DNAT to it.
    pub node_ip: Ipv4Addr,
    /// UDP sessions end after this long without a datagram.
    pub udp_idle_timeout: Duration,
    /// Where the chosen listening ports are remembered across restarts.
    pub state_file: Option<PathBuf>,
}

/// What a sync did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Service ports now listened for: name → proxy port.
    pub ports: BTreeMap<String, u16>,
    /// Service ports skipped, with why.
    pub skipped: Vec<(String, String)>,
}

/// Why the userspace proxy failed.
#[derive(Debug, thiserror::Error)]
pub enum UserspaceError {
    #[error("the userspace proxy thread is gone ({0})")]
    Gone(&'static str),
    #[error("starting the userspace proxy: {0}")]
    Start(String),
    #[error(transparent)]
    Kernel(#[from] podnet_kernel::KernelError),
}

enum Command {
    Sync(
        Vec<ServicePort>,
        oneshot::Sender<Result<SyncReport, UserspaceError>>,
    ),
    Stop(bool, oneshot::Sender<Result<(), UserspaceError>>),
}

/// The running userspace proxy.
pub struct UserspaceProxy {
    commands: mpsc::UnboundedSender<Command>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UserspaceProxy {
    /// Starts the proxy thread in the node's namespace; nothing is listened on or
    /// installed until the first [`UserspaceProxy::sync`].
    pub fn start(config: UserspaceConfig) -> Result<UserspaceProxy, UserspaceError> {
        let (commands, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("userspace-proxy".into())
            .spawn(move || run_thread(config, rx, ready_tx))
            .map_err(|e| UserspaceError::Start(format!("spawning its thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(UserspaceProxy {
                commands,
                thread: Some(thread),
            }),
            Ok(Err(why)) => {
                let _ = thread.join();
                Err(UserspaceError::Start(why))
            }
            Err(_) => Err(UserspaceError::Start("its thread ended".into())),
        }
    }

    /// Makes the listeners and the rules match `services`, in one nftables transaction.
    pub async fn sync(&self, services: Vec<ServicePort>) -> Result<SyncReport, UserspaceError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Sync(services, tx))
            .map_err(|_| UserspaceError::Gone("sync"))?;
        rx.await.map_err(|_| UserspaceError::Gone("sync"))?
    }

    /// Stops listening; with `remove_rules`, also deletes the table.
    pub async fn stop(mut self, remove_rules: bool) -> Result<(), UserspaceError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Stop(remove_rules, tx))
            .map_err(|_| UserspaceError::Gone("stop"))?;
        let result = rx.await.map_err(|_| UserspaceError::Gone("stop"))?;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        result
    }
}

/// Deletes the userspace mode's table (lab down, a switch to the nftables mode).
pub fn cleanup(netns: Option<&NetNs>) -> Result<(), UserspaceError> {
    podnet_kernel::ruleset::delete_table(netns, Family::Ip, rules::TABLE)?;
    Ok(())
}

fn run_thread(
    config: UserspaceConfig,
    commands: mpsc::UnboundedReceiver<Command>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    if let Some(ns) = &config.netns
        && let Err(e) = ns.enter()
    {
        let _ = ready.send(Err(e.to_string()));
        return;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("building its runtime: {e}")));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    runtime.block_on(Server::new(config).serve(commands));
}

/// One listened service port.
struct Listener {
    protocol: Protocol,
    port: u16,
    balancer: Arc<Mutex<Balancer>>,
    task: AbortHandle,
}

struct Server {
    config: UserspaceConfig,
    listeners: HashMap<String, Listener>,
    /// Ports used before a restart, from the state file: re-bound when free.
    remembered: BTreeMap<String, u16>,
}

impl Server {
    fn new(config: UserspaceConfig) -> Server {
        let remembered = config
            .state_file
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Server {
            config,
            listeners: HashMap::new(),
            remembered,
        }
    }

    async fn serve(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        while let Some(command) = commands.recv().await {
            match command {
                Command::Sync(services, reply) => {
                    let _ = reply.send(self.sync(services).await);
                }
                Command::Stop(remove_rules, reply) => {
                    for (_, l) in self.listeners.drain() {
                        l.task.abort();
                    }
                    let result = if remove_rules { cleanup(None) } else { Ok(()) };
                    let _ = reply.send(result);
                    return;
                }
            }
        }
        for (_, l) in self.listeners.drain() {
            l.task.abort();
        }
    }

    async fn sync(&mut self, services: Vec<ServicePort>) -> Result<SyncReport, UserspaceError> {
        let mut report = SyncReport::default();
        let mut portals = Vec::new();
        let wanted: HashMap<&str, &ServicePort> =
            services.iter().map(|s| (s.name.as_str(), s)).collect();
        self.listeners.retain(|name, l| {
            let keep = wanted
                .get(name.as_str())
                .is_some_and(|s| s.protocol == l.protocol);
            if !keep {
                l.task.abort();
            }
            keep
        });
        for service in &services {
            match self.listen(service).await {
                Ok(port) => {
                    report.ports.insert(service.name.clone(), port);
                    portals.push(portal(service, port));
                }
                Err(why) => {
                    tracing::warn!(service = %service.name, "not proxied: {why}");
                    report.skipped.push((service.name.clone(), why));
                }
            }
        }
        portals.sort();
        let table = rules::table(self.config.node_ip, &portals);
        podnet_kernel::nftnl::apply(None, &table.replacing_batch())?;
        self.remember(&report.ports);
        Ok(report)
    }

    /// The service port's listener (opened when new), its balancer updated; its port.
    async fn listen(&mut self, service: &ServicePort) -> Result<u16, String> {
        if let Some(l) = self.listeners.get(&service.name) {
            if let Ok(mut b) = l.balancer.lock() {
                b.update(service.endpoints.clone(), service.affinity);
            }
            return Ok(l.port);
        }
        let balancer = Arc::new(Mutex::new(Balancer::new(
            service.endpoints.clone(),
            service.affinity,
        )));
        let name: Arc<str> = Arc::from(service.name.as_str());
        let preferred = self.remembered.get(&service.name).copied().unwrap_or(0);
        let (port, task) = match service.protocol {
            Protocol::Tcp => {
                let listener = bind_tcp(preferred).await?;
                let port = listener.local_addr().map_err(|e| e.to_string())?.port();
                let task = tokio::spawn(tcp::serve(listener, name, balancer.clone()));
                (port, task.abort_handle())
            }
            Protocol::Udp => {
                let socket = bind_udp(preferred).await?;
                let port = socket.local_addr().map_err(|e| e.to_string())?.port();
                let task = tokio::spawn(udp::serve(
                    socket,
                    name,
                    balancer.clone(),
                    self.config.udp_idle_timeout,
                ));
                (port, task.abort_handle())
            }
            Protocol::Sctp => {
                return Err(
                    "the userspace mode does not proxy SCTP (use --proxy-mode nftables)".into(),
                );
            }
        };
        self.listeners.insert(
            service.name.clone(),
            Listener {
                protocol: service.protocol,
                port,
                balancer,
                task,
            },
        );
        Ok(port)
    }

    fn remember(&mut self, ports: &BTreeMap<String, u16>) {
        if *ports == self.remembered {
            return;
        }
        self.remembered = ports.clone();
        let Some(path) = &self.config.state_file else {
            return;
        };
        let write = serde_json::to_vec(ports)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, path)
            });
        if let Err(e) = write {
            tracing::warn!(path = %path.display(), error = %e, "cannot remember the proxy ports");
        }
    }
}

async fn bind_tcp(preferred: u16) -> Result<tokio::net::TcpListener, String> {
    if preferred != 0
        && let Ok(l) = tokio::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, preferred)).await
    {
        return Ok(l);
    }
    tokio::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .map_err(|e| format!("cannot listen on a TCP port: {e}"))
}

async fn bind_udp(preferred: u16) -> Result<tokio::net::UdpSocket, String> {
    if preferred != 0
        && let Ok(s) = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, preferred)).await
    {
        return Ok(s);
    }
    tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .map_err(|e| format!("cannot listen on a UDP port: {e}"))
}

/// The userspace view of a tracked service port: every usable endpoint (the userspace
/// mode knows no traffic policies: its backends see the node as the client anyway),
/// ClientIP affinity, and every address the port answers on.
pub fn from_state(state: &crate::model::ServiceState, node: &str) -> ServicePort {
    let p = &state.port;
    let usable = crate::model::categorize(state, node).all;
    let mut external_ips = p.external_ips.clone();
    external_ips.extend(&p.load_balancer_ips);
    ServicePort {
        name: p.name.to_string(),
        protocol: p.name.protocol,
        cluster_ip: Some(p.cluster_ip),
        port: p.port,
        external_ips,
        node_port: p.node_port,
        affinity: p
            .affinity_timeout
            .map(|secs| Duration::from_secs(u64::from(secs))),
        endpoints: usable
            .iter()
            .map(|e| SocketAddrV4::new(e.ip, e.port))
            .collect(),
    }
}

fn portal(service: &ServicePort, proxy_port: u16) -> Portal {
    let mut addresses: Vec<Ipv4Addr> = service.cluster_ip.into_iter().collect();
    addresses.extend(&service.external_ips);
    addresses.sort();
    addresses.dedup();
    Portal {
        name: service.name.clone(),
        protocol: service.protocol,
        addresses,
        port: service.port,
        node_port: service.node_port,
        proxy_port: (!service.endpoints.is_empty()).then_some(proxy_port),
    }
}
