use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use podnet_api::k8s::kinds::{NODE, SERVICE};
use podnet_store::{MemoryStore, Store};
use serde_json::{Value, json};

use super::space::{self, Kind, Record};
use super::*;
use crate::registry::Registry;

fn config(service: &str) -> AllocatorConfig {
    AllocatorConfig {
        service_cidr: service.parse().unwrap(),
        ..AllocatorConfig::default()
    }
}

fn store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

fn allocators(cfg: AllocatorConfig) -> (Arc<dyn Store>, Allocators) {
    let s = store();
    (s.clone(), Allocators::new(s, cfg))
}

fn svc(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}})
}

async fn keys(store: &Arc<dyn Store>, kind: Kind) -> Vec<String> {
    store
        .list(kind.prefix(), None)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|kv| kv.key)
        .collect()
}

fn cluster_ip(svc: &Value) -> &str {
    svc["spec"]["clusterIP"].as_str().unwrap()
}

#[tokio::test]
async fn allocates_a_cluster_ip_and_records_the_owner() {
    let (store, a) = allocators(AllocatorConfig::default());
    let mut s = svc("web", json!({"ports": [{"port": 80}]}));
    let taken = a.allocate_service(&mut s, None).await.unwrap();
    let ip: Ipv4Addr = cluster_ip(&s).parse().unwrap();
    assert!("10.96.0.0/12".parse::<Ipv4Net>().unwrap().contains(&ip));
    assert_eq!(s["spec"]["clusterIPs"], json!([ip.to_string()]));
    assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4"]));
    assert_eq!(s["spec"]["ipFamilyPolicy"], "SingleStack");
    assert!(s["spec"]["ports"][0].get("nodePort").is_none());
    assert_eq!(taken.len(), 1);
    let key = format!("/registry/allocations/serviceips/{ip}");
    assert_eq!(taken.keys().collect::<Vec<_>>(), vec![key.as_str()]);
    let kv = store.get(&key).await.unwrap().unwrap();
    let rec = Record::decode(&kv.value).unwrap();
    assert_eq!(rec.owner, "services/default/web");
    assert!(space::unix_now() - rec.at < 60);
}

#[tokio::test]
async fn requested_cluster_ip_honoured_taken_or_out_of_range() {
    let (store, a) = allocators(AllocatorConfig::default());
    let mut s = svc("dns", json!({"clusterIP": "10.96.0.10"}));
    a.allocate_service(&mut s, None).await.unwrap();
    assert_eq!(cluster_ip(&s), "10.96.0.10");

    let mut other = svc("other", json!({"clusterIP": "10.96.0.10"}));
    let err = a.allocate_service(&mut other, None).await.unwrap_err();
    assert_eq!((err.code, err.reason), (422, "Invalid"));
    assert_eq!(
        err.message,
        "Service \"other\" is invalid: spec.clusterIPs: Invalid value: [\"10.96.0.10\"]: failed to allocate IP 10.96.0.10: provided IP is already allocated"
    );
    assert_eq!(err.causes()[0].field, "spec.clusterIPs");

    let mut far = svc("far", json!({"clusterIPs": ["10.0.0.1"]}));
    let err = a.allocate_service(&mut far, None).await.unwrap_err();
    assert_eq!(err.code, 422);
    assert_eq!(
        err.message,
        "Service \"far\" is invalid: spec.clusterIPs: Invalid value: [\"10.0.0.1\"]: failed to allocate IP 10.0.0.1: the provided IP (10.0.0.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"
    );
    // The network and broadcast addresses are not in the valid range either.
    for ip in ["10.96.0.0", "10.111.255.255"] {
        let mut edge = svc("edge", json!({"clusterIP": ip}));
        let err = a.allocate_service(&mut edge, None).await.unwrap_err();
        assert!(
            err.message.contains("is not in the valid range"),
            "{ip}: {err}"
        );
    }
    let mut bad = svc("bad", json!({"clusterIP": "10.96.0.300"}));
    let err = a.allocate_service(&mut bad, None).await.unwrap_err();
    assert_eq!(err.causes()[0].field, "spec.clusterIPs[0]");
    assert!(err.message.contains("must be a valid IP address"), "{err}");
    let mut v6 = svc("v6", json!({"ipFamilies": ["IPv6"]}));
    let err = a.allocate_service(&mut v6, None).await.unwrap_err();
    assert!(
        err.message.ends_with(
            "spec.ipFamilies[0]: Invalid value: \"IPv6\": not configured on this cluster"
        ),
        "{err}"
    );
    // Only the first Service's IP is taken.
    assert_eq!(keys(&store, Kind::ServiceIp).await.len(), 1);
}

#[tokio::test]
async fn the_first_address_is_reserved_for_the_kubernetes_service() {
    let (store, a) = allocators(config("10.96.0.0/29"));
    assert_eq!(
        a.kubernetes_service_ip(),
        "10.96.0.1".parse::<IpAddr>().unwrap()
    );
    let mut ips = HashSet::new();
    for i in 0..5 {
        let mut s = svc(&format!("s{i}"), json!({}));
        a.allocate_service(&mut s, None).await.unwrap();
        ips.insert(cluster_ip(&s).to_owned());
    }
    assert!(!ips.contains("10.96.0.1"));
    assert_eq!(ips.len(), 5);
    // Requested explicitly, it is handed out.
    let mut k = svc("kubernetes", json!({"clusterIP": "10.96.0.1"}));
    a.allocate_service(&mut k, None).await.unwrap();
    assert_eq!(cluster_ip(&k), "10.96.0.1");
    assert_eq!(keys(&store, Kind::ServiceIp).await.len(), 6);
}

#[tokio::test]
async fn an_exhausted_range_is_a_clear_error_and_nothing_leaks() {
    let (store, a) = allocators(config("10.96.0.0/29"));
    for i in 0..5 {
        let mut s = svc(&format!("s{i}"), json!({}));
        a.allocate_service(&mut s, None).await.unwrap();
    }
    let mut full = svc("full", json!({"type": "NodePort", "ports": [{"port": 80}]}));
    let err = a.allocate_service(&mut full, None).await.unwrap_err();
    assert_eq!((err.code, err.reason), (500, "InternalError"));
    assert_eq!(
        err.message,
        "Internal error occurred: failed to allocate a serviceIP: the service range 10.96.0.0/29 has no free address; delete unused Services or restart the apiserver with a larger --service-cidr"
    );
    assert_eq!(keys(&store, Kind::ServiceIp).await.len(), 5);
    assert!(keys(&store, Kind::NodePort).await.is_empty());

    // A later failure gives back what was taken before it.
    let (store, a) = allocators(config("10.96.0.0/29"));
    let mut first = svc(
        "first",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
    );
    a.allocate_service(&mut first, None).await.unwrap();
    let mut second = svc(
        "second",
        json!({"type": "LoadBalancer", "ports": [{"port": 80}, {"name": "b", "port": 81, "nodePort": 30080}]}),
    );
    let err = a.allocate_service(&mut second, None).await.unwrap_err();
    assert_eq!(err.code, 422);
    assert_eq!(keys(&store, Kind::ServiceIp).await.len(), 1);
    assert_eq!(
        keys(&store, Kind::NodePort).await,
        vec!["/registry/allocations/nodeports/30080"]
    );
}

#[tokio::test]
async fn node_ports_requested_taken_out_of_range_and_shared_by_protocols() {
    let (store, a) = allocators(AllocatorConfig::default());
    let mut web = svc(
        "web",
        json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080}, {"name": "https", "port": 443}]}),
    );
    let taken = a.allocate_service(&mut web, None).await.unwrap();
    assert_eq!(taken.len(), 3);
    assert_eq!(web["spec"]["ports"][0]["nodePort"], 30080);
    let auto = web["spec"]["ports"][1]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&auto) && auto != 30080);

    let mut clash = svc(
        "clash",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
    );
    let err = a.allocate_service(&mut clash, None).await.unwrap_err();
    assert_eq!(
        err.message,
        "Service \"clash\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
    );
    let mut low = svc(
        "low",
        json!({"type": "NodePort", "ports": [{"port": 80}, {"name": "x", "port": 81, "nodePort": 8080}]}),
    );
    let err = a.allocate_service(&mut low, None).await.unwrap_err();
    assert_eq!(
        err.message,
        "Service \"low\" is invalid: spec.ports[1].nodePort: Invalid value: 8080: provided port is not in the valid range. The range of valid ports is 30000-32767"
    );
    let mut cip = svc("cip", json!({"ports": [{"port": 80, "nodePort": 30081}]}));
    let err = a.allocate_service(&mut cip, None).await.unwrap_err();
    assert_eq!(
        err.message,
        "Service \"cip\" is invalid: spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
    );
    // DNS over TCP and UDP: one node port for both.
    let mut dns = svc(
        "dns",
        json!({"type": "NodePort", "ports": [{"name": "udp", "port": 53, "protocol": "UDP"}, {"name": "tcp", "port": 53, "protocol": "TCP"}]}),
    );
    a.allocate_service(&mut dns, None).await.unwrap();
    assert_eq!(
        dns["spec"]["ports"][0]["nodePort"],
        dns["spec"]["ports"][1]["nodePort"]
    );
    // web: 2 ports, dns: 1; the failed requests left nothing.
    assert_eq!(keys(&store, Kind::NodePort).await.len(), 3);
    assert_eq!(keys(&store, Kind::ServiceIp).await.len(), 2);
}

#[tokio::test]
async fn type_change_to_cluster_ip_frees_node_ports_after_the_write() {
    let (store, a) = allocators(AllocatorConfig::default());
    let mut old = svc(
        "web",
        json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}]}),
    );
    a.allocate_service(&mut old, None).await.unwrap();
    let ip = cluster_ip(&old).to_owned();
    assert_eq!(keys(&store, Kind::NodePort).await.len(), 1);

    // kubectl apply of the manifest with the new type: no clusterIP, the nodePort as read.
    let mut new = old.clone();
    new["spec"]["type"] = json!("ClusterIP");
    new["spec"].as_object_mut().unwrap().remove("clusterIP");
    let taken = a.allocate_service(&mut new, Some(&old)).await.unwrap();
    assert!(taken.is_empty());
    assert_eq!(cluster_ip(&new), ip);
    assert!(new["spec"]["ports"][0].get("nodePort").is_none());
    // Until the write committed, the ports stay held.
    assert_eq!(keys(&store, Kind::NodePort).await.len(), 1);
    a.release_dropped(&old, &new).await;
    assert!(keys(&store, Kind::NodePort).await.is_empty());
    assert_eq!(
        keys(&store, Kind::ServiceIp).await,
        vec![format!("/registry/allocations/serviceips/{ip}")]
    );

    // ... and to ExternalName frees the IP.
    let mut ext = new.clone();
    ext["spec"]["type"] = json!("ExternalName");
    ext["spec"]["externalName"] = json!("example.com");
    a.allocate_service(&mut ext, Some(&new)).await.unwrap();
    assert!(ext["spec"].get("clusterIP").is_none());
    a.release_dropped(&new, &ext).await;
    assert!(keys(&store, Kind::ServiceIp).await.is_empty());
}

#[tokio::test]
async fn an_update_keeps_what_the_service_holds() {
    let (store, a) = allocators(AllocatorConfig::default());
    let mut old = svc(
        "web",
        json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}]}),
    );
    a.allocate_service(&mut old, None).await.unwrap();
    // A PUT of the bare manifest, with one more port.
    let mut new = svc(
        "web",
        json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}, {"name": "admin", "port": 8080}]}),
    );
    let taken = a.allocate_service(&mut new, Some(&old)).await.unwrap();
    assert_eq!(taken.len(), 1, "only the new port's node port");
    assert_eq!(cluster_ip(&new), cluster_ip(&old));
    assert_eq!(
        new["spec"]["ports"][0]["nodePort"],
        old["spec"]["ports"][0]["nodePort"]
    );
    a.release_dropped(&old, &new).await;
    assert_eq!(keys(&store, Kind::NodePort).await.len(), 2);

    // The cluster IP may not change.
    let mut moved = new.clone();
    moved["spec"]["clusterIP"] = json!("10.96.9.9");
    moved["spec"]["clusterIPs"] = json!(["10.96.9.9"]);
    let err = a
        .allocate_service(&mut moved, Some(&new))
        .await
        .unwrap_err();
    assert_eq!(
        err.message,
        "Service \"web\" is invalid: spec.clusterIPs[0]: Invalid value: [\"10.96.9.9\"]: may not change once set"
    );
    // ClusterIP -> NodePort allocates ports on update.
    let mut plain = svc("plain", json!({"ports": [{"port": 80}]}));
    a.allocate_service(&mut plain, None).await.unwrap();
    let mut np = plain.clone();
    np["spec"]["type"] = json!("NodePort");
    let taken = a.allocate_service(&mut np, Some(&plain)).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert!(np["spec"]["ports"][0]["nodePort"].as_i64().is_some());
}

#[tokio::test]
async fn rollback_gives_back_what_a_failed_write_took() {
    let (store, a) = allocators(AllocatorConfig::default());
    let mut s = svc("web", json!({"type": "NodePort", "ports": [{"port": 80}]}));
    let taken = a.allocate_service(&mut s, None).await.unwrap();
    assert_eq!(taken.len(), 2);
    a.rollback(taken).await;
    assert!(keys(&store, Kind::ServiceIp).await.is_empty());
    assert!(keys(&store, Kind::NodePort).await.is_empty());
    // A release after delete only frees what the owner holds.
    let mut s = svc("web", json!({"clusterIP": "10.96.0.20"}));
    a.allocate_service(&mut s, None).await.unwrap();
    let mut impostor = svc("impostor", json!({"clusterIP": "10.96.0.20"}));
    a.release_service(&impostor).await;
    assert_eq!(keys(&store, Kind::ServiceIp).await.len(), 1);
    impostor["metadata"]["name"] = json!("web");
    a.release_service(&impostor).await;
    assert!(keys(&store, Kind::ServiceIp).await.is_empty());
}

#[tokio::test]
async fn a_failed_request_does_not_give_back_what_a_concurrent_one_of_the_same_object_holds() {
    // Two creates of one Service asking for the same IP and port (through two apiservers):
    // the first takes them, the second finds them recorded for the same owner. If the second
    // one's write wins and the first one's fails, the first one's rollback must leave them.
    let (store, a) = allocators(AllocatorConfig::default());
    let spec = json!({"type": "NodePort", "clusterIP": "10.96.0.20",
        "ports": [{"port": 80, "nodePort": 30080}]});
    let mut first = svc("web", spec.clone());
    let taken_first = a.allocate_service(&mut first, None).await.unwrap();
    assert_eq!(taken_first.len(), 2);
    let mut second = svc("web", spec);
    let taken_second = a.allocate_service(&mut second, None).await.unwrap();
    assert!(
        taken_second.is_empty(),
        "already recorded for services/default/web"
    );
    a.rollback(taken_first).await;
    assert_eq!(
        keys(&store, Kind::ServiceIp).await,
        vec!["/registry/allocations/serviceips/10.96.0.20"]
    );
    assert_eq!(
        keys(&store, Kind::NodePort).await,
        vec!["/registry/allocations/nodeports/30080"]
    );
    // Someone else still cannot have them.
    let mut other = svc("other", json!({"clusterIP": "10.96.0.20"}));
    assert_eq!(
        a.allocate_service(&mut other, None).await.unwrap_err().code,
        422
    );
    // And the holder gives them back on delete.
    a.release_service(&second).await;
    assert!(keys(&store, Kind::ServiceIp).await.is_empty());
    assert!(keys(&store, Kind::NodePort).await.is_empty());
}

#[tokio::test]
async fn headless_and_external_name_get_no_ip() {
    let (store, a) = allocators(AllocatorConfig::default());
    let mut headless = svc("h", json!({"clusterIP": "None", "ports": [{"port": 80}]}));
    assert!(
        a.allocate_service(&mut headless, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    let mut ext = svc(
        "e",
        json!({"type": "ExternalName", "externalName": "example.com"}),
    );
    assert!(a.allocate_service(&mut ext, None).await.unwrap().is_empty());
    assert!(ext["spec"].get("clusterIP").is_none());
    assert!(keys(&store, Kind::ServiceIp).await.is_empty());
}

#[tokio::test]
async fn load_balancers_get_a_pool_ip_and_a_health_check_port() {
    let cfg = AllocatorConfig {
        lb_pool: Some("192.168.1.240/30".parse().unwrap()),
        ..AllocatorConfig::default()
    };
    let (store, a) = allocators(cfg);
    let mut lb = svc(
        "lb",
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
    );
    let taken = a.allocate_service(&mut lb, None).await.unwrap();
    assert_eq!(taken.len(), 4, "IP, node port, health-check port, LB IP");
    assert_eq!(
        lb["status"]["loadBalancer"]["ingress"],
        json!([{"ip": "192.168.1.241"}])
    );
    let hc = lb["spec"]["healthCheckNodePort"].as_i64().unwrap();
    assert_ne!(hc, lb["spec"]["ports"][0]["nodePort"].as_i64().unwrap());
    let mut second = svc(
        "second",
        json!({"type": "LoadBalancer", "ports": [{"port": 80}]}),
    );
    a.allocate_service(&mut second, None).await.unwrap();
    assert_eq!(
        second["status"]["loadBalancer"]["ingress"][0]["ip"],
        "192.168.1.242"
    );
    assert!(second["spec"].get("healthCheckNodePort").is_none());
    let mut third = svc(
        "third",
        json!({"type": "LoadBalancer", "ports": [{"port": 80}]}),
    );
    let err = a.allocate_service(&mut third, None).await.unwrap_err();
    assert_eq!(err.code, 500);
    assert!(
        err.message
            .contains("the load-balancer pool 192.168.1.240/30 has no free address"),
        "{err}"
    );
    let mut taken_ip = svc(
        "t",
        json!({"type": "LoadBalancer", "loadBalancerIP": "192.168.1.241"}),
    );
    let err = a.allocate_service(&mut taken_ip, None).await.unwrap_err();
    assert_eq!(
        err.message,
        "Service \"t\" is invalid: spec.loadBalancerIP: Invalid value: \"192.168.1.241\": provided IP is already allocated"
    );
    assert_eq!(keys(&store, Kind::ServiceIp).await.len(), 2);
    assert_eq!(keys(&store, Kind::LbIp).await.len(), 2);

    // LoadBalancer -> ClusterIP: the pool IP, node port and health-check port are freed.
    let mut plain = lb.clone();
    plain["spec"]["type"] = json!("ClusterIP");
    plain["spec"]
        .as_object_mut()
        .unwrap()
        .remove("externalTrafficPolicy");
    a.allocate_service(&mut plain, Some(&lb)).await.unwrap();
    assert!(plain["status"]["loadBalancer"].get("ingress").is_none());
    assert!(plain["spec"].get("healthCheckNodePort").is_none());
    a.release_dropped(&lb, &plain).await;
    assert_eq!(
        keys(&store, Kind::LbIp).await,
        vec!["/registry/allocations/lbips/192.168.1.242"]
    );
    assert_eq!(
        keys(&store, Kind::NodePort).await.len(),
        1,
        "second's node port"
    );

    // Without a pool, a LoadBalancer stays pending.
    let (_, a) = allocators(AllocatorConfig::default());
    let mut pending = svc(
        "p",
        json!({"type": "LoadBalancer", "ports": [{"port": 80}]}),
    );
    a.allocate_service(&mut pending, None).await.unwrap();
    assert!(pending.pointer("/status/loadBalancer/ingress").is_none());
}

#[tokio::test]
async fn node_cidrs_are_distinct_requested_and_exhausted() {
    let cfg = AllocatorConfig {
        cluster_cidr: "10.244.0.0/22".parse().unwrap(),
        ..AllocatorConfig::default()
    };
    let (store, a) = allocators(cfg);
    let mut n2 = node("n2");
    n2["spec"]["podCIDR"] = json!("10.244.2.0/24");
    a.allocate_node_cidr(&mut n2).await.unwrap();
    assert_eq!(n2["spec"]["podCIDRs"], json!(["10.244.2.0/24"]));
    let mut cidrs = vec!["10.244.2.0/24".to_owned()];
    for name in ["n0", "n1", "n3"] {
        let mut n = node(name);
        a.allocate_node_cidr(&mut n).await.unwrap();
        cidrs.push(n["spec"]["podCIDR"].as_str().unwrap().to_owned());
    }
    // Lowest first.
    assert_eq!(
        cidrs,
        [
            "10.244.2.0/24",
            "10.244.0.0/24",
            "10.244.1.0/24",
            "10.244.3.0/24"
        ]
    );
    let mut n4 = node("n4");
    let err = a.allocate_node_cidr(&mut n4).await.unwrap_err();
    assert_eq!(err.code, 500);
    assert_eq!(
        err.message,
        "Internal error occurred: failed to allocate a pod CIDR for node \"n4\": all 4 /24 subnets of the cluster range 10.244.0.0/22 are in use; delete unused Nodes or restart the apiserver with a larger --cluster-cidr or a longer --node-cidr-size"
    );
    for (cidr, why) in [
        ("10.244.2.0/24", "is already allocated to another node"),
        (
            "10.245.0.0/24",
            "is not inside the cluster CIDR 10.244.0.0/22 (--cluster-cidr)",
        ),
        ("10.244.2.0/25", "must be a /24"),
        ("10.244.2.7/24", "must be a network address: 10.244.2.0/24"),
        ("nonsense", "must be an IPv4 CIDR"),
    ] {
        let mut n = node("x");
        n["spec"]["podCIDR"] = json!(cidr);
        let err = a.allocate_node_cidr(&mut n).await.unwrap_err();
        assert_eq!(err.code, 422, "{cidr}");
        assert!(err.message.contains(why), "{cidr}: {err}");
    }
    // Deleting a node frees its CIDR for the next one.
    a.release_node(&n2).await;
    let mut n5 = node("n5");
    a.allocate_node_cidr(&mut n5).await.unwrap();
    assert_eq!(n5["spec"]["podCIDR"], "10.244.2.0/24");
    assert_eq!(keys(&store, Kind::PodCidr).await.len(), 4);
}

#[tokio::test]
async fn repair_frees_old_orphans_keeps_young_ones_and_retakes_missing() {
    let (store, a) = allocators(AllocatorConfig::default());
    let registry = Registry::new(store.clone());
    // A stored Service and Node with their allocations.
    let mut web = svc("web", json!({"type": "NodePort", "ports": [{"port": 80}]}));
    a.allocate_service(&mut web, None).await.unwrap();
    registry.create(&SERVICE, web.clone()).await.unwrap();
    let mut n1 = node("n1");
    a.allocate_node_cidr(&mut n1).await.unwrap();
    registry.create(&NODE, n1).await.unwrap();
    // An old orphan (its Service was deleted, the release lost).
    let old = Record {
        owner: "services/default/gone".into(),
        at: space::unix_now() - 3600,
    };
    store
        .create(
            "/registry/allocations/serviceips/10.96.7.7",
            old.encode(),
            None,
        )
        .await
        .unwrap();
    // A young one: another apiserver is writing its Service right now.
    let mut young = svc("young", json!({}));
    a.allocate_service(&mut young, None).await.unwrap();
    // A stored Service whose allocation was lost.
    registry
        .create(
            &SERVICE,
            svc(
                "lost",
                json!({"clusterIP": "10.96.0.50", "clusterIPs": ["10.96.0.50"]}),
            ),
        )
        .await
        .unwrap();

    let (freed, retaken) = a.repair(&registry, Duration::from_secs(60)).await.unwrap();
    assert_eq!((freed, retaken), (1, 1));
    let ips = keys(&store, Kind::ServiceIp).await;
    assert!(!ips.contains(&"/registry/allocations/serviceips/10.96.7.7".to_owned()));
    assert!(ips.contains(&format!(
        "/registry/allocations/serviceips/{}",
        cluster_ip(&young)
    )));
    let lost = store
        .get("/registry/allocations/serviceips/10.96.0.50")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        Record::decode(&lost.value).unwrap().owner,
        "services/default/lost"
    );
    assert_eq!(ips.len(), 3);
    assert_eq!(keys(&store, Kind::NodePort).await.len(), 1);
    assert_eq!(keys(&store, Kind::PodCidr).await.len(), 1);
    // Nothing left to do; with no minimum age the young orphan goes too.
    assert_eq!(
        a.repair(&registry, Duration::from_secs(60)).await.unwrap(),
        (0, 0)
    );
    assert_eq!(a.repair(&registry, Duration::ZERO).await.unwrap(), (1, 0));
    assert_eq!(keys(&store, Kind::ServiceIp).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_services_get_distinct_ips() {
    let (store, a) = allocators(AllocatorConfig::default());
    let a = Arc::new(a);
    let started = Instant::now();
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move {
                let mut s = svc(
                    &format!("s{i}"),
                    json!({"type": "NodePort", "ports": [{"port": 80}]}),
                );
                a.allocate_service(&mut s, None).await.unwrap();
                (
                    cluster_ip(&s).to_owned(),
                    s["spec"]["ports"][0]["nodePort"].as_i64().unwrap(),
                )
            })
        })
        .collect();
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for t in tasks {
        let (ip, port) = t.await.unwrap();
        ips.insert(ip);
        ports.insert(port);
    }
    eprintln!(
        "1000 concurrent allocations (memory store): {:?}",
        started.elapsed()
    );
    assert_eq!(ips.len(), 1000);
    assert_eq!(ports.len(), 1000);
    assert_eq!(keys(&store, Kind::ServiceIp).await.len(), 1000);
    assert_eq!(keys(&store, Kind::NodePort).await.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_allocators_on_one_store_never_hand_out_the_same_item() {
    // A small range, so the two race for the same addresses and fill it.
    let s = store();
    let cfg = AllocatorConfig {
        nodeport_range: 30000..=30299,
        ..config("10.96.0.0/24")
    };
    let a = Arc::new(Allocators::new(s.clone(), cfg.clone()));
    let b = Arc::new(Allocators::new(s.clone(), cfg));
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let alloc = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let mut s = svc(
                    &format!("s{i}"),
                    json!({"type": "NodePort", "ports": [{"port": 80}]}),
                );
                alloc.allocate_service(&mut s, None).await.map(|_| {
                    (
                        cluster_ip(&s).to_owned(),
                        s["spec"]["ports"][0]["nodePort"].as_i64().unwrap(),
                    )
                })
            })
        })
        .collect();
    let (mut ips, mut ports, mut full) = (Vec::new(), HashSet::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok((ip, port)) => {
                ips.push(ip);
                assert!(ports.insert(port), "node port {port} handed out twice");
            }
            Err(e) => {
                assert_eq!(e.code, 500, "{e}");
                full += 1;
            }
        }
    }
    // 256 addresses: network, broadcast and the reserved first one are never handed out.
    assert_eq!(ips.len(), 253);
    assert_eq!(full, 300 - 253);
    assert_eq!(
        ips.iter().collect::<HashSet<_>>().len(),
        253,
        "an IP handed out twice"
    );
    assert_eq!(keys(&s, Kind::ServiceIp).await.len(), 253);
    assert_eq!(
        keys(&s, Kind::NodePort).await.len(),
        253,
        "failed requests gave their port back"
    );
}

#[tokio::test]
async fn config_validation_says_what_to_pass() {
    assert_eq!(AllocatorConfig::default().validate(), Ok(()));
    let bad = |f: &dyn Fn(&mut AllocatorConfig)| {
        let mut c = AllocatorConfig::default();
        f(&mut c);
        c.validate().unwrap_err()
    };
    let e = bad(&|c| c.service_cidr = "10.244.0.0/20".parse().unwrap());
    assert!(e.contains("overlaps --cluster-cidr 10.244.0.0/16"), "{e}");
    let e = bad(&|c| c.service_cidr = "10.96.0.0/30".parse().unwrap());
    assert!(e.contains("too small") && e.contains("/29"), "{e}");
    let e = bad(&|c| c.service_cidr = "10.0.0.0/8".parse().unwrap());
    assert!(e.contains("too large") && e.contains("/12"), "{e}");
    let e = bad(&|c| c.service_cidr = "fd00::/108".parse().unwrap());
    assert!(e.contains("IPv6"), "{e}");
    let e = bad(&|c| c.node_cidr_size = 16);
    assert!(e.contains("must be longer than the prefix"), "{e}");
    let e = bad(&|c| c.node_cidr_size = 31);
    assert!(e.contains("at most a /30"), "{e}");
    let e = bad(&|c| {
        c.cluster_cidr = "10.0.0.0/8".parse().unwrap();
        c.service_cidr = "192.168.0.0/16".parse().unwrap();
        c.node_cidr_size = 26;
    });
    assert!(e.contains("2^18 node subnets"), "{e}");
    #[allow(clippy::reversed_empty_ranges)]
    let e = bad(&|c| c.nodeport_range = 32767..=30000);
    assert!(e.contains("is empty"), "{e}");
    let e = bad(&|c| c.nodeport_range = 0..=100);
    assert!(e.contains("port 0"), "{e}");
    let e = bad(&|c| c.lb_pool = Some("10.96.0.0/28".parse().unwrap()));
    assert!(
        e.contains("--lb-pool 10.96.0.0/28 overlaps --service-cidr"),
        "{e}"
    );
    // An invalid configuration fails allocations with the same message.
    let (_, a) = allocators(config("10.96.0.0/30"));
    let err = a.allocate_service(&mut svc("x", json!({})), None).await;
    assert!(err.unwrap_err().message.contains("too small"));
}
