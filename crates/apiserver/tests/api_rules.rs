//! The API's rules as a client meets them, through a started apiserver: concurrent
//! allocation of ClusterIPs and NodePorts (1,000 Services at once, taken and exhausted
//! ranges, durability across a restart), two apiservers on one etcd, bad input over raw
//! HTTP (malformed bodies, unknown paths and kinds, invalid names, oversized bodies, wrong
//! field types, unsupported patch types: `Status` errors, nothing half-written, no leaked
//! allocation), endpoints following label changes, pod deletion and selector changes,
//! graceful pod deletion, binding and scheduling, and the node lifecycle.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Backend, TestServer, eventually};
use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::Status;
use podnet_apiserver::server::{ApiServer, StoreConfig};
use podnet_store::Store;
use podnet_store::testing::EtcdServer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------
// Helpers.

const WAIT: Duration = Duration::from_secs(10);

fn client_at(addr: SocketAddr) -> kube::Client {
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

/// The `Status` of a failed call.
fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> Box<Status> {
    match result {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The field names of an `Invalid` error's causes.
fn cause_fields(status: &Status) -> Vec<String> {
    status
        .details
        .as_ref()
        .map(|d| d.causes.iter().map(|c| c.field.clone()).collect())
        .unwrap_or_default()
}

fn service(name: &str, spec: Value) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

/// A ClusterIP Service without a selector (no endpoints to manage), with `clusterIP`
/// when given.
fn plain_service(name: &str, cluster_ip: Option<&str>) -> Service {
    let mut spec = json!({"ports": [{"port": 80, "targetPort": 8080}]});
    if let Some(ip) = cluster_ip {
        spec["clusterIP"] = json!(ip);
    }
    service(name, spec)
}

fn node_port_service(name: &str, cluster_ip: Option<&str>, node_port: Option<i64>) -> Service {
    let mut spec = json!({"type": "NodePort", "ports": [{"port": 80, "targetPort": 8080}]});
    if let Some(ip) = cluster_ip {
        spec["clusterIP"] = json!(ip);
    }
    if let Some(np) = node_port {
        spec["ports"][0]["nodePort"] = json!(np);
    }
    service(name, spec)
}

fn cluster_ip(svc: &Service) -> String {
    svc.spec.as_ref().unwrap().cluster_ip.clone().unwrap()
}

fn node_port(svc: &Service) -> i32 {
    svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
        .node_port
        .unwrap()
}

fn pod(name: &str, labels: Value, node: Option<&str>) -> Pod {
    let mut spec = json!({"containers": [{"name": "main", "image": "busybox:1.36",
        "ports": [{"name": "http", "containerPort": 8080}]}]});
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels}, "spec": spec,
    }))
    .unwrap()
}

/// Reports a pod Running and Ready at `ip`, as its node's agent does.
async fn make_ready(pods: &Api<Pod>, name: &str, ip: &str) {
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

/// Now, as a `MicroTime`.
fn micro_now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn time_now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A Node that reports `Ready` with the given status, with a fresh Lease, as an agent
/// registers one.
async fn register_node(client: &kube::Client, name: &str, ready: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    post_node_ready(client, name, ready).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro_now()},
    }))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
}

/// Posts the node's `Ready` condition with a fresh heartbeat.
async fn post_node_ready(client: &kube::Client, name: &str, ready: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = time_now();
    let reason = if ready == "True" {
        "KubeletReady"
    } else {
        "KubeletNotReady"
    };
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": ready,
        "reason": reason, "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

async fn renew_lease(client: &kube::Client, name: &str) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    leases
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"renewTime": micro_now()}})),
        )
        .await
        .unwrap();
}

/// Renews a node's Lease every 250 ms until dropped.
struct Renewer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Renewer {
    fn start(client: kube::Client, name: &str) -> Renewer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            while !flag.load(Ordering::Acquire) {
                renew_lease(&client, &name).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Renewer { stop, task }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Release);
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the renewer stops")
            .unwrap();
    }
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn condition_status(obj: &Value, type_: &str) -> String {
    condition(obj, type_)
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_owned()
}

fn has_unreachable_taint(node: &Value) -> bool {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .is_some_and(|ts| {
            ts.iter().any(|t| {
                t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoSchedule"
            })
        })
}

/// The addresses of a Service's Endpoints: (ready, not ready).
async fn endpoint_ips(
    endpoints: &Api<Endpoints>,
    name: &str,
) -> Result<(BTreeSet<String>, BTreeSet<String>), String> {
    let ep = endpoints.get(name).await.map_err(|e| e.to_string())?;
    let (mut ready, mut not_ready) = (BTreeSet::new(), BTreeSet::new());
    for subset in ep.subsets.unwrap_or_default() {
        for a in subset.addresses.unwrap_or_default() {
            ready.insert(a.ip);
        }
        for a in subset.not_ready_addresses.unwrap_or_default() {
            not_ready.insert(a.ip);
        }
    }
    Ok((ready, not_ready))
}

/// The endpoints of a Service's EndpointSlices: address → (ready, serving, terminating).
async fn slice_endpoints(
    slices: &Api<EndpointSlice>,
    service: &str,
) -> Result<BTreeMap<String, (bool, bool, bool)>, String> {
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for slice in list.items {
        for e in slice.endpoints {
            let c = e.conditions.unwrap_or_default();
            for a in e.addresses {
                out.insert(
                    a,
                    (
                        c.ready.unwrap_or(false),
                        c.serving.unwrap_or(false),
                        c.terminating.unwrap_or(false),
                    ),
                );
            }
        }
    }
    Ok(out)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The items (last key segments) of one kind of allocation in the store.
async fn allocations(store: &Arc<dyn Store>, kind: &str) -> BTreeSet<String> {
    let prefix = format!("/registry/allocations/{kind}/");
    store
        .list(&prefix, None)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|kv| kv.key.trim_start_matches(&prefix).to_owned())
        .collect()
}

/// Every allocation key belongs to a Service that holds it, and every Service's ClusterIP
/// and NodePorts have their key: nothing leaked, nothing lost.
async fn assert_allocations_match_services(store: &Arc<dyn Store>, client: &kube::Client) {
    let list = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for svc in &list.items {
        let spec = svc.spec.as_ref().unwrap();
        if let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| *ip != "None") {
            assert!(ips.insert(ip.to_owned()), "{ip} held twice");
        }
        for p in spec.ports.iter().flatten() {
            if let Some(np) = p.node_port {
                assert!(ports.insert(np.to_string()), "node port {np} held twice");
            }
        }
    }
    assert_eq!(allocations(store, "serviceips").await, ips);
    assert_eq!(allocations(store, "nodeports").await, ports);
}

// --- A raw HTTP/1.1 client, for bodies no typed client sends. ---

/// An answer: the status code and the body.
struct Reply {
    code: u16,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the answer ({}) is not JSON ({e}): {}",
                self.code,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as a failure `Status` with `code`.
    fn status(&self, code: u16) -> Value {
        let v = self.json();
        assert_eq!(self.code, code, "{v}");
        assert_eq!(v["kind"], "Status", "{v}");
        assert_eq!(v["apiVersion"], "v1", "{v}");
        assert_eq!(v["status"], "Failure", "{v}");
        assert_eq!(v["code"], code, "{v}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "a message: {v}"
        );
        v
    }
}

/// One request on a connection of its own; the server must answer within 30 s.
async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Reply {
    tokio::time::timeout(
        Duration::from_secs(30),
        raw_request(addr, method, path, content_type, body),
    )
    .await
    .unwrap_or_else(|_| panic!("{method} {path}: no answer within 30 s"))
}

async fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    // Written while the answer is read: the server may answer (413) before it has read the
    // whole body, and then stop reading; a failed write is fine.
    let write = async move {
        if wr.write_all(head.as_bytes()).await.is_ok() && wr.write_all(body).await.is_ok() {
            let _ = wr.flush().await;
        }
        wr
    };
    let read = async move {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // A reset after the answer (the server closed with unread body bytes).
                Err(_) if complete(&buf) => break,
                Err(e) => panic!(
                    "{method} {path}: reading the answer: {e} (got {:?})",
                    String::from_utf8_lossy(&buf)
                ),
            }
        }
        buf
    };
    let (_wr, buf) = tokio::join!(write, read);
    parse_reply(&buf).unwrap_or_else(|| {
        panic!(
            "{method} {path}: not an HTTP answer (did the handler panic?): {:?}",
            String::from_utf8_lossy(&buf)
        )
    })
}

fn split_head(buf: &[u8]) -> Option<(&str, &[u8])> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((std::str::from_utf8(&buf[..end]).ok()?, &buf[end + 4..]))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// Whether `buf` holds a whole answer with a `Content-Length`.
fn complete(buf: &[u8]) -> bool {
    split_head(buf).is_some_and(|(head, body)| {
        header(head, "content-length")
            .and_then(|l| l.parse::<usize>().ok())
            .is_some_and(|len| body.len() >= len)
    })
}

fn parse_reply(buf: &[u8]) -> Option<Reply> {
    let (head, rest) = split_head(buf)?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    let body = if header(head, "transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        let mut body = Vec::new();
        let mut rest = rest;
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            body.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
        body
    } else {
        match header(head, "content-length").and_then(|l| l.parse::<usize>().ok()) {
            Some(len) => rest.get(..len)?.to_vec(),
            None => rest.to_vec(),
        }
    };
    Some(Reply { code, body })
}

async fn post_json(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    raw(
        addr,
        "POST",
        path,
        Some("application/json"),
        body.to_string().as_bytes(),
    )
    .await
}

/// The server still answers, and its health check says so.
async fn assert_healthy(addr: SocketAddr) {
    let r = raw(addr, "GET", "/healthz", None, b"").await;
    assert_eq!(
        (r.code, r.body.as_slice()),
        (200, b"ok".as_slice()),
        "/healthz"
    );
}

/// The names of the pods in `default`.
async fn pod_names(pods: &Api<Pod>) -> BTreeSet<String> {
    pods.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect()
}

const PODS: &str = "/api/v1/namespaces/default/pods";
const SERVICES: &str = "/api/v1/namespaces/default/services";

// ---------------------------------------------------------------------------------------
// 1. Allocation through the API.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_services_created_concurrently_get_distinct_cluster_ips_that_survive_a_restart()
{
    let mut ts = TestServer::start(Backend::Embedded).await;
    let services: Api<Service> = Api::namespaced(ts.client(), "default");
    let started = Instant::now();
    let created: Vec<Service> = futures::stream::iter(0..1000)
        .map(|i| {
            let services = services.clone();
            async move {
                services
                    .create(
                        &PostParams::default(),
                        &plain_service(&format!("s-{i}"), None),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("creating s-{i}: {e}"))
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    eprintln!(
        "1000 Services through the API, 64 in flight (embedded store): {:?}",
        started.elapsed()
    );
    let range: Ipv4Net = "10.96.0.0/12".parse().unwrap();
    let mut by_name: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut ips = HashSet::new();
    for svc in &created {
        let ip = cluster_ip(svc);
        let addr: Ipv4Addr = ip.parse().unwrap();
        assert!(range.contains(&addr), "{ip} outside {range}");
        assert!(
            ![
                range.network(),
                range.broadcast(),
                Ipv4Addr::new(10, 96, 0, 1)
            ]
            .contains(&addr),
            "{ip} is the network, broadcast or kubernetes address"
        );
        assert!(ips.insert(ip.clone()), "{ip} handed out twice");
        by_name.insert(
            svc.metadata.name.clone().unwrap(),
            (svc.metadata.uid.clone().unwrap(), ip),
        );
    }
    assert_eq!(ips.len(), 1000);
    assert_allocations_match_services(ts.server().store(), &ts.client()).await;

    ts.restart().await;
    let services: Api<Service> = Api::namespaced(ts.client(), "default");
    let listed = services.list(&ListParams::default()).await.unwrap().items;
    let after: BTreeMap<String, (String, String)> = listed
        .iter()
        .filter(|s| s.metadata.name.as_deref() != Some("kubernetes"))
        .map(|s| {
            (
                s.metadata.name.clone().unwrap(),
                (s.metadata.uid.clone().unwrap(), cluster_ip(s)),
            )
        })
        .collect();
    assert_eq!(
        after, by_name,
        "the Services and their IPs after the restart"
    );
    assert_allocations_match_services(ts.server().store(), &ts.client()).await;
    // The allocations were kept too: an IP in use is refused after the restart.
    let (_, taken) = by_name.values().next().unwrap();
    let err = api_error(
        services
            .create(&PostParams::default(), &plain_service("late", Some(taken)))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"), "{err:?}");
    ts.stop().await;
}

#[tokio::test]
async fn taken_cluster_ips_and_node_ports_are_refused_with_422_and_failures_keep_nothing() {
    let ts = TestServer::start(Backend::Embedded).await;
    let services: Api<Service> = Api::namespaced(ts.client(), "default");
    let pp = PostParams::default();
    let a = services
        .create(
            &pp,
            &node_port_service("a", Some("10.96.0.50"), Some(30080)),
        )
        .await
        .unwrap();
    assert_eq!(
        (cluster_ip(&a).as_str(), node_port(&a)),
        ("10.96.0.50", 30080)
    );

    // The same ClusterIP: 422 in Kubernetes' words.
    let err = api_error(
        services
            .create(&pp, &plain_service("b", Some("10.96.0.50")))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"), "{err:?}");
    assert_eq!(
        err.message,
        "Service \"b\" is invalid: spec.clusterIPs: Invalid value: [\"10.96.0.50\"]: failed to allocate IP 10.96.0.50: provided IP is already allocated"
    );
    assert_eq!(cause_fields(&err), vec!["spec.clusterIPs"]);
    // The kubernetes Service's address is taken from the start.
    let err = api_error(
        services
            .create(&pp, &plain_service("b", Some("10.96.0.1")))
            .await,
    );
    assert_eq!(err.code, 422, "{err:?}");
    assert!(
        err.message.contains("provided IP is already allocated"),
        "{}",
        err.message
    );

    // The same NodePort: 422.
    let err = api_error(
        services
            .create(&pp, &node_port_service("c", None, Some(30080)))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"), "{err:?}");
    assert_eq!(
        err.message,
        "Service \"c\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
    );
    assert_eq!(cause_fields(&err), vec!["spec.ports[0].nodePort"]);

    // A free ClusterIP with a taken NodePort: refused, and the ClusterIP is not kept.
    let err = api_error(
        services
            .create(
                &pp,
                &node_port_service("d", Some("10.96.0.60"), Some(30080)),
            )
            .await,
    );
    assert_eq!(err.code, 422, "{err:?}");
    // A NodePort outside the range, after a ClusterIP was taken: the same.
    let err = api_error(
        services
            .create(
                &pp,
                &node_port_service("d", Some("10.96.0.61"), Some(20000)),
            )
            .await,
    );
    assert_eq!(err.code, 422, "{err:?}");
    assert_eq!(cause_fields(&err), vec!["spec.ports[0].nodePort"]);
    assert!(
        err.message.contains(
            "provided port is not in the valid range. The range of valid ports is 30000-32767"
        ),
        "{}",
        err.message
    );
    // A name already in use, with a new ClusterIP and NodePort: 409, and neither is kept.
    let err = api_error(
        services
            .create(
                &pp,
                &node_port_service("a", Some("10.96.0.62"), Some(30090)),
            )
            .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (409, "AlreadyExists"),
        "{err:?}"
    );
    let names: Vec<String> = services
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| s.metadata.name.unwrap())
        .collect();
    assert_eq!(names, vec!["a", "kubernetes"]);
    assert_allocations_match_services(ts.server().store(), &ts.client()).await;
    for (name, ip, port) in [
        ("d", "10.96.0.60", 30091),
        ("e", "10.96.0.61", 30092),
        ("f", "10.96.0.62", 30090),
    ] {
        services
            .create(&pp, &node_port_service(name, Some(ip), Some(port)))
            .await
            .unwrap_or_else(|e| panic!("{ip} and {port} are free again: {e}"));
    }

    // Deleting frees both: the same IP and port can be asked for again.
    services
        .delete("a", &DeleteParams::default())
        .await
        .unwrap();
    let again = services
        .create(
            &pp,
            &node_port_service("a2", Some("10.96.0.50"), Some(30080)),
        )
        .await
        .unwrap();
    assert_eq!(
        (cluster_ip(&again).as_str(), node_port(&again)),
        ("10.96.0.50", 30080)
    );
    assert_allocations_match_services(ts.server().store(), &ts.client()).await;

    // Updates: a taken NodePort is 422 and the Service is unchanged.
    let e = services.get("e").await.unwrap();
    let mut taken = e.clone();
    taken.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(30080);
    let err = api_error(services.replace("e", &pp, &taken).await);
    assert_eq!(err.code, 422, "{err:?}");
    assert_eq!(cause_fields(&err), vec!["spec.ports[0].nodePort"]);
    let unchanged = services.get("e").await.unwrap();
    assert_eq!(
        unchanged.metadata.resource_version,
        e.metadata.resource_version
    );
    assert_eq!(node_port(&unchanged), 30092);
    // A stale update asking for a new NodePort: 409, and the port is not kept.
    let mut fresh = e.clone();
    fresh
        .metadata
        .labels
        .get_or_insert_default()
        .insert("touched".into(), "yes".into());
    services.replace("e", &pp, &fresh).await.unwrap();
    let mut stale = e.clone();
    stale.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(30095);
    let err = api_error(services.replace("e", &pp, &stale).await);
    assert_eq!(
        (err.code, err.reason.as_str()),
        (409, "Conflict"),
        "{err:?}"
    );
    services
        .create(&pp, &node_port_service("g", None, Some(30095)))
        .await
        .expect("30095 was not kept by the failed update");
    // A type change to ClusterIP frees the NodePort; a ClusterIP change is refused.
    services
        .patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80, "targetPort": 8080}]}}),
            ),
        )
        .await
        .unwrap();
    services
        .create(&pp, &node_port_service("h", None, Some(30090)))
        .await
        .expect("f's node port was freed");
    let err = api_error(
        services
            .patch(
                "f",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"spec": {"clusterIP": "10.96.0.63", "clusterIPs": ["10.96.0.63"]}}),
                ),
            )
            .await,
    );
    assert_eq!(err.code, 422, "{err:?}");
    assert!(
        err.message.contains("may not change once set"),
        "{}",
        err.message
    );
    assert_allocations_match_services(ts.server().store(), &ts.client()).await;
    ts.stop().await;
}

#[tokio::test]
async fn exhausted_ranges_give_a_clear_error_and_keep_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), StoreConfig::Embedded);
    // 8 addresses: network, broadcast and the kubernetes Service's leave 5.
    config.allocators.service_cidr = "10.96.0.0/29".parse().unwrap();
    config.allocators.nodeport_range = 30000..=30001;
    let ts = TestServer::start_with(dir, None, config).await;
    let services: Api<Service> = Api::namespaced(ts.client(), "default");
    let pp = PostParams::default();
    let mut ips = BTreeSet::new();
    for name in ["np-0", "np-1"] {
        let svc = services
            .create(&pp, &node_port_service(name, None, None))
            .await
            .unwrap();
        ips.insert(cluster_ip(&svc));
    }
    // No node port left: 500 naming the range and what to do; the ClusterIP it took is
    // given back.
    let err = api_error(
        services
            .create(&pp, &node_port_service("np-2", None, None))
            .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (500, "InternalError"),
        "{err:?}"
    );
    assert!(
        err.message.contains("30000-30001")
            && err.message.contains("no free port")
            && err.message.contains("--nodeport-range"),
        "{}",
        err.message
    );
    for name in ["c-0", "c-1", "c-2"] {
        let svc = services
            .create(&pp, &plain_service(name, None))
            .await
            .unwrap_or_else(|e| panic!("{name}: the range still has room: {e}"));
        ips.insert(cluster_ip(&svc));
    }
    assert_eq!(
        ips,
        set(&[
            "10.96.0.2",
            "10.96.0.3",
            "10.96.0.4",
            "10.96.0.5",
            "10.96.0.6"
        ])
    );
    // No address left.
    let err = api_error(services.create(&pp, &plain_service("c-3", None)).await);
    assert_eq!(
        (err.code, err.reason.as_str()),
        (500, "InternalError"),
        "{err:?}"
    );
    assert!(
        err.message.contains("10.96.0.0/29")
            && err.message.contains("no free address")
            && err.message.contains("--service-cidr"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("delete unused Services"),
        "{}",
        err.message
    );
    // A headless Service needs no address.
    services
        .create(
            &pp,
            &service(
                "headless",
                json!({"clusterIP": "None", "ports": [{"port": 80}]}),
            ),
        )
        .await
        .unwrap();
    assert!(
        services.get_opt("c-3").await.unwrap().is_none(),
        "nothing half-written"
    );
    assert_allocations_match_services(ts.server().store(), &ts.client()).await;
    // Freeing one makes room for exactly one.
    services
        .delete("c-1", &DeleteParams::default())
        .await
        .unwrap();
    let c3 = services
        .create(&pp, &plain_service("c-3", None))
        .await
        .unwrap();
    assert!(ips.contains(&cluster_ip(&c3)));
    let err = api_error(services.create(&pp, &plain_service("c-4", None)).await);
    assert_eq!(err.code, 500, "{err:?}");
    assert_healthy(ts.server().local_addr()).await;
    ts.stop().await;
}

// ---------------------------------------------------------------------------------------
// 2. Two apiservers on one etcd.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apiservers_on_one_etcd_never_hand_out_an_ip_or_port_twice() {
    let etcd = EtcdServer::start().await;
    let store = StoreConfig::Etcd {
        endpoints: vec![etcd.client_url()],
    };
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Started at once: both bootstrap the same namespaces and `kubernetes` Service.
    let (a, b) = tokio::join!(
        ApiServer::start(common::config(d1.path(), store.clone())),
        ApiServer::start(common::config(d2.path(), store))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let apis: [Api<Service>; 2] = [
        Api::namespaced(client_at(a.local_addr()), "default"),
        Api::namespaced(client_at(b.local_addr()), "default"),
    ];
    let pp = PostParams::default();
    // The kubernetes Service's address is held once, whoever bootstrapped first.
    let err = api_error(
        apis[1]
            .create(&pp, &plain_service("k", Some("10.96.0.1")))
            .await,
    );
    assert_eq!(err.code, 422, "{err:?}");

    const N: usize = 400;
    let started = Instant::now();
    let created: Vec<Service> = futures::stream::iter(0..N)
        .map(|i| {
            let api = apis[i % 2].clone();
            async move {
                api.create(
                    &PostParams::default(),
                    &node_port_service(&format!("s-{i}"), None, None),
                )
                .await
                .unwrap_or_else(|e| panic!("creating s-{i}: {e}"))
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    eprintln!(
        "{N} NodePort Services through two apiservers on one etcd, 64 in flight: {:?}",
        started.elapsed()
    );
    let ips: HashSet<String> = created.iter().map(cluster_ip).collect();
    let ports: HashSet<i32> = created.iter().map(node_port).collect();
    assert_eq!(ips.len(), N, "a ClusterIP handed out twice");
    assert_eq!(ports.len(), N, "a NodePort handed out twice");
    // Both servers see the same Services with the same allocations.
    for api in &apis {
        let listed = api.list(&ListParams::default()).await.unwrap().items;
        assert_eq!(listed.len(), N + 1);
    }
    assert_allocations_match_services(a.store(), &client_at(a.local_addr())).await;

    // The same Service sent to both at once (same name, same requested IP and port): one
    // wins, the other is refused, and the winner keeps what it holds.
    // (Requested items none of the Services above holds.)
    let free_ips = (1..=254u8)
        .map(|last| format!("10.96.200.{last}"))
        .filter(|ip| !ips.contains(ip));
    let free_ports = (31000..32000).filter(|p| !ports.contains(p));
    for (i, (ip, port)) in free_ips.zip(free_ports).take(30).enumerate() {
        let port = i64::from(port);
        let svc = node_port_service(&format!("dup-{i}"), Some(&ip), Some(port));
        let (ra, rb) = tokio::join!(apis[0].create(&pp, &svc), apis[1].create(&pp, &svc));
        let wins = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "{ra:?} {rb:?}");
        let loser = if ra.is_ok() { rb } else { ra };
        let err = api_error(loser);
        assert_eq!(
            (err.code, err.reason.as_str()),
            (409, "AlreadyExists"),
            "{err:?}"
        );
        let err = api_error(
            apis[i % 2]
                .create(&pp, &plain_service(&format!("probe-{i}"), Some(&ip)))
                .await,
        );
        assert_eq!(err.code, 422, "dup-{i}'s {ip} is still held: {err:?}");
        let err = api_error(
            apis[i % 2]
                .create(
                    &pp,
                    &node_port_service(&format!("probe-{i}"), None, Some(port)),
                )
                .await,
        );
        assert_eq!(
            err.code, 422,
            "dup-{i}'s node port {port} is still held: {err:?}"
        );
    }
    assert_allocations_match_services(b.store(), &client_at(b.local_addr())).await;
    a.stop().await;
    b.stop().await;
    drop(etcd);
}

// ---------------------------------------------------------------------------------------
// 3. Bad input.

#[tokio::test]
async fn malformed_bodies_unknown_paths_and_kinds_are_status_errors() {
    let ts = TestServer::start(Backend::Embedded).await;
    let addr = ts.server().local_addr();
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");

    // Malformed JSON: 400 saying where.
    let r = raw(
        addr,
        "POST",
        PODS,
        Some("application/json"),
        br#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "broken""#,
    )
    .await;
    let s = r.status(400);
    assert_eq!(s["reason"], "BadRequest");
    let msg = s["message"].as_str().unwrap();
    assert!(
        msg.contains("not valid JSON") && msg.contains("line 1 column"),
        "{msg}"
    );
    // A body that is JSON but not an object.
    let s = raw(addr, "POST", PODS, Some("application/json"), b"[1, 2]")
        .await
        .status(400);
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("must be a JSON object"),
        "{s}"
    );

    // Malformed YAML: 400; well-formed YAML is accepted.
    let s = raw(
        addr,
        "POST",
        PODS,
        Some("application/yaml"),
        b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: [broken\n",
    )
    .await
    .status(400);
    assert!(
        s["message"].as_str().unwrap().contains("not valid YAML"),
        "{s}"
    );
    let r = raw(
        addr,
        "POST",
        PODS,
        Some("application/yaml"),
        b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: from-yaml\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.json());
    // A media type the server does not read: 415.
    let s = raw(addr, "POST", PODS, Some("text/plain"), b"hello")
        .await
        .status(415);
    assert_eq!(s["reason"], "UnsupportedMediaType");

    // Unknown resources: 404 Status.
    for (method, path) in [
        ("GET", "/api/v1/widgets"),
        ("POST", "/api/v1/widgets"),
        ("GET", "/api/v1/namespaces/default/widgets"),
        ("POST", "/api/v1/namespaces/default/widgets"),
        ("GET", "/apis/example.com/v1/widgets"),
        ("GET", "/api/v1/namespaces/default/pods/p/exec"),
        ("GET", "/nonsense"),
    ] {
        let body = json!({"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "w"}});
        let r = raw(
            addr,
            method,
            path,
            Some("application/json"),
            body.to_string().as_bytes(),
        )
        .await;
        let s = r.status(404);
        assert_eq!(s["reason"], "NotFound", "{method} {path}: {s}");
        assert!(
            s["message"]
                .as_str()
                .unwrap()
                .contains("the server could not find the requested resource"),
            "{method} {path}: {s}"
        );
    }

    // An unknown kind (or another kind) in the body: 400 naming both kinds.
    let s = post_json(
        addr,
        PODS,
        &json!({"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "w"}}),
    )
    .await
    .status(400);
    let msg = s["message"].as_str().unwrap();
    assert!(msg.contains("Widget") && msg.contains("Pod"), "{msg}");
    assert!(
        !msg.contains("matching collection"),
        "says the kind is not served: {msg}"
    );
    let s = post_json(
        addr,
        PODS,
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "w"}}),
    )
    .await
    .status(400);
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("send it to the services collection"),
        "{s}"
    );
    let s = post_json(
        addr,
        PODS,
        &json!({"apiVersion": "apps/v1", "kind": "Pod", "metadata": {"name": "w"}}),
    )
    .await
    .status(400);
    assert!(s["message"].as_str().unwrap().contains("apps/v1"), "{s}");

    // A field of the wrong type: 400 naming its path.
    let s = post_json(
        addr,
        PODS,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "typed"},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": "x"}]}]}}),
    )
    .await
    .status(400);
    assert_eq!(s["reason"], "BadRequest");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("spec.containers[0].ports[0].containerPort"),
        "{s}"
    );

    // Patches: an unsupported patch type is 415, a malformed patch 400, a patch that
    // makes a field the wrong type 400; the pod is unchanged. The scheduler writes the
    // pod once (this server has no nodes: PodScheduled False, Unschedulable): wait for
    // that write, so the only writes tried below are the test's own.
    eventually("the scheduler marked from-yaml", WAIT, || {
        let pods = pods.clone();
        async move {
            let p = serde_json::to_value(pods.get("from-yaml").await.map_err(|e| e.to_string())?)
                .unwrap();
            let scheduled = condition(&p, "PodScheduled").cloned().unwrap_or_default();
            if scheduled["reason"] == "Unschedulable" {
                Ok(())
            } else {
                Err(p.to_string())
            }
        }
    })
    .await;
    let before = pods.get("from-yaml").await.unwrap();
    let path = format!("{PODS}/from-yaml");
    let s = raw(
        addr,
        "PATCH",
        &path,
        Some("text/plain"),
        br#"{"metadata": {"labels": {"a": "b"}}}"#,
    )
    .await
    .status(415);
    assert_eq!(s["reason"], "UnsupportedMediaType");
    let s = raw(
        addr,
        "PATCH",
        &path,
        Some("application/merge-patch+json"),
        br#"{"metadata": {"labels": "#,
    )
    .await
    .status(400);
    assert!(
        s["message"].as_str().unwrap().contains("not valid JSON"),
        "{s}"
    );
    let s = raw(
        addr,
        "PATCH",
        &path,
        Some("application/merge-patch+json"),
        br#"{"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": "x"}]}]}}"#,
    )
    .await
    .status(400);
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("spec.containers[0].ports[0].containerPort"),
        "{s}"
    );
    // A PUT with a malformed body.
    let s = raw(addr, "PUT", &path, Some("application/json"), b"{")
        .await
        .status(400);
    assert_eq!(s["reason"], "BadRequest");
    let after = pods.get("from-yaml").await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );

    // Nothing half-written: the only pod is the valid one.
    assert_eq!(pod_names(&pods).await, set(&["from-yaml"]));
    assert_healthy(addr).await;
    ts.stop().await;
}

#[tokio::test]
async fn invalid_names_are_422_with_the_field_named() {
    let ts = TestServer::start(Backend::Embedded).await;
    let addr = ts.server().local_addr();
    let long = "a".repeat(300);
    let cases = [
        (PODS, "Pod", "Bad_Name", "a lowercase RFC 1123 subdomain"),
        (
            PODS,
            "Pod",
            long.as_str(),
            "must be no more than 253 characters",
        ),
        (SERVICES, "Service", "Bad_Name", "a DNS-1035 label"),
        (
            SERVICES,
            "Service",
            long.as_str(),
            "must be no more than 63 characters",
        ),
        (
            "/api/v1/namespaces",
            "Namespace",
            "Bad_Name",
            "RFC 1123 label",
        ),
        (
            "/api/v1/nodes",
            "Node",
            long.as_str(),
            "must be no more than 253 characters",
        ),
    ];
    for (path, kind, name, says) in cases {
        let mut body = json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}});
        match kind {
            "Pod" => body["spec"] = json!({"containers": [{"name": "c", "image": "i"}]}),
            "Service" => body["spec"] = json!({"ports": [{"port": 80}]}),
            _ => {}
        }
        let s = post_json(addr, path, &body).await.status(422);
        assert_eq!(s["reason"], "Invalid", "{s}");
        let msg = s["message"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!(
                "{kind} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\""
            )),
            "{msg}"
        );
        assert!(msg.contains(says), "{kind} {name}: {msg}");
        assert_eq!(s["details"]["kind"], kind, "{s}");
        assert_eq!(s["details"]["name"], name, "{s}");
        let causes = s["details"]["causes"].as_array().unwrap();
        assert!(
            causes
                .iter()
                .any(|c| c["field"] == "metadata.name" && c["reason"] == "FieldValueInvalid"),
            "{s}"
        );
        // The same name through kube-rs: the same error.
        if kind == "Pod" {
            let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
            let err = api_error(
                pods.create(&PostParams::default(), &pod(name, json!({}), None))
                    .await,
            );
            assert_eq!(err.code, 422);
            assert!(cause_fields(&err).contains(&"metadata.name".to_owned()));
        }
    }
    // Nothing was stored.
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    assert!(pod_names(&pods).await.is_empty());
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ts.client());
    assert!(namespaces.get_opt("Bad_Name").await.unwrap().is_none());
    let nodes: Api<Node> = Api::all(ts.client());
    assert!(
        nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_healthy(addr).await;
    ts.stop().await;
}

#[tokio::test]
async fn bodies_over_3_mib_are_413() {
    let ts = TestServer::start(Backend::Embedded).await;
    let addr = ts.server().local_addr();
    const LIMIT: usize = 3 * 1024 * 1024;
    let pod = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "i"}]}})
        .to_string()
    };
    // Just under the limit (padded with whitespace, still valid JSON): accepted.
    let mut body = pod("just-under").into_bytes();
    body.resize(LIMIT, b' ');
    let r = raw(addr, "POST", PODS, Some("application/json"), &body).await;
    assert_eq!(r.code, 201, "{}", String::from_utf8_lossy(&r.body));
    // One byte more: 413.
    let mut body = pod("too-big").into_bytes();
    body.resize(LIMIT + 1, b' ');
    let s = raw(addr, "POST", PODS, Some("application/json"), &body)
        .await
        .status(413);
    assert_eq!(s["reason"], "RequestEntityTooLarge");
    assert!(
        s["message"].as_str().unwrap().contains(&LIMIT.to_string()),
        "{s}"
    );
    // Far over it (8 MiB), on PUT and PATCH too.
    let mut body = pod("way-too-big").into_bytes();
    body.resize(8 * 1024 * 1024, b' ');
    raw(addr, "POST", PODS, Some("application/json"), &body)
        .await
        .status(413);
    let path = format!("{PODS}/just-under");
    raw(addr, "PUT", &path, Some("application/json"), &body)
        .await
        .status(413);
    raw(
        addr,
        "PATCH",
        &path,
        Some("application/merge-patch+json"),
        &body,
    )
    .await
    .status(413);
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    assert_eq!(pod_names(&pods).await, set(&["just-under"]));
    assert_healthy(addr).await;
    ts.stop().await;
}

#[tokio::test]
async fn refused_services_do_not_keep_their_cluster_ip() {
    let ts = TestServer::start(Backend::Embedded).await;
    let addr = ts.server().local_addr();
    let svc = |name: &str, ip: &str, port: Value| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"clusterIP": ip, "ports": [{"port": port}]}})
    };
    // Invalid name, invalid port, wrong-typed port, unknown kind, malformed JSON: each with
    // an explicit ClusterIP.
    post_json(addr, SERVICES, &svc("Bad_Name", "10.96.0.77", json!(80)))
        .await
        .status(422);
    post_json(addr, SERVICES, &svc("ok", "10.96.0.78", json!(70000)))
        .await
        .status(422);
    post_json(addr, SERVICES, &svc("ok", "10.96.0.79", json!("x")))
        .await
        .status(400);
    let mut widget = svc("ok", "10.96.0.80", json!(80));
    widget["kind"] = json!("Widget");
    post_json(addr, SERVICES, &widget).await.status(400);
    let mut text = svc("ok", "10.96.0.81", json!(80)).to_string();
    text.pop();
    raw(
        addr,
        "POST",
        SERVICES,
        Some("application/json"),
        text.as_bytes(),
    )
    .await
    .status(400);
    // In a namespace that does not exist.
    post_json(
        addr,
        "/api/v1/namespaces/nope/services",
        &svc("ok", "10.96.0.82", json!(80)),
    )
    .await
    .status(404);
    // A NodePort Service whose node port is out of range (after its ClusterIP was taken).
    let mut np = svc("ok", "10.96.0.83", json!(80));
    np["spec"]["type"] = json!("NodePort");
    np["spec"]["ports"][0]["nodePort"] = json!(20000);
    post_json(addr, SERVICES, &np).await.status(422);

    let services: Api<Service> = Api::namespaced(ts.client(), "default");
    let names: Vec<String> = services
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| s.metadata.name.unwrap())
        .collect();
    assert_eq!(names, vec!["kubernetes"], "nothing half-written");
    assert_allocations_match_services(ts.server().store(), &ts.client()).await;
    // Every one of those IPs can be had by a valid Service.
    for last in 77..=83 {
        let ip = format!("10.96.0.{last}");
        let r = post_json(addr, SERVICES, &svc(&format!("ok-{last}"), &ip, json!(80))).await;
        assert_eq!(r.code, 201, "{ip} is free: {}", r.json());
        assert_eq!(r.json()["spec"]["clusterIP"], ip);
    }
    assert_healthy(addr).await;
    ts.stop().await;
}

// ---------------------------------------------------------------------------------------
// 4. Endpoints follow labels, deletion and selectors.

#[tokio::test]
async fn endpoints_follow_labels_pod_deletion_and_selector_changes() {
    let ts = TestServer::start(Backend::Embedded).await;
    let client = ts.client();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    services
        .create(
            &pp,
            &service(
                "web",
                json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}),
            ),
        )
        .await
        .unwrap();
    for (name, app, ip) in [
        ("web-0", "web", "10.244.1.10"),
        ("web-1", "web", "10.244.1.11"),
        ("web-2", "web", "10.244.1.12"),
        ("other-0", "other", "10.244.1.20"),
    ] {
        pods.create(&pp, &pod(name, json!({"app": app}), Some("n1")))
            .await
            .unwrap();
        make_ready(&pods, name, ip).await;
    }
    let wait_for = |what: &'static str,
                    ready: BTreeSet<String>,
                    slice: BTreeMap<String, (bool, bool, bool)>| {
        let (endpoints, slices) = (endpoints.clone(), slices.clone());
        async move {
            eventually(what, WAIT, || {
                let (endpoints, slices) = (endpoints.clone(), slices.clone());
                let (ready, slice) = (ready.clone(), slice.clone());
                async move {
                    let (got_ready, got_not_ready) = endpoint_ips(&endpoints, "web").await?;
                    let got_slice = slice_endpoints(&slices, "web").await?;
                    if got_ready == ready && got_not_ready.is_empty() && got_slice == slice {
                        Ok(())
                    } else {
                        Err(format!(
                            "Endpoints ready {got_ready:?}, not ready {got_not_ready:?}; slices {got_slice:?}"
                        ))
                    }
                }
            })
            .await;
        }
    };
    let up = (true, true, false);
    wait_for(
        "the three web pods are endpoints",
        set(&["10.244.1.10", "10.244.1.11", "10.244.1.12"]),
        BTreeMap::from([
            ("10.244.1.10".into(), up),
            ("10.244.1.11".into(), up),
            ("10.244.1.12".into(), up),
        ]),
    )
    .await;

    // Relabelled out of the selector: removed.
    pods.patch(
        "web-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    wait_for(
        "web-0 relabelled away",
        set(&["10.244.1.11", "10.244.1.12"]),
        BTreeMap::from([("10.244.1.11".into(), up), ("10.244.1.12".into(), up)]),
    )
    .await;

    // A bound pod deleted: marked, it leaves Endpoints and is terminating in the slice.
    pods.delete("web-1", &DeleteParams::default())
        .await
        .unwrap();
    let marked = pods.get("web-1").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    wait_for(
        "the terminating web-1 leaves Endpoints, stays in the slice",
        set(&["10.244.1.12"]),
        BTreeMap::from([
            ("10.244.1.11".into(), (false, true, true)),
            ("10.244.1.12".into(), up),
        ]),
    )
    .await;
    // Deleted with grace 0: gone from the slice too.
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    pods.delete("web-1", &now).await.unwrap();
    assert!(pods.get_opt("web-1").await.unwrap().is_none());
    wait_for(
        "web-1 gone",
        set(&["10.244.1.12"]),
        BTreeMap::from([("10.244.1.12".into(), up)]),
    )
    .await;

    // The selector changed: the other pods.
    services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {"app": "other"}}})),
        )
        .await
        .unwrap();
    wait_for(
        "the new selector's pods",
        set(&["10.244.1.10", "10.244.1.20"]),
        BTreeMap::from([("10.244.1.10".into(), up), ("10.244.1.20".into(), up)]),
    )
    .await;
    ts.stop().await;
}

// ---------------------------------------------------------------------------------------
// 5. Pods: graceful deletion, binding, scheduling.

fn deletion(pod: &Pod) -> (Option<chrono::DateTime<chrono::Utc>>, Option<i64>) {
    let v = serde_json::to_value(pod).unwrap();
    let at = v
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&chrono::Utc)
        });
    let grace = v
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    (at, grace)
}

#[tokio::test]
async fn graceful_pod_deletion_binding_and_scheduling() {
    let ts = TestServer::start(Backend::Embedded).await;
    let client = ts.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    // A bound pod: deleting marks it with the default grace of 30 s and keeps it.
    pods.create(&pp, &pod("bound", json!({}), Some("n1")))
        .await
        .unwrap();
    let before = chrono::Utc::now();
    pods.delete("bound", &DeleteParams::default())
        .await
        .unwrap();
    let kept = pods.get("bound").await.unwrap();
    let (at, grace) = deletion(&kept);
    assert_eq!(grace, Some(30));
    let at = at.expect("a deletionTimestamp");
    let ahead = (at - before).num_seconds();
    assert!(
        (28..=32).contains(&ahead),
        "deletionTimestamp {at} is now + {ahead} s"
    );
    // Deleting again with gracePeriodSeconds=0 removes it.
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    pods.delete("bound", &now).await.unwrap();
    assert!(pods.get_opt("bound").await.unwrap().is_none());

    // A given grace period, and the pod's own terminationGracePeriodSeconds.
    pods.create(&pp, &pod("given", json!({}), Some("n1")))
        .await
        .unwrap();
    let five = DeleteParams {
        grace_period_seconds: Some(5),
        ..DeleteParams::default()
    };
    pods.delete("given", &five).await.unwrap();
    assert_eq!(deletion(&pods.get("given").await.unwrap()).1, Some(5));
    let mut own = pod("own", json!({}), Some("n1"));
    own.spec.as_mut().unwrap().termination_grace_period_seconds = Some(10);
    pods.create(&pp, &own).await.unwrap();
    pods.delete("own", &DeleteParams::default()).await.unwrap();
    assert_eq!(deletion(&pods.get("own").await.unwrap()).1, Some(10));
    // An unbound pod goes at once.
    let mut unbound = pod("unbound", json!({}), None);
    unbound.spec.as_mut().unwrap().scheduler_name = Some("someone-else".into());
    pods.create(&pp, &unbound).await.unwrap();
    pods.delete("unbound", &DeleteParams::default())
        .await
        .unwrap();
    assert!(pods.get_opt("unbound").await.unwrap().is_none());

    // /binding assigns a node once; a second binding is 409.
    let mut manual = pod("manual", json!({}), None);
    manual.spec.as_mut().unwrap().scheduler_name = Some("someone-else".into());
    pods.create(&pp, &manual).await.unwrap();
    let binding = |node: &str| {
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "manual"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
    };
    let status: Value = pods
        .create_subresource("binding", "manual", &pp, &binding("n1"))
        .await
        .unwrap();
    assert_eq!(status["status"], "Success", "{status}");
    let bound = serde_json::to_value(pods.get("manual").await.unwrap()).unwrap();
    assert_eq!(bound["spec"]["nodeName"], "n1");
    assert_eq!(condition_status(&bound, "PodScheduled"), "True");
    let err = api_error(
        pods.create_subresource::<_, Value>("binding", "manual", &pp, &binding("n2"))
            .await,
    );
    assert_eq!(err.code, 409, "{err:?}");
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on pods/binding \"manual\": pod manual is already assigned to node \"n1\""
    );
    let err = api_error(
        pods.create_subresource::<_, Value>("binding", "missing", &pp, &binding("n1"))
            .await,
    );
    assert_eq!(err.code, 404, "{err:?}");
    assert_eq!(
        serde_json::to_value(pods.get("manual").await.unwrap()).unwrap()["spec"]["nodeName"],
        "n1"
    );

    // The scheduler binds a pod without a node to a Ready node (not to one that is not).
    register_node(&client, "ready-node", "True").await;
    register_node(&client, "sick-node", "False").await;
    for name in ["s-0", "s-1", "s-2"] {
        pods.create(&pp, &pod(name, json!({}), None)).await.unwrap();
    }
    for name in ["s-0", "s-1", "s-2"] {
        let pods = pods.clone();
        eventually("the scheduler binds the pod", WAIT, || {
            let pods = pods.clone();
            async move {
                let p =
                    serde_json::to_value(pods.get(name).await.map_err(|e| e.to_string())?).unwrap();
                if p["spec"]["nodeName"] == "ready-node"
                    && condition_status(&p, "PodScheduled") == "True"
                {
                    Ok(())
                } else {
                    Err(format!("{}", p["spec"]["nodeName"]))
                }
            }
        })
        .await;
    }
    ts.stop().await;
}

// ---------------------------------------------------------------------------------------
// 6. Node lifecycle.

/// A node that stops renewing its Lease is taken out of service: once it is `Unknown`, its
/// pods are not ready and leave every EndpointSlice (the other node's stay); when its agent
/// reports again (the Lease, the node, the pods' status), they come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_nodes_pods_leave_their_services_until_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), StoreConfig::Embedded);
    config.controllers.node_monitor_grace = Duration::from_secs(2);
    let ts = TestServer::start_with(dir, None, config).await;
    let client = ts.client();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    for n in ["n1", "n2"] {
        register_node(&client, n, "True").await;
    }
    let renew_n1 = Renewer::start(client.clone(), "n1");
    let renew_n2 = Renewer::start(client.clone(), "n2");
    let pp = PostParams::default();
    services
        .create(
            &pp,
            &service(
                "web",
                json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}),
            ),
        )
        .await
        .unwrap();
    for (name, node, ip) in [
        ("web-1", "n1", "10.244.1.10"),
        ("web-2", "n2", "10.244.2.10"),
    ] {
        pods.create(&pp, &pod(name, json!({"app": "web"}), Some(node)))
            .await
            .unwrap();
        make_ready(&pods, name, ip).await;
    }
    let up = (true, true, false);
    let down = (false, false, false);
    let expect = |what: &'static str, want: BTreeMap<String, (bool, bool, bool)>| {
        let slices = slices.clone();
        async move {
            eventually(what, WAIT, || {
                let (slices, want) = (slices.clone(), want.clone());
                async move {
                    let got = slice_endpoints(&slices, "web").await?;
                    if got == want {
                        Ok(())
                    } else {
                        Err(format!("{got:?}"))
                    }
                }
            })
            .await;
        }
    };
    expect(
        "both pods serve",
        BTreeMap::from([("10.244.1.10".into(), up), ("10.244.2.10".into(), up)]),
    )
    .await;

    // n2 goes silent: after the grace its pod is no endpoint any more; n1's stays.
    renew_n2.stop().await;
    let stopped = Instant::now();
    expect(
        "only n1's pod serves",
        BTreeMap::from([("10.244.1.10".into(), up), ("10.244.2.10".into(), down)]),
    )
    .await;
    eprintln!(
        "n2's pod left the Service {:?} after n2's last Lease renewal (grace 2 s)",
        stopped.elapsed()
    );
    let p = serde_json::to_value(pods.get("web-2").await.unwrap()).unwrap();
    assert_eq!(condition_status(&p, "Ready"), "False", "{p}");

    // Back: Lease, node and pod status reported again.
    let renew_n2 = Renewer::start(client.clone(), "n2");
    post_node_ready(&client, "n2", "True").await;
    make_ready(&pods, "web-2", "10.244.2.10").await;
    expect(
        "both pods serve again",
        BTreeMap::from([("10.244.1.10".into(), up), ("10.244.2.10".into(), up)]),
    )
    .await;
    renew_n1.stop().await;
    renew_n2.stop().await;
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_lease_stops_goes_unknown_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), StoreConfig::Embedded);
    config.controllers.node_monitor_grace = Duration::from_secs(2);
    let ts = TestServer::start_with(dir, None, config).await;
    let client = ts.client();
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let get_node = || {
        let nodes = nodes.clone();
        async move { serde_json::to_value(nodes.get("n1").await.unwrap()).unwrap() }
    };

    register_node(&client, "n1", "True").await;
    // Renewed past the grace: still Ready.
    let renewer = Renewer::start(client.clone(), "n1");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n1 = get_node().await;
    assert_eq!(condition_status(&n1, "Ready"), "True", "{n1}");
    assert!(!has_unreachable_taint(&n1), "{n1}");

    // The Lease stops: Unknown and tainted after the grace, not before.
    renewer.stop().await;
    let stopped = Instant::now();
    eventually("n1 Unknown and tainted", WAIT, || async move {
        let n = get_node().await;
        if condition_status(&n, "Ready") == "Unknown" && has_unreachable_taint(&n) {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await;
    let took = stopped.elapsed();
    eprintln!("node marked Unknown {took:?} after its last Lease renewal (grace 2 s)");
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    let n1 = get_node().await;
    let ready = condition(&n1, "Ready").unwrap();
    assert_eq!(ready["reason"], "NodeStatusUnknown", "{n1}");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    // An unreachable node gets no pods.
    pods.create(&PostParams::default(), &pod("waiting", json!({}), None))
        .await
        .unwrap();
    eventually("the pod is unschedulable", WAIT, || {
        let pods = pods.clone();
        async move {
            let p = serde_json::to_value(pods.get("waiting").await.map_err(|e| e.to_string())?)
                .unwrap();
            let scheduled = condition(&p, "PodScheduled").cloned().unwrap_or_default();
            if scheduled["status"] == "False" && scheduled["reason"] == "Unschedulable" {
                assert_eq!(p["spec"]["nodeName"], Value::Null);
                Ok(())
            } else {
                Err(p.to_string())
            }
        }
    })
    .await;

    // Back: the Lease is renewed and Ready=True posted.
    let renewer = Renewer::start(client.clone(), "n1");
    post_node_ready(&client, "n1", "True").await;
    eventually("n1 Ready and untainted", WAIT, || async move {
        let n = get_node().await;
        if condition_status(&n, "Ready") == "True" && !has_unreachable_taint(&n) {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await;
    eventually("the waiting pod is bound to n1", WAIT, || {
        let pods = pods.clone();
        async move {
            let p = pods.get("waiting").await.map_err(|e| e.to_string())?;
            match p.spec.unwrap().node_name.as_deref() {
                Some("n1") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    // Still Ready a grace period later, while the Lease is renewed.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let n1 = get_node().await;
    assert_eq!(condition_status(&n1, "Ready"), "True", "{n1}");
    assert!(!has_unreachable_taint(&n1), "{n1}");
    renewer.stop().await;
    ts.stop().await;
}

// ---------------------------------------------------------------------------------------
// 7. Random bad input: never a server error, never a dropped connection.

/// Every JSON pointer in `v` (objects' members and arrays' elements).
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

/// `base` with one part replaced, removed or added, chosen by `rng`.
fn mutate(base: &Value, rng: &mut impl rand::Rng) -> Value {
    let palette = [
        json!(null),
        json!(true),
        json!(-1),
        json!(0),
        json!(65536),
        json!(1.5),
        json!(1e300),
        json!(i64::MAX),
        json!(""),
        json!("x"),
        json!("Bad_Name"),
        json!("None"),
        json!("10.96.0.1"),
        json!("255.255.255.255"),
        json!("::1"),
        json!("a".repeat(300)),
        json!([]),
        json!([null]),
        json!([1, "a"]),
        json!({}),
        json!({"a": {"b": [1]}}),
    ];
    let mut v = base.clone();
    let mut ptrs = Vec::new();
    pointers(&v, String::new(), &mut ptrs);
    for _ in 0..rng.random_range(1..=3) {
        let p = &ptrs[rng.random_range(0..ptrs.len())];
        let (parent, last) = p.rsplit_once('/').unwrap();
        let Some(target) = v.pointer_mut(parent) else {
            continue;
        };
        match (rng.random_range(0..4), target) {
            (0, Value::Object(m)) => {
                m.remove(last);
            }
            (1, Value::Object(m)) => {
                m.insert(
                    "unexpected".into(),
                    palette[rng.random_range(0..palette.len())].clone(),
                );
            }
            (_, t) => {
                if let Some(slot) = t.pointer_mut(&format!("/{last}")) {
                    *slot = palette[rng.random_range(0..palette.len())].clone();
                }
            }
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomly_broken_objects_never_get_a_server_error() {
    use rand::{Rng, SeedableRng};
    let iterations: usize = std::env::var("PODNET_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let seed: u64 = std::env::var("PODNET_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_260_101);
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), StoreConfig::Embedded);
    // A short grace, to see the node lifecycle controller still working at the end.
    config.controllers.node_monitor_grace = Duration::from_secs(2);
    let ts = TestServer::start_with(dir, None, config).await;
    let addr = ts.server().local_addr();
    let client = ts.client();
    register_node(&client, "n1", "True").await;
    let renewer = Renewer::start(client.clone(), "n1");
    let bases: Vec<(&str, &str, Value)> = vec![
        (
            PODS,
            "pod",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "web"},
                "annotations": {"a": "b"}, "finalizers": []},
                "spec": {"nodeName": "n1", "nodeSelector": {"k": "v"}, "terminationGracePeriodSeconds": 5,
                    "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                        "env": [{"name": "A", "value": "1"}], "resources": {"limits": {"cpu": "1"}}}]},
                "status": {"phase": "Running", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}],
                    "conditions": [{"type": "Ready", "status": "True"}]}}),
        ),
        (
            SERVICES,
            "service",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                "spec": {"type": "NodePort", "selector": {"app": "web"}, "externalTrafficPolicy": "Local",
                    "sessionAffinity": "ClientIP", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                    "ports": [{"name": "web", "port": 80, "targetPort": "http", "protocol": "TCP"},
                              {"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"}]}}),
        ),
        (
            "/api/v1/nodes",
            "node",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n", "labels": {"a": "b"}},
                "spec": {"unschedulable": false,
                    "taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]},
                "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.1"}],
                    "conditions": [{"type": "Ready", "status": "True"}]}}),
        ),
        (
            "/api/v1/namespaces",
            "namespace",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns", "labels": {"a": "b"}},
                "spec": {"finalizers": ["kubernetes"]}}),
        ),
        (
            "/api/v1/namespaces/default/endpoints",
            "endpoints",
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e"},
                "subsets": [{"addresses": [{"ip": "10.244.0.5", "nodeName": "n1"}],
                    "ports": [{"name": "web", "port": 80, "protocol": "TCP"}]}]}),
        ),
        (
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            "slice",
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "es",
                    "labels": {"kubernetes.io/service-name": "s"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": true}, "nodeName": "n1"}],
                "ports": [{"name": "web", "port": 80, "protocol": "TCP"}]}),
        ),
        (
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            "lease",
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
                "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40, "renewTime": micro_now()}}),
        ),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut codes: BTreeMap<u16, usize> = BTreeMap::new();
    let started = Instant::now();
    for i in 0..iterations {
        let (collection, prefix, base) = &bases[i % bases.len()];
        // Named uniquely unless the mutation changed the name.
        let mut base = base.clone();
        base["metadata"]["name"] = json!(format!("{prefix}-{i}"));
        let body = mutate(&base, &mut rng);
        let name = body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let r = post_json(addr, collection, &body).await;
        assert!(
            r.code < 500,
            "POST {collection} {body}: {} {}",
            r.code,
            String::from_utf8_lossy(&r.body)
        );
        *codes.entry(r.code).or_default() += 1;
        // Write the valid object, then PUT and merge-PATCH the broken one over it.
        let valid = post_json(addr, collection, &{
            let mut v = base.clone();
            v["metadata"]["name"] = json!(format!("{prefix}-{i}-ok"));
            v
        })
        .await;
        assert!(
            valid.code == 201,
            "the unbroken {prefix}: {} {}",
            valid.code,
            String::from_utf8_lossy(&valid.body)
        );
        let path = format!("{collection}/{prefix}-{i}-ok");
        let mut put = body.clone();
        if !name.is_empty() {
            put["metadata"]["name"] = json!(format!("{prefix}-{i}-ok"));
        }
        for (method, ct, payload) in [
            ("PUT", "application/json", put.to_string()),
            ("PATCH", "application/merge-patch+json", put.to_string()),
            ("PATCH", "application/strategic-merge-patch+json", put.to_string()),
            (
                "PATCH",
                "application/json-patch+json",
                json!([{"op": "replace", "path": "/spec", "value": put.get("spec").cloned().unwrap_or(Value::Null)}])
                    .to_string(),
            ),
        ] {
            for target in [path.clone(), format!("{path}/status")] {
                let r = raw(addr, method, &target, Some(ct), payload.as_bytes()).await;
                assert!(
                    r.code < 500,
                    "{method} {target} ({ct}) {payload}: {} {}",
                    r.code,
                    String::from_utf8_lossy(&r.body)
                );
                *codes.entry(r.code).or_default() += 1;
            }
        }
        // A delete with broken options.
        let (query, options) = [
            ("?gracePeriodSeconds=x", String::new()),
            ("?gracePeriodSeconds=-5", String::new()),
            ("", json!({"gracePeriodSeconds": "x"}).to_string()),
            ("", json!({"preconditions": {"uid": 5}}).to_string()),
            ("", json!({"preconditions": {"uid": "not-it"}}).to_string()),
            ("", "{".to_owned()),
            ("", body.to_string()),
        ][rng.random_range(0..7)]
        .clone();
        let target = format!("{path}{query}");
        let r = raw(
            addr,
            "DELETE",
            &target,
            Some("application/json"),
            options.as_bytes(),
        )
        .await;
        assert!(
            r.code < 500,
            "DELETE {target} {options}: {} {}",
            r.code,
            String::from_utf8_lossy(&r.body)
        );
        *codes.entry(r.code).or_default() += 1;
    }
    eprintln!(
        "{iterations} broken objects (seed {seed}) in {:?}; answers by code: {codes:?}",
        started.elapsed()
    );
    assert_healthy(addr).await;

    // The controllers survived what they saw: a new pod is scheduled and becomes an
    // endpoint of a new Service, a node without heartbeats goes Unknown, a namespace is
    // deleted.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    services
        .create(
            &pp,
            &service(
                "after",
                json!({"selector": {"app": "after"}, "ports": [{"port": 80, "targetPort": 8080}]}),
            ),
        )
        .await
        .unwrap();
    pods.create(&pp, &pod("after-0", json!({"app": "after"}), None))
        .await
        .unwrap();
    eventually("the scheduler still binds pods", WAIT, || {
        let pods = pods.clone();
        async move {
            let p = pods.get("after-0").await.map_err(|e| e.to_string())?;
            match p.spec.unwrap().node_name {
                Some(_) => Ok(()),
                None => Err(format!("{:?}", p.status)),
            }
        }
    })
    .await;
    make_ready(&pods, "after-0", "10.244.0.99").await;
    eventually("the endpoints controller still works", WAIT, || {
        let endpoints = endpoints.clone();
        async move {
            let (ready, _) = endpoint_ips(&endpoints, "after").await?;
            (ready == set(&["10.244.0.99"]))
                .then_some(())
                .ok_or(format!("{ready:?}"))
        }
    })
    .await;
    let nodes: Api<Node> = Api::all(client.clone());
    register_node(&client, "silent", "True").await;
    eventually("the node lifecycle controller still works", WAIT, || {
        let nodes = nodes.clone();
        async move {
            let n = serde_json::to_value(nodes.get("silent").await.map_err(|e| e.to_string())?)
                .unwrap();
            (condition_status(&n, "Ready") == "Unknown")
                .then_some(())
                .ok_or(n.to_string())
        }
    })
    .await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "after"}})).unwrap(),
        )
        .await
        .unwrap();
    namespaces
        .delete("after", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the namespace controller still works", WAIT, || {
        let namespaces = namespaces.clone();
        async move {
            match namespaces
                .get_opt("after")
                .await
                .map_err(|e| e.to_string())?
            {
                None => Ok(()),
                Some(ns) => Err(format!("{:?}", ns.status)),
            }
        }
    })
    .await;
    renewer.stop().await;
    ts.stop().await;
}
