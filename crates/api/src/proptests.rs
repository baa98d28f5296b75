//! Property tests across the pure logic.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use proptest::prelude::*;

use crate::cni::result::{CniResult, Dns, Interface, IpConfig, Route};
use crate::cni::{Pool, version};
use crate::net;
use crate::subnet_env::SubnetEnv;

fn small_net() -> impl Strategy<Value = Ipv4Net> {
    (0u32..256, 24u8..=32).prop_map(|(host, len)| {
        Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | host), len)
            .unwrap()
            .trunc()
    })
}

fn any_net() -> impl Strategy<Value = Ipv4Net> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, l)| Ipv4Net::new(Ipv4Addr::from(a), l).unwrap())
}

proptest! {
    #[test]
    fn overlap_matches_brute_force(a in small_net(), b in small_net()) {
        let brute = a.hosts().chain([a.network(), a.broadcast()]).any(|ip| b.contains(&ip));
        prop_assert_eq!(net::overlaps(&a, &b), brute);
        prop_assert_eq!(net::overlaps(&a, &b), net::overlaps(&b, &a));
    }

    #[test]
    fn nth_host_inverts_offset(n in any_net(), k in any::<u32>()) {
        match net::nth_host(&n, k) {
            Some(ip) => prop_assert_eq!(net::offset(&n, ip), Some(k)),
            None => prop_assert!(u64::from(k) >= net::size(&n)),
        }
    }

    #[test]
    fn pool_capacity_counts_allocatable(len in 22u8..=30, s in 0u32..1024, e in 0u32..1024, g in 0u32..1024) {
        let subnet = Ipv4Net::new(Ipv4Addr::new(10, 1, 0, 0), len).unwrap();
        let size = net::size(&subnet) as u32;
        let pick = |x: u32| net::nth_host(&subnet, x % size);
        if let Ok(p) = Pool::new(subnet, pick(s), pick(e), pick(g)) {
            let brute = net::range(p.range_start, p.range_end).filter(|ip| p.is_allocatable(*ip)).count();
            prop_assert_eq!(p.capacity() as usize, brute);
            prop_assert!(brute > 0);
            prop_assert!(!p.is_allocatable(p.subnet.network()));
            prop_assert!(!p.is_allocatable(p.subnet.broadcast()));
            prop_assert!(!p.is_allocatable(p.gateway));
        }
    }

    #[test]
    fn subnet_env_roundtrip(
        network in proptest::option::of(any_net()),
        subnet in proptest::option::of(any_net()),
        mtu in proptest::option::of(68u32..=65535),
        ipmasq in proptest::option::of(any::<bool>()),
    ) {
        let env = SubnetEnv { network, subnet, mtu, ipmasq };
        prop_assert_eq!(SubnetEnv::parse(&env.render()).unwrap(), env);
    }

    #[test]
    fn result_roundtrip(
        v in 0usize..3,
        addrs in proptest::collection::vec((any_net(), proptest::option::of(any::<u32>()), proptest::option::of(0usize..3)), 0..4),
        routes in proptest::collection::vec((any_net(), proptest::option::of(any::<u32>())), 0..4),
        mtu in proptest::option::of(68u32..9000),
        ns in proptest::collection::vec("[0-9.]{1,15}", 0..3),
    ) {
        let version = version::SUPPORTED_VERSIONS[v];
        let r = CniResult {
            cni_version: version.into(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "02:00:00:00:00:01".into(),
                mtu: if version == "1.1.0" { mtu } else { None },
                sandbox: Some("/var/run/netns/x".into()),
            }],
            ips: addrs.into_iter().map(|(address, gw, interface)| IpConfig {
                address, gateway: gw.map(Ipv4Addr::from), interface,
            }).collect(),
            routes: routes.into_iter().map(|(dst, gw)| Route { dst, gw: gw.map(Ipv4Addr::from) }).collect(),
            dns: Dns { nameservers: ns, ..Default::default() },
        };
        let back = CniResult::from_json(r.to_json().as_bytes()).unwrap();
        prop_assert_eq!(back, r);
    }
}
