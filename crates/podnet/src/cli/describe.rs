//! `podnet describe TYPE [NAME…]`: kubectl's describe text for Pods, Services, Nodes,
//! Endpoints, EndpointSlices, Namespaces and NetworkPolicies ([`netpol`]) (the sections and
//! wording of kubectl's describers, aligned by a tab writer as kubectl's are), and kubectl's
//! generic field dump for other kinds (ClusterNetworkPolicies among them, as for kubectl). A name that
//! matches no object exactly describes the objects whose names start with it, as kubectl does.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use podnet_api::k8s::table::human_duration;
use serde_json::Value;

use super::client::{Client, is_not_found, resource_path};
use super::get::{parse_targets, resolve};
use super::resources::Resource;
use super::tabwriter::TabWriter;
use super::{CliError, GlobalArgs, report};

mod netpol;

#[derive(Args, Debug)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// TYPE [NAME_PREFIX...] or TYPE/NAME...
    #[arg(required = true, value_name = "TYPE [NAME...]")]
    pub targets: Vec<String>,
    /// Label selector.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Leave events out.
    #[arg(long = "show-events", action = clap::ArgAction::Set, default_value_t = true,
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub show_events: bool,
}

/// The annotations describe leaves out.
const SKIP_ANNOTATIONS: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration"];
/// Longer annotations are shortened.
const MAX_ANNOTATION_LEN: usize = 140;

pub async fn run(g: GlobalArgs, args: DescribeArgs) -> i32 {
    match describe(&g, &args).await {
        Ok(errors) => report(&errors),
        Err(e) => report(&[e]),
    }
}

async fn describe(g: &GlobalArgs, args: &DescribeArgs) -> Result<Vec<CliError>, CliError> {
    let targets = parse_targets(&args.targets)?;
    let client = Client::connect(g).await?;
    let namespace = g
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace.clone());
    let ns = (!g.all_namespaces).then_some(namespace.as_str());
    let selector = args.selector.as_deref().unwrap_or_default();
    let mut errors = Vec::new();
    let mut objects: Vec<(Resource, Value)> = Vec::new();
    let resolved = resolve(&client, &targets).await?;
    let one_name = resolved.len() == 1 && resolved[0].1.len() == 1;
    for (res, names) in resolved {
        if names.is_empty() {
            let list = client
                .get(&resource_path(
                    &res,
                    ns,
                    None,
                    &[("labelSelector", selector)],
                ))
                .await?;
            for item in list["items"].as_array().into_iter().flatten() {
                objects.push((res.clone(), item.clone()));
            }
            continue;
        }
        for name in names {
            match client.get(&resource_path(&res, ns, Some(&name), &[])).await {
                Ok(obj) => objects.push((res.clone(), obj)),
                Err(e) if is_not_found(&e) && one_name => {
                    // kubectl describes the objects whose names start with the one given,
                    // each followed by an empty line.
                    let list = client.get(&resource_path(&res, ns, None, &[])).await?;
                    let matching: Vec<Value> = list["items"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|o| {
                            o["metadata"]["name"]
                                .as_str()
                                .is_some_and(|n| n.starts_with(name.as_str()))
                        })
                        .cloned()
                        .collect();
                    if matching.is_empty() {
                        return Err(e);
                    }
                    for obj in matching {
                        println!(
                            "{}",
                            describe_one(&client, &res, &obj, args.show_events).await
                        );
                    }
                    return Ok(errors);
                }
                Err(e) => errors.push(e),
            }
        }
    }
    if objects.is_empty() && errors.is_empty() {
        if g.all_namespaces {
            eprintln!("No resources found");
        } else {
            eprintln!("No resources found in {namespace} namespace.");
        }
        return Ok(errors);
    }
    let mut first = true;
    for (res, obj) in objects {
        let text = describe_one(&client, &res, &obj, args.show_events).await;
        if !first {
            print!("\n\n");
        }
        first = false;
        print!("{text}");
    }
    Ok(errors)
}

/// The description of one object.
async fn describe_one(client: &Client, res: &Resource, obj: &Value, show_events: bool) -> String {
    let events = if show_events {
        events_for(client, res, obj).await
    } else {
        None
    };
    let obj = obj.clone();
    match res.kind.as_str() {
        "Pod" if res.builtin => describe_pod(&obj, events.as_deref()),
        "Service" if res.builtin => {
            let slices = slices_for(client, &obj).await;
            describe_service(&obj, &slices, events.as_deref())
        }
        "Node" if res.builtin => {
            let pods = node_pods(client, &obj).await;
            let lease = node_lease(client, &obj).await;
            describe_node(&obj, &pods, lease, events.as_deref())
        }
        "Endpoints" if res.builtin => describe_endpoints(&obj, events.as_deref()),
        "EndpointSlice" if res.builtin => describe_endpoint_slice(&obj, events.as_deref()),
        "Namespace" if res.builtin => describe_namespace(&obj),
        "NetworkPolicy" if res.builtin => netpol::describe_network_policy(&obj),
        _ => describe_generic(&obj, events.as_deref()),
    }
}

// ---- fetching what the describers show besides the object ----

async fn events_for(client: &Client, res: &Resource, obj: &Value) -> Option<Vec<Value>> {
    let meta = &obj["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    let ns = meta["namespace"].as_str().unwrap_or_default();
    let mut fields = vec![
        format!("involvedObject.name={name}"),
        format!("involvedObject.kind={}", res.kind),
    ];
    if !ns.is_empty() {
        fields.push(format!("involvedObject.namespace={ns}"));
    }
    if res.kind != "Node"
        && let Some(uid) = meta["uid"].as_str()
    {
        fields.push(format!("involvedObject.uid={uid}"));
    }
    let events = Resource::from_kind(&podnet_api::k8s::kinds::EVENT);
    let fields = fields.join(",");
    let path = resource_path(
        &events,
        (!ns.is_empty()).then_some(ns),
        None,
        &[("fieldSelector", fields.as_str())],
    );
    let list = client.get(&path).await.ok()?;
    let mut items: Vec<Value> = list["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|e| {
        timestamp(&e["lastTimestamp"])
            .or_else(|| timestamp(&e["eventTime"]))
            .unwrap_or(0)
    });
    Some(items)
}

async fn slices_for(client: &Client, svc: &Value) -> Vec<Value> {
    let slices = Resource::from_kind(&podnet_api::k8s::kinds::ENDPOINT_SLICE);
    let ns = svc["metadata"]["namespace"].as_str().unwrap_or_default();
    let selector = format!(
        "kubernetes.io/service-name={}",
        svc["metadata"]["name"].as_str().unwrap_or_default()
    );
    let path = resource_path(
        &slices,
        Some(ns),
        None,
        &[("labelSelector", selector.as_str())],
    );
    match client.get(&path).await {
        Ok(list) => list["items"].as_array().cloned().unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

async fn node_pods(client: &Client, node: &Value) -> Vec<Value> {
    let pods = Resource::from_kind(&podnet_api::k8s::kinds::POD);
    let fields = format!(
        "spec.nodeName={},status.phase!=Succeeded,status.phase!=Failed",
        node["metadata"]["name"].as_str().unwrap_or_default()
    );
    let path = resource_path(&pods, None, None, &[("fieldSelector", fields.as_str())]);
    match client.get(&path).await {
        Ok(list) => list["items"].as_array().cloned().unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// The node's Lease in `kube-node-lease`, or why there is none.
async fn node_lease(client: &Client, node: &Value) -> Result<Value, String> {
    let leases = Resource::from_kind(&podnet_api::k8s::kinds::LEASE);
    let name = node["metadata"]["name"].as_str().unwrap_or_default();
    client
        .get(&resource_path(
            &leases,
            Some("kube-node-lease"),
            Some(name),
            &[],
        ))
        .await
        .map_err(|e| match e {
            CliError::Api { status, .. } => status.message,
            other => other.to_string(),
        })
}

// ---- kubectl's describe helpers ----

/// kubectl's `PrefixWriter`: writes at an indentation level (two spaces each) into a tab
/// writer.
struct Out {
    tw: TabWriter,
}

impl Out {
    fn new() -> Out {
        Out {
            tw: TabWriter::new(),
        }
    }

    fn w(&mut self, level: usize, text: &str) {
        self.tw.write(&"  ".repeat(level));
        self.tw.write(text);
    }

    fn line(&mut self, text: &str) {
        self.tw.write(text);
        self.tw.write("\n");
    }

    fn flush(&mut self) {
        self.tw.flush();
    }

    fn finish(self) -> String {
        self.tw.finish()
    }
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().unwrap_or_default()
}

fn arr<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Go's `%v` of a decoded JSON value.
fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".to_owned(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(go_value).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", go_value(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

fn or_none(s: &str) -> &str {
    if s.is_empty() { "<none>" } else { s }
}

/// Nanoseconds since the epoch of an RFC 3339 timestamp.
fn timestamp(v: &Value) -> Option<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok()?;
    t.timestamp_nanos_opt()
}

/// Go's `time.RFC1123Z` in local time: `Sun, 29 Nov 2026 12:16:07 +0000`.
fn rfc1123z(v: &Value) -> String {
    match v
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    {
        Some(t) => t
            .with_timezone(&chrono::Local)
            .format("%a, %d %b %Y %H:%M:%S %z")
            .to_string(),
        None => "Mon, 01 Jan 0001 00:00:00 +0000".to_owned(),
    }
}

/// kubectl's `translateTimestampSince`: the age, `<unknown>` without a time.
fn since(v: &Value) -> String {
    let Some(then) = timestamp(v) else {
        return "<unknown>".to_owned();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    human_duration(Duration::from_nanos(now.saturating_sub(then).max(0) as u64))
}

fn labels_multiline(out: &mut Out, title: &str, labels: &Value) {
    out.w(0, &format!("{title}:\t"));
    let Some(map) = labels.as_object().filter(|m| !m.is_empty()) else {
        out.line("<none>");
        return;
    };
    let sorted: BTreeMap<&String, &Value> = map.iter().collect();
    for (i, (k, v)) in sorted.into_iter().enumerate() {
        if i != 0 {
            out.w(0, "\t");
        }
        out.line(&format!("{k}={}", v.as_str().unwrap_or_default()));
    }
}

fn annotations_multiline(out: &mut Out, title: &str, annotations: &Value) {
    out.w(0, &format!("{title}:\t"));
    let sorted: BTreeMap<&String, &Value> = annotations
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !SKIP_ANNOTATIONS.contains(&k.as_str()))
                .collect()
        })
        .unwrap_or_default();
    if sorted.is_empty() {
        out.line("<none>");
        return;
    }
    for (i, (k, v)) in sorted.into_iter().enumerate() {
        if i != 0 {
            out.w(0, "\t");
        }
        let value = v.as_str().unwrap_or_default().trim_end_matches('\n');
        if value.len() + k.len() + 2 > MAX_ANNOTATION_LEN || value.contains('\n') {
            out.line(&format!("{k}:"));
            for part in value.split('\n') {
                out.line(&format!("\t  {}", shorten(part, MAX_ANNOTATION_LEN - 2)));
            }
        } else {
            out.line(&format!("{k}: {value}"));
        }
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() > max {
        format!("{}...", s.chars().take(max).collect::<String>())
    } else {
        s.to_owned()
    }
}

fn describe_events(out: &mut Out, events: Option<&[Value]>) {
    let Some(events) = events else {
        return;
    };
    if events.is_empty() {
        out.w(0, "Events:\t<none>\n");
        return;
    }
    out.flush();
    out.w(0, "Events:\n  Type\tReason\tAge\tFrom\tMessage\n");
    out.w(1, "----\t------\t----\t----\t-------\n");
    for e in events {
        let first = if e["eventTime"].is_string() {
            since(&e["eventTime"])
        } else {
            since(&e["firstTimestamp"])
        };
        let count = e["count"].as_i64().unwrap_or(0);
        let interval = if e["series"].is_object() {
            format!(
                "{} (x{} over {first})",
                since(&e["series"]["lastObservedTime"]),
                e["series"]["count"].as_i64().unwrap_or(0)
            )
        } else if count > 1 {
            format!("{} (x{count} over {first})", since(&e["lastTimestamp"]))
        } else {
            first
        };
        let source = match s(e, &["source", "component"]) {
            "" => s(e, &["reportingController"]),
            c => c,
        };
        out.w(
            1,
            &format!(
                "{}\t{}\t{interval}\t{source}\t{}\n",
                s(e, &["type"]),
                s(e, &["reason"]),
                s(e, &["message"]).trim()
            ),
        );
    }
}

// ---- Pod ----

fn describe_pod(pod: &Value, events: Option<&[Value]>) -> String {
    let mut out = Out::new();
    let meta = &pod["metadata"];
    let spec = &pod["spec"];
    let status = &pod["status"];
    out.w(0, &format!("Name:\t{}\n", s(meta, &["name"])));
    out.w(0, &format!("Namespace:\t{}\n", s(meta, &["namespace"])));
    if let Some(p) = spec["priority"].as_i64() {
        out.w(0, &format!("Priority:\t{p}\n"));
    }
    if !s(spec, &["priorityClassName"]).is_empty() {
        out.w(
            0,
            &format!(
                "Priority Class Name:\t{}\n",
                s(spec, &["priorityClassName"])
            ),
        );
    }
    if !s(spec, &["serviceAccountName"]).is_empty() {
        out.w(
            0,
            &format!("Service Account:\t{}\n", s(spec, &["serviceAccountName"])),
        );
    }
    match s(spec, &["nodeName"]) {
        "" => out.w(0, "Node:\t<none>\n"),
        node => out.w(0, &format!("Node:\t{node}/{}\n", s(status, &["hostIP"]))),
    }
    if status["startTime"].is_string() {
        out.w(
            0,
            &format!("Start Time:\t{}\n", rfc1123z(&status["startTime"])),
        );
    }
    labels_multiline(&mut out, "Labels", &meta["labels"]);
    annotations_multiline(&mut out, "Annotations", &meta["annotations"]);
    let phase = s(status, &["phase"]);
    if meta["deletionTimestamp"].is_string() && !matches!(phase, "Failed" | "Succeeded") {
        out.w(
            0,
            &format!(
                "Status:\tTerminating (lasts {})\n",
                since(&meta["deletionTimestamp"])
            ),
        );
        out.w(
            0,
            &format!(
                "Termination Grace Period:\t{}s\n",
                meta["deletionGracePeriodSeconds"].as_i64().unwrap_or(0)
            ),
        );
    } else {
        out.w(0, &format!("Status:\t{phase}\n"));
    }
    if !s(status, &["reason"]).is_empty() {
        out.w(0, &format!("Reason:\t{}\n", s(status, &["reason"])));
    }
    if !s(status, &["message"]).is_empty() {
        out.w(0, &format!("Message:\t{}\n", s(status, &["message"])));
    }
    out.w(0, &format!("IP:\t{}\n", s(status, &["podIP"])));
    let ips = arr(status, &["podIPs"]);
    if ips.is_empty() {
        out.w(0, "IPs:\t<none>\n");
    } else {
        out.w(0, "IPs:\n");
        for ip in ips {
            out.w(1, &format!("IP:\t{}\n", s(ip, &["ip"])));
        }
    }
    if let Some(owner) = arr(meta, &["ownerReferences"])
        .iter()
        .find(|o| o["controller"].as_bool() == Some(true))
    {
        out.w(
            0,
            &format!(
                "Controlled By:\t{}/{}\n",
                s(owner, &["kind"]),
                s(owner, &["name"])
            ),
        );
    }
    if !arr(spec, &["initContainers"]).is_empty() {
        describe_containers(
            &mut out,
            "Init Containers",
            arr(spec, &["initContainers"]),
            arr(status, &["initContainerStatuses"]),
        );
    }
    describe_containers(
        &mut out,
        "Containers",
        arr(spec, &["containers"]),
        arr(status, &["containerStatuses"]),
    );
    let conditions = arr(status, &["conditions"]);
    if !conditions.is_empty() {
        out.w(0, "Conditions:\n  Type\tStatus\n");
        for c in conditions {
            out.w(
                1,
                &format!("{} \t{} \n", s(c, &["type"]), s(c, &["status"])),
            );
        }
    }
    describe_volumes(&mut out, arr(spec, &["volumes"]));
    if !s(status, &["qosClass"]).is_empty() {
        out.w(0, &format!("QoS Class:\t{}\n", s(status, &["qosClass"])));
    }
    labels_multiline(&mut out, "Node-Selectors", &spec["nodeSelector"]);
    tolerations(&mut out, arr(spec, &["tolerations"]));
    describe_events(&mut out, events);
    out.finish()
}

fn describe_containers(out: &mut Out, label: &str, containers: &[Value], statuses: &[Value]) {
    if containers.is_empty() {
        out.w(0, &format!("{label}: <none>\n"));
        return;
    }
    out.w(0, &format!("{label}:\n"));
    for c in containers {
        let name = s(c, &["name"]);
        let status = statuses.iter().find(|st| st["name"] == name);
        out.w(1, &format!("{name}:\n"));
        if let Some(st) = status {
            out.w(2, &format!("Container ID:\t{}\n", s(st, &["containerID"])));
        }
        out.w(2, &format!("Image:\t{}\n", s(c, &["image"])));
        if let Some(st) = status {
            out.w(2, &format!("Image ID:\t{}\n", s(st, &["imageID"])));
        }
        let ports = arr(c, &["ports"]);
        let port_list: Vec<String> = ports
            .iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p["containerPort"].as_i64().unwrap_or(0),
                    p["protocol"].as_str().unwrap_or("TCP")
                )
            })
            .collect();
        let host_list: Vec<String> = ports
            .iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p["hostPort"].as_i64().unwrap_or(0),
                    p["protocol"].as_str().unwrap_or("TCP")
                )
            })
            .collect();
        if port_list.len() > 1 {
            out.w(2, &format!("Ports:\t{}\n", port_list.join(", ")));
        } else {
            out.w(2, &format!("Port:\t{}\n", or_none(&port_list.join(", "))));
        }
        if host_list.len() > 1 {
            out.w(2, &format!("Host Ports:\t{}\n", host_list.join(", ")));
        } else {
            out.w(
                2,
                &format!("Host Port:\t{}\n", or_none(&host_list.join(", "))),
            );
        }
        for (key, title) in [("command", "Command"), ("args", "Args")] {
            let items = arr(c, &[key]);
            if !items.is_empty() {
                out.w(2, &format!("{title}:\n"));
                for item in items {
                    for part in item.as_str().unwrap_or_default().split('\n') {
                        out.w(3, &format!("{part}\n"));
                    }
                }
            }
        }
        if let Some(st) = status {
            container_state(out, "State", &st["state"]);
            if st["lastState"]["terminated"].is_object() {
                container_state(out, "Last State", &st["lastState"]);
            }
            let ready = if st["ready"].as_bool() == Some(true) {
                "True"
            } else {
                "False"
            };
            out.w(2, &format!("Ready:\t{ready}\n"));
            out.w(
                2,
                &format!(
                    "Restart Count:\t{}\n",
                    st["restartCount"].as_i64().unwrap_or(0)
                ),
            );
        }
        for (key, title) in [("limits", "Limits"), ("requests", "Requests")] {
            if let Some(map) = c["resources"][key].as_object().filter(|m| !m.is_empty()) {
                out.w(2, &format!("{title}:\n"));
                let sorted: BTreeMap<&String, &Value> = map.iter().collect();
                for (k, v) in sorted {
                    out.w(3, &format!("{k}:\t{}\n", go_value(v)));
                }
            }
        }
        for (key, title) in [
            ("livenessProbe", "Liveness"),
            ("readinessProbe", "Readiness"),
            ("startupProbe", "Startup"),
        ] {
            if c[key].is_object() {
                out.w(2, &format!("{title}:\t{}\n", probe(&c[key])));
            }
        }
        let env = arr(c, &["env"]);
        if env.is_empty() {
            out.w(2, "Environment:\t<none>\n");
        } else {
            out.w(2, "Environment:\n");
            for e in env {
                let name = s(e, &["name"]);
                if let Some(value) = e["value"].as_str() {
                    for (i, part) in value.split('\n').enumerate() {
                        if i == 0 {
                            out.w(3, &format!("{name}:\t{part}\n"));
                        } else {
                            out.w(3, &format!("\t{part}\n"));
                        }
                    }
                } else if e["valueFrom"]["fieldRef"].is_object() {
                    let f = &e["valueFrom"]["fieldRef"];
                    out.w(
                        3,
                        &format!(
                            "{name}:\t ({}:{})\n",
                            s(f, &["apiVersion"]),
                            s(f, &["fieldPath"])
                        ),
                    );
                } else if e["valueFrom"].is_object() {
                    out.w(3, &format!("{name}:\t<set from a reference>\n"));
                } else {
                    out.w(3, &format!("{name}:\t\n"));
                }
            }
        }
        let mounts = arr(c, &["volumeMounts"]);
        if mounts.is_empty() {
            out.w(2, "Mounts:\t<none>\n");
        } else {
            out.w(2, "Mounts:\n");
            for m in mounts {
                let ro = if m["readOnly"].as_bool() == Some(true) {
                    "ro"
                } else {
                    "rw"
                };
                let sub = match s(m, &["subPath"]) {
                    "" => String::new(),
                    p => format!(",path=\"{p}\""),
                };
                out.w(
                    3,
                    &format!(
                        "{} from {} ({ro}{sub})\n",
                        s(m, &["mountPath"]),
                        s(m, &["name"])
                    ),
                );
            }
        }
    }
}

fn container_state(out: &mut Out, title: &str, state: &Value) {
    if state["running"].is_object() {
        out.w(2, &format!("{title}:\tRunning\n"));
        out.w(
            3,
            &format!("Started:\t{}\n", rfc1123z(&state["running"]["startedAt"])),
        );
    } else if state["waiting"].is_object() {
        out.w(2, &format!("{title}:\tWaiting\n"));
        let reason = s(state, &["waiting", "reason"]);
        if !reason.is_empty() {
            out.w(3, &format!("Reason:\t{reason}\n"));
        }
    } else if state["terminated"].is_object() {
        let t = &state["terminated"];
        out.w(2, &format!("{title}:\tTerminated\n"));
        if !s(t, &["reason"]).is_empty() {
            out.w(3, &format!("Reason:\t{}\n", s(t, &["reason"])));
        }
        if !s(t, &["message"]).is_empty() {
            out.w(3, &format!("Message:\t{}\n", s(t, &["message"])));
        }
        out.w(
            3,
            &format!("Exit Code:\t{}\n", t["exitCode"].as_i64().unwrap_or(0)),
        );
        if let Some(sig) = t["signal"].as_i64().filter(|s| *s > 0) {
            out.w(3, &format!("Signal:\t{sig}\n"));
        }
        out.w(3, &format!("Started:\t{}\n", rfc1123z(&t["startedAt"])));
        out.w(3, &format!("Finished:\t{}\n", rfc1123z(&t["finishedAt"])));
    } else {
        out.w(2, &format!("{title}:\tWaiting\n"));
    }
}

/// kubectl's `DescribeProbe`.
fn probe(p: &Value) -> String {
    let attrs = format!(
        "delay={}s timeout={}s period={}s #success={} #failure={}",
        p["initialDelaySeconds"].as_i64().unwrap_or(0),
        p["timeoutSeconds"].as_i64().unwrap_or(1),
        p["periodSeconds"].as_i64().unwrap_or(10),
        p["successThreshold"].as_i64().unwrap_or(1),
        p["failureThreshold"].as_i64().unwrap_or(3)
    );
    if p["exec"].is_object() {
        return format!("exec {} {attrs}", go_value(&p["exec"]["command"]));
    }
    if p["httpGet"].is_object() {
        let h = &p["httpGet"];
        let scheme = h["scheme"].as_str().unwrap_or("HTTP").to_lowercase();
        let port = go_value(&h["port"]);
        let host = s(h, &["host"]);
        let hostport = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        return format!("http-get {scheme}://{hostport}{} {attrs}", s(h, &["path"]));
    }
    if p["tcpSocket"].is_object() {
        let t = &p["tcpSocket"];
        return format!(
            "tcp-socket {}:{} {attrs}",
            s(t, &["host"]),
            go_value(&t["port"])
        );
    }
    if p["grpc"].is_object() {
        return format!(
            "grpc <pod>:{} {} {attrs}",
            p["grpc"]["port"].as_i64().unwrap_or(0),
            s(p, &["grpc", "service"])
        );
    }
    format!("unknown {attrs}")
}

fn describe_volumes(out: &mut Out, volumes: &[Value]) {
    if volumes.is_empty() {
        out.w(0, "Volumes:\t<none>\n");
        return;
    }
    out.w(0, "Volumes:\n");
    for v in volumes {
        out.w(1, &format!("{}:\n", s(v, &["name"])));
        if v["hostPath"].is_object() {
            out.w(2, "Type:\tHostPath (bare host directory volume)\n");
            out.w(2, &format!("Path:\t{}\n", s(v, &["hostPath", "path"])));
            out.w(
                2,
                &format!("HostPathType:\t{}\n", s(v, &["hostPath", "type"])),
            );
        } else if v["emptyDir"].is_object() {
            out.w(
                2,
                "Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)\n",
            );
            out.w(2, &format!("Medium:\t{}\n", s(v, &["emptyDir", "medium"])));
            let limit = match &v["emptyDir"]["sizeLimit"] {
                Value::Null => "<unset>".to_owned(),
                other => go_value(other),
            };
            out.w(2, &format!("SizeLimit:\t{limit}\n"));
        } else {
            let kind = v
                .as_object()
                .and_then(|m| m.keys().find(|k| k.as_str() != "name").cloned())
                .unwrap_or_default();
            out.w(2, &format!("Type:\t{kind}\n"));
        }
    }
}

fn tolerations(out: &mut Out, tolerations: &[Value]) {
    out.w(0, "Tolerations:\t");
    if tolerations.is_empty() {
        out.line("<none>");
        return;
    }
    for (i, t) in tolerations.iter().enumerate() {
        if i != 0 {
            out.w(0, "\t");
        }
        let mut text = s(t, &["key"]).to_owned();
        if !s(t, &["value"]).is_empty() {
            text.push('=');
            text.push_str(s(t, &["value"]));
        }
        if !s(t, &["effect"]).is_empty() {
            text.push(':');
            text.push_str(s(t, &["effect"]));
        }
        if s(t, &["operator"]) == "Exists" && s(t, &["value"]).is_empty() {
            if s(t, &["key"]).is_empty() {
                text.push_str("op=Exists");
            } else {
                text.push_str(" op=Exists");
            }
        }
        if let Some(secs) = t["tolerationSeconds"].as_i64() {
            text.push_str(&format!(" for {secs}s"));
        }
        out.line(&text);
    }
}

// ---- Service ----

/// `a=b,c=d` with keys sorted; `<none>` when empty.
fn selector_string(sel: &Value) -> String {
    let Some(m) = sel.as_object().filter(|m| !m.is_empty()) else {
        return "<none>".to_owned();
    };
    let sorted: BTreeMap<&String, &Value> = m.iter().collect();
    sorted
        .into_iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",")
}

/// kubectl's `formatEndpointSlices` for one service port: ready endpoints as `ip:port`, at
/// most three, then `+ N more...`.
fn format_slices(slices: &[Value], port_name: &str) -> String {
    if slices.is_empty() {
        return "<none>".to_owned();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    let ready = |e: &Value| e["conditions"]["ready"].as_bool() != Some(false);
    for slice in slices {
        let ports = arr(slice, &["ports"]);
        if ports.is_empty() {
            for e in arr(slice, &["endpoints"]) {
                if list.len() == MAX {
                    more = true;
                }
                if !ready(e) {
                    continue;
                }
                if !more && let Some(a) = arr(e, &["addresses"]).first() {
                    list.push(a.as_str().unwrap_or_default().to_owned());
                }
                count += 1;
            }
            continue;
        }
        for p in ports {
            if p["name"].as_str().unwrap_or_default() != port_name {
                continue;
            }
            for e in arr(slice, &["endpoints"]) {
                if list.len() == MAX {
                    more = true;
                }
                if !ready(e) {
                    continue;
                }
                if !more && let Some(a) = arr(e, &["addresses"]).first() {
                    let addr = a.as_str().unwrap_or_default();
                    let port = p["port"].as_i64().unwrap_or(0);
                    if addr.contains(':') {
                        list.push(format!("[{addr}]:{port}"));
                    } else {
                        list.push(format!("{addr}:{port}"));
                    }
                }
                count += 1;
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count.saturating_sub(MAX))
    } else {
        joined
    }
}

fn describe_service(svc: &Value, slices: &[Value], events: Option<&[Value]>) -> String {
    let mut out = Out::new();
    let meta = &svc["metadata"];
    let spec = &svc["spec"];
    out.w(0, &format!("Name:\t{}\n", s(meta, &["name"])));
    out.w(0, &format!("Namespace:\t{}\n", s(meta, &["namespace"])));
    labels_multiline(&mut out, "Labels", &meta["labels"]);
    annotations_multiline(&mut out, "Annotations", &meta["annotations"]);
    out.w(
        0,
        &format!("Selector:\t{}\n", selector_string(&spec["selector"])),
    );
    out.w(0, &format!("Type:\t{}\n", s(spec, &["type"])));
    if !s(spec, &["ipFamilyPolicy"]).is_empty() {
        out.w(
            0,
            &format!("IP Family Policy:\t{}\n", s(spec, &["ipFamilyPolicy"])),
        );
    }
    let families: Vec<&str> = arr(spec, &["ipFamilies"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    out.w(
        0,
        &format!("IP Families:\t{}\n", or_none(&families.join(","))),
    );
    out.w(0, &format!("IP:\t{}\n", s(spec, &["clusterIP"])));
    let ips: Vec<&str> = arr(spec, &["clusterIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    out.w(0, &format!("IPs:\t{}\n", or_none(&ips.join(","))));
    let external: Vec<&str> = arr(spec, &["externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if !external.is_empty() {
        out.w(0, &format!("External IPs:\t{}\n", external.join(",")));
    }
    if !s(spec, &["loadBalancerIP"]).is_empty() {
        out.w(0, &format!("IP:\t{}\n", s(spec, &["loadBalancerIP"])));
    }
    if !s(spec, &["externalName"]).is_empty() {
        out.w(
            0,
            &format!("External Name:\t{}\n", s(spec, &["externalName"])),
        );
    }
    let ingress: Vec<String> = arr(svc, &["status", "loadBalancer", "ingress"])
        .iter()
        .map(|i| match s(i, &["ip"]) {
            "" => s(i, &["hostname"]).to_owned(),
            ip => ip.to_owned(),
        })
        .collect();
    if !ingress.is_empty() {
        out.w(
            0,
            &format!("LoadBalancer Ingress:\t{}\n", ingress.join(", ")),
        );
    }
    for p in arr(spec, &["ports"]) {
        let name = match s(p, &["name"]) {
            "" => "<unset>",
            n => n,
        };
        let proto = p["protocol"].as_str().unwrap_or("TCP");
        out.w(
            0,
            &format!(
                "Port:\t{name}\t{}/{proto}\n",
                p["port"].as_i64().unwrap_or(0)
            ),
        );
        let target = match &p["targetPort"] {
            Value::Null => go_value(&p["port"]),
            other => go_value(other),
        };
        out.w(0, &format!("TargetPort:\t{target}/{proto}\n"));
        if let Some(np) = p["nodePort"].as_i64().filter(|n| *n != 0) {
            out.w(0, &format!("NodePort:\t{name}\t{np}/{proto}\n"));
        }
        out.w(
            0,
            &format!("Endpoints:\t{}\n", format_slices(slices, s(p, &["name"]))),
        );
    }
    out.w(
        0,
        &format!("Session Affinity:\t{}\n", s(spec, &["sessionAffinity"])),
    );
    if let Some(t) = spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"].as_i64() {
        out.w(0, &format!("Session Affinity Timeout Seconds:\t{t}\n"));
    }
    if !s(spec, &["externalTrafficPolicy"]).is_empty() {
        out.w(
            0,
            &format!(
                "External Traffic Policy:\t{}\n",
                s(spec, &["externalTrafficPolicy"])
            ),
        );
    }
    if !s(spec, &["internalTrafficPolicy"]).is_empty() {
        out.w(
            0,
            &format!(
                "Internal Traffic Policy:\t{}\n",
                s(spec, &["internalTrafficPolicy"])
            ),
        );
    }
    if let Some(hc) = spec["healthCheckNodePort"].as_i64().filter(|n| *n != 0) {
        out.w(0, &format!("HealthCheck NodePort:\t{hc}\n"));
    }
    describe_events(&mut out, events);
    out.finish()
}

// ---- Node ----

fn describe_node(
    node: &Value,
    pods: &[Value],
    lease: Result<Value, String>,
    events: Option<&[Value]>,
) -> String {
    let mut out = Out::new();
    let meta = &node["metadata"];
    let spec = &node["spec"];
    let status = &node["status"];
    out.w(0, &format!("Name:\t{}\n", s(meta, &["name"])));
    let mut roles: Vec<String> = meta["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                (!role.is_empty()).then(|| role.to_owned())
            } else if k == "kubernetes.io/role" {
                v.as_str().map(str::to_owned)
            } else {
                None
            }
        })
        .collect();
    roles.sort();
    out.w(0, &format!("Roles:\t{}\n", or_none(&roles.join(","))));
    labels_multiline(&mut out, "Labels", &meta["labels"]);
    annotations_multiline(&mut out, "Annotations", &meta["annotations"]);
    out.w(
        0,
        &format!(
            "CreationTimestamp:\t{}\n",
            rfc1123z(&meta["creationTimestamp"])
        ),
    );
    let taints = arr(spec, &["taints"]);
    out.w(0, "Taints:\t");
    if taints.is_empty() {
        out.line("<none>");
    } else {
        for (i, t) in taints.iter().enumerate() {
            if i != 0 {
                out.w(0, "\t");
            }
            let value = match s(t, &["value"]) {
                "" => String::new(),
                v => format!("={v}"),
            };
            out.line(&format!("{}{value}:{}", s(t, &["key"]), s(t, &["effect"])));
        }
    }
    out.w(
        0,
        &format!(
            "Unschedulable:\t{}\n",
            spec["unschedulable"].as_bool().unwrap_or(false)
        ),
    );
    match lease {
        Ok(lease) => {
            out.w(0, "Lease:\n");
            let holder = match s(&lease, &["spec", "holderIdentity"]) {
                "" => "<unset>",
                h => h,
            };
            out.w(1, &format!("HolderIdentity:\t{holder}\n"));
            for (key, title) in [("acquireTime", "AcquireTime"), ("renewTime", "RenewTime")] {
                let t = &lease["spec"][key];
                let text = if t.is_string() {
                    rfc1123z(t)
                } else {
                    "<unset>".to_owned()
                };
                out.w(1, &format!("{title}:\t{text}\n"));
            }
        }
        Err(why) => out.w(0, &format!("Lease:\tFailed to get lease: {why}\n")),
    }
    let conditions = arr(status, &["conditions"]);
    if !conditions.is_empty() {
        out.w(
            0,
            "Conditions:\n  Type\tStatus\tLastHeartbeatTime\tLastTransitionTime\tReason\tMessage\n",
        );
        out.w(
            1,
            "----\t------\t-----------------\t------------------\t------\t-------\n",
        );
        for c in conditions {
            out.w(
                1,
                &format!(
                    "{} \t{} \t{} \t{} \t{} \t{}\n",
                    s(c, &["type"]),
                    s(c, &["status"]),
                    rfc1123z(&c["lastHeartbeatTime"]),
                    rfc1123z(&c["lastTransitionTime"]),
                    s(c, &["reason"]),
                    s(c, &["message"])
                ),
            );
        }
    }
    out.w(0, "Addresses:\n");
    for a in arr(status, &["addresses"]) {
        out.w(
            1,
            &format!("{}:\t{}\n", s(a, &["type"]), s(a, &["address"])),
        );
    }
    for (key, title) in [("capacity", "Capacity"), ("allocatable", "Allocatable")] {
        if let Some(m) = status[key].as_object().filter(|m| !m.is_empty()) {
            out.w(0, &format!("{title}:\n"));
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            for (k, v) in sorted {
                out.w(0, &format!("  {k}:\t{}\n", go_value(v)));
            }
        }
    }
    let info = &status["nodeInfo"];
    out.w(0, "System Info:\n");
    for (key, title) in [
        ("machineID", "Machine ID"),
        ("systemUUID", "System UUID"),
        ("bootID", "Boot ID"),
        ("kernelVersion", "Kernel Version"),
        ("osImage", "OS Image"),
        ("operatingSystem", "Operating System"),
        ("architecture", "Architecture"),
        ("containerRuntimeVersion", "Container Runtime Version"),
        ("kubeletVersion", "Kubelet Version"),
        ("kubeProxyVersion", "Kube-Proxy Version"),
    ] {
        out.w(0, &format!("  {title}:\t{}\n", s(info, &[key])));
    }
    if !s(spec, &["podCIDR"]).is_empty() {
        out.w(0, &format!("PodCIDR:\t{}\n", s(spec, &["podCIDR"])));
    }
    let cidrs: Vec<&str> = arr(spec, &["podCIDRs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if !cidrs.is_empty() {
        out.w(0, &format!("PodCIDRs:\t{}\n", cidrs.join(",")));
    }
    if !s(spec, &["providerID"]).is_empty() {
        out.w(0, &format!("ProviderID:\t{}\n", s(spec, &["providerID"])));
    }
    out.w(
        0,
        &format!("Non-terminated Pods:\t({} in total)\n", pods.len()),
    );
    out.w(
        1,
        "Namespace\tName\t\tCPU Requests\tCPU Limits\tMemory Requests\tMemory Limits\tAge\n",
    );
    out.w(
        1,
        "---------\t----\t\t------------\t----------\t---------------\t-------------\t---\n",
    );
    let mut totals = Totals::default();
    let alloc = &status["allocatable"];
    let cpu_alloc = parse_quantity(&alloc["cpu"]).unwrap_or(0.0);
    let mem_alloc = parse_quantity(&alloc["memory"]).unwrap_or(0.0);
    for pod in pods {
        let r = pod_resources(pod);
        totals.add(&r);
        out.w(
            1,
            &format!(
                "{}\t{}\t\t{} ({}%)\t{} ({}%)\t{} ({}%)\t{} ({}%)\t{}\n",
                s(pod, &["metadata", "namespace"]),
                s(pod, &["metadata", "name"]),
                format_cpu(r.cpu_req),
                percent(r.cpu_req, cpu_alloc),
                format_cpu(r.cpu_lim),
                percent(r.cpu_lim, cpu_alloc),
                format_bytes(r.mem_req),
                percent(r.mem_req, mem_alloc),
                format_bytes(r.mem_lim),
                percent(r.mem_lim, mem_alloc),
                since(&pod["metadata"]["creationTimestamp"])
            ),
        );
    }
    out.w(
        0,
        "Allocated resources:\n  (Total limits may be over 100 percent, i.e., overcommitted.)\n",
    );
    out.w(1, "Resource\tRequests\tLimits\n");
    out.w(1, "--------\t--------\t------\n");
    out.w(
        1,
        &format!(
            "cpu\t{} ({}%)\t{} ({}%)\n",
            format_cpu(totals.0.cpu_req),
            percent(totals.0.cpu_req, cpu_alloc),
            format_cpu(totals.0.cpu_lim),
            percent(totals.0.cpu_lim, cpu_alloc)
        ),
    );
    out.w(
        1,
        &format!(
            "memory\t{} ({}%)\t{} ({}%)\n",
            format_bytes(totals.0.mem_req),
            percent(totals.0.mem_req, mem_alloc),
            format_bytes(totals.0.mem_lim),
            percent(totals.0.mem_lim, mem_alloc)
        ),
    );
    out.w(1, "ephemeral-storage\t0 (0%)\t0 (0%)\n");
    describe_events(&mut out, events);
    out.finish()
}

#[derive(Default, Clone, Copy)]
struct PodResources {
    cpu_req: f64,
    cpu_lim: f64,
    mem_req: f64,
    mem_lim: f64,
}

#[derive(Default)]
struct Totals(PodResources);

impl Totals {
    fn add(&mut self, r: &PodResources) {
        self.0.cpu_req += r.cpu_req;
        self.0.cpu_lim += r.cpu_lim;
        self.0.mem_req += r.mem_req;
        self.0.mem_lim += r.mem_lim;
    }
}

/// The sums over a pod's containers (init containers' peaks are left out: lab pods have
/// none that matter here).
fn pod_resources(pod: &Value) -> PodResources {
    let mut r = PodResources::default();
    for c in arr(pod, &["spec", "containers"]) {
        let q = |kind: &str, res: &str| parse_quantity(&c["resources"][kind][res]).unwrap_or(0.0);
        r.cpu_req += q("requests", "cpu");
        r.cpu_lim += q("limits", "cpu");
        r.mem_req += q("requests", "memory");
        r.mem_lim += q("limits", "memory");
    }
    r
}

/// A Kubernetes quantity (`100m`, `2`, `128Mi`, `1G`, `1e3`) as a number.
fn parse_quantity(v: &Value) -> Option<f64> {
    if let Some(n) = v.as_f64() {
        return Some(n);
    }
    let s = v.as_str()?.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        e if e.starts_with('e') || e.starts_with('E') => 10f64.powf(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

fn format_cpu(cores: f64) -> String {
    let milli = (cores * 1000.0).round() as i64;
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

fn format_bytes(bytes: f64) -> String {
    let b = bytes.round() as i64;
    for (suffix, size) in [("Gi", 1i64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if b != 0 && b % size == 0 {
            return format!("{}{suffix}", b / size);
        }
    }
    b.to_string()
}

fn percent(used: f64, total: f64) -> i64 {
    if total <= 0.0 {
        0
    } else {
        (used / total * 100.0) as i64
    }
}

// ---- Endpoints, Namespace ----

fn describe_endpoints(ep: &Value, events: Option<&[Value]>) -> String {
    let mut out = Out::new();
    let meta = &ep["metadata"];
    out.w(0, &format!("Name:\t{}\n", s(meta, &["name"])));
    out.w(0, &format!("Namespace:\t{}\n", s(meta, &["namespace"])));
    labels_multiline(&mut out, "Labels", &meta["labels"]);
    annotations_multiline(&mut out, "Annotations", &meta["annotations"]);
    out.w(0, "Subsets:\n");
    for subset in arr(ep, &["subsets"]) {
        let ips = |key: &str| -> String {
            let list: Vec<&str> = arr(subset, &[key]).iter().map(|a| s(a, &["ip"])).collect();
            or_none(&list.join(",")).to_owned()
        };
        out.w(1, &format!("Addresses:\t{}\n", ips("addresses")));
        out.w(
            1,
            &format!("NotReadyAddresses:\t{}\n", ips("notReadyAddresses")),
        );
        let ports = arr(subset, &["ports"]);
        if !ports.is_empty() {
            out.w(1, "Ports:\n");
            out.w(2, "Name\tPort\tProtocol\n");
            out.w(2, "----\t----\t--------\n");
            for p in ports {
                let name = match s(p, &["name"]) {
                    "" => "<unset>",
                    n => n,
                };
                out.w(
                    2,
                    &format!(
                        "{name}\t{}\t{}\n",
                        p["port"].as_i64().unwrap_or(0),
                        p["protocol"].as_str().unwrap_or("TCP")
                    ),
                );
            }
        }
        out.w(0, "\n");
    }
    describe_events(&mut out, events);
    out.finish()
}

fn describe_endpoint_slice(slice: &Value, events: Option<&[Value]>) -> String {
    let mut out = Out::new();
    let meta = &slice["metadata"];
    out.w(0, &format!("Name:\t{}\n", s(meta, &["name"])));
    out.w(0, &format!("Namespace:\t{}\n", s(meta, &["namespace"])));
    labels_multiline(&mut out, "Labels", &meta["labels"]);
    annotations_multiline(&mut out, "Annotations", &meta["annotations"]);
    out.w(
        0,
        &format!("AddressType:\t{}\n", s(slice, &["addressType"])),
    );
    let ports = arr(slice, &["ports"]);
    if ports.is_empty() {
        out.w(0, "Ports: <unset>\n");
    } else {
        out.w(0, "Ports:\n");
        out.w(1, "Name\tPort\tProtocol\n");
        out.w(1, "----\t----\t--------\n");
        for p in ports {
            let name = match s(p, &["name"]) {
                "" => "<unset>",
                n => n,
            };
            let port = p["port"]
                .as_i64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "<unset>".to_owned());
            out.w(
                1,
                &format!(
                    "{name}\t{port}\t{}\n",
                    p["protocol"].as_str().unwrap_or("TCP")
                ),
            );
        }
    }
    let endpoints = arr(slice, &["endpoints"]);
    if endpoints.is_empty() {
        out.w(0, "Endpoints: <none>\n");
    } else {
        out.w(0, "Endpoints:\n");
        let or_unset = |v: &Value| v.as_str().unwrap_or("<unset>").to_owned();
        for e in endpoints {
            let addrs: Vec<&str> = arr(e, &["addresses"])
                .iter()
                .filter_map(Value::as_str)
                .collect();
            out.w(
                1,
                &format!("- Addresses:\t{}\n", or_none(&addrs.join(", "))),
            );
            out.w(2, "Conditions:\n");
            let ready = e["conditions"]["ready"]
                .as_bool()
                .map(|b| b.to_string())
                .unwrap_or_else(|| "<unset>".to_owned());
            out.w(3, &format!("Ready:\t{ready}\n"));
            out.w(2, &format!("Hostname:\t{}\n", or_unset(&e["hostname"])));
            if e["targetRef"].is_object() {
                out.w(
                    2,
                    &format!(
                        "TargetRef:\t{}/{}\n",
                        s(e, &["targetRef", "kind"]),
                        s(e, &["targetRef", "name"])
                    ),
                );
            }
            out.w(2, &format!("NodeName:\t{}\n", or_unset(&e["nodeName"])));
            out.w(2, &format!("Zone:\t{}\n", or_unset(&e["zone"])));
        }
    }
    describe_events(&mut out, events);
    out.finish()
}

fn describe_namespace(ns: &Value) -> String {
    let mut out = Out::new();
    let meta = &ns["metadata"];
    out.w(0, &format!("Name:\t{}\n", s(meta, &["name"])));
    labels_multiline(&mut out, "Labels", &meta["labels"]);
    annotations_multiline(&mut out, "Annotations", &meta["annotations"]);
    out.w(0, &format!("Status:\t{}\n", s(ns, &["status", "phase"])));
    let conditions = arr(ns, &["status", "conditions"]);
    if !conditions.is_empty() {
        out.w(0, "Conditions:\n");
        out.w(1, "Type\tStatus\tLastTransitionTime\tReason\tMessage\n");
        out.w(1, "----\t------\t------------------\t------\t-------\n");
        for c in conditions {
            out.w(
                1,
                &format!(
                    "{}\t{}\t{}\t{}\t{}\n",
                    s(c, &["type"]),
                    s(c, &["status"]),
                    rfc1123z(&c["lastTransitionTime"]),
                    s(c, &["reason"]),
                    s(c, &["message"])
                ),
            );
        }
    }
    out.finish()
}

// ---- any other kind: kubectl's generic describer ----

fn describe_generic(obj: &Value, events: Option<&[Value]>) -> String {
    let mut out = Out::new();
    let meta = &obj["metadata"];
    out.w(0, &format!("Name:\t{}\n", s(meta, &["name"])));
    out.w(0, &format!("Namespace:\t{}\n", s(meta, &["namespace"])));
    labels_multiline(&mut out, "Labels", &meta["labels"]);
    annotations_multiline(&mut out, "Annotations", &meta["annotations"]);
    if let Some(map) = obj.as_object() {
        unstructured(
            &mut out,
            0,
            map,
            "",
            &[
                ".metadata.managedFields",
                ".metadata.name",
                ".metadata.namespace",
                ".metadata.labels",
                ".metadata.annotations",
            ],
        );
    }
    describe_events(&mut out, events);
    out.finish()
}

/// kubectl's `printUnstructuredContent`: fields sorted, names made readable.
fn unstructured(
    out: &mut Out,
    level: usize,
    map: &serde_json::Map<String, Value>,
    prefix: &str,
    skip: &[&str],
) {
    let sorted: BTreeMap<&String, &Value> = map.iter().collect();
    for (field, value) in sorted {
        let path = format!("{prefix}.{field}");
        if skip.contains(&path.as_str()) {
            continue;
        }
        match value {
            Value::Object(m) => {
                out.w(level, &format!("{}:\n", smart_label(field)));
                unstructured(out, level + 1, m, &path, skip);
            }
            Value::Array(items) => {
                out.w(level, &format!("{}:\n", smart_label(field)));
                for item in items {
                    match item {
                        Value::Object(m) => unstructured(out, level + 1, m, &path, skip),
                        other => out.w(level + 1, &format!("{}\n", go_value(other))),
                    }
                }
            }
            other => out.w(
                level,
                &format!("{}:\t{}\n", smart_label(field), go_value(other)),
            ),
        }
    }
}

/// `holderIdentity` → `Holder Identity`, `apiVersion` → `API Version` (kubectl's
/// `smartLabelFor`).
fn smart_label(field: &str) -> String {
    if field.chars().any(|c| !c.is_alphabetic() && c != '-') {
        return field.to_owned();
    }
    const ACRONYMS: &[&str] = &["API", "URL", "UID", "OSB", "GUID"];
    let chars: Vec<char> = field.chars().collect();
    let mut parts: Vec<String> = Vec::new();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let starts_word = c.is_uppercase()
            && i > 0
            && (chars[i - 1].is_lowercase()
                || (chars.get(i + 1).is_some_and(|n| n.is_lowercase())
                    && chars[i - 1].is_uppercase()));
        if starts_word && !cur.is_empty() {
            parts.push(std::mem::take(&mut cur));
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    parts
        .into_iter()
        .map(|p| {
            let upper = p.to_uppercase();
            if ACRONYMS.contains(&upper.as_str()) {
                upper
            } else {
                let mut cs = p.chars();
                match cs.next() {
                    Some(f) => f.to_uppercase().chain(cs).collect(),
                    None => String::new(),
                }
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_like_kubectl() {
        let pod = json!({
            "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"priority": 0, "nodeName": "node1", "containers": [
                {"name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"],
                 "ports": [{"containerPort": 8080, "protocol": "TCP"}]},
                {"name": "side", "image": "busybox:1.36"}]},
            "status": {"phase": "Running", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}],
                "hostIP": "10.0.0.1", "qosClass": "BestEffort",
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
                "containerStatuses": [
                    {"name": "main", "ready": true, "restartCount": 2, "image": "busybox:1.36", "imageID": "",
                     "state": {"running": {"startedAt": "2026-11-29T12:16:07Z"}},
                     "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                        "startedAt": "2026-11-29T12:15:07Z", "finishedAt": "2026-11-29T12:16:06Z"}}},
                    {"name": "side", "ready": false, "restartCount": 0, "image": "busybox:1.36", "imageID": "",
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let text = describe_pod(&pod, Some(&[]));
        let expected_prefix = "Name:         web-0\nNamespace:    shop\nPriority:     0\nNode:         node1/10.0.0.1\nLabels:       app=web\nAnnotations:  <none>\nStatus:       Running\nIP:           10.244.0.5\nIPs:\n  IP:  10.244.0.5\nContainers:\n  main:\n    Container ID:  \n    Image:         busybox:1.36\n    Image ID:      \n    Port:          8080/TCP\n    Host Port:     0/TCP\n    Command:\n      sleep\n      3600\n    State:          Running\n";
        assert!(text.starts_with(expected_prefix), "{text}");
        assert!(
            text.contains(
                "    Last State:     Terminated\n      Reason:       Error\n      Exit Code:    1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("    Ready:          True\n    Restart Count:  2\n"),
            "{text}"
        );
        assert!(
            text.contains("    State:          Waiting\n      Reason:       CrashLoopBackOff\n"),
            "{text}"
        );
        assert!(text.ends_with("Conditions:\n  Type              Status\n  Ready             True \n  ContainersReady   True \nVolumes:            <none>\nQoS Class:          BestEffort\nNode-Selectors:     <none>\nTolerations:        <none>\nEvents:             <none>\n"), "{text}");
    }

    #[test]
    fn service_like_kubectl() {
        let svc = json!({"metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"app": "web"}, "type": "ClusterIP", "ipFamilyPolicy": "SingleStack",
                "ipFamilies": ["IPv4"], "clusterIP": "10.104.192.13", "clusterIPs": ["10.104.192.13"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}],
                "sessionAffinity": "None", "internalTrafficPolicy": "Cluster"}});
        let slices = vec![json!({"ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": true}},
                          {"addresses": ["10.244.0.6"], "conditions": {"ready": false}}]})];
        let text = describe_service(&svc, &slices, Some(&[]));
        assert_eq!(
            text,
            "Name:                     web\nNamespace:                shop\nLabels:                   <none>\nAnnotations:              <none>\nSelector:                 app=web\nType:                     ClusterIP\nIP Family Policy:         SingleStack\nIP Families:              IPv4\nIP:                       10.104.192.13\nIPs:                      10.104.192.13\nPort:                     http  80/TCP\nTargetPort:               http/TCP\nEndpoints:                10.244.0.5:8080\nSession Affinity:         None\nInternal Traffic Policy:  Cluster\nEvents:                   <none>\n"
        );
    }

    #[test]
    fn endpoints_like_kubectl() {
        let ep = json!({"metadata": {"name": "web", "namespace": "shop",
            "labels": {"endpoints.kubernetes.io/managed-by": "endpoint-controller"}},
            "subsets": [{"addresses": [{"ip": "10.244.0.5"}], "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]});
        assert_eq!(
            describe_endpoints(&ep, Some(&[])),
            "Name:         web\nNamespace:    shop\nLabels:       endpoints.kubernetes.io/managed-by=endpoint-controller\nAnnotations:  <none>\nSubsets:\n  Addresses:          10.244.0.5\n  NotReadyAddresses:  <none>\n  Ports:\n    Name  Port  Protocol\n    ----  ----  --------\n    http  8080  TCP\n\nEvents:  <none>\n"
        );
    }

    #[test]
    fn events_table() {
        let now = chrono::Utc::now().to_rfc3339();
        let events = vec![
            json!({"type": "Normal", "reason": "Scheduled", "firstTimestamp": now,
            "lastTimestamp": now, "count": 1, "source": {"component": "default-scheduler"},
            "message": "Successfully assigned shop/web-0 to node1"}),
        ];
        let ns = json!({"metadata": {"name": "web"}});
        let text = describe_endpoints(&ns, Some(&events));
        assert!(text.contains("Events:\n  Type    Reason     Age   From               Message\n  ----    ------     ----  ----               -------\n  Normal  Scheduled  "), "{text}");
    }

    #[test]
    fn labels() {
        assert_eq!(smart_label("holderIdentity"), "Holder Identity");
        assert_eq!(smart_label("apiVersion"), "API Version");
        assert_eq!(
            smart_label("leaseDurationSeconds"),
            "Lease Duration Seconds"
        );
        assert_eq!(smart_label("addressType"), "Address Type");
        assert_eq!(smart_label("podIPs"), "Pod I Ps");
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity(&json!("100m")), Some(0.1));
        assert_eq!(parse_quantity(&json!("128Mi")), Some(134217728.0));
        assert_eq!(format_cpu(0.25), "250m");
        assert_eq!(format_cpu(2.0), "2");
        assert_eq!(format_bytes(134217728.0), "128Mi");
        assert_eq!(format_bytes(0.0), "0");
    }
}
