//! `podnet trace SRC DST[:PORT[/PROTO]]`: the path of a new connection, explained from the
//! cluster's objects and each node's kernel state. The nodes' and pods' namespaces are read
//! on this machine over netlink, so it works on a lab (each node a namespace here). With
//! `--live`, a real probe is sent from the source pod and the kernel's own trace of it is
//! reported instead ([`podnet_trace::live`]).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use podnet_kernel::NetNs;
use podnet_trace::live::{Place, Probe, Role};
use podnet_trace::{Destination, NodeView, PodView, ServiceView, Snapshot, Source, World};
use serde_json::Value;

use super::client::{Client, resource_path};
use super::layout;
use super::resources::Resource;
use super::{CliError, GlobalArgs};

#[derive(Args, Debug)]
pub struct TraceArgs {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// Where the packet starts: a pod (NAMESPACE/NAME, or NAME in the current namespace)
    /// or an address outside the cluster.
    #[arg(value_name = "SRC")]
    pub source: String,
    /// Where it goes, with :PORT[/tcp|udp|sctp] (default 80/tcp): a pod, svc/NAMESPACE/NAME
    /// (its ClusterIP), node/NAME, or an address.
    #[arg(value_name = "DST")]
    pub destination: String,
    /// Output format: json for the hops as JSON.
    #[arg(short = 'o', long, value_name = "FORMAT")]
    pub output: Option<String>,
    /// Send a real probe (a TCP SYN or UDP datagram) from the source pod and report the
    /// hops the kernel traced for it (nftrace on every node), and where it died.
    #[arg(long)]
    pub live: bool,
}

/// `DST` split into its target, port and protocol.
fn split_destination(arg: &str) -> Result<(&str, u16, u8), CliError> {
    let bad = |why: &str| CliError::other(format!("destination {arg:?}: {why}"));
    let (target, rest) = match arg.rsplit_once(':') {
        Some((t, r)) => (t, Some(r)),
        None => (arg, None),
    };
    let (port, proto) = match rest {
        None => (80, 6),
        Some(r) => {
            let (port, proto) = r.split_once('/').unwrap_or((r, "tcp"));
            let port = port.parse().map_err(|_| bad("the port is not a number"))?;
            let proto = match proto.to_ascii_lowercase().as_str() {
                "tcp" => 6,
                "udp" => 17,
                "sctp" => 132,
                other => return Err(bad(&format!("unknown protocol {other} (tcp, udp or sctp)"))),
            };
            (port, proto)
        }
    };
    Ok((target, port, proto))
}

/// `NAMESPACE/NAME` or `NAME` (in `namespace`).
fn ns_name<'a>(arg: &'a str, namespace: &'a str) -> (&'a str, &'a str) {
    arg.split_once('/').unwrap_or((namespace, arg))
}

pub(crate) async fn list<T: serde::de::DeserializeOwned>(
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

fn node_ip(n: &Node) -> Option<Ipv4Addr> {
    n.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .parse()
        .ok()
}

/// The nodes, each with its namespace's state (a node that is not a namespace here is left
/// out, with a warning).
fn node_views(nodes: &[Node]) -> Vec<NodeView> {
    nodes
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.clone()?;
            let ns = NetNs::open(&name).ok()?;
            let state = match Snapshot::read(&ns, &format!("node {name}")) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("warning: {e}");
                    return None;
                }
            };
            Some(NodeView {
                pod_cidr: n.spec.as_ref()?.pod_cidr.as_ref()?.parse().ok(),
                ip: node_ip(n)?,
                name,
                state,
            })
        })
        .collect()
}

/// A pod's netns and sandbox PID from its node's runtime record.
fn pod_runtime(lab: &str, pod: &Pod) -> Option<(PathBuf, i32)> {
    let uid = pod.metadata.uid.as_deref()?;
    let node = pod.spec.as_ref()?.node_name.as_deref()?;
    let found = layout::find_pod(&layout::candidates(Some(lab), node), uid).ok()?;
    let text = std::fs::read_to_string(found.dirs.pod_state_file(uid)).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    Some((
        PathBuf::from(v["netns"].as_str()?),
        found.record.sandbox_pid,
    ))
}

fn pod_views(lab: &str, pods: &[Pod]) -> Vec<PodView> {
    pods.iter()
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
            let (netns, pid) = pod_runtime(lab, p)?;
            let name = p.metadata.name.clone()?;
            let namespace = p.metadata.namespace.clone()?;
            let state = Snapshot::read_path(&netns, &format!("pod {namespace}/{name}")).ok()?;
            Some(PodView {
                listening: podnet_trace::listening::listeners(pid),
                node: p.spec.as_ref()?.node_name.clone()?,
                namespace,
                name,
                ip,
                state,
            })
        })
        .collect()
}

fn service_views(services: &[Service]) -> Vec<ServiceView> {
    services
        .iter()
        .map(|s| ServiceView {
            namespace: s.metadata.namespace.clone().unwrap_or_default(),
            name: s.metadata.name.clone().unwrap_or_default(),
            cluster_ip: s
                .spec
                .as_ref()
                .and_then(|x| x.cluster_ip.as_ref())
                .and_then(|ip| ip.parse().ok()),
        })
        .collect()
}

/// The address `target` names.
fn resolve(world: &World, target: &str, namespace: &str) -> Result<Ipv4Addr, CliError> {
    if let Ok(ip) = target.parse() {
        return Ok(ip);
    }
    if let Some(rest) = target
        .strip_prefix("svc/")
        .or_else(|| target.strip_prefix("service/"))
    {
        let (ns, name) = ns_name(rest, namespace);
        return world
            .services
            .iter()
            .find(|s| s.namespace == ns && s.name == name)
            .and_then(|s| s.cluster_ip)
            .ok_or_else(|| CliError::other(format!("no Service {ns}/{name} with a ClusterIP")));
    }
    if let Some(name) = target.strip_prefix("node/") {
        return world.node(name).map(|n| n.ip).ok_or_else(|| {
            CliError::other(format!(
                "no node {name} (with its namespace on this machine)"
            ))
        });
    }
    let (ns, name) = ns_name(target.strip_prefix("pod/").unwrap_or(target), namespace);
    world
        .pods
        .iter()
        .find(|p| p.namespace == ns && p.name == name)
        .map(|p| p.ip)
        .ok_or_else(|| {
            CliError::other(format!(
                "no running pod {ns}/{name} on this machine's nodes"
            ))
        })
}

pub(crate) async fn world(g: &GlobalArgs, client: &Client) -> Result<World, CliError> {
    use podnet_api::k8s::kinds::{NODE, POD, SERVICE};
    let nodes: Vec<Node> = list(client, &NODE).await?;
    let pods: Vec<Pod> = list(client, &POD).await?;
    let services: Vec<Service> = list(client, &SERVICE).await?;
    let lab = g
        .lab
        .clone()
        .or_else(|| client.lab())
        .unwrap_or_else(|| g.lab_name());
    let world = World {
        nodes: node_views(&nodes),
        pods: pod_views(&lab, &pods),
        services: service_views(&services),
    };
    if world.nodes.is_empty() {
        return Err(CliError::other(
            "none of the cluster's nodes is a network namespace on this machine: podnet trace reads each node's kernel state, so it runs where the nodes are (a lab)".into(),
        ));
    }
    Ok(world)
}

/// The path from `source` to `destination`, given as the command's SRC and DST (`podnet ui`
/// asks the same way), in `world`; names without a namespace are in `namespace`.
pub(crate) fn explain_in(
    world: &World,
    namespace: &str,
    source: &str,
    destination: &str,
) -> Result<podnet_trace::Explanation, CliError> {
    let (target, port, proto) = split_destination(destination)?;
    let dst = Destination {
        ip: resolve(world, target, namespace)?,
        port,
        proto,
    };
    let src = match source.parse::<Ipv4Addr>() {
        Ok(ip) => Source::Outside(ip),
        Err(_) => {
            let (ns, name) = ns_name(source.strip_prefix("pod/").unwrap_or(source), namespace);
            Source::Pod {
                namespace: ns.to_string(),
                name: name.to_string(),
            }
        }
    };
    podnet_trace::explain(world, &src, dst).map_err(|e| CliError::other(e.to_string()))
}

pub async fn run(g: GlobalArgs, args: TraceArgs) -> i32 {
    match trace(&g, &args).await {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("{}", e.alone());
            1
        }
    }
}

async fn trace(g: &GlobalArgs, args: &TraceArgs) -> Result<String, CliError> {
    let client = Client::connect(g).await?;
    let namespace = g
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace.clone());
    let world = world(g, &client).await?;
    if args.live {
        return live(g, &client, &world, &namespace, args).await;
    }
    let explained = explain_in(&world, &namespace, &args.source, &args.destination)?;
    match args.output.as_deref() {
        Some("json") => serde_json::to_string_pretty(&explained)
            .map(|s| s + "\n")
            .map_err(|e| CliError::other(format!("encoding the trace: {e}"))),
        Some(other) => Err(CliError::other(format!(
            "unknown output format {other:?}: json, or none for text"
        ))),
        None => Ok(podnet_trace::render::text(&explained)),
    }
}

/// How long a live trace waits for its probe's fate.
const LIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// At most this many pods are watched for a probe to a Service (any may be its endpoint).
const LIVE_MAX_PODS: usize = 32;

/// `--live`: the probe sent from the source pod, followed through the kernel of every
/// namespace it may cross.
async fn live(
    g: &GlobalArgs,
    client: &Client,
    world: &World,
    namespace: &str,
    args: &TraceArgs,
) -> Result<String, CliError> {
    let (target, port, proto) = split_destination(&args.destination)?;
    let daddr = resolve(world, target, namespace)?;
    if args.source.parse::<Ipv4Addr>().is_ok() {
        return Err(CliError::other(
            "--live sends its probe from a pod: SRC must be NAMESPACE/NAME".into(),
        ));
    }
    let (ns, name) = ns_name(
        args.source.strip_prefix("pod/").unwrap_or(&args.source),
        namespace,
    );
    let src = world
        .pods
        .iter()
        .find(|p| p.namespace == ns && p.name == name)
        .ok_or_else(|| CliError::other(format!("no running pod {ns}/{name} on this machine")))?;
    let pods: Vec<Pod> = list(client, &podnet_api::k8s::kinds::POD).await?;
    let lab = g
        .lab
        .clone()
        .or_else(|| client.lab())
        .unwrap_or_else(|| g.lab_name());
    let places = live_places(&lab, &pods, world, src, daddr)?;
    let probe = Probe {
        saddr: src.ip,
        daddr,
        dport: port,
        proto,
    };
    let traced =
        tokio::task::spawn_blocking(move || podnet_trace::live(&places, probe, LIVE_TIMEOUT))
            .await
            .map_err(|e| CliError::other(format!("the live trace failed: {e}")))?
            .map_err(|e| CliError::other(e.to_string()))?;
    match args.output.as_deref() {
        Some("json") => serde_json::to_string_pretty(&traced)
            .map(|s| s + "\n")
            .map_err(|e| CliError::other(format!("encoding the trace: {e}"))),
        Some(other) => Err(CliError::other(format!(
            "unknown output format {other:?}: json, or none for text"
        ))),
        None => Ok(podnet_trace::live::text(&traced)),
    }
}

/// The namespaces a live probe may cross: the source pod, every node, and the destination
/// pod (every other pod, up to a bound, when the destination is not a pod: a Service's
/// endpoint is picked by the kernel).
fn live_places(
    lab: &str,
    pods: &[Pod],
    world: &World,
    src: &PodView,
    daddr: Ipv4Addr,
) -> Result<Vec<Place>, CliError> {
    let pod_ns = |view: &PodView| -> Result<NetNs, CliError> {
        let pod = pods.iter().find(|p| {
            p.metadata.namespace.as_deref() == Some(view.namespace.as_str())
                && p.metadata.name.as_deref() == Some(view.name.as_str())
        });
        let (path, _) = pod.and_then(|p| pod_runtime(lab, p)).ok_or_else(|| {
            CliError::other(format!(
                "pod {}/{}: its network namespace is not on this machine",
                view.namespace, view.name
            ))
        })?;
        NetNs::open_path(&path).map_err(|e| CliError::other(e.to_string()))
    };
    let place = |view: &PodView, role: Role| -> Result<Place, CliError> {
        Ok(Place {
            label: format!("pod {}/{}", view.namespace, view.name),
            ns: pod_ns(view)?,
            role,
            links: view.state.links.clone(),
        })
    };
    let mut places = vec![place(src, Role::Source)?];
    for n in &world.nodes {
        places.push(Place {
            label: n.name.clone(),
            ns: NetNs::open(&n.name).map_err(|e| CliError::other(e.to_string()))?,
            role: if n.name == src.node {
                Role::SourceNode
            } else {
                Role::Node
            },
            links: n.state.links.clone(),
        });
    }
    let targets: Vec<&PodView> = match world.pod_with_ip(daddr) {
        Some(p) => vec![p],
        None => world.pods.iter().take(LIVE_MAX_PODS).collect(),
    };
    for p in targets.into_iter().filter(|p| p.ip != src.ip) {
        places.push(place(p, Role::Pod)?);
    }
    Ok(places)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_split_into_target_port_and_protocol() {
        assert_eq!(
            split_destination("svc/shop/web").ok(),
            Some(("svc/shop/web", 80, 6))
        );
        assert_eq!(
            split_destination("10.0.0.1:53/udp").ok(),
            Some(("10.0.0.1", 53, 17))
        );
        assert_eq!(split_destination("x/a:81").ok(), Some(("x/a", 81, 6)));
        assert!(split_destination("x/a:http").is_err());
        assert!(split_destination("x/a:80/icmp").is_err());
    }
}
