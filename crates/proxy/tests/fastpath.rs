//! Partial syncs over netlink against the same syncs through `nft -f`: two namespaces get
//! the same full sync, then the same changes, one by each path; the rulesets `nft` lists
//! must be identical after every step. Endpoint changes take the smallest batch (the fast
//! path); any other change the partial sync's steps as a batch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod parity;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use parity::{ctx, endpoint, port, ruleset, test_ns};
use podnet_kernel::netns::OwnedNetNs;
use podnet_proxy::fastpath;
use podnet_proxy::model::{self, Endpoint, Protocol, ServiceState};
use podnet_proxy::nftables::{self, TableConfig};

fn service(name: &str, ip_last: u8, protocol: Protocol, eps: Vec<Endpoint>) -> ServiceState {
    ServiceState {
        port: port(name, ip_last, protocol),
        endpoints: eps,
    }
}

/// Both namespaces with the same full sync; the installed state to sync from.
fn start(states: &[ServiceState]) -> (OwnedNetNs, OwnedNetNs, nftables::Installed) {
    let by_nft = test_ns("fp", "nft");
    let by_netlink = test_ns("fp", "nl");
    let cfg = TableConfig {
        node_ips: vec![Ipv4Addr::new(172, 31, 0, 1)],
        service_cidr: Some("10.96.0.0/12".parse().unwrap()),
    };
    let rules = states
        .iter()
        .map(|s| (s.port.name.clone(), model::service_rules(s, &ctx())))
        .collect();
    let (text, installed) = nftables::render_full(&cfg, rules);
    for t in [&by_nft, &by_netlink] {
        nftables::apply(Some(t), &text).expect("full sync");
    }
    (by_nft, by_netlink, installed)
}

/// Applies `new` states by both paths; returns whether the fast path took them.
fn sync_both(
    by_nft: &OwnedNetNs,
    by_netlink: &OwnedNetNs,
    installed: &mut nftables::Installed,
    new: &[ServiceState],
) -> bool {
    let changed: BTreeMap<_, _> = new
        .iter()
        .map(|s| (s.port.name.clone(), Some(model::service_rules(s, &ctx()))))
        .collect();
    let batch = fastpath::partial_batch(installed, &changed);
    let ops = nftables::plan_partial(installed, changed);
    nftables::apply(Some(by_nft), &nftables::render_ops(&ops)).expect("nft path");
    let fast = batch.is_some();
    let batch = batch.unwrap_or_else(|| fastpath::ops_batch(&ops));
    podnet_kernel::nftnl::apply(Some(by_netlink), &batch).expect("netlink path");
    fast
}

#[test]
fn endpoint_changes_over_netlink_leave_the_ruleset_nft_would() {
    let web = |eps| service("web", 10, Protocol::Tcp, eps);
    let dns = |eps| service("dns", 11, Protocol::Udp, eps);
    let initial = [
        web(vec![
            endpoint(2, "node-a", true),
            endpoint(3, "node-b", true),
        ]),
        dns(vec![endpoint(4, "node-a", true)]),
    ];
    let (a, b, mut installed) = start(&initial);
    assert_eq!(ruleset(&a), ruleset(&b));

    let steps: Vec<(&str, Vec<ServiceState>)> = vec![
        (
            "an endpoint replaced (same count)",
            vec![web(vec![
                endpoint(2, "node-a", true),
                endpoint(5, "node-a", true),
            ])],
        ),
        (
            "scaled up (the pick's modulus changes)",
            vec![web(vec![
                endpoint(2, "node-a", true),
                endpoint(5, "node-a", true),
                endpoint(6, "node-b", true),
            ])],
        ),
        (
            "one turns not ready, and a UDP service moves (two ports in one batch)",
            vec![
                web(vec![
                    endpoint(2, "node-a", true),
                    endpoint(5, "node-a", false),
                    endpoint(6, "node-b", true),
                ]),
                dns(vec![endpoint(7, "node-a", true)]),
            ],
        ),
    ];
    for (what, states) in steps {
        assert!(
            sync_both(&a, &b, &mut installed, &states),
            "{what}: the fast path takes it"
        );
        let listed = ruleset(&a);
        assert_eq!(ruleset(&b), listed, "{what}");
    }
    let listed = ruleset(&a);
    assert!(listed.contains("10.244.1.6 . 8080"), "{listed}");
    assert!(
        !listed.contains("10.244.1.4 . 10.244.1.4"),
        "the hairpin element of the endpoint that went is gone: {listed}"
    );
    assert!(listed.contains("10.244.1.7 . 10.244.1.7"), "{listed}");
}

#[test]
fn changes_beyond_endpoints_go_over_netlink_as_the_plans_steps() {
    let web = |eps| service("web", 10, Protocol::Tcp, eps);
    let (a, b, mut installed) = start(&[web(vec![endpoint(2, "node-a", true)])]);
    // First a change over netlink, so what follows is nft working on what netlink wrote.
    assert!(sync_both(
        &a,
        &b,
        &mut installed,
        &[web(vec![endpoint(8, "node-a", true)])]
    ));
    // The last endpoint goes: the ClusterIP moves to the no-endpoint map.
    assert!(!sync_both(&a, &b, &mut installed, &[web(vec![])]));
    // It comes back.
    assert!(!sync_both(
        &a,
        &b,
        &mut installed,
        &[web(vec![endpoint(3, "node-a", true)])]
    ));
    // A new service port.
    let api = service("api", 12, Protocol::Tcp, vec![endpoint(4, "node-b", true)]);
    assert!(!sync_both(
        &a,
        &b,
        &mut installed,
        std::slice::from_ref(&api)
    ));
    // A port that gains a NodePort (new chain and element).
    let mut np = api;
    np.port.node_port = Some(30080);
    assert!(!sync_both(
        &a,
        &b,
        &mut installed,
        std::slice::from_ref(&np)
    ));
    assert_eq!(ruleset(&a), ruleset(&b));
    // It turns to ClientIP affinity (endpoint chains, sets, an anonymous vmap), then
    // loses an endpoint chain and set, then the affinity again (they all go).
    let mut sticky = np.clone();
    sticky.port.affinity_timeout = Some(300);
    sticky.endpoints.push(endpoint(5, "node-a", true));
    let mut fewer = sticky.clone();
    fewer.endpoints.pop();
    let steps = [sticky, fewer, np.clone()];
    for (i, s) in steps.iter().enumerate() {
        assert!(!sync_both(&a, &b, &mut installed, std::slice::from_ref(s)));
        assert_eq!(ruleset(&a), ruleset(&b), "affinity step {i}");
    }
    // A second port claims its external address (the lower name owns it), then both go.
    let mut first = service("aaa", 13, Protocol::Tcp, vec![endpoint(6, "node-b", true)]);
    first.port.external_ips = vec![Ipv4Addr::new(192, 0, 2, 1)];
    let mut second = np;
    second.port.external_ips = vec![Ipv4Addr::new(192, 0, 2, 1)];
    assert!(!sync_both(&a, &b, &mut installed, &[second.clone()]));
    assert!(!sync_both(&a, &b, &mut installed, &[first.clone()]));
    assert_eq!(ruleset(&a), ruleset(&b), "the address handed over");
    let gone: BTreeMap<_, _> = [
        (first.port.name.clone(), None),
        (second.port.name.clone(), None),
    ]
    .into_iter()
    .collect();
    let ops = nftables::plan_partial(&mut installed, gone);
    nftables::apply(Some(&a), &nftables::render_ops(&ops)).expect("nft path");
    podnet_kernel::nftnl::apply(Some(&b), &fastpath::ops_batch(&ops)).expect("netlink path");
    let listed = ruleset(&a);
    assert_eq!(ruleset(&b), listed, "both removed");
    assert!(!listed.contains("192.0.2.1"), "{listed}");
}
