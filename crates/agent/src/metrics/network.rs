//! The node network's metrics: which subnet and backend the node runs (`podnet_node_info`),
//! its overlay peers and the errors setting each up (counted at each network pass), and the
//! udp backend's tunnel counters (read from its forwarder at each scrape). The pass also
//! shares the node's subnet and the tunnel's counters with the scrape-time collectors.

use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;
use podnet_overlay::udp::{CounterSnapshot, TunnelCounters};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    pub node: String,
    pub pod_cidr: String,
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The peer's Node name.
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// What the network pass learnt that the scrape reads.
#[derive(Debug, Default)]
struct State {
    subnet: Option<Ipv4Net>,
    tunnel: Option<TunnelCounters>,
}

/// The pass's findings, shared with the scrape-time collectors.
#[derive(Debug, Clone, Default)]
pub struct SharedState(Arc<Mutex<State>>);

impl SharedState {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        match self.0.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// The node's pod subnet, once known.
    pub fn subnet(&self) -> Option<Ipv4Net> {
        self.with(|s| s.subnet)
    }

    pub fn tunnel(&self) -> Option<TunnelCounters> {
        self.with(|s| s.tunnel.clone())
    }
}

/// What one network pass found.
#[derive(Debug, Default)]
pub struct PassFacts<'a> {
    /// The node's subnet and the backend's kind, once the backend is built.
    pub backend: Option<(Ipv4Net, String)>,
    pub tunnel: Option<TunnelCounters>,
    /// The peers handed to the backend.
    pub peers: usize,
    /// Peers that could not be set up (not counting ones whose agent has not published
    /// its backend yet).
    pub failed: Vec<&'a str>,
    /// The pass's verdict on the overlay; `None` when it did not get to it.
    pub overlay_ok: Option<bool>,
}

/// Handles on the node network's series.
#[derive(Clone, Debug)]
pub struct NetworkMetrics {
    node: String,
    info: Family<InfoLabels, Gauge>,
    peers: Gauge,
    peers_failed: Gauge,
    peer_errors: Family<PeerLabels, Counter>,
    passes: Family<ResultLabels, Counter>,
    state: SharedState,
}

impl NetworkMetrics {
    pub fn register(registry: &mut Registry, node: &str) -> NetworkMetrics {
        let m = NetworkMetrics {
            node: node.to_string(),
            info: Family::default(),
            peers: Gauge::default(),
            peers_failed: Gauge::default(),
            peer_errors: Family::default(),
            passes: Family::default(),
            state: SharedState::default(),
        };
        registry.register(
            "podnet_node_info",
            "The node's pod subnet and overlay backend (value 1)",
            m.info.clone(),
        );
        registry.register(
            "podnet_overlay_peers",
            "Other nodes handed to the overlay backend as peers",
            m.peers.clone(),
        );
        registry.register(
            "podnet_overlay_peers_failed",
            "Peers the last network pass could not set up",
            m.peers_failed.clone(),
        );
        registry.register(
            "podnet_overlay_peer_errors",
            "Network passes in which a peer could not be set up, by peer",
            m.peer_errors.clone(),
        );
        registry.register(
            "podnet_overlay_syncs",
            "Network passes that got to the overlay, by result (success, failure)",
            m.passes.clone(),
        );
        m
    }

    pub fn state(&self) -> SharedState {
        self.state.clone()
    }

    /// Counts one network pass.
    pub fn observe(&self, facts: PassFacts<'_>) {
        if let Some((subnet, backend)) = &facts.backend {
            let labels = InfoLabels {
                node: self.node.clone(),
                pod_cidr: subnet.to_string(),
                backend: backend.clone(),
            };
            if self.info.get(&labels).is_none() {
                self.info.clear();
                self.info.get_or_create(&labels).set(1);
            }
            self.state.with(|s| {
                s.subnet = Some(*subnet);
                s.tunnel = facts.tunnel.clone();
            });
        }
        let Some(ok) = facts.overlay_ok else { return };
        let result = if ok { "success" } else { "failure" };
        self.passes.get_or_create(&ResultLabels { result }).inc();
        self.peers.set(facts.peers as i64);
        self.peers_failed.set(facts.failed.len() as i64);
        for peer in facts.failed {
            let labels = PeerLabels {
                peer: peer.to_string(),
            };
            self.peer_errors.get_or_create(&labels).inc();
        }
    }
}

/// A family of constant counters: name, help, the label, each value of it with its count.
type CounterFamily<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, u64)]);

/// The udp tunnel's series, from its forwarder's counters (none for other backends).
pub fn encode_tunnel(
    encoder: &mut DescriptorEncoder,
    tunnel: Option<&TunnelCounters>,
) -> Result<(), std::fmt::Error> {
    let Some(tunnel) = tunnel else { return Ok(()) };
    let c: CounterSnapshot = tunnel.snapshot();
    let families: [CounterFamily<'_>; 3] = [
        (
            "podnet_udp_tunnel_packets",
            "Packets through the udp tunnel: read from and written to the TUN device, UDP datagrams sent to and received from peers (a GSO train's segments each count).",
            "direction",
            &[
                ("tun_read", c.tun_read_packets),
                ("udp_sent", c.udp_sent_datagrams),
                ("udp_received", c.udp_received_datagrams),
                ("tun_written", c.tun_written_packets),
            ],
        ),
        (
            "podnet_udp_tunnel_bytes",
            "Bytes through the udp tunnel, as for podnet_udp_tunnel_packets.",
            "direction",
            &[
                ("tun_read", c.tun_read_bytes),
                ("udp_sent", c.udp_sent_bytes),
                ("udp_received", c.udp_received_bytes),
                ("tun_written", c.tun_written_bytes),
            ],
        ),
        (
            "podnet_udp_tunnel_drops",
            "Packets the udp tunnel dropped, by reason.",
            "reason",
            &[
                ("no_route", c.drop_no_route),
                ("unknown_source", c.drop_unknown_source),
                ("not_local", c.drop_not_local),
                ("malformed", c.drop_malformed),
                ("not_ipv4", c.drop_not_ipv4),
                ("send_error", c.drop_send_error),
                ("tun_write_error", c.drop_tun_write_error),
            ],
        ),
    ];
    let counter_type = ConstCounter::new(0u64).metric_type();
    for (name, help, label, values) in families {
        let mut metric = encoder.encode_descriptor(name, help, None, counter_type)?;
        for (value, n) in values {
            ConstCounter::new(*n).encode(metric.encode_family(&[(label, *value)])?)?;
        }
    }
    let icmp = encoder.encode_descriptor(
        "podnet_udp_tunnel_icmp_unreachable_sent",
        "ICMP unreachable errors the udp tunnel sent for packets to no node's subnet.",
        None,
        counter_type,
    )?;
    ConstCounter::new(c.icmp_unreachable_sent).encode(icmp)
}
