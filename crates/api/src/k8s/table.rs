//! Server-side printing: the `meta.k8s.io/v1` `Table` that `kubectl get` asks for, with the
//! columns and cell values Kubernetes' own printers produce
//! (`pkg/printers/internalversion/printers.go`), and the rendering kubectl gives such a table
//! (`k8s.io/cli-runtime/pkg/printers/tableprinter.go` over a tab writer).
//!
//! Like kube-apiserver, [`to_table`] always fills every column, wide ones included; the
//! client hides the columns with a priority above zero unless asked for wide output.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Map, Value, json};

use super::kinds;

/// One column of a table, as `metav1.TableColumnDefinition`.
struct Column {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    description: &'static str,
    priority: i64,
}

const fn col(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 0,
    }
}

/// A column only shown by `-o wide`.
const fn wide(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 1,
    }
}

const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, \
although some resources may allow a client to request the generation of an appropriate name \
automatically. Name is primarily intended for creation idempotence and configuration definition. \
Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object \
was created. It is not guaranteed to be set in happens-before order across separate operations. \
Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by \
the system. Read-only. Null for lists. More info: \
https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

const NAME: Column = Column {
    name: "Name",
    ty: "string",
    format: "name",
    description: NAME_DOC,
    priority: 0,
};
const AGE: Column = col("Age", "string", AGE_DOC);

const POD_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Ready",
        "string",
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    col(
        "Status",
        "string",
        "The aggregate status of the containers in this pod.",
    ),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last \
         container in this pod has restarted.",
    ),
    AGE,
    wide(
        "IP",
        "string",
        "podIP address allocated to the pod. Routable at least within the cluster. Empty if not \
         yet allocated.",
    ),
    wide(
        "Node",
        "string",
        "NodeName indicates in which node this pod is scheduled.",
    ),
    wide(
        "Nominated Node",
        "string",
        "nominatedNodeName is set only when this pod preempts other pods on the node, but it \
         cannot be scheduled right away as preemption victims receive their graceful termination \
         periods.",
    ),
    wide(
        "Readiness Gates",
        "string",
        "If specified, all readiness gates will be evaluated for pod readiness.",
    ),
];

const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        "type determines how the Service is exposed. Defaults to ClusterIP.",
    ),
    col(
        "Cluster-IP",
        "string",
        "clusterIP is the IP address of the service and is usually assigned randomly.",
    ),
    col(
        "External-IP",
        "string",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept \
         traffic for this service.",
    ),
    col(
        "Port(s)",
        "string",
        "The list of ports that are exposed by this service.",
    ),
    AGE,
    wide(
        "Selector",
        "string",
        "Route service traffic to pods with label keys and values matching this selector.",
    ),
];

const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Endpoints",
        "string",
        "The set of all endpoints is the union of all subsets.",
    ),
    AGE,
];

const NODE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", "Kubelet Version reported by the node."),
    wide(
        "Internal-IP",
        "string",
        "List of addresses reachable to the node.",
    ),
    wide(
        "External-IP",
        "string",
        "List of addresses reachable to the node.",
    ),
    wide(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    ),
    wide(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. \
         containerd://1.4.2).",
    ),
];

const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the namespace"),
    AGE,
];

const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "AddressType",
        "string",
        "addressType specifies the type of address carried by this EndpointSlice.",
    ),
    col(
        "Ports",
        "string",
        "ports specifies the list of network ports exposed by each endpoint in this slice.",
    ),
    col(
        "Endpoints",
        "string",
        "endpoints is a list of unique endpoints in this slice.",
    ),
    AGE,
];

const LEASE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Holder",
        "string",
        "holderIdentity contains the identity of the holder of a current lease.",
    ),
    AGE,
];

const EVENT_COLUMNS: &[Column] = &[
    col(
        "Last Seen",
        "string",
        "The time at which the most recent occurrence of this event was recorded.",
    ),
    col(
        "Type",
        "string",
        "Type of this event (Normal, Warning), new types could be added in the future",
    ),
    col(
        "Reason",
        "string",
        "This should be a short, machine understandable string that gives the reason for the \
         transition into the object's current status.",
    ),
    col("Object", "string", "The object that this event is about."),
    wide(
        "Subobject",
        "string",
        "If referring to a piece of an object instead of an entire object, this string should \
         contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
    ),
    wide(
        "Source",
        "string",
        "The component reporting this event. Should be a short machine understandable string.",
    ),
    col(
        "Message",
        "string",
        "A human-readable description of the status of this operation.",
    ),
    wide(
        "First Seen",
        "string",
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    ),
    wide(
        "Count",
        "string",
        "The number of times this event has occurred.",
    ),
    Column {
        name: "Name",
        ty: "string",
        format: "name",
        description: NAME_DOC,
        priority: 1,
    },
];

const NETWORK_POLICY_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Pod-Selector",
        "string",
        "podSelector selects the pods to which this NetworkPolicy object applies. The array of \
         rules is applied to any pods selected by this field. An empty selector matches all pods \
         in the policy's namespace. Multiple network policies can select the same set of pods. \
         In this case, the ingress rules for each are combined additively. This field is \
         optional. If it is not specified, it defaults to an empty selector.",
    ),
    AGE,
];

/// A custom resource's table: NAME, then the CRD's `additionalPrinterColumns` (described as
/// kube-apiserver describes a column without a description of its own), AGE as a `date`.
const CLUSTER_NETWORK_POLICY_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Tier",
        "string",
        "Custom resource definition column (in JSONPath format): .spec.tier",
    ),
    col(
        "Priority",
        "string",
        "Custom resource definition column (in JSONPath format): .spec.priority",
    ),
    Column {
        name: "Age",
        ty: "date",
        format: "",
        description: "Custom resource definition column (in JSONPath format): .metadata.creationTimestamp",
        priority: 0,
    },
];

const DEFAULT_COLUMNS: &[Column] = &[NAME, AGE];

fn columns_for(kind: &str) -> &'static [Column] {
    match kind {
        "Pod" => POD_COLUMNS,
        "Service" => SERVICE_COLUMNS,
        "Endpoints" => ENDPOINTS_COLUMNS,
        "Node" => NODE_COLUMNS,
        "Namespace" => NAMESPACE_COLUMNS,
        "EndpointSlice" => ENDPOINT_SLICE_COLUMNS,
        "Lease" => LEASE_COLUMNS,
        "Event" => EVENT_COLUMNS,
        "NetworkPolicy" => NETWORK_POLICY_COLUMNS,
        "ClusterNetworkPolicy" => CLUSTER_NETWORK_POLICY_COLUMNS,
        _ => DEFAULT_COLUMNS,
    }
}

/// Builds a `meta.k8s.io/v1` Table (as JSON) for `items`, all of kind `kind`.
///
/// Known kinds ("Pod", "Service", "Endpoints", "Node", "Namespace", "EndpointSlice", "Lease",
/// "Event", "NetworkPolicy", "ClusterNetworkPolicy") get the columns kube-apiserver prints for
/// them; any other kind gets NAME and AGE.
/// Every column is filled, the wide (priority 1) ones included, as kube-apiserver does.
/// `include_object` is the request's `includeObject` parameter: "None" leaves the rows without
/// an object, "Object" embeds the full object, and anything else ("Metadata", kubectl's default,
/// or empty) embeds a `PartialObjectMetadata` holding the object's metadata.
/// `now` is the current time, for the AGE columns. An empty `resource_version` is left out.
pub fn to_table(
    kind: &str,
    items: &[Value],
    resource_version: &str,
    include_object: &str,
    now: SystemTime,
) -> Value {
    let now = system_time_nanos(now);
    let column_definitions: Vec<Value> = columns_for(kind)
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.ty,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let (cells, conditions) = cells_for(kind, item, now);
            let mut row = Map::new();
            row.insert("cells".to_owned(), Value::Array(cells));
            if let Some(conditions) = conditions {
                row.insert("conditions".to_owned(), conditions);
            }
            if let Some(object) = row_object(kind, item, include_object) {
                row.insert("object".to_owned(), object);
            }
            Value::Object(row)
        })
        .collect();
    let mut metadata = Map::new();
    if !resource_version.is_empty() {
        metadata.insert(
            "resourceVersion".to_owned(),
            Value::String(resource_version.to_owned()),
        );
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions,
        "rows": rows,
    })
}

/// The object embedded in a row, per the request's `includeObject`.
fn row_object(kind: &str, item: &Value, include_object: &str) -> Option<Value> {
    match include_object {
        "None" => None,
        "Object" => {
            let mut object = item.clone();
            // The wire form of an object always names its kind; fill it in if the stored
            // form does not.
            if let (Value::Object(map), Some(k)) = (&mut object, unique_kind(kind)) {
                map.entry("kind")
                    .or_insert_with(|| Value::String(k.kind.to_owned()));
                map.entry("apiVersion")
                    .or_insert_with(|| Value::String(k.api_version()));
            }
            Some(object)
        }
        _ => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": item.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })),
    }
}

/// The served kind named `kind`, if exactly one group serves a kind of that name.
fn unique_kind(kind: &str) -> Option<&'static kinds::ResourceKind> {
    let mut matching = kinds::ALL.iter().filter(|k| k.kind == kind);
    let first = matching.next()?;
    match matching.next() {
        None => Some(first),
        Some(_) => None,
    }
}

/// The cells of one row, and the row's conditions if it has any.
fn cells_for(kind: &str, item: &Value, now: i128) -> (Vec<Value>, Option<Value>) {
    let name = Value::String(get_str(item, &["metadata", "name"]).to_owned());
    let age = Value::String(since(
        timestamp(item, &["metadata", "creationTimestamp"]),
        now,
    ));
    match kind {
        "Pod" => return pod_row(item, now),
        "Service" => {
            let svc_type = match get_str(item, &["spec", "type"]) {
                "" => "ClusterIP",
                t => t,
            };
            let cluster_ip = match get_arr(item, &["spec", "clusterIPs"]).first() {
                Some(ip) => ip.as_str().unwrap_or("").to_owned(),
                None => match get_str(item, &["spec", "clusterIP"]) {
                    "" => "<none>".to_owned(),
                    ip => ip.to_owned(),
                },
            };
            let mut ports = service_ports(item);
            if ports.is_empty() {
                ports = "<none>".to_owned();
            }
            let selector = format_labels(get(item, &["spec", "selector"]));
            return (
                vec![
                    name,
                    svc_type.into(),
                    cluster_ip.into(),
                    service_external_ip(item, svc_type).into(),
                    ports.into(),
                    age,
                    selector.into(),
                ],
                None,
            );
        }
        "Endpoints" => return (vec![name, format_endpoints(item).into(), age], None),
        "Node" => return (node_row(item, name, age), None),
        "Namespace" => {
            let phase = get_str(item, &["status", "phase"]).to_owned();
            return (vec![name, phase.into(), age], None);
        }
        "EndpointSlice" => {
            let address_type = get_str(item, &["addressType"]).to_owned();
            return (
                vec![
                    name,
                    address_type.into(),
                    format_discovery_ports(item).into(),
                    format_discovery_endpoints(item).into(),
                    age,
                ],
                None,
            );
        }
        "Lease" => {
            let holder = get_str(item, &["spec", "holderIdentity"]).to_owned();
            return (vec![name, holder.into(), age], None);
        }
        "Event" => return (event_row(item, name, now), None),
        "NetworkPolicy" => return (vec![name, pod_selector(item).into(), age], None),
        "ClusterNetworkPolicy" => {
            let column = |path: &[&str]| match get(item, path) {
                Some(Value::String(s)) => Value::String(s.clone()),
                Some(Value::Number(n)) => Value::String(n.to_string()),
                _ => Value::Null,
            };
            let cells = vec![
                name,
                column(&["spec", "tier"]),
                column(&["spec", "priority"]),
                age,
            ];
            return (cells, None);
        }
        _ => {}
    }
    (vec![name, age], None)
}

/// `printNetworkPolicy`'s POD-SELECTOR: `metav1.FormatLabelSelector` of `spec.podSelector`
/// (a struct upstream, so an absent one is the empty selector: `<none>`).
fn pod_selector(np: &Value) -> String {
    let selector: LabelSelector = get(np, &["spec", "podSelector"])
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    super::selector::format(Some(&selector))
}

// ---------------------------------------------------------------------------------------------
// Pods

/// The row of a pod, as `printPod`.
fn pod_row(pod: &Value, now: i128) -> (Vec<Value>, Option<Value>) {
    let init_specs = get_arr(pod, &["spec", "initContainers"]);
    let is_restartable = |name: &str| {
        init_specs
            .iter()
            .any(|c| get_str(c, &["name"]) == name && get_str(c, &["restartPolicy"]) == "Always")
    };
    let mut restarts: i64 = 0;
    let mut restartable_init_restarts: i64 = 0;
    let total = get_arr(pod, &["spec", "containers"]).len()
        + init_specs
            .iter()
            .filter(|c| get_str(c, &["restartPolicy"]) == "Always")
            .count();
    let mut ready = 0usize;
    let mut last_restart: Option<i128> = None;
    let mut last_restartable_init_restart: Option<i128> = None;

    let phase = get_str(pod, &["status", "phase"]);
    let mut reason = match get_str(pod, &["status", "reason"]) {
        "" => phase.to_owned(),
        r => r.to_owned(),
    };
    let conditions = get_arr(pod, &["status", "conditions"]);
    if conditions.iter().any(|c| {
        get_str(c, &["type"]) == "PodScheduled" && get_str(c, &["reason"]) == "SchedulingGated"
    }) {
        reason = "SchedulingGated".to_owned();
    }
    let row_conditions = match phase {
        "Succeeded" => Some(json!([{
            "type": "Completed", "status": "True", "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        }])),
        "Failed" => Some(json!([{
            "type": "Completed", "status": "True", "reason": "Failed",
            "message": "The pod failed.",
        }])),
        _ => None,
    };

    let mut initializing = false;
    for (i, status) in get_arr(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let count = get_i64(status, &["restartCount"]);
        let finished = timestamp(status, &["lastState", "terminated", "finishedAt"]);
        restarts += count;
        last_restart = later(last_restart, finished);
        let restartable = is_restartable(get_str(status, &["name"]));
        if restartable {
            restartable_init_restarts += count;
            last_restartable_init_restart = later(last_restartable_init_restart, finished);
        }
        let terminated = get_object(status, &["state", "terminated"]);
        if terminated.is_some_and(|t| get_i64(t, &["exitCode"]) == 0) {
            continue;
        }
        if restartable && get_bool(status, &["started"]) {
            if get_bool(status, &["ready"]) {
                ready += 1;
            }
            continue;
        }
        let waiting_reason = get_str(status, &["state", "waiting", "reason"]);
        reason = if let Some(t) = terminated {
            match get_str(t, &["reason"]) {
                "" => match get_i64(t, &["signal"]) {
                    0 => format!("Init:ExitCode:{}", get_i64(t, &["exitCode"])),
                    signal => format!("Init:Signal:{signal}"),
                },
                r => format!("Init:{r}"),
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    let initialized = conditions
        .iter()
        .find(|c| get_str(c, &["type"]) == "Initialized")
        .is_some_and(|c| get_str(c, &["status"]) == "True");
    if !initializing || initialized {
        restarts = restartable_init_restarts;
        last_restart = last_restartable_init_restart;
        let mut has_running = false;
        for status in get_arr(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += get_i64(status, &["restartCount"]);
            last_restart = later(
                last_restart,
                timestamp(status, &["lastState", "terminated", "finishedAt"]),
            );
            let waiting_reason = get_str(status, &["state", "waiting", "reason"]);
            let terminated = get_object(status, &["state", "terminated"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_owned();
            } else if let Some(t) = terminated {
                reason = match get_str(t, &["reason"]) {
                    "" => match get_i64(t, &["signal"]) {
                        0 => format!("ExitCode:{}", get_i64(t, &["exitCode"])),
                        signal => format!("Signal:{signal}"),
                    },
                    r => r.to_owned(),
                };
            } else if get_bool(status, &["ready"])
                && get_object(status, &["state", "running"]).is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        // Back to "Running" if at least one container still reports running.
        if reason == "Completed" && has_running {
            let pod_ready = conditions
                .iter()
                .any(|c| get_str(c, &["type"]) == "Ready" && get_str(c, &["status"]) == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_owned();
        }
    }

    let deleting = get(pod, &["metadata", "deletionTimestamp"]).is_some_and(|t| !t.is_null());
    if deleting && get_str(pod, &["status", "reason"]) == "NodeLost" {
        reason = "Unknown".to_owned();
    } else if deleting && phase != "Failed" && phase != "Succeeded" {
        reason = "Terminating".to_owned();
    }

    let restarts = match last_restart {
        Some(at) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(at), now)),
        _ => restarts.to_string(),
    };

    let pod_ip = get_arr(pod, &["status", "podIPs"])
        .first()
        .map(|ip| get_str(ip, &["ip"]))
        .unwrap_or_else(|| get_str(pod, &["status", "podIP"]));
    let readiness_gates = get_arr(pod, &["spec", "readinessGates"]);
    let gates = if readiness_gates.is_empty() {
        "<none>".to_owned()
    } else {
        let true_conditions = readiness_gates
            .iter()
            .filter(|gate| {
                let wanted = get_str(gate, &["conditionType"]);
                conditions
                    .iter()
                    .find(|c| get_str(c, &["type"]) == wanted)
                    .is_some_and(|c| get_str(c, &["status"]) == "True")
            })
            .count();
        format!("{true_conditions}/{}", readiness_gates.len())
    };
    let cells = vec![
        get_str(pod, &["metadata", "name"]).into(),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts.into(),
        since(timestamp(pod, &["metadata", "creationTimestamp"]), now).into(),
        or_none(pod_ip).into(),
        or_none(get_str(pod, &["spec", "nodeName"])).into(),
        or_none(get_str(pod, &["status", "nominatedNodeName"])).into(),
        gates.into(),
    ];
    (cells, row_conditions)
}

// ---------------------------------------------------------------------------------------------
// Services, endpoints, endpoint slices

/// `makePortString`: `80/TCP`, `80:30080/TCP`, comma separated.
fn service_ports(svc: &Value) -> String {
    get_arr(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = get_i64(p, &["port"]);
            let protocol = match get_str(p, &["protocol"]) {
                "" => "TCP",
                proto => proto,
            };
            match get_i64(p, &["nodePort"]) {
                n if n > 0 => format!("{port}:{n}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `getServiceExternalIP` (wide, as the server prints: no clipping).
fn service_external_ip(svc: &Value, svc_type: &str) -> String {
    let external_ips: Vec<&str> = get_arr(svc, &["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match svc_type {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_owned()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            // A sorted set of the ingress points, IP preferred over hostname.
            let mut ingress: Vec<&str> = get_arr(svc, &["status", "loadBalancer", "ingress"])
                .iter()
                .map(|i| match get_str(i, &["ip"]) {
                    "" => get_str(i, &["hostname"]),
                    ip => ip,
                })
                .filter(|s| !s.is_empty())
                .collect();
            ingress.sort_unstable();
            ingress.dedup();
            if !external_ips.is_empty() {
                ingress.extend(external_ips);
                ingress.join(",")
            } else if !ingress.is_empty() {
                ingress.join(",")
            } else {
                "<pending>".to_owned()
            }
        }
        "ExternalName" => get_str(svc, &["spec", "externalName"]).to_owned(),
        _ => "<unknown>".to_owned(),
    }
}

/// `formatEndpoints`: up to three `ip:port`, then ` + N more...`.
fn format_endpoints(endpoints: &Value) -> String {
    const MAX: usize = 3;
    let subsets = get_arr(endpoints, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_owned();
    }
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for subset in subsets {
        let addresses = get_arr(subset, &["addresses"]);
        let ports = get_arr(subset, &["ports"]);
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(get_str(address, &["ip"]).to_owned());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(
                    get_str(address, &["ip"]),
                    get_i64(port, &["port"]),
                ));
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

/// Go's `net.JoinHostPort`: IPv6 addresses in brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn format_discovery_ports(slice: &Value) -> String {
    let names = get_arr(slice, &["ports"]).iter().map(|p| {
        match (get(p, &["port"]).and_then(Value::as_i64), get(p, &["name"])) {
            (Some(port), _) => port.to_string(),
            (None, Some(Value::String(name))) => name.clone(),
            _ => "*".to_owned(),
        }
    });
    list_with_more(names)
}

fn format_discovery_endpoints(slice: &Value) -> String {
    let addresses = get_arr(slice, &["endpoints"])
        .iter()
        .flat_map(|e| get_arr(e, &["addresses"]))
        .map(|a| a.as_str().unwrap_or("").to_owned());
    list_with_more(addresses)
}

/// Up to three items, then ` + N more...`; `<unset>` if there are none.
fn list_with_more(items: impl Iterator<Item = String>) -> String {
    const MAX: usize = 3;
    let mut list = Vec::new();
    let mut count = 0usize;
    for item in items {
        if list.len() < MAX {
            list.push(item);
        }
        count += 1;
    }
    let joined = list.join(",");
    if count > MAX {
        format!("{joined} + {} more...", count - MAX)
    } else if joined.is_empty() {
        "<unset>".to_owned()
    } else {
        joined
    }
}

/// `labels.FormatLabels`: `k=v` sorted by key, comma separated; `<none>` if empty.
fn format_labels(labels: Option<&Value>) -> String {
    let Some(Value::Object(map)) = labels else {
        return "<none>".to_owned();
    };
    let mut pairs: Vec<(&String, &Value)> = map.iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let joined = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(",");
    if joined.is_empty() {
        "<none>".to_owned()
    } else {
        joined
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes

fn node_row(node: &Value, name: Value, age: Value) -> Vec<Value> {
    let mut status: Vec<&str> = Vec::new();
    // The last condition of a type wins, as in the Go map.
    if let Some(ready) = get_arr(node, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| get_str(c, &["type"]) == "Ready")
    {
        status.push(if get_str(ready, &["status"]) == "True" {
            "Ready"
        } else {
            "NotReady"
        });
    }
    if status.is_empty() {
        status.push("Unknown");
    }
    // kubectl shows only Ready; a node that says its network is unavailable (pods start
    // there but cannot reach Services or other nodes) says so too, in the same style.
    if get_arr(node, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| get_str(c, &["type"]) == "NetworkUnavailable")
        .is_some_and(|c| get_str(c, &["status"]) == "True")
    {
        status.push("NetworkUnavailable");
    }
    if get_bool(node, &["spec", "unschedulable"]) {
        status.push("SchedulingDisabled");
    }
    let roles = node_roles(node);
    let roles = if roles.is_empty() {
        "<none>".to_owned()
    } else {
        roles.join(",")
    };
    let address = |kind: &str| {
        get_arr(node, &["status", "addresses"])
            .iter()
            .find(|a| get_str(a, &["type"]) == kind)
            .map(|a| get_str(a, &["address"]).to_owned())
            .unwrap_or_else(|| "<none>".to_owned())
    };
    let info = |field: &str| match get_str(node, &["status", "nodeInfo", field]) {
        "" => "<unknown>".to_owned(),
        v => v.to_owned(),
    };
    vec![
        name,
        status.join(",").into(),
        roles.into(),
        age,
        get_str(node, &["status", "nodeInfo", "kubeletVersion"]).into(),
        address("InternalIP").into(),
        address("ExternalIP").into(),
        info("osImage").into(),
        info("kernelVersion").into(),
        info("containerRuntimeVersion").into(),
    ]
}

/// `findNodeRoles`: `node-role.kubernetes.io/<role>` labels and the `kubernetes.io/role`
/// label's value, sorted and deduplicated.
fn node_roles(node: &Value) -> Vec<String> {
    let mut roles: Vec<String> = Vec::new();
    if let Some(Value::Object(labels)) = get(node, &["metadata", "labels"]) {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_owned());
                }
            } else if key == "kubernetes.io/role" {
                match value.as_str() {
                    Some(v) if !v.is_empty() => roles.push(v.to_owned()),
                    _ => {}
                }
            }
        }
    }
    roles.sort();
    roles.dedup();
    roles
}

// ---------------------------------------------------------------------------------------------
// Events

fn event_row(event: &Value, name: Value, now: i128) -> Vec<Value> {
    let first_seen = match timestamp(event, &["firstTimestamp"]) {
        Some(t) => since(Some(t), now),
        None => since(timestamp(event, &["eventTime"]), now),
    };
    let mut last_seen = match timestamp(event, &["lastTimestamp"]) {
        Some(t) => since(Some(t), now),
        None => first_seen.clone(),
    };
    let mut count = get_i64(event, &["count"]);
    if let Some(series) = get_object(event, &["series"]) {
        last_seen = since(timestamp(series, &["lastObservedTime"]), now);
        count = get_i64(series, &["count"]);
    } else if count == 0 {
        // Singleton events have no count in the events.k8s.io API.
        count = 1;
    }
    let kind = get_str(event, &["involvedObject", "kind"]).to_lowercase();
    let target = match get_str(event, &["involvedObject", "name"]) {
        "" => kind,
        object => format!("{kind}/{object}"),
    };
    let component = first_non_empty(
        get_str(event, &["source", "component"]),
        get_str(event, &["reportingComponent"]),
    );
    let instance = first_non_empty(
        get_str(event, &["source", "host"]),
        get_str(event, &["reportingInstance"]),
    );
    let source = if instance.is_empty() {
        component.to_owned()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        last_seen.into(),
        get_str(event, &["type"]).into(),
        get_str(event, &["reason"]).into(),
        target.into(),
        get_str(event, &["involvedObject", "fieldPath"]).into(),
        source.into(),
        get_str(event, &["message"]).trim().into(),
        first_seen.into(),
        count.into(),
        name,
    ]
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() { b } else { a }
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// kubectl's tab writer: minimum cell width 6, padding 3, padded with spaces.
const TAB_MIN_WIDTH: usize = 6;
const TAB_PADDING: usize = 3;

/// Renders a Table as kubectl prints it: upper-case headers, columns separated by at least
/// three spaces, the columns of priority above zero only when `wide`, and a NAMESPACE first
/// column (from each row's object metadata) when `with_namespace`. A table without rows renders
/// as the empty string ("No resources found" is the caller's).
pub fn render(table: &Value, wide: bool, with_namespace: bool) -> String {
    let rows = get_arr(table, &["rows"]);
    if rows.is_empty() {
        return String::new();
    }
    let columns = get_arr(table, &["columnDefinitions"]);
    let visible: Vec<usize> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| wide || get_i64(c, &["priority"]) == 0)
        .map(|(i, _)| i)
        .collect();

    let mut lines: Vec<Vec<String>> = Vec::with_capacity(rows.len() + 1);
    let mut header: Vec<String> = Vec::new();
    if with_namespace {
        header.push("NAMESPACE".to_owned());
    }
    header.extend(
        visible
            .iter()
            .map(|&i| get_str(&columns[i], &["name"]).to_uppercase()),
    );
    lines.push(header);
    for row in rows {
        let cells = get_arr(row, &["cells"]);
        let mut line: Vec<String> = Vec::new();
        if with_namespace {
            line.push(get_str(row, &["object", "metadata", "namespace"]).to_owned());
        }
        line.extend(
            visible
                .iter()
                .map(|&i| cells.get(i).map(cell_text).unwrap_or_default()),
        );
        lines.push(line);
    }
    tabwrite(&lines)
}

/// A cell as kubectl prints it (Go's `fmt.Sprint` of the decoded JSON value), cut at the first
/// line break and with the escape character made visible.
fn cell_text(cell: &Value) -> String {
    let text = match cell {
        Value::Null => return String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    };
    let (text, cut) = match text.find(['\n', '\r', '\x0c']) {
        Some(at) => (&text[..at], true),
        None => (text.as_str(), false),
    };
    let mut out = text.replace('\x1b', "^[");
    if cut {
        out.push_str("...");
    }
    out
}

/// Aligns cells in columns as Go's tab writer does for lines of `cell\tcell\t...\tlast\n`:
/// every cell but the last of a line is padded to its column's width.
fn tabwrite(lines: &[Vec<String>]) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![TAB_MIN_WIDTH; columns];
    for line in lines {
        for (i, cell) in line.iter().enumerate().take(line.len().saturating_sub(1)) {
            widths[i] = widths[i].max(cell.chars().count() + TAB_PADDING);
        }
    }
    let mut out = String::new();
    for line in lines {
        for (i, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < line.len() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Time

/// kubectl's duration format (`k8s.io/apimachinery/pkg/util/duration.HumanDuration`): seconds
/// below two minutes ("90s"), minutes and seconds below ten minutes ("3m10s"), minutes below
/// three hours ("150m"), hours and minutes below eight hours ("7h5m"), hours below two days
/// ("30h"), days and hours below eight days ("2d3h"), days below two years ("400d"), years and
/// days below eight years ("3y20d"), then years.
pub fn human_duration(d: Duration) -> String {
    human_duration_nanos(i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
}

/// [`human_duration`] of a signed duration in nanoseconds: "0s" for up to two seconds in the
/// future (clock skew), "<invalid>" for more.
fn human_duration_nanos(nanos: i128) -> String {
    const SECOND: i128 = 1_000_000_000;
    const MINUTE: i128 = 60 * SECOND;
    const HOUR: i128 = 60 * MINUTE;
    let seconds = nanos / SECOND;
    if seconds < -1 {
        return "<invalid>".to_owned();
    } else if seconds < 0 {
        return "0s".to_owned();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = nanos / MINUTE;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = nanos / HOUR;
    if hours < 8 {
        match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        }
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        match (hours / 24) % 365 {
            0 => format!("{}y", hours / 24 / 365),
            d => format!("{}y{d}d", hours / 24 / 365),
        }
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// Time since `then` (nanoseconds since the epoch), or `<unknown>` without a time.
fn since(then: Option<i128>, now: i128) -> String {
    match then {
        Some(then) => human_duration_nanos(now - then),
        None => "<unknown>".to_owned(),
    }
}

/// The later of two optional times.
fn later(a: Option<i128>, b: Option<i128>) -> Option<i128> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn system_time_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
    }
}

/// The RFC 3339 timestamp at `path` in nanoseconds since the epoch; `None` when absent, null,
/// empty or malformed (Go prints such a zero time as `<unknown>`).
fn timestamp(v: &Value, path: &[&str]) -> Option<i128> {
    get(v, path).and_then(Value::as_str).and_then(parse_rfc3339)
}

/// Parses the RFC 3339 forms Kubernetes emits (`2026-11-29T11:45:51Z`, with optional fraction
/// of a second, `Z` or a `±hh:mm` offset) into nanoseconds since the Unix epoch.
fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let digits = |from: usize, to: usize| -> Option<i64> {
        let part = b.get(from..to)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let at = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    let year = digits(0, 4)?;
    let month = digits(5, 7)?;
    let day = digits(8, 10)?;
    let hour = digits(11, 13)?;
    let minute = digits(14, 16)?;
    let second = digits(17, 19)?;
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: i128 = 0;
    if at(i, b".") {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let mut scale: i128 = 100_000_000;
        for d in &b[start..i.min(start + 9)] {
            nanos += i128::from(d - b'0') * scale;
            scale /= 10;
        }
    }
    let offset_seconds = match b.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let hours = digits(i + 1, i + 3)?;
            let minutes = digits(i + 4, i + 6)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_seconds;
    Some(i128::from(seconds) * 1_000_000_000 + nanos)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

// ---------------------------------------------------------------------------------------------
// JSON access

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, key| cur.get(key))
}

fn get_object<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    get(v, path).filter(|o| o.is_object())
}

fn get_str<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path).and_then(Value::as_str).unwrap_or("")
}

fn get_arr<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn get_i64(v: &Value, path: &[&str]) -> i64 {
    match get(v, path) {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .unwrap_or(0),
        _ => 0,
    }
}

fn get_bool(v: &Value, path: &[&str]) -> bool {
    get(v, path).and_then(Value::as_bool).unwrap_or(false)
}

fn or_none(s: &str) -> &str {
    if s.is_empty() { "<none>" } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-11-29T12:00:00Z";

    fn now() -> SystemTime {
        let nanos = parse_rfc3339(NOW).unwrap();
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap())
    }

    /// An RFC 3339 time `secs` seconds before [`NOW`].
    fn ago(secs: i64) -> String {
        let t = 1_795_953_600 - secs; // NOW in Unix seconds
        let days = t.div_euclid(86_400);
        let rem = t.rem_euclid(86_400);
        // Inverse of days_from_civil (Hinnant's civil_from_days).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    }

    fn row(kind: &str, item: Value) -> Vec<Value> {
        let table = to_table(kind, &[item], "7", "None", now());
        table["rows"][0]["cells"].as_array().unwrap().clone()
    }

    fn cells(kind: &str, item: Value) -> Vec<String> {
        row(kind, item).iter().map(cell_text).collect()
    }

    fn pod(status: Value) -> Value {
        json!({
            "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": ago(300)},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "node-1"},
            "status": status,
        })
    }

    fn running(name: &str, ready: bool) -> Value {
        json!({"name": name, "ready": ready, "restartCount": 0, "state": {"running": {"startedAt": ago(200)}}})
    }

    /// The READY, STATUS and RESTARTS cells of a pod.
    fn pod_status(item: Value) -> (String, String, String) {
        let c = cells("Pod", item);
        (c[1].clone(), c[2].clone(), c[3].clone())
    }

    fn s(a: &str, b: &str, c: &str) -> (String, String, String) {
        (a.to_owned(), b.to_owned(), c.to_owned())
    }

    #[test]
    fn human_duration_follows_kubectl() {
        let cases = [
            (0, "0s"),
            (1, "1s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (121, "2m1s"),
            (190, "3m10s"),
            (599, "9m59s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 300, "3h5m"),
            (8 * 3600 - 60, "7h59m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 3599, "47h"),
            (48 * 3600, "2d"),
            (51 * 3600, "2d3h"),
            (8 * 86_400 - 3600, "7d23h"),
            (8 * 86_400, "8d"),
            (729 * 86_400, "729d"),
            (730 * 86_400, "2y"),
            (731 * 86_400, "2y1d"),
            (8 * 365 * 86_400 - 86_400, "7y364d"),
            (8 * 365 * 86_400, "8y"),
            (10 * 365 * 86_400 + 5 * 86_400, "10y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(Duration::from_secs(secs)), want, "{secs}s");
        }
        assert_eq!(human_duration(Duration::from_millis(1999)), "1s");
        // In the future: up to two seconds of clock skew is "now".
        assert_eq!(human_duration_nanos(-1_500_000_000), "0s");
        assert_eq!(human_duration_nanos(-1_999_999_999), "0s");
        assert_eq!(human_duration_nanos(-2_000_000_000), "<invalid>");
        assert_eq!(human_duration_nanos(-86_400_000_000_000), "<invalid>");
    }

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-11-29T11:45:51Z"),
            Some(1_795_952_751 * 1_000_000_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-29T12:45:51+01:00"),
            parse_rfc3339("2026-11-29T11:45:51Z")
        );
        assert_eq!(
            parse_rfc3339("2026-11-29T06:15:51-05:30"),
            parse_rfc3339("2026-11-29T11:45:51Z")
        );
        assert_eq!(
            parse_rfc3339("2026-11-29T11:45:51.123456Z"),
            Some(1_795_952_751 * 1_000_000_000 + 123_456_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-29T11:45:51.1234567891Z"),
            Some(1_795_952_751 * 1_000_000_000 + 123_456_789)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00Z"),
            Some(1_709_164_800 * 1_000_000_000)
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1_000_000_000));
        assert_eq!(
            parse_rfc3339("2026-11-29t11:45:51z"),
            parse_rfc3339("2026-11-29T11:45:51Z")
        );
        for bad in [
            "",
            "garbage",
            "2026-11-29",
            "2026-11-29T11:45:51",
            "2026-11-29T11:45:51+0100",
            "2026-11-29T11:45:51.Z",
            "2026-11-29T11:45:51ZZ",
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-29T24:00:00Z",
            "2026-11-29T11:60:00Z",
            "2026-11-29T11:45:60Z",
            "2026-11-29T11:45:51+24:00",
            "2026/11/29T11:45:51Z",
            "２026-11-29T11:45:51Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
        // The test helper agrees with the parser.
        assert_eq!(ago(0), NOW);
        assert_eq!(ago(86_400 * 365), "2025-11-29T12:00:00Z");
    }

    #[test]
    fn pod_ready_counts_ready_running_containers() {
        let p = pod(json!({
            "phase": "Running",
            "containerStatuses": [running("a", true), running("b", false)],
        }));
        assert_eq!(pod_status(p), s("1/2", "Running", "0"));
        // No statuses yet.
        let p = pod(json!({"phase": "Pending"}));
        assert_eq!(pod_status(p), s("0/2", "Pending", "0"));
    }

    #[test]
    fn pod_waiting_reason_and_restarts_with_last_restart() {
        let p = pod(json!({
            "phase": "Running",
            "containerStatuses": [
                running("a", true),
                {"name": "b", "ready": false, "restartCount": 5,
                 "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                 "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(300)}}},
            ],
        }));
        assert_eq!(pod_status(p), s("1/2", "CrashLoopBackOff", "5 (5m ago)"));
        // Restarts without a known finish time have no suffix.
        let p = pod(json!({
            "phase": "Running",
            "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}},
                {"name": "b", "ready": true, "restartCount": 1, "state": {"running": {}}},
            ],
        }));
        assert_eq!(pod_status(p), s("2/2", "Running", "3"));
        // The latest termination across containers counts.
        let p = pod(json!({
            "phase": "Running",
            "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 1, "state": {"running": {}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(7200)}}},
                {"name": "b", "ready": true, "restartCount": 1, "state": {"running": {}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(45)}}},
            ],
        }));
        assert_eq!(pod_status(p), s("2/2", "Running", "2 (45s ago)"));
        // Image pull errors.
        let p = pod(json!({
            "phase": "Pending",
            "containerStatuses": [
                {"name": "a", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}},
                {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}},
            ],
        }));
        // Statuses are walked from the last: the first container's reason wins.
        assert_eq!(pod_status(p), s("0/2", "ContainerCreating", "0"));
    }

    #[test]
    fn pod_terminated_containers() {
        let p = pod(json!({
            "phase": "Running",
            "containerStatuses": [
                running("a", true),
                {"name": "b", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 137}}},
            ],
        }));
        assert_eq!(pod_status(p), s("1/2", "ExitCode:137", "0"));
        let p = pod(json!({
            "phase": "Running",
            "containerStatuses": [
                running("a", true),
                {"name": "b", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "signal": 9}}},
            ],
        }));
        assert_eq!(pod_status(p), s("1/2", "Signal:9", "0"));
        let p = pod(json!({
            "phase": "Failed",
            "containerStatuses": [
                {"name": "a", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}},
                {"name": "b", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}},
            ],
        }));
        assert_eq!(pod_status(p), s("0/2", "OOMKilled", "0"));
    }

    #[test]
    fn pod_completed_and_row_conditions() {
        let p = pod(json!({
            "phase": "Succeeded",
            "containerStatuses": [
                {"name": "a", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "b", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            ],
        }));
        let table = to_table("Pod", &[p], "", "None", now());
        assert_eq!(table["rows"][0]["cells"][2], "Completed");
        assert_eq!(
            table["rows"][0]["conditions"],
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
                    "message": "The pod has completed successfully."}])
        );
        let failed = pod(json!({"phase": "Failed", "reason": "Evicted"}));
        let table = to_table("Pod", &[failed], "", "None", now());
        assert_eq!(table["rows"][0]["cells"][2], "Evicted");
        assert_eq!(table["rows"][0]["conditions"][0]["reason"], "Failed");
        let running_pod = pod(json!({"phase": "Running"}));
        let table = to_table("Pod", &[running_pod], "", "None", now());
        assert!(table["rows"][0].get("conditions").is_none());
    }

    #[test]
    fn pod_completed_container_with_running_one() {
        let status = |ready_condition: &str| {
            json!({
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": ready_condition}],
                "containerStatuses": [
                    running("a", true),
                    {"name": "b", "ready": false, "restartCount": 0,
                     "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                ],
            })
        };
        assert_eq!(pod_status(pod(status("False"))), s("1/2", "NotReady", "0"));
        assert_eq!(pod_status(pod(status("True"))), s("1/2", "Running", "0"));
    }

    #[test]
    fn pod_terminating_and_unknown() {
        let mut p = pod(
            json!({"phase": "Running", "containerStatuses": [running("a", true), running("b", true)]}),
        );
        p["metadata"]["deletionTimestamp"] = json!(ago(10));
        assert_eq!(pod_status(p.clone()), s("2/2", "Terminating", "0"));
        p["status"]["reason"] = json!("NodeLost");
        assert_eq!(pod_status(p), s("2/2", "Unknown", "0"));
        // A finished pod being deleted keeps its final status.
        let mut done = pod(json!({"phase": "Succeeded"}));
        done["metadata"]["deletionTimestamp"] = json!(ago(10));
        assert_eq!(pod_status(done), s("0/2", "Succeeded", "0"));
        // A null deletionTimestamp is not a deletion.
        let mut p = pod(json!({"phase": "Running"}));
        p["metadata"]["deletionTimestamp"] = Value::Null;
        assert_eq!(pod_status(p), s("0/2", "Running", "0"));
    }

    fn init_pod(init_statuses: Value) -> Value {
        json!({
            "metadata": {"name": "init", "creationTimestamp": ago(30)},
            "spec": {
                "initContainers": [{"name": "i1"}, {"name": "i2"}],
                "containers": [{"name": "a"}],
            },
            "status": {
                "phase": "Pending",
                "initContainerStatuses": init_statuses,
                "containerStatuses": [
                    {"name": "a", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}},
                ],
            },
        })
    }

    #[test]
    fn pod_init_containers() {
        let waiting = |reason: &str| json!({"waiting": {"reason": reason}});
        let status = |name: &str, state: Value, restarts: i64| json!({"name": name, "ready": false, "restartCount": restarts, "state": state});
        let p = init_pod(json!([
            status("i1", waiting("PodInitializing"), 0),
            status("i2", waiting("PodInitializing"), 0),
        ]));
        assert_eq!(pod_status(p), s("0/1", "Init:0/2", "0"));
        let p = init_pod(json!([
            status(
                "i1",
                json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
                0
            ),
            status("i2", json!({"running": {}}), 0),
        ]));
        assert_eq!(pod_status(p), s("0/1", "Init:1/2", "0"));
        let p = init_pod(json!([
            status("i1", waiting("CrashLoopBackOff"), 3),
            status("i2", waiting("PodInitializing"), 0),
        ]));
        assert_eq!(pod_status(p), s("0/1", "Init:CrashLoopBackOff", "3"));
        let p = init_pod(json!([status(
            "i1",
            json!({"terminated": {"exitCode": 1, "reason": "Error"}}),
            0
        ),]));
        assert_eq!(pod_status(p), s("0/1", "Init:Error", "0"));
        let p = init_pod(json!([status(
            "i1",
            json!({"terminated": {"exitCode": 2}}),
            0
        ),]));
        assert_eq!(pod_status(p), s("0/1", "Init:ExitCode:2", "0"));
        let p = init_pod(json!([status(
            "i1",
            json!({"terminated": {"exitCode": 0, "signal": 15}}),
            0
        ),]));
        // Exit code 0 means done, whatever the signal.
        assert_eq!(pod_status(p), s("0/1", "PodInitializing", "0"));
        let p = init_pod(json!([status(
            "i1",
            json!({"terminated": {"exitCode": 143, "signal": 15}}),
            0
        ),]));
        assert_eq!(pod_status(p), s("0/1", "Init:Signal:15", "0"));
        // Once the pod is initialized the app containers decide, and init restarts no longer
        // count.
        let mut p = init_pod(json!([
            status(
                "i1",
                json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
                4
            ),
            status(
                "i2",
                json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
                0
            ),
        ]));
        p["status"]["conditions"] = json!([{"type": "Initialized", "status": "True"}]);
        p["status"]["containerStatuses"] = json!([running("a", true)]);
        p["status"]["phase"] = json!("Running");
        assert_eq!(pod_status(p), s("1/1", "Running", "0"));
    }

    #[test]
    fn pod_sidecar_init_containers_count() {
        let p = json!({
            "metadata": {"name": "sidecar", "creationTimestamp": ago(30)},
            "spec": {
                "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                "containers": [{"name": "a"}],
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}],
                "initContainerStatuses": [
                    {"name": "proxy", "ready": true, "started": true, "restartCount": 2,
                     "state": {"running": {}},
                     "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(130)}}},
                ],
                "containerStatuses": [running("a", true)],
            },
        });
        assert_eq!(pod_status(p), s("2/2", "Running", "2 (2m10s ago)"));
    }

    #[test]
    fn pod_scheduling_gated() {
        let p = pod(json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}],
        }));
        assert_eq!(pod_status(p), s("0/2", "SchedulingGated", "0"));
    }

    #[test]
    fn pod_wide_cells() {
        let mut p = pod(json!({
            "phase": "Running",
            "podIP": "10.244.1.5",
            "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}],
            "conditions": [
                {"type": "example.com/one", "status": "True"},
                {"type": "example.com/two", "status": "False"},
            ],
            "containerStatuses": [running("a", true), running("b", true)],
        }));
        p["spec"]["readinessGates"] =
            json!([{"conditionType": "example.com/one"}, {"conditionType": "example.com/two"}]);
        assert_eq!(
            cells("Pod", p),
            [
                "web-1",
                "2/2",
                "Running",
                "0",
                "5m",
                "10.244.1.5",
                "node-1",
                "<none>",
                "1/2"
            ]
        );
        // podIP alone (no podIPs), nothing scheduled yet.
        let p = json!({
            "metadata": {"name": "p", "creationTimestamp": ago(5)},
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "podIP": "10.244.2.3"},
        });
        assert_eq!(
            cells("Pod", p),
            [
                "p",
                "0/1",
                "Pending",
                "0",
                "5s",
                "10.244.2.3",
                "<none>",
                "<none>",
                "<none>"
            ]
        );
        let p = json!({"metadata": {"name": "bare"}});
        assert_eq!(
            cells("Pod", p),
            [
                "bare",
                "0/0",
                "",
                "0",
                "<unknown>",
                "<none>",
                "<none>",
                "<none>",
                "<none>"
            ]
        );
    }

    fn service(spec: Value, status: Value) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": ago(3 * 86_400)},
            "spec": spec,
            "status": status,
        })
    }

    #[test]
    fn service_cells() {
        let svc = service(
            json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                   "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
                   "selector": {"tier": "fe", "app": "web"}}),
            json!({}),
        );
        assert_eq!(
            cells("Service", svc),
            [
                "web",
                "ClusterIP",
                "10.96.0.10",
                "<none>",
                "80/TCP,53/UDP",
                "3d",
                "app=web,tier=fe"
            ]
        );
        let svc = service(
            json!({"type": "NodePort", "clusterIP": "10.96.0.11",
                   "ports": [{"port": 80, "nodePort": 30080}], "externalIPs": ["192.0.2.1", "192.0.2.2"]}),
            json!({}),
        );
        assert_eq!(
            cells("Service", svc),
            [
                "web",
                "NodePort",
                "10.96.0.11",
                "192.0.2.1,192.0.2.2",
                "80:30080/TCP",
                "3d",
                "<none>"
            ]
        );
        let svc = service(
            json!({"type": "LoadBalancer", "clusterIPs": ["10.96.0.12"],
                   "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]}),
            json!({"loadBalancer": {}}),
        );
        assert_eq!(cells("Service", svc)[3], "<pending>");
        let svc = service(
            json!({"type": "LoadBalancer", "clusterIPs": ["10.96.0.12"]}),
            json!({"loadBalancer": {"ingress": [
                {"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}, {"ip": "203.0.113.10"}, {"ip": "203.0.113.9"},
            ]}}),
        );
        let c = cells("Service", svc);
        assert_eq!(c[3], "203.0.113.10,203.0.113.9,lb.example.com");
        assert_eq!(c[4], "<none>");
        let svc = service(
            json!({"type": "LoadBalancer", "externalIPs": ["192.0.2.7"]}),
            json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}),
        );
        let c = cells("Service", svc);
        assert_eq!(c[2], "<none>");
        assert_eq!(c[3], "203.0.113.9,192.0.2.7");
        let svc = service(
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
            json!({}),
        );
        assert_eq!(cells("Service", svc)[3], "db.example.com");
        // Defaulted type, headless.
        let svc = service(
            json!({"clusterIP": "None", "ports": [{"port": 5432}]}),
            json!({}),
        );
        assert_eq!(
            cells("Service", svc)[..5],
            ["web", "ClusterIP", "None", "<none>", "5432/TCP"]
        );
        let svc = service(json!({"type": "Weird"}), json!({}));
        assert_eq!(cells("Service", svc)[3], "<unknown>");
    }

    fn endpoints(subsets: Value) -> Value {
        json!({"metadata": {"name": "web", "creationTimestamp": ago(90)}, "subsets": subsets})
    }

    #[test]
    fn endpoints_cells() {
        let ep = endpoints(json!([{
            "addresses": [{"ip": "10.244.1.5"}, {"ip": "10.244.2.3"}, {"ip": "10.244.3.4"}, {"ip": "10.244.1.6"}],
            "ports": [{"port": 8080, "protocol": "TCP"}],
        }]));
        assert_eq!(
            cells("Endpoints", ep),
            [
                "web",
                "10.244.1.5:8080,10.244.2.3:8080,10.244.3.4:8080 + 1 more...",
                "90s"
            ]
        );
        let ep = endpoints(json!([{
            "addresses": [{"ip": "10.244.1.5"}, {"ip": "10.244.2.3"}],
            "notReadyAddresses": [{"ip": "10.244.9.9"}],
            "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}],
        }]));
        assert_eq!(
            cells("Endpoints", ep)[1],
            "10.244.1.5:80,10.244.2.3:80,10.244.1.5:443 + 1 more..."
        );
        let ep = endpoints(json!([
            {"addresses": [{"ip": "10.244.1.5"}], "ports": [{"port": 80}]},
            {"addresses": [{"ip": "fd00::5"}], "ports": [{"port": 8080}]},
        ]));
        assert_eq!(cells("Endpoints", ep)[1], "10.244.1.5:80,[fd00::5]:8080");
        // Headless without ports: plain addresses.
        let ep = endpoints(json!([{"addresses": [{"ip": "10.244.1.5"}, {"ip": "10.244.1.6"}]}]));
        assert_eq!(cells("Endpoints", ep)[1], "10.244.1.5,10.244.1.6");
        assert_eq!(cells("Endpoints", endpoints(json!([])))[1], "<none>");
        assert_eq!(
            cells("Endpoints", json!({"metadata": {"name": "x"}}))[1],
            "<none>"
        );
        // Only not-ready addresses: an empty cell, as kubectl shows.
        let ep = endpoints(
            json!([{"notReadyAddresses": [{"ip": "10.244.1.5"}], "ports": [{"port": 80}]}]),
        );
        assert_eq!(cells("Endpoints", ep)[1], "");
    }

    #[test]
    fn endpoint_slice_cells() {
        let slice = json!({
            "metadata": {"name": "web-abc12", "creationTimestamp": ago(600)},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80}, {"name": "named"}, {}],
            "endpoints": [
                {"addresses": ["10.244.1.5"]}, {"addresses": ["10.244.2.3", "10.244.2.4"]},
                {"addresses": ["10.244.3.1"]}, {"addresses": ["10.244.4.1"]},
            ],
        });
        assert_eq!(
            cells("EndpointSlice", slice),
            [
                "web-abc12",
                "IPv4",
                "80,named,*",
                "10.244.1.5,10.244.2.3,10.244.2.4 + 2 more...",
                "10m"
            ]
        );
        let slice = json!({"metadata": {"name": "empty", "creationTimestamp": ago(600)}, "addressType": "IPv6"});
        assert_eq!(
            cells("EndpointSlice", slice),
            ["empty", "IPv6", "<unset>", "<unset>", "10m"]
        );
        let ports: Vec<Value> = (1..=5).map(|p| json!({"port": p})).collect();
        let slice = json!({"metadata": {"name": "many"}, "ports": ports});
        assert_eq!(cells("EndpointSlice", slice)[2], "1,2,3 + 2 more...");
    }

    #[test]
    fn network_policy_cells() {
        let np = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(90)},
            "spec": {"podSelector": {"matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]}},
        });
        assert_eq!(
            cells("NetworkPolicy", np),
            ["web", "app=web,tier in (a,b)", "90s"]
        );
        let all = json!({"metadata": {"name": "all"}, "spec": {"podSelector": {}}});
        assert_eq!(cells("NetworkPolicy", all)[1], "<none>");
        let bare = json!({"metadata": {"name": "bare"}});
        assert_eq!(cells("NetworkPolicy", bare)[1], "<none>");
        let table = to_table("NetworkPolicy", &[], "", "None", now());
        let names: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Pod-Selector", "Age"]);
    }

    #[test]
    fn cluster_network_policy_cells() {
        let cnp = json!({
            "metadata": {"name": "deny-db", "creationTimestamp": ago(3 * 3600)},
            "spec": {"tier": "Admin", "priority": 10},
        });
        let got = row("ClusterNetworkPolicy", cnp);
        assert_eq!(
            got,
            [json!("deny-db"), json!("Admin"), json!("10"), json!("3h")]
        );
        let empty = json!({"metadata": {"name": "x"}});
        assert_eq!(
            row("ClusterNetworkPolicy", empty)[1..3],
            [Value::Null, Value::Null]
        );
        let table = to_table("ClusterNetworkPolicy", &[], "", "None", now());
        let columns = table["columnDefinitions"].as_array().unwrap();
        assert_eq!(columns[3]["type"], "date");
        assert_eq!(columns[1]["name"], "Tier");
        assert_eq!(columns[2]["name"], "Priority");
    }

    fn node(labels: Value, spec: Value, status: Value) -> Value {
        json!({
            "metadata": {"name": "node-1", "labels": labels, "creationTimestamp": ago(40 * 86_400)},
            "spec": spec,
            "status": status,
        })
    }

    #[test]
    fn node_cells() {
        let n = node(
            json!({"node-role.kubernetes.io/worker": "", "node-role.kubernetes.io/control-plane": "",
                   "kubernetes.io/hostname": "node-1"}),
            json!({}),
            json!({
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {"type": "Ready", "status": "True"},
                ],
                "addresses": [
                    {"type": "Hostname", "address": "node-1"},
                    {"type": "InternalIP", "address": "192.168.1.10"},
                ],
                "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                             "kernelVersion": "6.1.0-18-amd64", "containerRuntimeVersion": "containerd://1.7.13"},
            }),
        );
        assert_eq!(
            cells("Node", n),
            [
                "node-1",
                "Ready",
                "control-plane,worker",
                "40d",
                "v1.32.0",
                "192.168.1.10",
                "<none>",
                "Debian GNU/Linux 12 (bookworm)",
                "6.1.0-18-amd64",
                "containerd://1.7.13",
            ]
        );
        let n = node(
            json!({"kubernetes.io/role": "edge", "node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/": ""}),
            json!({"unschedulable": true}),
            json!({"conditions": [{"type": "Ready", "status": "Unknown"}],
                   "addresses": [{"type": "ExternalIP", "address": "203.0.113.1"}]}),
        );
        assert_eq!(
            cells("Node", n),
            [
                "node-1",
                "NotReady,SchedulingDisabled",
                "edge",
                "40d",
                "",
                "<none>",
                "203.0.113.1",
                "<unknown>",
                "<unknown>",
                "<unknown>",
            ]
        );
        let n = node(json!({}), json!({"unschedulable": true}), json!({}));
        let c = cells("Node", n);
        assert_eq!(c[1], "Unknown,SchedulingDisabled");
        assert_eq!(c[2], "<none>");
        let n = node(
            json!(null),
            json!({}),
            json!({"conditions": [{"type": "Ready", "status": "False"}]}),
        );
        assert_eq!(cells("Node", n)[1..3], ["NotReady", "<none>"]);
        let n = node(
            json!({}),
            json!({"unschedulable": true}),
            json!({"conditions": [
                {"type": "NetworkUnavailable", "status": "True", "reason": "ServiceProxyFailing"},
                {"type": "Ready", "status": "True"},
            ]}),
        );
        assert_eq!(
            cells("Node", n)[1],
            "Ready,NetworkUnavailable,SchedulingDisabled"
        );
        let n = node(
            json!({}),
            json!({}),
            json!({"conditions": [
                {"type": "NetworkUnavailable", "status": "False"},
                {"type": "Ready", "status": "True"},
            ]}),
        );
        assert_eq!(cells("Node", n)[1], "Ready");
    }

    #[test]
    fn namespace_lease_and_default_cells() {
        let ns = json!({"metadata": {"name": "default", "creationTimestamp": ago(7200)}, "status": {"phase": "Active"}});
        assert_eq!(cells("Namespace", ns), ["default", "Active", "120m"]);
        let lease = json!({"metadata": {"name": "node-1", "creationTimestamp": ago(60)},
                           "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40}});
        assert_eq!(cells("Lease", lease), ["node-1", "node-1", "60s"]);
        let lease = json!({"metadata": {"name": "free", "creationTimestamp": ago(60)}, "spec": {}});
        assert_eq!(cells("Lease", lease), ["free", "", "60s"]);
        let other = json!({"metadata": {"name": "cm", "creationTimestamp": ago(59)}});
        assert_eq!(cells("ConfigMap", other), ["cm", "59s"]);
        let table = to_table("ConfigMap", &[], "", "None", now());
        let names: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Age"]);
        // Created in the future (clock skew beyond two seconds).
        let future = json!({"metadata": {"name": "f", "creationTimestamp": ago(-60)}});
        assert_eq!(cells("Namespace", future)[2], "<invalid>");
        let soon = json!({"metadata": {"name": "f", "creationTimestamp": ago(-1)}});
        assert_eq!(cells("Namespace", soon)[2], "0s");
    }

    #[test]
    fn event_cells() {
        let ev = json!({
            "metadata": {"name": "web-1.17a8b", "namespace": "default", "creationTimestamp": ago(600)},
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{a}"},
            "reason": "BackOff",
            "message": "Back-off restarting failed container\n",
            "type": "Warning",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": ago(600),
            "lastTimestamp": ago(30),
            "count": 7,
        });
        let c = row("Event", ev);
        assert_eq!(
            c,
            vec![
                json!("30s"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web-1"),
                json!("spec.containers{a}"),
                json!("kubelet, node-1"),
                json!("Back-off restarting failed container"),
                json!("10m"),
                json!(7),
                json!("web-1.17a8b"),
            ]
        );
        // events.k8s.io style: eventTime, series, reporting fields, no count.
        let ev = json!({
            "metadata": {"name": "n.1"},
            "involvedObject": {"kind": "Node"},
            "reason": "Starting",
            "type": "Normal",
            "eventTime": "2026-11-29T11:59:00.123456Z",
            "reportingComponent": "podnet-agent",
            "reportingInstance": "",
            "series": {"count": 3, "lastObservedTime": "2026-11-29T11:59:50.000001Z"},
        });
        let c = cells("Event", ev);
        assert_eq!(
            c,
            [
                "9s",
                "Normal",
                "Starting",
                "node",
                "",
                "podnet-agent",
                "",
                "59s",
                "3",
                "n.1"
            ]
        );
        let ev = json!({"metadata": {"name": "lone"}, "involvedObject": {"kind": "Service", "name": "web"}});
        let c = cells("Event", ev);
        assert_eq!(c[0], "<unknown>");
        assert_eq!(c[3], "service/web");
        assert_eq!(c[8], "1");
    }

    #[test]
    fn table_envelope_and_objects() {
        let p = pod(json!({"phase": "Running"}));
        let t = to_table("Pod", std::slice::from_ref(&p), "42", "Metadata", now());
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["metadata"], json!({"resourceVersion": "42"}));
        let columns = t["columnDefinitions"].as_array().unwrap();
        let names: Vec<&str> = columns
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        for c in columns {
            for field in ["name", "type", "format", "description", "priority"] {
                assert!(c.get(field).is_some(), "{field} in {c}");
            }
        }
        assert_eq!(columns[0]["format"], "name");
        assert_eq!(columns[4]["priority"], 0);
        assert_eq!(columns[5]["priority"], 1);
        assert_eq!(
            t["rows"][0]["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": p["metadata"]})
        );
        // The cells hold every column, wide ones included.
        assert_eq!(
            t["rows"][0]["cells"].as_array().unwrap().len(),
            columns.len()
        );
        let t = to_table("Pod", std::slice::from_ref(&p), "", "", now());
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["metadata"], json!({}));
        let t = to_table("Pod", std::slice::from_ref(&p), "1", "None", now());
        assert!(t["rows"][0].get("object").is_none());
        let t = to_table("Pod", std::slice::from_ref(&p), "1", "Object", now());
        let mut full = p.clone();
        full["kind"] = json!("Pod");
        full["apiVersion"] = json!("v1");
        assert_eq!(t["rows"][0]["object"], full);
        let lease = json!({"kind": "Lease", "apiVersion": "coordination.k8s.io/v1", "metadata": {"name": "l"}});
        let t = to_table("Lease", std::slice::from_ref(&lease), "1", "Object", now());
        assert_eq!(t["rows"][0]["object"], lease);
        let bare = json!({"metadata": {"name": "l"}});
        let t = to_table("Lease", &[bare], "1", "Object", now());
        assert_eq!(
            t["rows"][0]["object"]["apiVersion"],
            "coordination.k8s.io/v1"
        );
        let t = to_table("Lease", &[json!({})], "1", "Metadata", now());
        assert_eq!(t["rows"][0]["object"]["metadata"], json!({}));
        let t = to_table("Pod", &[], "5", "Metadata", now());
        assert_eq!(t["rows"], json!([]));
    }

    fn two_pods() -> Value {
        let a = json!({
            "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": ago(300)},
            "spec": {"containers": [{"name": "a"}], "nodeName": "node-1"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.244.1.5"}],
                       "containerStatuses": [running("a", true)]},
        });
        let b = json!({
            "metadata": {"name": "db-0", "namespace": "kube-system", "creationTimestamp": ago(2 * 86_400 + 3 * 3600)},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Pending"},
        });
        to_table("Pod", &[a, b], "9", "Metadata", now())
    }

    #[test]
    fn render_as_kubectl() {
        let t = two_pods();
        assert_eq!(
            render(&t, false, false),
            "NAME    READY   STATUS    RESTARTS   AGE\n\
             web-1   1/1     Running   0          5m\n\
             db-0    0/2     Pending   0          2d3h\n"
        );
        assert_eq!(
            render(&t, false, true),
            "NAMESPACE     NAME    READY   STATUS    RESTARTS   AGE\n\
             default       web-1   1/1     Running   0          5m\n\
             kube-system   db-0    0/2     Pending   0          2d3h\n"
        );
        assert_eq!(
            render(&t, true, false),
            "NAME    READY   STATUS    RESTARTS   AGE    IP           NODE     NOMINATED NODE   READINESS GATES\n\
             web-1   1/1     Running   0          5m     10.244.1.5   node-1   <none>           <none>\n\
             db-0    0/2     Pending   0          2d3h   <none>       <none>   <none>           <none>\n"
        );
        // No rows, no headers.
        let empty = to_table("Pod", &[], "1", "Metadata", now());
        assert_eq!(render(&empty, true, true), "");
        // Without objects the namespace cells are empty.
        let no_objects = to_table(
            "Namespace",
            &[json!({"metadata": {"name": "a"}})],
            "1",
            "None",
            now(),
        );
        assert_eq!(
            render(&no_objects, false, true),
            "NAMESPACE   NAME   STATUS   AGE\n            a               <unknown>\n"
        );
    }

    #[test]
    fn render_cells_and_widths() {
        let table = json!({
            "columnDefinitions": [
                {"name": "A", "type": "string", "format": "", "description": "", "priority": 0},
                {"name": "Count", "type": "integer", "format": "", "description": "", "priority": 0},
                {"name": "Ok", "type": "boolean", "format": "", "description": "", "priority": 0},
                {"name": "Hidden", "type": "string", "format": "", "description": "", "priority": 1},
                {"name": "Msg", "type": "string", "format": "", "description": "", "priority": 0},
            ],
            "rows": [
                {"cells": ["x", 12, true, "h", "line one\nline two"]},
                {"cells": [null, 3, false, "h", "esc\u{1b}[31mred"]},
                {"cells": ["short"]},
                {"cells": ["y", 1, true, "h", "m", "extra cell beyond the columns"]},
            ],
        });
        assert_eq!(
            render(&table, false, false),
            "A       COUNT   OK      MSG\n\
             x       12      true    line one...\n\
             \x20       3       false   esc^[[31mred\n\
             short                   \n\
             y       1       true    m\n"
        );
        // A one-letter column is at least six wide.
        let narrow = json!({
            "columnDefinitions": [{"name": "A", "priority": 0}, {"name": "B", "priority": 0}],
            "rows": [{"cells": ["1", "2"]}],
        });
        assert_eq!(render(&narrow, false, false), "A     B\n1     2\n");
        assert_eq!(cell_text(&json!(1.5)), "1.5");
        assert_eq!(cell_text(&json!(["a"])), "[\"a\"]");
        assert_eq!(cell_text(&json!("a\rb")), "a...");
    }

    #[test]
    fn render_service_and_events() {
        let svc = service(
            json!({"type": "ClusterIP", "clusterIPs": ["10.96.0.1"], "ports": [{"port": 443, "protocol": "TCP"}],
                   "selector": {"app": "web"}}),
            json!({}),
        );
        let mut kube = svc.clone();
        kube["metadata"]["name"] = json!("kubernetes");
        kube["spec"]["selector"] = Value::Null;
        let t = to_table("Service", &[kube, svc], "3", "Metadata", now());
        assert_eq!(
            render(&t, false, false),
            "NAME         TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)   AGE\n\
             kubernetes   ClusterIP   10.96.0.1    <none>        443/TCP   3d\n\
             web          ClusterIP   10.96.0.1    <none>        443/TCP   3d\n"
        );
        assert!(render(&t, true, false).starts_with(
            "NAME         TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)   AGE   SELECTOR\n"
        ));
        let ev = json!({
            "metadata": {"name": "e"},
            "involvedObject": {"kind": "Pod", "name": "web-1"},
            "reason": "Scheduled", "type": "Normal", "message": "Successfully assigned default/web-1 to node-1",
            "lastTimestamp": ago(30),
        });
        let t = to_table("Event", &[ev], "3", "Metadata", now());
        assert_eq!(
            render(&t, false, false),
            "LAST SEEN   TYPE     REASON      OBJECT      MESSAGE\n\
             30s         Normal   Scheduled   pod/web-1   Successfully assigned default/web-1 to node-1\n"
        );
    }
}
