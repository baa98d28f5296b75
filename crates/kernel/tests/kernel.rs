//! Kernel plumbing against the real kernel, as root, in namespaces the test
//! creates and removes (even on failure).

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use podnet_kernel::netns::OwnedNetNs;
use podnet_kernel::route::Scope;
use podnet_kernel::{NetNs, Netlink, Route, nft, nftnl, sysctl};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh namespace `pnk-TAG-PID-N`, deleted when the guard drops.
fn test_ns(tag: &str) -> OwnedNetNs {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let name = format!("pnk-{tag}-{}-{n}", std::process::id());
    OwnedNetNs::create(&name).expect("create test namespace")
}

fn ip_in(ns: &str, args: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns])
        .args(args.split_whitespace())
        .output()
        .expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("cidr")
}

#[test]
fn named_namespace_is_listed_and_deleted() {
    let t = test_ns("list");
    let listed = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(String::from_utf8_lossy(&listed.stdout).contains(t.name()));
    assert!(
        NetNs::create(t.name()).is_err(),
        "creating a taken name must fail"
    );
    let again = NetNs::open(t.name()).expect("open by name");
    assert_eq!(again.id().expect("id"), t.id().expect("id"));
    assert_ne!(
        t.id().expect("id"),
        NetNs::current().expect("current").id().expect("id")
    );
    NetNs::delete(t.name()).expect("delete");
    NetNs::delete(t.name()).expect("delete is idempotent");
    assert!(
        !NetNs::list_named()
            .expect("list")
            .iter()
            .any(|n| n == t.name())
    );
    let err = NetNs::open(t.name()).expect_err("gone");
    assert!(
        err.to_string().contains(t.name()),
        "error names the namespace: {err}"
    );
}

/// Names `ip netns list` shows, as a user would check.
fn ip_netns_list() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn owned_namespace_lives_as_long_as_its_guard() {
    let name = {
        let t = test_ns("owned");
        assert!(ip_netns_list().contains(&t.name().to_string()));
        assert_eq!(t.path(), NetNs::path_of(t.name()));
        // Derefs to the handle: it is the namespace `ip netns` names.
        let by_name = NetNs::open(t.name()).expect("open by name");
        assert_eq!(t.id().expect("id"), by_name.id().expect("id"));
        t.name().to_string()
    };
    assert!(!ip_netns_list().contains(&name), "{name} left behind");
    let err = NetNs::open(&name).expect_err("gone after drop");
    assert!(err.is_not_found(), "{err}");

    // A test that panics still removes its namespace while unwinding.
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let name = format!("pnk-panic-{}-{n}", std::process::id());
    let unwound = std::panic::catch_unwind(|| {
        let _t = OwnedNetNs::create(&name).expect("create");
        assert!(ip_netns_list().contains(&name));
        panic!("a test failing while it holds {name}");
    });
    assert!(unwound.is_err());
    assert!(!ip_netns_list().contains(&name), "{name} left behind");

    // Deleted by hand first (as `named_namespace_is_listed_and_deleted` does):
    // the drop finds it gone and is quiet about it.
    let t = test_ns("gone");
    NetNs::delete(t.name()).expect("delete");
    drop(t);
}

#[test]
fn veth_bridge_addresses_routes_across_namespaces() {
    let host = test_ns("host");
    let pod = test_ns("pod");
    let mut h = Netlink::open_in(&host).expect("netlink in host");
    let mut p = Netlink::open_in(&pod).expect("netlink in pod");

    let br = h.ensure_bridge("tbr0", Some(1400)).expect("bridge");
    let br_again = h.ensure_bridge("tbr0", None).expect("bridge is idempotent");
    assert_eq!(br.index, br_again.index);
    h.ensure_address(br.index, "10.77.0.1/24".parse().expect("cidr"))
        .expect("addr");
    h.ensure_address(br.index, "10.77.0.1/24".parse().expect("cidr"))
        .expect("addr again");
    h.set_up(br.index).expect("up");

    h.create_veth("tveth0", "eth0", Some(&pod), Some(1400))
        .expect("veth");
    let err = h
        .create_veth("tveth0", "eth9", Some(&pod), None)
        .expect_err("taken");
    assert!(err.is_exists(), "{err}");
    let hv = h.require_link("tveth0").expect("host end");
    assert_eq!(hv.kind.as_deref(), Some("veth"));
    assert_eq!(hv.mtu, 1400);
    h.set_master(hv.index, br.index).expect("master");
    h.set_hairpin(hv.index, true).expect("hairpin");
    assert!(h.hairpin(hv.index).expect("read hairpin"));
    h.set_up(hv.index).expect("up");
    assert!(
        h.link_by_name("eth0").expect("lookup").is_none(),
        "peer must be in the pod namespace"
    );

    let pe = p.require_link("eth0").expect("pod end");
    let lo = p.require_link("lo").expect("lo");
    p.set_up(lo.index).expect("lo up");
    p.ensure_address(pe.index, "10.77.0.2/24".parse().expect("cidr"))
        .expect("pod addr");
    p.set_up(pe.index).expect("pod up");
    p.replace_route(&Route::via(net("0.0.0.0/0"), Ipv4Addr::new(10, 77, 0, 1)))
        .expect("default");
    p.ensure_route(
        &Route::via(net("10.88.0.0/16"), Ipv4Addr::new(10, 77, 0, 1)).with_oif(pe.index),
    )
    .expect("route");
    p.ensure_route(
        &Route::via(net("10.88.0.0/16"), Ipv4Addr::new(10, 77, 0, 1)).with_oif(pe.index),
    )
    .expect("route is idempotent");
    p.ensure_route(
        &Route::via(net("10.99.0.0/24"), Ipv4Addr::new(10, 99, 0, 0))
            .with_oif(pe.index)
            .with_onlink(),
    )
    .expect("onlink route");

    let shown = ip_in(pod.name(), "route show");
    assert!(shown.contains("default via 10.77.0.1 dev eth0"), "{shown}");
    assert!(
        shown.contains("10.88.0.0/16 via 10.77.0.1 dev eth0"),
        "{shown}"
    );
    assert!(
        shown.contains("10.99.0.0/24 via 10.99.0.0 dev eth0 onlink"),
        "{shown}"
    );
    let routes = p.routes(podnet_kernel::route::MAIN_TABLE).expect("routes");
    assert!(
        routes
            .iter()
            .any(|r| r.dst == net("10.77.0.0/24") && r.scope == Scope::Link)
    );
    let addrs: Vec<_> = p
        .addresses(Some(pe.index))
        .expect("addrs")
        .into_iter()
        .filter(|(_, a)| a.addr().is_ipv4())
        .collect();
    assert_eq!(addrs, vec![(pe.index, IpNet::V4(net("10.77.0.2/24")))]);

    let master = ip_in(host.name(), "link show tveth0");
    assert!(master.contains("master tbr0"), "{master}");

    // Real traffic: ping the bridge from the pod.
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            pod.name(),
            "ping",
            "-c1",
            "-W2",
            "10.77.0.1",
        ])
        .output()
        .expect("ping");
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );

    p.delete_route(
        &Route::via(net("10.88.0.0/16"), Ipv4Addr::new(10, 77, 0, 1)).with_oif(pe.index),
    )
    .expect("delete route");
    assert!(!ip_in(pod.name(), "route show").contains("10.88.0.0/16"));
    assert!(h.delete_link_by_name("tveth0").expect("delete"));
    assert!(
        p.link_by_name("eth0").expect("lookup").is_none(),
        "deleting one end removes the peer"
    );
    assert!(!h.delete_link_by_name("tveth0").expect("delete again"));
}

#[test]
fn neighbours_and_fdb_append() {
    let t = test_ns("fdb");
    let mut nl = Netlink::open_in(&t).expect("netlink");
    let br = nl.ensure_bridge("tbr1", None).expect("bridge");
    nl.create_veth("tva", "tvb", None, None).expect("veth");
    let a = nl.require_link("tva").expect("a");
    nl.set_master(a.index, br.index).expect("master");
    let mac = [0x02, 0, 0, 0, 0, 0x11];
    nl.replace_neighbour(a.index, Ipv4Addr::new(10, 1, 2, 3), mac)
        .expect("neigh");
    nl.replace_neighbour(a.index, Ipv4Addr::new(10, 1, 2, 3), mac)
        .expect("neigh again");
    let shown = ip_in(t.name(), "neigh show dev tva");
    assert!(
        shown.contains("10.1.2.3 lladdr 02:00:00:00:00:11 PERMANENT"),
        "{shown}"
    );
    assert_eq!(nl.neighbours(a.index).expect("list").len(), 1);
    nl.delete_neighbour(a.index, Ipv4Addr::new(10, 1, 2, 3))
        .expect("delete neigh");
    assert!(nl.neighbours(a.index).expect("list").is_empty());

    // A plain FDB entry on a bridge port: set, listed, deleted.
    nl.replace_fdb(a.index, mac, None).expect("fdb");
    let fdb = Command::new("bridge")
        .args(["-n", t.name(), "fdb", "show", "dev", "tva"])
        .output()
        .expect("bridge fdb");
    assert!(String::from_utf8_lossy(&fdb.stdout).contains("02:00:00:00:00:11"));
    assert!(
        nl.fdb_entries(a.index)
            .expect("fdb list")
            .iter()
            .any(|n| n.mac == mac)
    );
    nl.delete_fdb(a.index, mac, None).expect("fdb delete");
    assert!(
        !nl.fdb_entries(a.index)
            .expect("fdb list")
            .iter()
            .any(|n| n.mac == mac)
    );

    // Appending: two destinations for the all-zero MAC on a vxlan device.
    let made = Command::new("ip")
        .args([
            "-n",
            t.name(),
            "link",
            "add",
            "tvx0",
            "type",
            "vxlan",
            "id",
            "5",
            "dstport",
            "4789",
            "nolearning",
        ])
        .status()
        .expect("ip link add vxlan");
    assert!(made.success());
    let vx = nl.require_link("tvx0").expect("vxlan");
    assert_eq!(vx.kind.as_deref(), Some("vxlan"));
    let zero = [0u8; 6];
    nl.append_fdb(vx.index, zero, Ipv4Addr::new(192, 0, 2, 1))
        .expect("append 1");
    nl.append_fdb(vx.index, zero, Ipv4Addr::new(192, 0, 2, 2))
        .expect("append 2");
    let entries: Vec<_> = nl
        .fdb_entries(vx.index)
        .expect("fdb")
        .into_iter()
        .filter(|n| n.mac == zero)
        .collect();
    let dsts: Vec<_> = entries.iter().filter_map(|n| n.ip).collect();
    assert!(
        dsts.contains(&Ipv4Addr::new(192, 0, 2, 1)) && dsts.contains(&Ipv4Addr::new(192, 0, 2, 2)),
        "{entries:?}"
    );
}

#[test]
fn sysctls_are_per_namespace() {
    let t = test_ns("sysctl");
    sysctl::write(&t, "net.ipv4.ip_forward", "1").expect("write");
    assert_eq!(sysctl::read(&t, "net/ipv4/ip_forward").expect("read"), "1");
    let other = test_ns("sysctl2");
    assert_eq!(
        sysctl::read(&other, "net.ipv4.ip_forward").expect("read"),
        "0"
    );
    let err = sysctl::write(&t, "net.ipv4.no_such_knob", "1").expect_err("unknown key");
    assert!(
        err.to_string().contains("no_such_knob") && err.to_string().contains(t.name()),
        "{err}"
    );
}

#[test]
fn nftables_transaction_in_namespace() {
    let t = test_ns("nft");
    nft::apply(
        Some(&t),
        "table ip podnet {\n chain post {\n type nat hook postrouting priority srcnat;\n }\n}\n",
    )
    .expect("apply");
    let listed = nft::list_table(Some(&t), "ip", "podnet")
        .expect("list")
        .expect("exists");
    assert!(listed.contains("chain post"), "{listed}");
    assert!(
        nft::list_table(None, "ip", "podnet-test-absent")
            .expect("list")
            .is_none()
    );
    let err = nft::apply(
        Some(&t),
        "table ip podnet {\n chain broken {\n nonsense\n }\n}\n",
    )
    .expect_err("bad");
    assert!(err.to_string().contains("nft"), "{err}");
    nft::delete_table(Some(&t), "ip", "podnet").expect("delete");
    nft::delete_table(Some(&t), "ip", "podnet").expect("delete again");
    assert!(
        nft::list_table(Some(&t), "ip", "podnet")
            .expect("list")
            .is_none()
    );
}

/// The objects the netlink batches below change, made by `nft` in both namespaces.
const NFTNL_BASE: &str = "table ip t {
  map targets { typeof numgen random mod 1 : ip daddr . tcp dport; elements = { 0 : 10.9.9.9 . 1 }; }
  set hairpin { type ipv4_addr . ipv4_addr; elements = { 10.0.0.7 . 10.0.0.7 }; }
  chain mark-for-masquerade { }
  chain svc { drop; }
}
";

/// What `nft -f` writes for the same change as `nftnl_change`.
const NFTNL_AS_TEXT: &str = "flush chain ip t svc
add rule ip t svc ip daddr 10.96.0.1 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip t svc ip saddr 10.96.0.0/12 goto mark-for-masquerade
add rule ip t svc meta l4proto tcp dnat to numgen random mod 2 offset 0 map @targets
flush map ip t targets
add element ip t targets { 0 : 10.0.0.1 . 8080, 1 : 10.0.0.2 . 8080 }
delete element ip t hairpin { 10.0.0.7 . 10.0.0.7 }
add element ip t hairpin { 10.0.0.1 . 10.0.0.1 }
";

fn nftnl_change() -> nftnl::Batch {
    use nftnl::{
        CmpOp, Element, Expr, MetaKey, PayloadBase, REG_1, REG32_01, SetRef, Verdict, concat,
    };
    let ip = |a: [u8; 4]| a.to_vec();
    let mut b = nftnl::Batch::new();
    b.flush_chain("t", "svc");
    let mut masq = vec![
        Expr::payload(PayloadBase::Network, 16, 4),
        Expr::Cmp {
            op: CmpOp::Eq,
            data: ip([10, 96, 0, 1]),
        },
        Expr::meta(MetaKey::L4Proto),
        Expr::Cmp {
            op: CmpOp::Eq,
            data: vec![6],
        },
        Expr::payload(PayloadBase::Transport, 2, 2),
        Expr::Cmp {
            op: CmpOp::Eq,
            data: 80u16.to_be_bytes().to_vec(),
        },
    ];
    masq.extend(Expr::ip_prefix(12, Ipv4Addr::new(10, 244, 0, 0), 16, false));
    masq.push(Expr::Verdict(Verdict::Jump("mark-for-masquerade".into())));
    b.add_rule("t", "svc", &masq);
    let mut from = Expr::ip_prefix(12, Ipv4Addr::new(10, 96, 0, 0), 12, true);
    from.push(Expr::Verdict(Verdict::Goto("mark-for-masquerade".into())));
    b.add_rule("t", "svc", &from);
    b.add_rule(
        "t",
        "svc",
        &[
            Expr::meta(MetaKey::L4Proto),
            Expr::Cmp {
                op: CmpOp::Eq,
                data: vec![6],
            },
            Expr::NumgenRandom {
                modulus: 2,
                offset: 0,
            },
            Expr::Lookup {
                set: SetRef::Named("targets".into()),
                dreg: Some(REG_1),
                invert: false,
            },
            Expr::Dnat {
                addr: REG_1,
                port: REG32_01,
            },
        ],
    );
    b.flush_set("t", "targets");
    let target = |i: u32, last: u8| {
        Element::data(
            i.to_ne_bytes().to_vec(),
            concat(&[&[10, 0, 0, last], &8080u16.to_be_bytes()]),
        )
    };
    b.add_elements("t", "targets", &[target(0, 1), target(1, 2)]);
    b.delete_elements("t", "hairpin", &[concat(&[&[10, 0, 0, 7], &[10, 0, 0, 7]])]);
    b.add_elements(
        "t",
        "hairpin",
        &[Element::key(concat(&[&[10, 0, 0, 1], &[10, 0, 0, 1]]))],
    );
    b
}

#[test]
fn nftnl_batch_writes_what_nft_writes_and_is_all_or_nothing() {
    let by_nft = test_ns("nftnl-a");
    let by_netlink = test_ns("nftnl-b");
    for t in [&by_nft, &by_netlink] {
        nft::apply(Some(t), NFTNL_BASE).expect("base table");
    }
    nft::apply(Some(&by_nft), NFTNL_AS_TEXT).expect("nft applies the change");
    nftnl::apply(Some(&by_netlink), &nftnl_change()).expect("netlink applies the change");
    let listed = |t: &OwnedNetNs| {
        nft::list_table(Some(t), "ip", "t")
            .expect("list")
            .expect("table exists")
    };
    let expected = listed(&by_nft);
    assert!(expected.contains("10.0.0.2 . 8080"), "{expected}");
    assert_eq!(listed(&by_netlink), expected);

    // A batch the kernel refuses in its last message changes nothing, and the error
    // names that message.
    let mut bad = nftnl::Batch::new();
    bad.flush_set("t", "targets");
    bad.delete_elements("t", "hairpin", &[vec![10, 0, 0, 99, 10, 0, 0, 99]]);
    let err = nftnl::apply(Some(&by_netlink), &bad).expect_err("missing element");
    assert!(
        err.to_string().contains("delete element ip t hairpin"),
        "{err}"
    );
    assert_eq!(
        listed(&by_netlink),
        expected,
        "nothing of the refused batch applied"
    );
}

#[test]
fn nftnl_lists_a_sets_elements_with_the_time_they_have_left() {
    let t = test_ns("nftnl-set");
    nft::apply(
        Some(&t),
        "table ip t {
  set a { type ipv4_addr; flags dynamic,timeout; timeout 1h; elements = { 10.0.0.1 expires 30m, 10.0.0.2 } }
}
",
    )
    .expect("set with timeouts");
    let mut socket = nftnl::NftSocket::open(Some(&t)).expect("socket");
    let mut got = socket.set_elements("t", "a").expect("list");
    got.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].key, vec![10, 0, 0, 1]);
    let left = got[0].expires.expect("expires");
    assert!(
        left <= Duration::from_secs(1800) && left > Duration::from_secs(1700),
        "{left:?}"
    );
    assert!(got[1].expires.expect("expires") > Duration::from_secs(3500));
    assert!(
        socket
            .set_elements("t", "absent")
            .expect("no set")
            .is_empty()
    );
    assert!(
        socket
            .set_elements("absent", "a")
            .expect("no table")
            .is_empty()
    );
}
