//! The picture's model: the cluster as `podnet ui` draws it and `/api/topology` returns it.
//!
//! It is made from the API objects alone (Nodes, Pods, Services, EndpointSlices), as a pure
//! function, so that the page, `podnet lab graph` and the tests all see one and the same
//! thing, and so that it can be tested without a cluster. Everything is sorted by name: the
//! same cluster always gives the same picture.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use podnet_overlay::annotations;
use serde::Serialize;

/// The label an EndpointSlice names its Service with.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The objects a topology is made of.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
}

/// The cluster as drawn.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Topology {
    pub nodes: Vec<NodeBox>,
    /// The overlay between nodes: one link per pair of nodes with a pod subnet (flannel's
    /// full mesh).
    pub links: Vec<OverlayLink>,
    pub pods: Vec<PodBox>,
    pub services: Vec<ServiceBox>,
    /// Every namespace that has a pod or a Service, for the page's filter.
    pub namespaces: Vec<String>,
}

/// A node: its address, the pod subnet it owns and the overlay backend it published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeBox {
    pub name: String,
    pub ip: Option<String>,
    pub pod_cidr: Option<String>,
    pub backend: Option<String>,
    pub ready: bool,
}

/// How two nodes reach each other's pod subnets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverlayLink {
    pub from: String,
    pub to: String,
    /// The backend both ends run; none while an end has not published one (or they differ).
    pub backend: Option<String>,
    /// For people: `vxlan VNI 1`, `host-gw`, `udp`, or why the link is not up.
    pub label: String,
}

/// A pod on its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodBox {
    pub namespace: String,
    pub name: String,
    /// None while it is not scheduled.
    pub node: Option<String>,
    pub ip: Option<String>,
    /// kubectl's STATUS column, simplified: the phase, or Terminating.
    pub status: String,
    pub ready: bool,
    /// The container ports it declares (`8080/TCP`), for tracing to it.
    pub ports: Vec<String>,
}

impl PodBox {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A Service with its ports and the endpoints behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceBox {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    /// None for a headless Service (or an ExternalName).
    pub cluster_ip: Option<String>,
    pub ports: Vec<ServicePort>,
    pub endpoints: Vec<Endpoint>,
}

impl ServiceBox {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: i32,
    pub protocol: String,
    pub target_port: Option<String>,
    pub node_port: Option<i32>,
}

impl ServicePort {
    /// `80/TCP→8080`, with `:30080` for a NodePort.
    pub fn label(&self) -> String {
        let mut s = format!("{}/{}", self.port, self.protocol);
        if let Some(t) = &self.target_port {
            s.push_str(&format!("→{t}"));
        }
        if let Some(n) = self.node_port {
            s.push_str(&format!(" node:{n}"));
        }
        s
    }
}

/// One endpoint of a Service, from its EndpointSlices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub ip: String,
    pub ready: bool,
    /// `namespace/name` of the pod it is, when the slice says.
    pub pod: Option<String>,
    pub node: Option<String>,
}

impl Topology {
    /// The topology of `objects`. Objects without a name are left out.
    pub fn from_objects(objects: &Objects) -> Topology {
        let mut nodes: Vec<NodeBox> = objects.nodes.iter().filter_map(node_box).collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let links = overlay_links(&nodes, &objects.nodes);
        let mut pods: Vec<PodBox> = objects.pods.iter().filter_map(pod_box).collect();
        pods.sort_by(|a, b| {
            (&a.node, &a.namespace, &a.name).cmp(&(&b.node, &b.namespace, &b.name))
        });
        let mut services: Vec<ServiceBox> = objects
            .services
            .iter()
            .filter_map(|s| service_box(s, &objects.slices))
            .collect();
        services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let namespaces: BTreeSet<String> = pods
            .iter()
            .map(|p| p.namespace.clone())
            .chain(services.iter().map(|s| s.namespace.clone()))
            .collect();
        Topology {
            nodes,
            links,
            pods,
            services,
            namespaces: namespaces.into_iter().collect(),
        }
    }

    /// Only the pods and Services of `namespace` (all nodes and links stay).
    pub fn in_namespace(&self, namespace: &str) -> Topology {
        Topology {
            pods: self
                .pods
                .iter()
                .filter(|p| p.namespace == namespace)
                .cloned()
                .collect(),
            services: self
                .services
                .iter()
                .filter(|s| s.namespace == namespace)
                .cloned()
                .collect(),
            ..self.clone()
        }
    }

    /// The pods of node `node` (None: the unscheduled ones), in order.
    pub fn pods_on<'a>(&'a self, node: Option<&'a str>) -> impl Iterator<Item = &'a PodBox> {
        self.pods.iter().filter(move |p| p.node.as_deref() == node)
    }
}

fn annotation<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn node_box(node: &Node) -> Option<NodeBox> {
    let status = node.status.as_ref();
    let ip = status
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address.clone());
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Some(NodeBox {
        name: node.metadata.name.clone()?,
        ip,
        pod_cidr: node.spec.as_ref().and_then(|s| s.pod_cidr.clone()),
        backend: annotation(node, annotations::BACKEND_TYPE).map(str::to_string),
        ready,
    })
}

/// What the link between two nodes running `backend` is, for people.
fn link_label(backend: &str, data: Option<&str>) -> String {
    let vni = data
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .and_then(|v| v["VNI"].as_u64());
    match (backend, vni) {
        ("vxlan", Some(vni)) => format!("vxlan VNI {vni}"),
        (other, _) => other.to_string(),
    }
}

fn overlay_links(boxes: &[NodeBox], nodes: &[Node]) -> Vec<OverlayLink> {
    let data = |name: &str| {
        nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .and_then(|n| annotation(n, annotations::BACKEND_DATA))
    };
    let with_subnet: Vec<&NodeBox> = boxes.iter().filter(|n| n.pod_cidr.is_some()).collect();
    let mut links = Vec::new();
    for (i, a) in with_subnet.iter().enumerate() {
        for b in &with_subnet[i + 1..] {
            let backend = match (&a.backend, &b.backend) {
                (Some(x), Some(y)) if x == y => Some(x.clone()),
                _ => None,
            };
            let label = match (&backend, &a.backend, &b.backend) {
                (Some(k), _, _) => link_label(k, data(&a.name)),
                (None, Some(x), Some(y)) => format!("backends differ: {x} / {y}"),
                _ => "no backend published yet".to_string(),
            };
            links.push(OverlayLink {
                from: a.name.clone(),
                to: b.name.clone(),
                backend,
                label,
            });
        }
    }
    links
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ports(pod: &Pod) -> Vec<String> {
    let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
    containers
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            format!("{}/{proto}", p.container_port)
        })
        .collect()
}

fn pod_box(pod: &Pod) -> Option<PodBox> {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.clone());
    let status_text = if pod.metadata.deletion_timestamp.is_some() {
        "Terminating".to_string()
    } else {
        phase.unwrap_or_else(|| "Pending".to_string())
    };
    Some(PodBox {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone()?,
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        ip: status
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty()),
        status: status_text,
        ready: pod_ready(pod),
        ports: pod_ports(pod),
    })
}

fn service_ports(service: &Service) -> Vec<ServicePort> {
    let ports = service.spec.iter().flat_map(|s| s.ports.iter().flatten());
    ports
        .map(|p| ServicePort {
            name: p.name.clone(),
            port: p.port,
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
            target_port: p.target_port.as_ref().map(|t| match t {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => i.to_string(),
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s.clone(),
            }),
            node_port: p.node_port,
        })
        .collect()
}

/// The endpoints of Service `namespace/name` in `slices`, each address once.
fn endpoints(namespace: &str, name: &str, slices: &[EndpointSlice]) -> Vec<Endpoint> {
    let ours = slices.iter().filter(|s| {
        s.metadata.namespace.as_deref() == Some(namespace)
            && s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                == Some(&name.to_string())
    });
    let mut out: Vec<Endpoint> = Vec::new();
    for e in ours.flat_map(|s| s.endpoints.iter()) {
        let Some(ip) = e.addresses.first() else {
            continue;
        };
        if out.iter().any(|o| &o.ip == ip) {
            continue;
        }
        // Per the EndpointSlice API, an unknown readiness is ready.
        let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
        let pod = e
            .target_ref
            .as_ref()
            .filter(|t| t.kind.as_deref() == Some("Pod"))
            .and_then(|t| {
                let ns = t.namespace.as_deref().unwrap_or(namespace);
                Some(format!("{ns}/{}", t.name.as_deref()?))
            });
        out.push(Endpoint {
            ip: ip.clone(),
            ready,
            pod,
            node: e.node_name.clone(),
        });
    }
    out.sort_by(|a, b| (&a.pod, &a.ip).cmp(&(&b.pod, &b.ip)));
    out
}

fn service_box(service: &Service, slices: &[EndpointSlice]) -> Option<ServiceBox> {
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let name = service.metadata.name.clone()?;
    let spec = service.spec.as_ref();
    let cluster_ip = spec
        .and_then(|s| s.cluster_ip.clone())
        .filter(|ip| !ip.is_empty() && ip != "None");
    Some(ServiceBox {
        type_: spec
            .and_then(|s| s.type_.clone())
            .unwrap_or_else(|| "ClusterIP".to_string()),
        cluster_ip,
        ports: service_ports(service),
        endpoints: endpoints(&namespace, &name, slices),
        namespace,
        name,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    pub(crate) fn node(name: &str, ip: &str, cidr: Option<&str>, backend: Option<&str>) -> Node {
        let mut annotations = serde_json::Map::new();
        if let Some(b) = backend {
            annotations.insert(annotations::BACKEND_TYPE.into(), json!(b));
            annotations.insert(
                annotations::BACKEND_DATA.into(),
                json!("{\"VNI\":1,\"VtepMAC\":\"aa:bb:cc:dd:ee:ff\"}"),
            );
        }
        from(json!({
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
    }

    pub(crate) fn pod(
        ns: &str,
        name: &str,
        node: Option<&str>,
        ip: Option<&str>,
        ready: bool,
    ) -> Pod {
        from(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
    }

    pub(crate) fn service(ns: &str, name: &str, ip: &str, node_port: Option<i32>) -> Service {
        from(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"type": if node_port.is_some() {"NodePort"} else {"ClusterIP"}, "clusterIP": ip,
                     "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": node_port}]}
        }))
    }

    pub(crate) fn slice(ns: &str, service: &str, endpoints: serde_json::Value) -> EndpointSlice {
        from(json!({
            "metadata": {"name": format!("{service}-abc"), "namespace": ns,
                         "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4",
            "endpoints": endpoints
        }))
    }

    /// Two nodes running vxlan, three pods (one not ready, one not scheduled), a Service
    /// with two endpoints.
    pub(crate) fn sample() -> Objects {
        Objects {
            nodes: vec![
                node("n2", "172.31.88.12", Some("10.244.2.0/24"), Some("vxlan")),
                node("n1", "172.31.88.11", Some("10.244.1.0/24"), Some("vxlan")),
            ],
            pods: vec![
                pod("default", "web-b", Some("n2"), Some("10.244.2.2"), false),
                pod("default", "web-a", Some("n1"), Some("10.244.1.2"), true),
                pod("shop", "cart", None, None, false),
            ],
            services: vec![service("default", "web", "10.96.0.20", Some(30080))],
            slices: vec![slice(
                "default",
                "web",
                json!([
                    {"addresses": ["10.244.2.2"], "conditions": {"ready": false}, "nodeName": "n2",
                     "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-b"}},
                    {"addresses": ["10.244.1.2"], "conditions": {"ready": true}, "nodeName": "n1",
                     "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-a"}},
                    {"addresses": ["10.244.1.2"], "nodeName": "n1"}
                ]),
            )],
        }
    }

    #[test]
    fn nodes_pods_and_services_come_sorted_with_what_the_picture_shows() {
        let t = Topology::from_objects(&sample());
        let names: Vec<&str> = t.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["n1", "n2"]);
        assert_eq!(t.nodes[0].ip.as_deref(), Some("172.31.88.11"));
        assert_eq!(t.nodes[0].pod_cidr.as_deref(), Some("10.244.1.0/24"));
        assert_eq!(t.nodes[0].backend.as_deref(), Some("vxlan"));
        let pods: Vec<String> = t.pods.iter().map(PodBox::key).collect();
        // The unscheduled pod first (no node sorts first), then by node.
        assert_eq!(pods, ["shop/cart", "default/web-a", "default/web-b"]);
        assert!(t.pods[1].ready && !t.pods[2].ready);
        assert_eq!(t.pods[1].ports, ["8080/TCP"]);
        assert_eq!(t.pods[0].ip, None);
        assert_eq!(t.namespaces, ["default", "shop"]);
        assert_eq!(t.pods_on(Some("n1")).count(), 1);
        assert_eq!(t.pods_on(None).count(), 1);
    }

    #[test]
    fn a_service_has_its_ports_and_each_endpoint_once_with_its_readiness() {
        let t = Topology::from_objects(&sample());
        let web = &t.services[0];
        assert_eq!(web.cluster_ip.as_deref(), Some("10.96.0.20"));
        assert_eq!(web.type_, "NodePort");
        assert_eq!(web.ports[0].label(), "80/TCP→8080 node:30080");
        let eps: Vec<(Option<&str>, &str, bool)> = web
            .endpoints
            .iter()
            .map(|e| (e.pod.as_deref(), e.ip.as_str(), e.ready))
            .collect();
        assert_eq!(
            eps,
            [
                (Some("default/web-a"), "10.244.1.2", true),
                (Some("default/web-b"), "10.244.2.2", false)
            ]
        );
    }

    #[test]
    fn slices_of_other_services_or_namespaces_are_not_a_services_endpoints() {
        let mut objects = sample();
        objects
            .slices
            .push(slice("shop", "web", json!([{"addresses": ["10.244.9.9"]}])));
        objects.slices.push(slice(
            "default",
            "other",
            json!([{"addresses": ["10.244.8.8"]}]),
        ));
        let t = Topology::from_objects(&objects);
        assert_eq!(t.services[0].endpoints.len(), 2);
    }

    #[test]
    fn nodes_are_linked_pairwise_by_the_backend_they_both_published() {
        let mut objects = sample();
        objects
            .nodes
            .push(node("n3", "172.31.88.13", Some("10.244.3.0/24"), None));
        objects
            .nodes
            .push(node("n4", "172.31.88.14", None, Some("vxlan")));
        let t = Topology::from_objects(&objects);
        let links: Vec<(&str, &str, Option<&str>, &str)> = t
            .links
            .iter()
            .map(|l| {
                (
                    l.from.as_str(),
                    l.to.as_str(),
                    l.backend.as_deref(),
                    l.label.as_str(),
                )
            })
            .collect();
        // n4 has no pod subnet yet: no links.
        assert_eq!(
            links,
            [
                ("n1", "n2", Some("vxlan"), "vxlan VNI 1"),
                ("n1", "n3", None, "no backend published yet"),
                ("n2", "n3", None, "no backend published yet"),
            ]
        );
    }

    #[test]
    fn a_namespace_keeps_every_node_and_only_its_pods_and_services() {
        let t = Topology::from_objects(&sample()).in_namespace("shop");
        assert_eq!(t.nodes.len(), 2);
        assert_eq!(t.links.len(), 1);
        assert_eq!(t.pods.len(), 1);
        assert!(t.services.is_empty());
        assert_eq!(t.namespaces, ["default", "shop"]);
    }

    #[test]
    fn terminating_headless_and_nameless_objects() {
        let mut objects = Objects::default();
        let mut p = pod("default", "gone", Some("n1"), Some("10.244.1.5"), true);
        p.metadata.deletion_timestamp = Some(from(json!("2026-01-01T00:00:00Z")));
        objects.pods.push(p);
        objects.pods.push(from(json!({"metadata": {}})));
        objects
            .services
            .push(service("default", "headless", "None", None));
        let t = Topology::from_objects(&objects);
        assert_eq!(t.pods.len(), 1);
        assert_eq!(t.pods[0].status, "Terminating");
        assert_eq!(t.services[0].cluster_ip, None);
    }
}
