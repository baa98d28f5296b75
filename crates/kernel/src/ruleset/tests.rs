//! Root-free checks of the rule model: every match and action parses back from its own
//! expressions, and prints as nft prints it.

use super::*;
use crate::nftnl::Verdict;

fn round_trip(family: Family, rule: &Rule) -> Rule {
    let none = |_: &str| None;
    parse_rule(&rule.exprs(family, None), rule.comment.clone(), &none)
}

fn net(s: &str) -> ipnet::Ipv4Net {
    s.parse().unwrap()
}

fn every_shape() -> Vec<Rule> {
    use Action as A;
    use Match as M;
    vec![
        Rule::new(
            vec![
                M::Ip {
                    addr: Addr::Saddr,
                    net: net("10.244.0.0/16"),
                    equal: true,
                },
                M::Ip {
                    addr: Addr::Daddr,
                    net: net("224.0.0.0/4"),
                    equal: false,
                },
            ],
            vec![A::Masquerade { fully_random: true }],
        ),
        Rule::new(
            vec![
                M::IpInSet {
                    addr: Addr::Saddr,
                    set: "masq".into(),
                    equal: true,
                },
                M::Ip {
                    addr: Addr::Daddr,
                    net: net("10.1.0.0/24"),
                    equal: false,
                },
            ],
            vec![A::Masquerade {
                fully_random: false,
            }],
        )
        .with_comment("net"),
        Rule::new(
            vec![
                M::Ip {
                    addr: Addr::Daddr,
                    net: net("10.96.0.10/32"),
                    equal: true,
                },
                M::Port {
                    proto: Some(6),
                    dport: true,
                    first: 80,
                    last: 80,
                },
            ],
            vec![A::Redirect { port: 40123 }],
        ),
        Rule::new(
            vec![M::Port {
                proto: Some(17),
                dport: true,
                first: 30000,
                last: 32767,
            }],
            vec![A::Dnat {
                ip: "172.30.0.11".parse().unwrap(),
                port: 40123,
            }],
        ),
        Rule::new(
            vec![
                M::FibLocal { daddr: true },
                M::InSet {
                    keys: vec![Key::L4Proto, Key::ThDport],
                    set: "no-endpoint-nodeports".into(),
                    equal: true,
                },
            ],
            vec![A::Reject { tcp_reset: false }],
        ),
        Rule::new(
            vec![M::CtState(ct_state::ESTABLISHED | ct_state::RELATED)],
            vec![A::Verdict(Verdict::Accept)],
        ),
        Rule::new(
            vec![M::CtStatus(CT_STATUS_DNAT)],
            vec![
                A::Counter {
                    packets: 0,
                    bytes: 0,
                },
                A::Log {
                    group: 5,
                    prefix: Some("ns/name".into()),
                },
                A::Verdict(Verdict::Drop),
            ],
        ),
        Rule::new(
            vec![M::MarkClear(0x4000)],
            vec![A::Verdict(Verdict::Return)],
        ),
        Rule::new(vec![], vec![A::MarkXor(0x4000), A::MarkOr(0x8000)]),
        Rule::new(
            vec![M::L4Proto(6)],
            vec![A::DnatRandomMap {
                count: 3,
                offset: 1,
                map: "endpoints".into(),
            }],
        ),
        Rule::new(
            vec![],
            vec![A::Vmap {
                keys: vec![Key::IpDaddr, Key::L4Proto, Key::ThDport],
                map: "service-ips".into(),
            }],
        ),
        Rule::new(
            vec![],
            vec![A::UpdateSet {
                set: "aff".into(),
                key: Key::IpSaddr,
                timeout_seconds: 10800,
            }],
        ),
    ]
}

#[test]
fn every_shape_parses_back_from_its_expressions() {
    for family in [Family::Ip, Family::Inet] {
        for rule in every_shape() {
            assert_eq!(round_trip(family, &rule), rule, "{family}: {rule}");
        }
    }
}

#[test]
fn rules_print_as_nft_lists_them() {
    let text: Vec<String> = every_shape().iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        vec![
            "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
            "ip saddr @masq ip daddr != 10.1.0.0/24 masquerade comment \"net\"",
            "ip daddr 10.96.0.10 tcp dport 80 redirect to :40123",
            "udp dport 30000-32767 dnat to 172.30.0.11:40123",
            "fib daddr type local meta l4proto . th dport @no-endpoint-nodeports reject",
            "ct state established,related accept",
            "ct status dnat counter packets 0 bytes 0 log prefix \"ns/name\" group 5 drop",
            "meta mark & 0x00004000 == 0x00000000 return",
            "meta mark set meta mark ^ 0x00004000 meta mark set meta mark | 0x00008000",
            "meta l4proto tcp dnat ip to numgen random mod 3 offset 1 map @endpoints",
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            "update @aff { ip saddr timeout 10800s }",
        ]
    );
}

#[test]
fn what_is_not_understood_is_shown_raw() {
    let exprs = vec![
        crate::nftnl::Expr::Other {
            name: "quota".into(),
            data: vec![],
        },
        crate::nftnl::Expr::Verdict(Verdict::Accept),
    ];
    let none = |_: &str| None;
    let rule = parse_rule(&exprs, None, &none);
    assert_eq!(rule.actions.len(), 2);
    assert!(rule.to_string().starts_with("# not understood"), "{rule}");
}

#[test]
fn priorities_print_by_name() {
    let b = |hook, priority| BaseChain {
        kind: ChainKind::Filter,
        hook,
        priority,
        accept: true,
    };
    assert_eq!(
        priority_text(Family::Ip, &b(Hook::Prerouting, -110)),
        "dstnat - 10"
    );
    assert_eq!(priority_text(Family::Ip, &b(Hook::Output, -100)), "-100");
    assert_eq!(
        priority_text(Family::Ip, &b(Hook::Postrouting, 100)),
        "srcnat"
    );
    assert_eq!(priority_text(Family::Inet, &b(Hook::Forward, 0)), "filter");
}

mod tracing {
    use super::super::trace::{Outcome, Packet, trace};
    use super::*;

    fn filter(name: &str, rules: Vec<Rule>) -> Chain {
        Chain {
            name: name.into(),
            hook: Some(BaseChain {
                kind: ChainKind::Filter,
                hook: Hook::Forward,
                priority: 0,
                accept: true,
            }),
            rules,
        }
    }

    fn regular(name: &str, rules: Vec<Rule>) -> Chain {
        Chain {
            name: name.into(),
            hook: None,
            rules,
        }
    }

    fn from(set: &str) -> Match {
        Match::IpInSet {
            addr: Addr::Saddr,
            set: set.into(),
            equal: true,
        }
    }

    fn verdict(v: Verdict) -> Vec<Action> {
        vec![Action::Verdict(v)]
    }

    /// A jump that falls off its chain goes on in the caller; a goto's fall-through
    /// returns from the caller too; the base chain's policy decides last.
    fn table() -> Table {
        let mut allowed = Set::new("allowed", vec![DataType::Ipv4Addr]);
        allowed.interval = true;
        allowed.elements = vec![SetElement {
            key: vec![Datum::Net(net("10.1.0.0/16"))],
            value: None,
        }];
        let mut t = Table::new(Family::Inet, "t");
        t.sets = vec![allowed];
        t.chains = vec![
            filter(
                "forward",
                vec![
                    Rule::new(vec![], verdict(Verdict::Jump("check".into()))),
                    Rule::new(vec![], verdict(Verdict::Goto("last".into()))),
                    Rule::new(vec![], verdict(Verdict::Accept)),
                ],
            ),
            regular(
                "check",
                vec![Rule::new(vec![from("allowed")], verdict(Verdict::Accept))],
            ),
            regular(
                "last",
                vec![Rule::new(
                    vec![Match::Port {
                        proto: Some(6),
                        dport: true,
                        first: 22,
                        last: 22,
                    }],
                    verdict(Verdict::Drop),
                )],
            ),
        ];
        t
    }

    #[test]
    fn jumps_gotos_sets_and_policies_decide_as_the_kernel_does() {
        let t = [table()];
        let packet = |src: &str, port| {
            Packet::new(src.parse().unwrap(), "10.2.0.1".parse().unwrap(), 6, port)
        };
        let allowed = trace(&t, Hook::Forward, &packet("10.1.2.3", 22));
        assert_eq!(allowed.outcome, Outcome::Accepted);
        assert_eq!(allowed.steps.len(), 2, "{allowed:?}");
        assert_eq!(allowed.steps[1].rule, "ip saddr @allowed accept");
        let dropped = trace(&t, Hook::Forward, &packet("10.9.0.1", 22));
        assert_eq!(dropped.outcome, Outcome::Dropped);
        assert_eq!(dropped.steps.last().unwrap().rule, "tcp dport 22 drop");
        // Off the end of `last` (reached by goto), `forward` returns too: its `accept`
        // rule is never reached and the policy accepts.
        let other = trace(&t, Hook::Forward, &packet("10.9.0.1", 80));
        assert_eq!(other.outcome, Outcome::Accepted);
        assert!(other.steps.iter().all(|s| s.rule != "accept"), "{other:?}");
    }
}

mod simulated {
    use super::*;
    use crate::nftnl::Simulated;

    fn sample() -> Table {
        let mut blocks = Set::new("blocks", vec![DataType::Ipv4Addr]);
        blocks.interval = true;
        blocks.elements = ip_ranges(&[net("10.0.0.0/8")], &[net("10.1.0.0/16")])
            .into_iter()
            .map(|(a, b)| SetElement {
                key: vec![ip_interval(a, b)],
                value: None,
            })
            .collect();
        let mut pods = Set::new("pods", vec![DataType::Ipv4Addr]);
        pods.value = SetData::Verdict;
        pods.elements = vec![SetElement {
            key: vec![Datum::Ip("10.244.0.5".parse().unwrap())],
            value: Some(ElementValue::Verdict(Verdict::Goto("c".into()))),
        }];
        let mut t = Table::new(Family::Inet, "t");
        t.comment = Some("x".into());
        t.sets = vec![blocks, pods];
        t.chains = vec![
            Chain {
                name: "hook".into(),
                hook: Some(BaseChain {
                    kind: ChainKind::Filter,
                    hook: Hook::Forward,
                    priority: 0,
                    accept: true,
                }),
                rules: vec![Rule::new(
                    vec![],
                    vec![Action::Vmap {
                        keys: vec![Key::IpDaddr],
                        map: "pods".into(),
                    }],
                )],
            },
            Chain {
                name: "c".into(),
                hook: None,
                rules: vec![
                    Rule::new(
                        vec![Match::IpInSet {
                            addr: Addr::Saddr,
                            set: "blocks".into(),
                            equal: true,
                        }],
                        vec![Action::Verdict(Verdict::Accept)],
                    ),
                    Rule::new(
                        vec![],
                        vec![Action::RandomVmap {
                            chains: vec!["d".into(), "e".into()],
                        }],
                    ),
                ],
            },
            Chain {
                name: "d".into(),
                hook: None,
                rules: vec![],
            },
            Chain {
                name: "e".into(),
                hook: None,
                rules: vec![Rule::new(vec![], vec![Action::Verdict(Verdict::Drop)])],
            },
        ];
        t.canonical()
    }

    fn simulated(batches: &[&crate::nftnl::Batch]) -> Vec<Table> {
        let mut sim = Simulated::new();
        for b in batches {
            sim.apply(b).unwrap();
        }
        sim.tables.iter().map(Table::from_listing).collect()
    }

    #[test]
    fn a_replacing_batch_gives_the_table_back() {
        let t = sample();
        assert_eq!(simulated(&[&t.replacing_batch()]), vec![t.clone()]);
        // Twice: the second replaces the first.
        let b = t.replacing_batch();
        assert_eq!(simulated(&[&b, &b]), vec![t]);
    }

    #[test]
    fn a_partial_plan_from_the_old_table_gives_the_new_one() {
        let old = sample();
        let mut new = sample();
        new.sets[0].elements.pop();
        new.sets[1].elements[0].value = Some(ElementValue::Verdict(Verdict::Goto("e".into())));
        new.chains.retain(|c| c.name != "d");
        new.chains[1].rules[1] = Rule::new(vec![], vec![Action::Verdict(Verdict::Return)]);
        let new = new.canonical();
        let (partial, kind) = plan(Some(&old), Some(&new));
        assert_eq!(kind, PlanKind::Partial);
        assert_eq!(simulated(&[&old.replacing_batch(), &partial]), vec![new]);
    }

    #[test]
    fn a_batch_the_kernel_would_refuse_is_refused() {
        let mut b = crate::nftnl::Batch::for_family(Family::Inet);
        b.add_chain("missing", "c", None);
        let err = Simulated::new().apply(&b).unwrap_err();
        assert!(err.contains("no table inet missing"), "{err}");
    }
}
