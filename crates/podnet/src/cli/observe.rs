//! `podnet observe`: a live flow log, as Hubble's. From every node of the lab: its tracked
//! connections (a connection's first packet, its end with the bytes it carried each way;
//! from table dumps compared, or with `--events` from ctnetlink's events) and the packets
//! NetworkPolicy dropped (its NFLOG group, with the policy's name), named
//! after the pods, Services and nodes they are between. Follows until interrupted (or
//! `--count` flows, or `--timeout`).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use podnet_kernel::NetNs;
use podnet_kernel::conntrack::{EventKind, Events};
use podnet_kernel::nflog::Nflog;
use serde::Serialize;
use tokio::sync::mpsc;

use super::client::{Client, resource_path};
use super::resources::Resource;
use super::{CliError, GlobalArgs};

#[derive(Args, Debug)]
pub struct ObserveArgs {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// Only flows from or to this pod (NAMESPACE/NAME).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub pod: Option<String>,
    /// Only flows from or to pods of this namespace.
    #[arg(long = "from-namespace", alias = "ns", value_name = "NAMESPACE")]
    pub in_namespace: Option<String>,
    /// Only flows to this Service (NAMESPACE/NAME).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub service: Option<String>,
    /// Only forwarded or only dropped flows.
    #[arg(long, value_name = "forwarded|dropped")]
    pub verdict: Option<String>,
    /// Only this protocol (tcp, udp, sctp, icmp).
    #[arg(long, value_name = "PROTO")]
    pub protocol: Option<String>,
    /// Stop after this many flows.
    #[arg(long)]
    pub count: Option<usize>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// The NFLOG group the agents log refused packets to (their --policy-nflog-group).
    #[arg(long, default_value_t = 100)]
    pub log_group: u16,
    /// Read connections from ctnetlink's event subscription (each change told the moment
    /// the kernel makes it) instead of dumps of the table twice a second. While anyone
    /// subscribes, the kernel builds a message in the path of every connection's packets (a
    /// cross-node connect in the lab takes 20 % longer); dumps cost the connections nothing.
    #[arg(long)]
    pub events: bool,
    /// Output format: json for one JSON object per line.
    #[arg(short = 'o', long, value_name = "FORMAT")]
    pub output: Option<String>,
}

/// One end of a flow.
#[derive(Debug, Clone, Serialize)]
pub struct End {
    pub ip: Ipv4Addr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `pod ns/name`, `service ns/name`, `node name`, or nothing for an address outside.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A flow event.
#[derive(Debug, Clone, Serialize)]
pub struct Flow {
    pub time: String,
    pub node: String,
    /// `forwarded` or `dropped`.
    pub verdict: &'static str,
    /// `new`, `closed` or `dropped`.
    pub event: &'static str,
    pub protocol: &'static str,
    pub source: End,
    pub destination: End,
    /// The Service the destination was reached through (DNAT), with the endpoint it
    /// reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<End>,
    /// Bytes each way, for an ended connection (accounting on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<(u64, u64)>,
    /// The policy that refused it, from the NFLOG prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        132 => "sctp",
        1 => "icmp",
        _ => "ip",
    }
}

/// Names of the cluster's addresses.
#[derive(Default)]
pub(crate) struct Names {
    by_ip: HashMap<Ipv4Addr, String>,
}

impl Names {
    fn name(&self, ip: Ipv4Addr) -> Option<String> {
        self.by_ip.get(&ip).cloned()
    }
}

async fn items<T: serde::de::DeserializeOwned>(
    client: &Client,
    kind: &podnet_api::k8s::kinds::ResourceKind,
) -> Result<Vec<T>, CliError> {
    let v = client
        .get(&resource_path(&Resource::from_kind(kind), None, None, &[]))
        .await?;
    Ok(v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| serde_json::from_value(i.clone()).ok())
        .collect())
}

pub(crate) async fn names(client: &Client) -> Result<(Names, Vec<String>), CliError> {
    use podnet_api::k8s::kinds::{NODE, POD, SERVICE};
    let mut n = Names::default();
    let nodes: Vec<Node> = items(client, &NODE).await?;
    let mut node_names = Vec::new();
    for node in &nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        for a in node
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
        {
            if let Ok(ip) = a.address.parse() {
                n.by_ip.insert(ip, format!("node {name}"));
            }
        }
        node_names.push(name);
    }
    let services: Vec<Service> = items(client, &SERVICE).await?;
    for s in &services {
        let ip = s
            .spec
            .as_ref()
            .and_then(|x| x.cluster_ip.as_ref())
            .and_then(|i| i.parse().ok());
        if let Some(ip) = ip {
            let ns = s.metadata.namespace.clone().unwrap_or_default();
            n.by_ip.insert(
                ip,
                format!(
                    "service {ns}/{}",
                    s.metadata.name.clone().unwrap_or_default()
                ),
            );
        }
    }
    let pods: Vec<Pod> = items(client, &POD).await?;
    for p in &pods {
        let ip = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_ref())
            .and_then(|i| i.parse().ok());
        if let Some(ip) = ip {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            n.by_ip.insert(
                ip,
                format!("pod {ns}/{}", p.metadata.name.clone().unwrap_or_default()),
            );
        }
    }
    Ok((n, node_names))
}

/// What a node's listeners send the main loop.
pub(crate) enum Seen {
    Conn(String, podnet_kernel::conntrack::Event),
    Drop(String, podnet_kernel::nflog::Logged),
    Failed(String),
}

/// How a node's connections are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Source {
    /// Table dumps every [`POLL_EVERY`], compared (see `conntrack::Poller`): costs the
    /// connections nothing.
    #[default]
    Poll,
    /// ctnetlink's event subscription: each change told as the kernel makes it, at the price
    /// of a message built in the path of every connection's packets.
    Events,
}

/// How often a node's table is dumped, or its queued events read: often enough that a
/// flow shows within a second, seldom enough that a busy table costs little to dump.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// What reads a node's connections.
enum Reader {
    Poll(podnet_kernel::conntrack::Poller),
    Events(Events, NetNs),
}

impl Reader {
    fn open(ns: &NetNs, source: Source) -> Result<Reader, podnet_kernel::KernelError> {
        Ok(match source {
            Source::Poll => Reader::Poll(podnet_kernel::conntrack::Poller::new(Some(ns))?),
            Source::Events => Reader::Events(Events::subscribe(Some(ns))?, ns.try_clone()?),
        })
    }

    /// What changed since the last read. Events are drained on a timer, not read as each
    /// comes (see `Events::pending`); a TCP connection's end is told without its counts
    /// then, so they are read from its entry, which lasts until TIME_WAIT is over.
    fn next(&mut self) -> Result<Vec<podnet_kernel::conntrack::Event>, String> {
        std::thread::sleep(POLL_EVERY);
        match self {
            Reader::Poll(p) => p.poll().map_err(|e| format!("conntrack table: {e}")),
            Reader::Events(events, ns) => {
                let mut list = events
                    .pending()
                    .map_err(|e| format!("conntrack events: {e}"))?;
                for e in list.iter_mut().filter(|e| e.kind == EventKind::Closed) {
                    e.counters = podnet_kernel::conntrack::counters_of(Some(ns), &e.entry)
                        .ok()
                        .flatten();
                }
                Ok(list)
            }
        }
    }
}

/// Starts the two listeners of node `name` on threads of their own.
pub(crate) fn listen(
    name: String,
    group: u16,
    source: Source,
    tx: mpsc::UnboundedSender<Seen>,
    stop: Arc<AtomicBool>,
) -> Result<(), CliError> {
    let ns = NetNs::open(&name).map_err(|e| CliError::other(format!("node {name}: {e} (podnet observe reads the nodes' namespaces, so it runs where the nodes are: a lab)")))?;
    // Without accounting a connection's end carries no byte counts.
    let _ = podnet_kernel::sysctl::write(&ns, "net.netfilter.nf_conntrack_acct", "1");
    let mut reader = Reader::open(&ns, source).map_err(|e| CliError::other(e.to_string()))?;
    let nflog = Nflog::bind(Some(&ns), group);
    let (n1, tx1, s1) = (name.clone(), tx.clone(), stop.clone());
    std::thread::spawn(move || {
        while !s1.load(Ordering::Relaxed) {
            match reader.next() {
                Ok(list) => list.into_iter().for_each(|e| {
                    let _ = tx1.send(Seen::Conn(n1.clone(), e));
                }),
                Err(e) => {
                    let _ = tx1.send(Seen::Failed(format!("{n1}: {e}")));
                    return;
                }
            }
        }
    });
    match nflog {
        Ok(mut log) => {
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match log.receive() {
                        Ok(list) => list.into_iter().for_each(|l| {
                            let _ = tx.send(Seen::Drop(name.clone(), l));
                        }),
                        Err(e) => {
                            let _ = tx.send(Seen::Failed(format!("{name}: NFLOG: {e}")));
                            return;
                        }
                    }
                }
            });
        }
        Err(e) => eprintln!("warning: node {name}: policy drops are not shown: {e}"),
    }
    Ok(())
}

fn now() -> String {
    chrono::Utc::now().format("%H:%M:%S%.3f").to_string()
}

fn end(names: &Names, ip: Option<Ipv4Addr>, port: Option<u16>) -> Option<End> {
    let ip = ip?;
    Some(End {
        ip,
        port,
        name: names.name(ip),
    })
}

pub(crate) fn conn_flow(
    names: &Names,
    node: String,
    e: &podnet_kernel::conntrack::Event,
) -> Option<Flow> {
    let o = &e.entry.original;
    // A TCP connection was reported closed when it ended; its entry's removal after
    // TIME_WAIT is not news.
    if e.kind == EventKind::Destroyed && o.protocol == 6 {
        return None;
    }
    let r = &e.entry.reply;
    let source = end(names, o.src, o.src_port)?;
    let asked = end(names, o.dst, o.dst_port)?;
    // After a DNAT the reply comes from the endpoint reached, not the address asked.
    let reached = end(names, r.src, r.src_port)?;
    let (destination, via) = if reached.ip != asked.ip || reached.port != asked.port {
        (reached, Some(asked))
    } else {
        (asked, None)
    };
    if source.name.is_none() && destination.name.is_none() {
        return None;
    }
    Some(Flow {
        time: now(),
        node,
        verdict: "forwarded",
        event: match e.kind {
            EventKind::New => "new",
            EventKind::Closed | EventKind::Destroyed => "closed",
        },
        protocol: proto_name(o.protocol),
        source,
        destination,
        via,
        bytes: e.counters.map(|(a, b)| (a.bytes, b.bytes)),
        policy: None,
    })
}

pub(crate) fn drop_flow(names: &Names, node: String, l: &podnet_kernel::nflog::Logged) -> Flow {
    let policy = l.prefix.split_whitespace().last().map(str::to_string);
    Flow {
        time: now(),
        node,
        verdict: "dropped",
        event: "dropped",
        protocol: proto_name(l.proto),
        source: End {
            ip: l.saddr,
            port: l.sport,
            name: names.name(l.saddr),
        },
        destination: End {
            ip: l.daddr,
            port: l.dport,
            name: names.name(l.daddr),
        },
        via: None,
        bytes: None,
        policy,
    }
}

fn wanted(args: &ObserveArgs, f: &Flow) -> bool {
    let named =
        |e: &End, prefix: &str, want: &str| e.name.as_deref() == Some(&format!("{prefix} {want}"));
    let in_ns = |e: &End, ns: &str| {
        e.name
            .as_deref()
            .is_some_and(|n| n.starts_with(&format!("pod {ns}/")))
    };
    args.verdict.as_deref().is_none_or(|v| v == f.verdict)
        && args.protocol.as_deref().is_none_or(|p| p == f.protocol)
        && args
            .pod
            .as_deref()
            .is_none_or(|p| named(&f.source, "pod", p) || named(&f.destination, "pod", p))
        && args
            .in_namespace
            .as_deref()
            .is_none_or(|n| in_ns(&f.source, n) || in_ns(&f.destination, n))
        && args
            .service
            .as_deref()
            .is_none_or(|s| f.via.as_ref().is_some_and(|v| named(v, "service", s)))
}

fn show(e: &End) -> String {
    let addr = match e.port {
        Some(p) => format!("{}:{p}", e.ip),
        None => e.ip.to_string(),
    };
    match &e.name {
        Some(n) => format!("{n} ({addr})"),
        None => addr,
    }
}

fn text(f: &Flow) -> String {
    let mut line = format!(
        "{} [{}] {:<9} {:<4} {} -> {}",
        f.time,
        f.node,
        f.verdict.to_uppercase(),
        f.protocol,
        show(&f.source),
        show(&f.destination)
    );
    if let Some(v) = &f.via {
        line.push_str(&format!(" via {}", show(v)));
    }
    match (f.event, f.bytes) {
        ("closed", Some((a, b))) => line.push_str(&format!(" closed, {a} B sent, {b} B back")),
        ("closed", None) => line.push_str(" closed"),
        ("new", _) => line.push_str(" new"),
        _ => {}
    }
    if let Some(p) = &f.policy {
        line.push_str(&format!(" by policy {p}"));
    }
    line
}

pub async fn run(g: GlobalArgs, args: ObserveArgs) -> i32 {
    match observe(&g, &args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}", e.alone());
            1
        }
    }
}

async fn observe(g: &GlobalArgs, args: &ObserveArgs) -> Result<(), CliError> {
    if let Some(o) = args.output.as_deref().filter(|o| *o != "json") {
        return Err(CliError::other(format!(
            "unknown output format {o:?}: json, or none for text"
        )));
    }
    let client = Client::connect(g).await?;
    let (mut names, nodes) = names(&client).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::unbounded_channel();
    for node in nodes {
        let source = if args.events {
            Source::Events
        } else {
            Source::Poll
        };
        listen(node, args.log_group, source, tx.clone(), stop.clone())?;
    }
    drop(tx);
    let deadline = tokio::time::sleep(Duration::from_secs(args.timeout.unwrap_or(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut refresh = tokio::time::interval(Duration::from_secs(2));
    let mut shown = 0;
    let result = loop {
        tokio::select! {
            _ = &mut deadline => break Ok(()),
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = refresh.tick() => {
                if let Ok((n, _)) = self::names(&client).await {
                    names = n;
                }
            }
            seen = rx.recv() => {
                let flow = match seen {
                    Some(Seen::Conn(node, e)) => conn_flow(&names, node, &e),
                    Some(Seen::Drop(node, l)) => Some(drop_flow(&names, node, &l)),
                    Some(Seen::Failed(why)) => break Err(CliError::other(why)),
                    None => break Ok(()),
                };
                let Some(flow) = flow.filter(|f| wanted(args, f)) else { continue };
                match args.output.as_deref() {
                    Some(_) => println!("{}", serde_json::to_string(&flow).unwrap_or_default()),
                    None => println!("{}", text(&flow)),
                }
                shown += 1;
                if args.count.is_some_and(|c| shown >= c) {
                    break Ok(());
                }
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    result
}
