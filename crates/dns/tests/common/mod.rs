//! The cluster the DNS tests answer from: CoreDNS's kubernetes plugin test fixture
//! (namespace testns: svc1, svc6, headless hdls1 with named and unnamed endpoints, an
//! ExternalName, a pod), built through the same index calls the watches make.
#![allow(dead_code, clippy::unwrap_used)]

use podnet_dns::{ReplyConfig, Shared, ZoneConfig};
use serde_json::json;

pub fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

pub fn slice(
    ns: &str,
    name: &str,
    svc: &str,
    eps: serde_json::Value,
    ports: serde_json::Value,
) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    obj(json!({
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4", "endpoints": eps, "ports": ports
    }))
}

pub fn cluster() -> Shared {
    cluster_with(None)
}

pub fn cluster_with(forwarder: Option<std::sync::Arc<podnet_dns::Forwarder>>) -> Shared {
    let zone = ZoneConfig::new("cluster.local", 5).unwrap();
    let mut zone = zone;
    zone.ns_addrs = vec!["10.96.0.10".parse().unwrap()];
    let shared = Shared::new(zone, ReplyConfig::default(), forwarder);
    shared.update(|idx| {
        for ns in ["testns", "default", "kube-system"] {
            idx.apply_namespace(&obj(json!({"metadata": {"name": ns}})));
        }
        let svc = |name: &str, spec: serde_json::Value| -> k8s_openapi::api::core::v1::Service {
            obj(json!({"metadata": {"namespace": "testns", "name": name}, "spec": spec}))
        };
        idx.apply_service(&svc("svc1", json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 81}]})));
        idx.apply_service(&svc("svc6", json!({"clusterIP": "1234:abcd::1", "clusterIPs": ["1234:abcd::1"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})));
        idx.apply_service(&svc("dns", json!({"clusterIP": "10.0.0.53",
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]})));
        idx.apply_service(&svc("hdls1", json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]})));
        idx.apply_service(&svc("hdls-empty", json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]})));
        idx.apply_service(&svc("hdls-pub", json!({"clusterIP": "None", "publishNotReadyAddresses": true})));
        idx.apply_service(&svc("external", json!({"type": "ExternalName", "externalName": "ext.interwebs.test"})));
        idx.apply_service(&svc("external-to-service", json!({"type": "ExternalName", "externalName": "svc1.testns.svc.cluster.local"})));
        idx.apply_slice(&slice("testns", "hdls1-a", "hdls1", json!([
            {"addresses": ["172.0.0.2"]},
            {"addresses": ["172.0.0.3"], "conditions": {"ready": true}},
            {"addresses": ["172.0.0.4"], "hostname": "dup-name"},
            {"addresses": ["172.0.0.9"], "conditions": {"ready": false}},
        ]), json!([{"name": "http", "port": 8080, "protocol": "TCP"}])));
        idx.apply_slice(&slice("testns", "hdls1-b", "hdls1", json!([
            {"addresses": ["172.0.0.5"], "hostname": "dup-name"},
        ]), json!([{"name": "http", "port": 8080, "protocol": "TCP"}])));
        idx.apply_slice(&slice("testns", "hdls-empty-a", "hdls-empty", json!([
            {"addresses": ["172.0.1.1"], "conditions": {"ready": false}},
        ]), json!([])));
        idx.apply_slice(&slice("testns", "hdls-pub-a", "hdls-pub", json!([
            {"addresses": ["172.0.2.1"], "conditions": {"ready": false}},
        ]), json!([])));
        idx.apply_slice(&slice("testns", "svc1-a", "svc1", json!([
            {"addresses": ["10.244.0.7"]},
        ]), json!([{"name": "http", "port": 8080}])));
        idx.apply_pod(&obj(json!({"metadata": {"namespace": "testns", "name": "p"},
            "status": {"podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]}})));
    });
    shared.set_synced(true);
    shared
}
