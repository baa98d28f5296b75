//! Issue 14 (b) and (d): a full sync of the NetworkPolicy table with 1,000 policies over
//! 1,000 pods in 100 namespaces (the synthetic cluster of `shape/`: ten policy shapes per
//! namespace, pods on 10 nodes; the table is node-0's), and partial syncs at that size.
//!
//! (d) first: the bench's own RSS growth (VmRSS) while it fills reflector stores with the
//! API objects (as the agent's watches do), turns them into the model's `Cluster` and
//! computes the desired table: a process holding what the agent holds, not the agent.
//!
//! (b) then, each a median over `PODNET_BENCH_RUNS` (5) runs:
//! - the model: stores → `Cluster` (what every sync of the agent does) and `desired()`;
//! - the full table into a namespace of the bench's own, fresh and over the table already
//!   there, over netlink (`replacing_batch` + one transaction, as the engine does) and
//!   through `nft -f` of the same table's text (`Table`'s Display), alternately;
//! - partial syncs as the engine does them (stores → `Cluster`, `desired()`, `plan()` from
//!   the installed table, one transaction), `PODNET_BENCH_PARTIAL_RUNS` (10) each: a
//!   policy added, removed; a pod (on node-0) added, removed;
//! - the resync check: the table read back over netlink and compared.
//!
//! `PODNET_BENCH_POLICIES` (1000), `PODNET_BENCH_PODS` (1000), `PODNET_BENCH_NAMESPACES`
//! (100), `PODNET_BENCH_NODES` (10). The kernel parts need root (skipped without it, or
//! with `PODNET_BENCH_MODEL_ONLY` set). `PODNET_BENCH_DUMP=FILE` writes the table's text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod shape;

use std::time::Instant;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::Event;
use podnet_kernel::nftnl::{Family, NftSocket};
use podnet_kernel::ruleset::{self, PlanKind, Table};
use podnet_kernel::{NetNs, OwnedNetNs};
use podnet_policy::cluster::namespace_labels;
use podnet_policy::{Cluster, PodInfo, PolicyConfig, TABLE, desired};
use shape::{Shape, env_usize, median, rss_mib};

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// The agent's three reflector stores, with their writers.
struct Stores {
    pods: (Store<Pod>, reflector::store::Writer<Pod>),
    namespaces: (Store<Namespace>, reflector::store::Writer<Namespace>),
    policies: (
        Store<NetworkPolicy>,
        reflector::store::Writer<NetworkPolicy>,
    ),
}

impl Stores {
    fn new() -> Stores {
        Stores {
            pods: reflector::store(),
            namespaces: reflector::store(),
            policies: reflector::store(),
        }
    }

    /// What the engine's runner does before each sync.
    fn cluster(&self) -> Cluster {
        Cluster {
            pods: self
                .pods
                .0
                .state()
                .iter()
                .map(|p| PodInfo::from_pod(p))
                .collect(),
            namespaces: self
                .namespaces
                .0
                .state()
                .iter()
                .map(|n| namespace_labels(n))
                .collect(),
            policies: self
                .policies
                .0
                .state()
                .iter()
                .map(|p| (**p).clone())
                .collect(),
            cluster_policies: Vec::new(),
        }
    }
}

fn counts(t: &Table) -> String {
    let elements: usize = t.sets.iter().map(|s| s.elements.len()).sum();
    let rules: usize = t.chains.iter().map(|c| c.rules.len()).sum();
    format!(
        "{} sets ({elements} elements), {} chains, {rules} rules",
        t.sets.len(),
        t.chains.len()
    )
}

fn nft_f(ns: &NetNs, text: &str) {
    podnet_kernel::nft::apply(Some(ns), text).expect("nft -f applies the table");
}

fn main() {
    let namespaces = env_usize("PODNET_BENCH_NAMESPACES", 100);
    let pods = env_usize("PODNET_BENCH_PODS", 1000);
    let policies = env_usize("PODNET_BENCH_POLICIES", 1000);
    let nodes = env_usize("PODNET_BENCH_NODES", 10);
    let runs = env_usize("PODNET_BENCH_RUNS", 5).max(1);
    let partial_runs = env_usize("PODNET_BENCH_PARTIAL_RUNS", 10).max(1);
    let shape = Shape::new(namespaces, pods, policies, nodes);
    let cfg = PolicyConfig {
        node: shape.nodes[0].clone(),
        log_group: 100,
    };
    println!(
        "policy sync bench: {policies} policies over {pods} pods in {namespaces} namespaces on {nodes} nodes (table of {}), nft {}",
        cfg.node,
        nft_version()
    );

    // (d) memory, before anything else has grown the heap.
    let (rss0, _) = rss_mib();
    let mut stores = Stores::new();
    for ns in shape.typed_namespaces() {
        stores.namespaces.1.apply_watcher_event(&Event::Apply(ns));
    }
    for pod in shape.typed_pods() {
        stores.pods.1.apply_watcher_event(&Event::Apply(pod));
    }
    for p in shape.typed_policies() {
        stores.policies.1.apply_watcher_event(&Event::Apply(p));
    }
    let (rss1, _) = rss_mib();
    let cluster = stores.cluster();
    let (rss2, _) = rss_mib();
    let table = desired(&cluster, &cfg).expect("a table");
    let (rss3, hwm) = rss_mib();
    if let Ok(path) = std::env::var("PODNET_BENCH_DUMP") {
        std::fs::write(path, table.to_string()).expect("write the table's text");
    }
    println!(
        "(d) bench process RSS (not the agent's): at start {rss0:.1} MiB; +{:.1} MiB with the objects in reflector stores; +{:.1} MiB the model's Cluster; +{:.1} MiB the desired table ({}); total {rss3:.1} MiB, peak {hwm:.1} MiB",
        rss1 - rss0,
        rss2 - rss1,
        rss3 - rss2,
        counts(&table)
    );

    // (b) the model.
    let mut to_cluster = Vec::new();
    let mut model = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let c = stores.cluster();
        to_cluster.push(ms(t));
        let t = Instant::now();
        let d = desired(&c, &cfg);
        model.push(ms(t));
        assert_eq!(d.as_ref(), Some(&table), "the model is deterministic");
    }
    let model_ms = median(model.clone());
    println!(
        "model: stores -> Cluster median {:.1} ms; desired() median {model_ms:.1} ms (min {:.1}, max {:.1}) over {runs} runs",
        median(to_cluster.clone()),
        model.iter().cloned().fold(f64::MAX, f64::min),
        model.iter().cloned().fold(0.0, f64::max),
    );

    if std::env::var_os("PODNET_BENCH_MODEL_ONLY").is_some() {
        return;
    }
    if !nix_root() {
        println!("kernel parts skipped: need root (a namespace of the bench's own)");
        return;
    }
    let ns_name = format!("pn-polb-{}-sync", std::process::id());
    let _ = NetNs::delete(&ns_name);
    let node = OwnedNetNs::create(&ns_name).expect("create the bench namespace");
    let mut socket = NftSocket::open(Some(&node)).expect("netfilter socket");
    let delete = || ruleset::delete_table(Some(&node), Family::Inet, TABLE).expect("delete");

    // Full syncs, alternating the two ways, fresh and over the table already there.
    let mut netlink_fresh = Vec::new();
    let mut netlink_over = Vec::new();
    let mut nft_fresh = Vec::new();
    let mut nft_over = Vec::new();
    let mut build = Vec::new();
    let mut render = Vec::new();
    let mut messages = 0;
    let mut text_len = 0;
    for _ in 0..runs {
        for over in [false, true] {
            if !over {
                delete();
            }
            let t = Instant::now();
            let batch = table.replacing_batch();
            build.push(ms(t));
            socket
                .apply(&batch)
                .expect("the full table applies over netlink");
            let took = ms(t);
            messages = batch.len();
            if over {
                netlink_over.push(took);
            } else {
                netlink_fresh.push(took);
            }
            if !over {
                delete();
            }
            let t = Instant::now();
            let mut text = format!("table inet {TABLE}\ndelete table inet {TABLE}\n");
            text.push_str(&table.to_string());
            render.push(ms(t));
            text_len = text.len();
            nft_f(&node, &text);
            let took = ms(t);
            if over {
                nft_over.push(took);
            } else {
                nft_fresh.push(took);
            }
        }
    }
    // What nft wrote must be what netlink writes: the same table read back.
    let back = ruleset::get(Some(&node), Family::Inet, TABLE)
        .expect("read the table")
        .expect("the table is there");
    let same = without_counts(back.canonical()) == without_counts(table.clone());
    println!(
        "full sync over netlink: fresh median {:.1} ms, over the existing table median {:.1} ms (batch built in {:.1} ms, {messages} messages); with the model: {:.1} ms",
        median(netlink_fresh.clone()),
        median(netlink_over.clone()),
        median(build),
        model_ms + median(netlink_fresh.clone()),
    );
    println!(
        "full sync via nft -f (reference): fresh median {:.1} ms, over the existing table median {:.1} ms (text rendered in {:.1} ms, {:.2} MB); with the model: {:.1} ms",
        median(nft_fresh.clone()),
        median(nft_over.clone()),
        median(render),
        text_len as f64 / 1e6,
        model_ms + median(nft_fresh.clone()),
    );
    println!(
        "full sync ratio nft -f / netlink: fresh {:.2}, over the existing table {:.2}; the table nft wrote reads back {} the model's",
        median(nft_fresh) / median(netlink_fresh.clone()),
        median(nft_over) / median(netlink_over),
        if same { "equal to" } else { "DIFFERENT from" }
    );
    let target = model_ms + median(netlink_fresh);
    println!(
        "full sync with the model, fresh: {target:.1} ms (target <= 1000 ms: {})",
        if target <= 1000.0 { "met" } else { "NOT met" }
    );

    // Partial syncs, as the engine does them: from what the last sync wrote.
    delete();
    socket
        .apply(&table.replacing_batch())
        .expect("the full table applies");
    let mut installed = table.clone();
    let extra_policy: NetworkPolicy =
        serde_json::from_value(shape.policy(policies)).expect("policy");
    // A pod of the next index, placed on node-0 so the node's maps change too.
    let mut extra_pod_json = shape.pod(pods, true);
    extra_pod_json["spec"]["nodeName"] = serde_json::json!(cfg.node.clone());
    extra_pod_json["status"]["podIP"] = serde_json::json!("10.244.0.250");
    extra_pod_json["metadata"]["name"] = serde_json::json!("extra");
    let extra_pod: Pod = serde_json::from_value(extra_pod_json).expect("pod");
    for change in [
        Change::Policy(Box::new(extra_policy)),
        Change::Pod(Box::new(extra_pod)),
    ] {
        let what = match change {
            Change::Policy(_) => "a policy",
            Change::Pod(_) => "a pod",
        };
        let mut times: [Vec<[f64; 4]>; 2] = [Vec::new(), Vec::new()];
        let mut kinds = Vec::new();
        let mut sizes = Vec::new();
        for run in 0..partial_runs * 2 {
            let adding = run % 2 == 0;
            change.apply(&mut stores, adding);
            let t = Instant::now();
            let c = stores.cluster();
            let a = ms(t);
            let t = Instant::now();
            let wanted = desired(&c, &cfg).expect("a table");
            let b = ms(t);
            let t = Instant::now();
            let (batch, kind) = ruleset::plan(Some(&installed), Some(&wanted));
            let p = ms(t);
            let t = Instant::now();
            socket.apply(&batch).expect("the partial sync applies");
            let k = ms(t);
            kinds.push(kind);
            sizes.push(batch.len());
            installed = wanted;
            times[usize::from(!adding)].push([a, b, p, k]);
        }
        for (i, verb) in ["added", "removed"].iter().enumerate() {
            let col = |j: usize| median(times[i].iter().map(|r| r[j]).collect());
            let total = median(times[i].iter().map(|r| r.iter().sum()).collect());
            println!(
                "partial sync, {what} {verb}: median {total:.1} ms = stores -> Cluster {:.1} + desired() {:.1} + plan() {:.1} + netlink {:.1} ms ({} messages; {:?}) over {partial_runs} runs",
                col(0),
                col(1),
                col(2),
                col(3),
                sizes[i],
                kinds[i],
            );
        }
        assert!(
            kinds.iter().all(|k| *k == PlanKind::Partial),
            "every change was a partial sync: {kinds:?}"
        );
    }

    // The resync check: read back and compare.
    let mut reads = Vec::new();
    let mut engine_same = false;
    for _ in 0..runs {
        let t = Instant::now();
        let back = ruleset::get(Some(&node), Family::Inet, TABLE)
            .expect("read the table")
            .map(without_counts);
        let same = back.map(|t| t.by_name()) == Some(without_counts(installed.clone()).by_name());
        reads.push(ms(t));
        engine_same = same;
    }
    println!(
        "resync check (the table read back over netlink and compared by name, as Syncer::verify does): median {:.1} ms",
        median(reads),
    );
    assert!(engine_same, "the kernel holds what the partial syncs wrote");
    let t = Instant::now();
    delete();
    println!("table deleted in {:.1} ms", ms(t));
}

/// One object coming and going, as its watch reports it.
enum Change {
    Policy(Box<NetworkPolicy>),
    Pod(Box<Pod>),
}

impl Change {
    fn apply(&self, stores: &mut Stores, adding: bool) {
        fn event<K: Clone>(o: &K, adding: bool) -> Event<K> {
            if adding {
                Event::Apply(o.clone())
            } else {
                Event::Delete(o.clone())
            }
        }
        match self {
            Change::Policy(p) => stores
                .policies
                .1
                .apply_watcher_event(&event(p.as_ref(), adding)),
            Change::Pod(p) => stores
                .pods
                .1
                .apply_watcher_event(&event(p.as_ref(), adding)),
        }
    }
}

/// The table with counters at zero (as the engine compares).
fn without_counts(mut t: Table) -> Table {
    for c in &mut t.chains {
        for r in &mut c.rules {
            for a in &mut r.actions {
                if let ruleset::Action::Counter { packets, bytes } = a {
                    (*packets, *bytes) = (0, 0);
                }
            }
        }
    }
    t
}

fn nix_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn nft_version() -> String {
    std::process::Command::new("nft")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
