//! The masquerade table against the real kernel, as root, in namespaces of the test's
//! own: written over netlink it lists exactly as its text given to `nft -f` (the oracle),
//! a pass over a table that is right changes nothing, a hand edit is repaired, and
//! removing it leaves nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use podnet_kernel::netns::OwnedNetNs;
use podnet_kernel::nft;
use podnet_overlay::masq;

fn ns(tag: &str) -> OwnedNetNs {
    OwnedNetNs::create(&format!("pnm-{tag}-{}", std::process::id())).expect("namespace")
}

#[test]
fn the_masquerade_table_over_netlink_is_what_nft_makes_of_its_text_and_is_repaired() {
    let cluster = "10.244.0.0/16".parse().unwrap();
    let subnet = "10.244.3.0/24".parse().unwrap();
    let by_netlink = ns("nl");
    let by_nft = ns("nft");
    assert!(masq::ensure(Some(&by_netlink), cluster, subnet).expect("ensure"));
    nft::apply(Some(&by_nft), &masq::table(cluster, subnet).to_string()).expect("nft -f");
    let listed = nft::list_table(Some(&by_netlink), "ip", masq::TABLE).expect("list");
    assert!(listed.is_some());
    assert_eq!(
        listed,
        nft::list_table(Some(&by_nft), "ip", masq::TABLE).expect("list")
    );
    // Right already: nothing is written.
    assert!(!masq::ensure(Some(&by_netlink), cluster, subnet).expect("again"));
    // A rule added by hand, or another node subnet: rewritten whole.
    nft::apply(
        Some(&by_netlink),
        "add rule ip podnet-masq postrouting ip saddr 192.0.2.1 accept\n",
    )
    .expect("hand edit");
    assert!(masq::ensure(Some(&by_netlink), cluster, subnet).expect("repair"));
    assert_eq!(
        nft::list_table(Some(&by_netlink), "ip", masq::TABLE).expect("list"),
        listed
    );
    let other = "10.244.4.0/24".parse().unwrap();
    assert!(masq::ensure(Some(&by_netlink), cluster, other).expect("moved"));
    assert!(
        nft::list_table(Some(&by_netlink), "ip", masq::TABLE)
            .expect("list")
            .is_some_and(|t| t.contains("ip daddr 10.244.4.0/24 return"))
    );
    masq::remove(Some(&by_netlink)).expect("remove");
    masq::remove(Some(&by_netlink)).expect("remove twice");
    assert_eq!(
        nft::list_table(Some(&by_netlink), "ip", masq::TABLE).expect("list"),
        None
    );
}
