#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `podnet_kernel::ruleset` against the real kernel and the `nft` program (the oracle),
//! as root, in namespaces the test creates and removes: a table written over netlink
//! lists exactly as the same table's text given to `nft -f`, and reads back over netlink
//! as what was written, printed as `nft list` prints it.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use podnet_kernel::netns::OwnedNetNs;
use podnet_kernel::nft;
use podnet_kernel::nftnl::{self, BaseChain, ChainKind, Family, Hook, Verdict};
use podnet_kernel::ruleset::{
    self, Action, Addr, Chain, DataType, Datum, ElementValue, Key, Match, Rule, Set, SetData,
    SetElement, Table, ct_state,
};

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn test_ns(tag: &str) -> OwnedNetNs {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let name = format!("pnr-{tag}-{}-{n}", std::process::id());
    OwnedNetNs::create(&name).expect("create test namespace")
}

fn run_nft(ns: &OwnedNetNs, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns.name(), "nft"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run nft");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("nft");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn base(kind: ChainKind, hook: Hook, priority: i32) -> Option<BaseChain> {
    Some(BaseChain {
        kind,
        hook,
        priority,
        accept: true,
    })
}

fn sample(family: Family) -> Table {
    let net = |s: &str| s.parse().expect("cidr");
    let mut masq = Set::new("masq_x", vec![DataType::Ipv4Addr]).with_comment("pods of x");
    masq.elements = vec![
        SetElement {
            key: vec![Datum::Ip("10.1.0.5".parse().expect("ip"))],
            value: None,
        },
        SetElement {
            key: vec![Datum::Ip("10.1.0.7".parse().expect("ip"))],
            value: None,
        },
    ];
    let mut ports = Set::new(
        "no-endpoints",
        vec![
            DataType::Ipv4Addr,
            DataType::InetProto,
            DataType::InetService,
        ],
    );
    ports.elements = vec![SetElement {
        key: vec![
            Datum::Ip("10.96.0.10".parse().expect("ip")),
            Datum::Proto(6),
            Datum::Port(80),
        ],
        value: None,
    }];
    let mut vmap = Set::new(
        "nodeports",
        vec![DataType::InetProto, DataType::InetService],
    );
    vmap.value = SetData::Verdict;
    vmap.elements = vec![SetElement {
        key: vec![Datum::Proto(17), Datum::Port(30053)],
        value: Some(ElementValue::Verdict(Verdict::Goto("portals".into()))),
    }];
    let mut blocks = Set::new("blocks", vec![DataType::Ipv4Addr]).with_comment("an ipBlock");
    blocks.interval = true;
    blocks.elements = ruleset::ip_ranges(
        &[net("10.0.0.0/8"), net("192.168.1.5/32")],
        &[net("10.1.0.0/16")],
    )
    .into_iter()
    .map(|(a, b)| SetElement {
        key: vec![ruleset::ip_interval(a, b)],
        value: None,
    })
    .collect();
    let mut pods = Set::new("pods", vec![DataType::Ipv4Addr]);
    pods.value = SetData::Verdict;
    pods.elements = vec![SetElement {
        key: vec![Datum::Ip("10.244.0.5".parse().expect("ip"))],
        value: Some(ElementValue::Verdict(Verdict::Accept)),
    }];
    let post = Chain {
        name: "postrouting".into(),
        hook: base(ChainKind::Nat, Hook::Postrouting, 100),
        rules: vec![
            Rule::new(
                vec![
                    Match::Ip {
                        addr: Addr::Saddr,
                        net: net("10.244.0.0/16"),
                        equal: true,
                    },
                    Match::Ip {
                        addr: Addr::Daddr,
                        net: net("10.244.0.0/16"),
                        equal: true,
                    },
                ],
                vec![Action::Verdict(Verdict::Return)],
            ),
            Rule::new(
                vec![
                    Match::IpInSet {
                        addr: Addr::Saddr,
                        set: "masq_x".into(),
                        equal: true,
                    },
                    Match::Ip {
                        addr: Addr::Daddr,
                        net: net("224.0.0.0/4"),
                        equal: false,
                    },
                ],
                vec![Action::Masquerade { fully_random: true }],
            )
            .with_comment("x"),
        ],
    };
    let pre = Chain {
        name: "prerouting".into(),
        hook: base(ChainKind::Nat, Hook::Prerouting, -100),
        rules: vec![
            Rule::new(
                vec![Match::FibLocal { daddr: true }],
                vec![Action::Vmap {
                    keys: vec![Key::L4Proto, Key::ThDport],
                    map: "nodeports".into(),
                }],
            ),
            Rule::new(
                vec![],
                vec![Action::Verdict(Verdict::Jump("portals".into()))],
            ),
        ],
    };
    let portals = Chain {
        name: "portals".into(),
        hook: None,
        rules: vec![
            Rule::new(
                vec![
                    Match::Ip {
                        addr: Addr::Daddr,
                        net: net("10.96.0.10/32"),
                        equal: true,
                    },
                    Match::Port {
                        proto: Some(6),
                        dport: true,
                        first: 80,
                        last: 80,
                    },
                ],
                vec![Action::Redirect { port: 40123 }],
            )
            .with_comment("default/web:http"),
            Rule::new(
                vec![Match::Port {
                    proto: Some(6),
                    dport: true,
                    first: 30080,
                    last: 30090,
                }],
                vec![Action::Dnat {
                    ip: "172.30.0.11".parse().expect("ip"),
                    port: 40123,
                }],
            ),
        ],
    };
    let filter = Chain {
        name: "reject-prerouting".into(),
        hook: base(ChainKind::Filter, Hook::Prerouting, -110),
        rules: vec![
            Rule::new(
                vec![Match::CtState(ct_state::ESTABLISHED | ct_state::RELATED)],
                vec![Action::Verdict(Verdict::Accept)],
            ),
            Rule::new(
                vec![Match::InSet {
                    keys: vec![Key::IpDaddr, Key::L4Proto, Key::ThDport],
                    set: "no-endpoints".into(),
                    equal: true,
                }],
                vec![
                    Action::Counter {
                        packets: 0,
                        bytes: 0,
                    },
                    Action::Log {
                        group: 7,
                        prefix: Some("ns/deny".into()),
                    },
                    Action::Reject { tcp_reset: false },
                ],
            ),
            Rule::new(vec![Match::MarkClear(0x4000)], vec![Action::MarkOr(0x4000)]),
            Rule::new(
                vec![Match::IpInSet {
                    addr: Addr::Saddr,
                    set: "blocks".into(),
                    equal: false,
                }],
                vec![Action::Vmap {
                    keys: vec![Key::IpDaddr],
                    map: "pods".into(),
                }],
            ),
            Rule::new(
                vec![
                    Match::Ip {
                        addr: Addr::Saddr,
                        net: net("10.244.0.0/16"),
                        equal: true,
                    },
                    Match::Port {
                        proto: Some(132),
                        dport: true,
                        first: 80,
                        last: 81,
                    },
                    Match::IpInSet {
                        addr: Addr::Daddr,
                        set: "blocks".into(),
                        equal: true,
                    },
                ],
                vec![Action::Verdict(Verdict::Accept)],
            ),
        ],
    };
    Table {
        family: Some(family),
        name: "podnet-test".into(),
        comment: Some("written by the ruleset test".into()),
        sets: vec![masq, ports, vmap, blocks, pods],
        chains: vec![post, pre, portals, filter],
    }
}

/// `nft --debug=netlink list` with each set's element lines sorted: a hash set lists its
/// elements in the order of its hash, which is seeded per set.
fn elements_sorted(debug: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut elements: Vec<&str> = Vec::new();
    let flush = |out: &mut Vec<String>, elements: &mut Vec<&str>| {
        elements.sort_unstable();
        out.extend(elements.drain(..).map(str::to_string));
    };
    for line in debug.lines() {
        if line.starts_with("\telement ") {
            elements.push(line);
        } else {
            flush(&mut out, &mut elements);
            out.push(line.to_string());
        }
    }
    flush(&mut out, &mut elements);
    out.join("\n")
}

#[test]
fn a_table_written_over_netlink_lists_as_its_text_through_nft_and_reads_back_whole() {
    for family in [Family::Ip, Family::Inet] {
        let table = sample(family);
        let by_netlink = test_ns("nl");
        let by_nft = test_ns("nft");
        nftnl::apply(Some(&by_netlink), &table.replacing_batch()).expect("netlink");
        run_nft(&by_nft, &["-f", "-"], Some(&table.to_string()));
        let listed = run_nft(&by_netlink, &["list", "ruleset"], None);
        let same = |a: &str, b: &str| nft::sorted_elements(a) == nft::sorted_elements(b);
        assert!(
            same(&listed, &run_nft(&by_nft, &["list", "ruleset"], None)),
            "{family}: {listed}"
        );
        // The same bytecode, not only the same text.
        let debug = ["--debug=netlink", "list", "ruleset"];
        assert_eq!(
            elements_sorted(&run_nft(&by_netlink, &debug, None)),
            elements_sorted(&run_nft(&by_nft, &debug, None)),
            "{family}"
        );
        // Read back over netlink: the same data, printed as nft prints it.
        let back = ruleset::get(Some(&by_netlink), family, "podnet-test")
            .expect("list")
            .expect("the table is there");
        assert_eq!(back, table.clone().canonical(), "{family}");
        assert!(
            same(&back.to_string(), &listed),
            "{family}: {back}\n{listed}"
        );
        // Replacing it again gives the same; deleting it leaves nothing.
        nftnl::apply(Some(&by_netlink), &table.replacing_batch()).expect("again");
        assert!(same(
            &run_nft(&by_netlink, &["list", "ruleset"], None),
            &listed
        ));
        ruleset::delete_table(Some(&by_netlink), family, "podnet-test").expect("delete");
        ruleset::delete_table(Some(&by_netlink), family, "podnet-test").expect("twice");
        assert_eq!(run_nft(&by_netlink, &["list", "ruleset"], None), "");
        assert!(
            ruleset::get(Some(&by_netlink), family, "podnet-test")
                .expect("list")
                .is_none()
        );
    }
}

/// The sample changed in every way a partial sync changes a table: a set added and one
/// removed, elements added, removed and changed (also an interval set's), a chain's rules
/// rewritten, a chain added and one removed.
fn changed(family: Family) -> Table {
    let mut t = sample(family);
    t.sets.retain(|s| s.name != "no-endpoints");
    t.chains[3].rules.remove(1);
    let masq = t
        .sets
        .iter_mut()
        .find(|s| s.name == "masq_x")
        .expect("masq");
    masq.elements.remove(0);
    masq.elements.push(SetElement {
        key: vec![Datum::Ip("10.1.0.9".parse().expect("ip"))],
        value: None,
    });
    let map = t
        .sets
        .iter_mut()
        .find(|s| s.name == "nodeports")
        .expect("map");
    map.elements[0].value = Some(ElementValue::Verdict(Verdict::Goto("extra".into())));
    let blocks = t
        .sets
        .iter_mut()
        .find(|s| s.name == "blocks")
        .expect("blocks");
    blocks.elements.pop();
    let mut added = Set::new("added", vec![DataType::InetService]);
    added.elements = vec![SetElement {
        key: vec![Datum::Port(53)],
        value: None,
    }];
    t.sets.push(added);
    t.chains.retain(|c| c.name != "portals");
    t.chains[0].rules.push(Rule::new(
        vec![Match::Port {
            proto: Some(17),
            dport: true,
            first: 53,
            last: 53,
        }],
        vec![Action::Verdict(Verdict::Return)],
    ));
    t.chains.push(Chain {
        name: "extra".into(),
        hook: None,
        rules: vec![Rule::new(vec![], vec![Action::Verdict(Verdict::Accept)])],
    });
    // `prerouting` jumped to the removed chain.
    t.chains[1].rules.pop();
    t.canonical()
}

#[test]
fn a_partial_plan_leaves_what_a_fresh_table_would_be() {
    for family in [Family::Ip, Family::Inet] {
        let old = sample(family).canonical();
        let new = changed(family);
        let partial = test_ns("partial");
        let fresh = test_ns("fresh");
        nftnl::apply(Some(&partial), &old.replacing_batch()).expect("old");
        let (batch, kind) = ruleset::plan(Some(&old), Some(&new));
        assert_eq!(kind, ruleset::PlanKind::Partial);
        nftnl::apply(Some(&partial), &batch).expect("partial");
        nftnl::apply(Some(&fresh), &new.replacing_batch()).expect("fresh");
        let list = |ns: &OwnedNetNs| nft::sorted_elements(&run_nft(ns, &["list", "ruleset"], None));
        assert_eq!(list(&partial), list(&fresh), "{family}");
        let back = ruleset::get(Some(&partial), family, "podnet-test").expect("list");
        assert_eq!(back.as_ref(), Some(&new), "{family}");
        assert_eq!(
            ruleset::plan(Some(&new), Some(&new)).1,
            ruleset::PlanKind::Nothing
        );
        let (gone, kind) = ruleset::plan(Some(&new), None);
        assert_eq!(kind, ruleset::PlanKind::Delete);
        nftnl::apply(Some(&partial), &gone).expect("delete");
        assert_eq!(run_nft(&partial, &["list", "ruleset"], None), "");
    }
}
