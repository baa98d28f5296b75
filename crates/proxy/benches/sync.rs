//! (a) Sync time: a full sync of N services × E endpoints (render + one transaction) through
//! `nft -f` and over netlink, side by side, in a fresh namespace and over the existing
//! tables, and partial syncs at that size (an endpoint replaced; a service added or
//! removed), alternately through `nft -f` and over netlink.
//!
//! `PODNET_BENCH_SERVICES` (default `1000,10000`), `PODNET_BENCH_ENDPOINTS` (default 10),
//! `PODNET_BENCH_PARTIAL_RUNS` (default 20). Runs as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod lab;

use std::collections::BTreeMap;
use std::time::Instant;

use podnet_proxy::model::{self, NodeContext};
use podnet_proxy::nftables::{self, TableConfig};
use podnet_proxy::{fastpath, fullsync};

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    let sizes = lab::env_list("PODNET_BENCH_SERVICES", "1000,10000");
    let eps = lab::env_usize("PODNET_BENCH_ENDPOINTS", 10);
    let runs = lab::env_usize("PODNET_BENCH_PARTIAL_RUNS", 20).max(1);
    let ctx = NodeContext {
        node_name: "node-0".into(),
        cluster_cidr: "10.244.0.0/16".parse().unwrap(),
        layout: match std::env::var("PODNET_BENCH_LAYOUT").as_deref() {
            Ok("endpoint-chains") => model::Layout::EndpointChains,
            _ => model::Layout::Compact,
        },
    };
    let cfg = TableConfig {
        node_ips: vec!["172.31.70.1".parse().unwrap()],
        service_cidr: Some("10.96.0.0/12".parse().unwrap()),
    };
    let placement = match lab::pods_per_node() {
        0 => "endpoints over 3 nodes".to_string(),
        n => format!("{n} endpoints per node"),
    };
    println!(
        "proxy sync bench: services × {eps} endpoints ({placement}), layout {:?}, nft {}",
        ctx.layout,
        nft_version()
    );
    for n in sizes {
        let ns = lab::Namespaces::new(&format!("sync{n}"), &["node"]);
        let node = ns.ns("node");
        let states: Vec<_> = (0..n).map(|i| lab::synthetic(i, eps)).collect();

        let full = |label: &str| {
            let t = Instant::now();
            let rules: BTreeMap<_, _> = states
                .iter()
                .map(|s| (s.port.name.clone(), model::service_rules(s, &ctx)))
                .collect();
            let (text, installed) = nftables::render_full(&cfg, rules);
            let render = ms(t);
            if let Ok(dir) = std::env::var("PODNET_BENCH_DUMP") {
                std::fs::write(format!("{dir}/full-{n}.nft"), &text).unwrap();
            }
            let t = Instant::now();
            nftables::apply(Some(node), &text).expect("full sync applies");
            let apply = ms(t);
            println!(
                "full sync via nft -f  ({label}) {n:>6} services: render {render:>7.1} ms + apply {apply:>7.1} ms = {:>7.1} ms ({:.1} MB of nft text)",
                render + apply,
                text.len() as f64 / 1e6
            );
            installed
        };
        let mut socket = podnet_kernel::nftnl::NftSocket::open(Some(node)).unwrap();
        let mut full_over_netlink = |label: &str| {
            let t = Instant::now();
            let rules: BTreeMap<_, _> = states
                .iter()
                .map(|s| (s.port.name.clone(), model::service_rules(s, &ctx)))
                .collect();
            let model_ms = ms(t);
            let (batch, installed) = fullsync::full_batch(&cfg, rules, &Default::default());
            let render = ms(t);
            let t = Instant::now();
            socket.apply(&batch).expect("full sync applies");
            let apply = ms(t);
            println!(
                "full sync via netlink ({label}) {n:>6} services: build  {render:>7.1} ms + apply {apply:>7.1} ms = {:>7.1} ms ({} messages; the model {model_ms:.1} ms of the build)",
                render + apply,
                batch.len()
            );
            installed
        };
        // Side by side: nft, netlink, nft, netlink, each over what the previous wrote.
        full("fresh namespace");
        full_over_netlink("over the existing tables");
        full("over the existing tables");
        podnet_proxy::cleanup(Some(node)).unwrap();
        full_over_netlink("fresh tables");
        let mut installed = full_over_netlink("over the existing tables");

        // Partial: (1) one service loses an endpoint and gains another, then back (the
        // fast path); (2) a new service port added, then removed again (the plan's steps).
        // The same change alternately through `nft -f` and over netlink.
        let target = &states[n / 2];
        let extra_service = lab::synthetic(n + 1, eps);
        for kind in ["an endpoint replaced", "a service added or removed"] {
            let mut by_nft = Vec::new();
            let mut by_netlink = Vec::new();
            for run in 0..runs * 2 {
                let change = if kind == "an endpoint replaced" {
                    let mut changed_state = target.clone();
                    if run % 2 == 0 {
                        changed_state.endpoints.pop();
                        let mut extra = changed_state.endpoints[0].clone();
                        extra.ip = "10.99.0.1".parse().unwrap();
                        changed_state.endpoints.push(extra);
                    }
                    (changed_state.port.name.clone(), Some(changed_state))
                } else {
                    let present = (run % 2 == 0).then(|| extra_service.clone());
                    (extra_service.port.name.clone(), present)
                };
                let via_netlink = (run / 2) % 2 == 1;
                let t = Instant::now();
                let mut changed = BTreeMap::new();
                changed.insert(change.0, change.1.map(|s| model::service_rules(&s, &ctx)));
                let fast = fastpath::partial_batch(&installed, &changed);
                let ops = nftables::plan_partial(&mut installed, changed);
                if via_netlink {
                    let batch = fast.unwrap_or_else(|| fastpath::ops_batch(&ops));
                    socket.apply(&batch).expect("partial sync applies");
                    by_netlink.push(ms(t));
                } else {
                    let text = nftables::render_ops(&ops);
                    nftables::apply(Some(node), &text).expect("partial sync applies");
                    by_nft.push(ms(t));
                }
            }
            for (how, times) in [("nft -f", by_nft), ("netlink", by_netlink)] {
                println!(
                    "partial sync, {kind}, at {n:>6} services via {how:<7}: median {:.1} ms, max {:.1} ms over {} runs",
                    lab::median_ms(times.clone()),
                    times.iter().cloned().fold(0.0, f64::max),
                    times.len()
                );
            }
        }
        let t = Instant::now();
        podnet_proxy::cleanup(Some(node)).unwrap();
        println!(
            "cleanup (delete the table) at {n:>6} services: {:.1} ms",
            ms(t)
        );
    }
}

fn nft_version() -> String {
    std::process::Command::new("nft")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
