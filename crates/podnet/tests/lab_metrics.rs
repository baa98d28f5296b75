//! The agents' `/metrics` on a real 2-node lab (udp backend), scraped from inside each
//! node's namespace as Prometheus would on the node: the text is strict Prometheus text
//! format (read back with prometheus-parse), and its series move as the test changes the
//! cluster — a Service and its pods (the proxy's service and endpoint changes, its syncs,
//! its tables' elements, the IPAM's used addresses), traffic across nodes (the udp
//! tunnel's packets), and a NetworkPolicy that refuses it (its drops, by name, on the
//! destination node).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{Lab, PODNET, is_root, wait_for};
use podnet_kernel::NetNs;
use prometheus_parse::{LineInfo, Scrape, Value};

/// Parses `text` strictly: every line a HELP, a TYPE or a numeric sample of a declared
/// family, no family typed twice, no series twice.
fn parse_strict(text: &str) -> Scrape {
    let mut typed = BTreeSet::new();
    let mut series = BTreeSet::new();
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Doc { .. } => {}
            LineInfo::Type { metric_name, .. } => {
                assert!(typed.insert(metric_name.clone()), "TYPE twice: {line}");
            }
            LineInfo::Sample {
                metric_name,
                labels,
                value,
                ..
            } => {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| metric_name.strip_suffix(s))
                    .filter(|f| typed.contains(&format!("{f}_bucket")))
                    .map_or(metric_name.to_string(), |f| format!("{f}_bucket"));
                assert!(typed.contains(&family), "a sample of no family: {line}");
                assert!(value.parse::<f64>().is_ok(), "not a number: {line}");
                let key = format!("{metric_name}{{{}}}", labels.unwrap_or(""));
                assert!(series.insert(key), "a series twice: {line}");
            }
            LineInfo::Empty | LineInfo::Ignored => panic!("not Prometheus text: {line:?}"),
        }
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The sum of the samples of `metric` whose labels include `labels` (a histogram: its
/// count).
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(b) => b.last().map_or(0.0, |c| c.count),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

/// `GET /metrics` of node `i`'s agent, from a thread inside the node's namespace (its
/// loopback, where the agent listens by default).
fn scrape(lab: &Lab, i: u32) -> Scrape {
    let netns = NetNs::open_path(Path::new(&format!("/run/netns/{}", lab.node(i)))).unwrap();
    let text = netns
        .run(|| -> std::io::Result<String> {
            let addr = "127.0.0.1:10249".parse().unwrap();
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")?;
            let mut response = String::new();
            s.read_to_string(&mut response)?;
            Ok(response)
        })
        .unwrap()
        .unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    parse_strict(body)
}

const WEB: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: 8080}\n";
const DENY: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-web}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Ingress]\n";

#[test]
fn agent_metrics_move_with_services_pods_traffic_and_policies() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let lab = Lab::new("met", "172.31.96.0/24");
    lab.up(2, &["--backend", "udp"]);
    let before = wait_for(Duration::from_secs(10), "node1's first proxy sync", || {
        let s = scrape(&lab, 1);
        match value(&s, "podnet_proxy_syncs_total", &[("result", "success")]) {
            0.0 => Err("no sync yet".to_string()),
            _ => Ok(s),
        }
    })
    .0;
    let node1 = [("collector", "nftables")];
    assert_eq!(
        value(&before, "podnet_scrape_collector_success", &node1),
        1.0
    );
    assert_eq!(
        value(&before, "podnet_node_info", &[("backend", "udp")]),
        1.0
    );
    assert_eq!(value(&before, "podnet_overlay_peers", &[]), 1.0);
    let elements = |s: &Scrape| {
        value(
            s,
            "kubeproxy_sync_proxy_rules_nftables_objects",
            &[("kind", "elements")],
        )
    };

    // A Service with a pod behind it on node 2, a client pod on node 1.
    lab.server_pod("web", 2);
    lab.server_pod("client", 1);
    lab.apply(WEB);
    let ips = lab.ready_ips(&["web", "client"]);
    let endpoint_changes =
        |s: &Scrape| value(s, "kubeproxy_sync_proxy_rules_endpoint_changes_total", &[]);
    let after = wait_for(Duration::from_secs(10), "node1's proxy has web", || {
        let s = scrape(&lab, 1);
        let (was, now) = (endpoint_changes(&before), endpoint_changes(&s));
        if now > was && elements(&s) > elements(&before) {
            Ok(s)
        } else {
            Err(format!("endpoint changes {was} -> {now}"))
        }
    })
    .0;
    let services = "kubeproxy_sync_proxy_rules_service_changes_total";
    assert!(value(&after, services, &[]) > value(&before, services, &[]));
    let partial = "kubeproxy_sync_partial_proxy_rules_duration_seconds";
    assert!(value(&after, partial, &[]) > value(&before, partial, &[]));
    let used = "podnet_ipam_addresses_used";
    assert!(value(&after, used, &[]) >= value(&before, used, &[]) + 1.0);

    // Across nodes through the tunnel, then refused by a policy on node 2.
    let client = lab.pod_netns("client");
    let web = format!("{}:8080", ips["web"]);
    lab.tcp_from(&client, &web, Duration::from_secs(10));
    let sent = [("direction", "udp_sent")];
    assert!(value(&scrape(&lab, 1), "podnet_udp_tunnel_packets_total", &sent) > 0.0);
    lab.apply(DENY);
    let policy = [
        ("kind", "NetworkPolicy"),
        ("namespace", "default"),
        ("policy", "deny-web"),
        ("direction", "ingress"),
    ];
    let (dropped, _) = wait_for(
        Duration::from_secs(15),
        "a drop counted for deny-web",
        || {
            let _ = lab.in_netns(
                &client,
                &[
                    PODNET,
                    "probe",
                    "send",
                    "--tcp",
                    &web,
                    "--data",
                    "hi",
                    "--timeout",
                    "1",
                ],
            );
            let s = scrape(&lab, 2);
            match value(&s, "podnet_policy_drops_total", &policy) {
                0.0 => Err(format!(
                    "no drop yet: {:?}",
                    value(&s, "podnet_policy_drops_total", &[])
                )),
                _ => Ok(s),
            }
        },
    );
    assert!(value(&dropped, "podnet_policy_drop_bytes_total", &policy) >= 40.0);
    assert!(
        value(
            &dropped,
            "podnet_policy_nftables_objects",
            &[("kind", "rules")]
        ) > 0.0
    );
    assert!(
        value(
            &dropped,
            "podnet_policy_sync_duration_seconds",
            &[("kind", "full")]
        ) >= 1.0
    );
}
