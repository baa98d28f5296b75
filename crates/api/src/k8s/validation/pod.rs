//! Pods: `SetDefaults_Pod`/`SetDefaults_PodSpec`/`SetDefaults_Container` and friends,
//! `ValidatePodCreate`/`ValidatePodUpdate` (`pkg/apis/core/validation/validation.go`).

use std::collections::HashSet;

use serde_json::{Value, json};

use super::FieldError;
use super::meta::{self, MetaRules};
use super::names::{
    NameRule, dns1123_subdomain_errors, env_var_name_errors, http_header_name_errors,
    inclusive_range_error, invalid_each, label_value_errors, port_name_errors, port_num_errors,
    qualified_name_errors, validate_dns1123_label, validate_labels,
};
use super::node::validate_taint_effect;
use super::util::{
    Rendered, arr, b, child, default_to, diff, ensure_obj, get, go_json_str, i, index, items_mut,
    obj_mut, opt_i, opt_s, s, semantic_eq,
};

const META: MetaRules = MetaRules {
    name: NameRule::Dns1123Subdomain,
    namespaced: true,
    core: true,
};

/// The fields a pod update may change, in Kubernetes' words.
pub const UPDATABLE_POD_SPEC_FIELDS: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

const SUPPORTED_PORT_PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const PROBES: &[&str] = &["livenessProbe", "readinessProbe", "startupProbe"];
const MAX_INT32: i64 = i32::MAX as i64;

/// The downward API fields an environment variable may refer to.
const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

static NULL: Value = Value::Null;

// ---------------------------------------------------------------------------------------
// Defaults
// ---------------------------------------------------------------------------------------

pub fn apply_defaults(pod: &mut Value) {
    let spec = ensure_obj(pod, "spec");
    default_to(spec, "dnsPolicy", json!("ClusterFirst"));
    default_to(spec, "restartPolicy", json!("Always"));
    default_to(spec, "schedulerName", json!("default-scheduler"));
    default_to(spec, "securityContext", json!({}));
    default_to(spec, "terminationGracePeriodSeconds", json!(30));
    default_to(spec, "enableServiceLinks", json!(true));
    default_to(spec, "priority", json!(0));
    let host_network = b(spec, "hostNetwork");
    for key in ["containers", "initContainers"] {
        for c in items_mut(spec, key) {
            container_defaults(c, host_network);
        }
    }
    let qos = qos_class(spec);
    if get(pod, "status").is_none() {
        pod["status"] = json!({"phase": "Pending", "qosClass": qos});
    }
}

fn container_defaults(c: &mut Value, host_network: bool) {
    if !c.is_object() {
        return;
    }
    let policy = if image_tag_is_latest(s(c, "image")) {
        "Always"
    } else {
        "IfNotPresent"
    };
    default_to(c, "imagePullPolicy", json!(policy));
    default_to(c, "terminationMessagePath", json!("/dev/termination-log"));
    default_to(c, "terminationMessagePolicy", json!("File"));
    for port in items_mut(c, "ports") {
        default_to(port, "protocol", json!("TCP"));
        if host_network
            && i(port, "hostPort") == 0
            && let Some(cp) = get(port, "containerPort").cloned()
        {
            port["hostPort"] = cp;
        }
    }
    for probe in PROBES {
        if let Some(p) = obj_mut(c, probe) {
            default_zero(p, "timeoutSeconds", 1);
            default_zero(p, "periodSeconds", 10);
            default_zero(p, "successThreshold", 1);
            default_zero(p, "failureThreshold", 3);
            handler_defaults(p);
        }
    }
    if let Some(lifecycle) = obj_mut(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = obj_mut(lifecycle, hook) {
                handler_defaults(h);
            }
        }
    }
    for env in items_mut(c, "env") {
        if let Some(field_ref) = obj_mut(env, "valueFrom").and_then(|v| obj_mut(v, "fieldRef")) {
            default_to(field_ref, "apiVersion", json!("v1"));
        }
    }
    // requests default to limits
    if let Some(resources) = obj_mut(c, "resources")
        && let Some(limits) = get(resources, "limits").and_then(Value::as_object).cloned()
    {
        let requests = ensure_obj(resources, "requests");
        for (k, v) in limits {
            if get(requests, &k).is_none() {
                requests[k.as_str()] = v;
            }
        }
    }
}

fn handler_defaults(h: &mut Value) {
    if let Some(http) = obj_mut(h, "httpGet") {
        default_to(http, "path", json!("/"));
        default_to(http, "scheme", json!("HTTP"));
    }
    if let Some(grpc) = obj_mut(h, "grpc") {
        default_to(grpc, "service", json!(""));
    }
}

/// Sets `v[k]` when it is absent or 0.
fn default_zero(v: &mut Value, k: &str, value: i64) {
    if i(v, k) == 0 {
        v[k] = json!(value);
    }
}

/// Whether an image reference has the tag `latest`, or neither tag nor digest (which means
/// `latest`); a reference that does not parse counts as not `latest`, as in Kubernetes.
fn image_tag_is_latest(image: &str) -> bool {
    if image.is_empty() || image.chars().any(char::is_whitespace) {
        return false;
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let mut components: Vec<&str> = name.split('/').collect();
    let last = components.pop().unwrap_or("");
    let (repo_last, tag) = match last.split_once(':') {
        Some((r, t)) => (r, Some(t)),
        None => (last, None),
    };
    // the first component is a registry when it looks like a host
    let has_domain = components
        .first()
        .is_some_and(|d| d.contains('.') || d.contains(':') || *d == "localhost");
    let path: Vec<&str> = components
        .iter()
        .skip(usize::from(has_domain))
        .copied()
        .chain(std::iter::once(repo_last))
        .collect();
    if path
        .iter()
        .any(|c| c.is_empty() || c.chars().any(|ch| ch.is_ascii_uppercase()))
    {
        return false;
    }
    match (tag, digest) {
        (Some(t), _) => t == "latest",
        (None, Some(_)) => false,
        (None, None) => true,
    }
}

/// The pod's QoS class (`GetPodQOS`) from its containers' CPU and memory.
fn qos_class(spec: &Value) -> &'static str {
    let mut requests: Vec<(String, Quantity)> = Vec::new();
    let mut limits: Vec<(String, Quantity)> = Vec::new();
    let mut guaranteed = true;
    let containers = arr(spec, "containers")
        .iter()
        .chain(arr(spec, "initContainers"));
    for c in containers {
        let resources = get(c, "resources").unwrap_or(&NULL);
        add_quantities(&mut requests, get(resources, "requests"));
        let found = add_quantities(&mut limits, get(resources, "limits"));
        if !(found.contains(&"cpu") && found.contains(&"memory")) {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed && requests.len() == limits.len() {
        let all_equal = requests
            .iter()
            .all(|(name, req)| limits.iter().any(|(n, lim)| n == name && lim.equals(req)));
        if all_equal {
            return "Guaranteed";
        }
    }
    "Burstable"
}

/// Adds the positive CPU and memory quantities of `list` into `sums`; returns which were
/// found.
fn add_quantities(sums: &mut Vec<(String, Quantity)>, list: Option<&Value>) -> Vec<&'static str> {
    let mut found = Vec::new();
    let Some(map) = list.and_then(Value::as_object) else {
        return found;
    };
    for name in ["cpu", "memory"] {
        let Some(q) = map.get(name).and_then(Quantity::from_json) else {
            continue;
        };
        if !q.is_positive() {
            continue;
        }
        found.push(name);
        match sums.iter_mut().find(|(n, _)| n == name) {
            Some((_, total)) => *total = total.add(&q),
            None => sums.push((name.to_owned(), q)),
        }
    }
    found
}

/// A resource quantity as an exact fraction `num / den`, or text that did not parse
/// (compared as text).
#[derive(Debug, Clone, PartialEq)]
enum Quantity {
    Exact { num: i128, den: i128 },
    Text(String),
}

impl Quantity {
    fn from_json(v: &Value) -> Option<Quantity> {
        match v {
            Value::String(s) => Some(Quantity::parse(s)),
            Value::Number(n) => Some(Quantity::parse(&n.to_string())),
            _ => None,
        }
    }

    fn parse(s: &str) -> Quantity {
        Quantity::parse_exact(s.trim()).unwrap_or_else(|| Quantity::Text(s.to_owned()))
    }

    fn parse_exact(s: &str) -> Option<Quantity> {
        let (negative, rest) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(split);
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty()
            || frac_part.len() > 18
            || int_part.len() > 24
        {
            return None;
        }
        let digits = format!("{int_part}{frac_part}");
        let mut num: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        let mut den: i128 = 10i128.checked_pow(u32::try_from(frac_part.len()).ok()?)?;
        let (base, exp): (i128, i64) = match suffix {
            "" => (10, 0),
            "m" => (10, -3),
            "k" => (10, 3),
            "M" => (10, 6),
            "G" => (10, 9),
            "T" => (10, 12),
            "P" => (10, 15),
            "E" => (10, 18),
            "Ki" => (2, 10),
            "Mi" => (2, 20),
            "Gi" => (2, 30),
            "Ti" => (2, 40),
            "Pi" => (2, 50),
            "Ei" => (2, 60),
            other => {
                let e = other.strip_prefix(['e', 'E'])?;
                (10, e.parse::<i64>().ok().filter(|x| x.abs() <= 30)?)
            }
        };
        let factor = base.checked_pow(u32::try_from(exp.unsigned_abs()).ok()?)?;
        if exp >= 0 {
            num = num.checked_mul(factor)?;
        } else {
            den = den.checked_mul(factor)?;
        }
        if negative {
            num = -num;
        }
        Some(Quantity::Exact { num, den })
    }

    fn is_positive(&self) -> bool {
        match self {
            Quantity::Exact { num, .. } => *num > 0,
            Quantity::Text(_) => true,
        }
    }

    fn add(&self, other: &Quantity) -> Quantity {
        if let (Quantity::Exact { num: a, den: b }, Quantity::Exact { num: c, den: d }) =
            (self, other)
        {
            let sum = a
                .checked_mul(*d)
                .zip(c.checked_mul(*b))
                .and_then(|(x, y)| x.checked_add(y))
                .zip(b.checked_mul(*d));
            if let Some((num, den)) = sum {
                return Quantity::Exact { num, den };
            }
        }
        Quantity::Text(format!("{self:?}+{other:?}"))
    }

    fn equals(&self, other: &Quantity) -> bool {
        match (self, other) {
            (Quantity::Exact { num: a, den: b }, Quantity::Exact { num: c, den: d }) => {
                match (a.checked_mul(*d), c.checked_mul(*b)) {
                    (Some(x), Some(y)) => x == y,
                    _ => false,
                }
            }
            (x, y) => x == y,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Create validation
// ---------------------------------------------------------------------------------------

pub fn validate(pod: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate(pod, META);
    let spec = get(pod, "spec").unwrap_or(&NULL);
    errs.extend(validate_spec(spec, "spec"));
    errs
}

fn validate_spec(spec: &Value, p: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let containers = arr(spec, "containers");
    let grace = opt_i(spec, "terminationGracePeriodSeconds");
    errs.extend(validate_containers(
        containers,
        &child(p, "containers"),
        grace,
    ));
    errs.extend(validate_init_containers(
        arr(spec, "initContainers"),
        containers,
        &child(p, "initContainers"),
        grace,
    ));
    if b(spec, "hostNetwork") {
        for (ci, c) in containers.iter().enumerate() {
            let ports_path = child(&index(&child(p, "containers"), ci), "ports");
            for (pi, port) in arr(c, "ports").iter().enumerate() {
                let container_port = i(port, "containerPort");
                if i(port, "hostPort") != container_port {
                    errs.push(FieldError::invalid(
                        child(&index(&ports_path, pi), "containerPort"),
                        &container_port,
                        "must match `hostPort` when `hostNetwork` is true",
                    ));
                }
            }
        }
    }
    errs.extend(enum_field(
        s(spec, "restartPolicy"),
        &child(p, "restartPolicy"),
        &["Always", "OnFailure", "Never"],
        "",
    ));
    errs.extend(enum_field(
        s(spec, "dnsPolicy"),
        &child(p, "dnsPolicy"),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        "",
    ));
    if let Some(selector) = get(spec, "nodeSelector") {
        errs.extend(validate_labels(selector, &child(p, "nodeSelector")));
    }
    for (field, rule_is_label) in [
        ("serviceAccountName", false),
        ("nodeName", false),
        ("schedulerName", false),
        ("hostname", true),
        ("subdomain", true),
    ] {
        let value = s(spec, field);
        if value.is_empty() {
            continue;
        }
        if rule_is_label {
            errs.extend(validate_dns1123_label(value, &child(p, field)));
        } else {
            errs.extend(invalid_each(
                &child(p, field),
                value,
                dns1123_subdomain_errors(value),
            ));
        }
    }
    if let Some(ads) = opt_i(spec, "activeDeadlineSeconds")
        && !(1..=MAX_INT32).contains(&ads)
    {
        errs.push(FieldError::invalid(
            child(p, "activeDeadlineSeconds"),
            &ads,
            inclusive_range_error(1, MAX_INT32),
        ));
    }
    if let Some(g) = grace
        && g < 0
    {
        errs.push(FieldError::invalid(
            child(p, "terminationGracePeriodSeconds"),
            &g,
            "must be greater than or equal to 0",
        ));
    }
    errs.extend(validate_tolerations(
        arr(spec, "tolerations"),
        &child(p, "tolerations"),
    ));
    errs
}

/// An enumerated string field that defaulting fills: `Required` when empty.
fn enum_field(
    value: &str,
    path: &str,
    supported: &[&str],
    required_detail: &str,
) -> Vec<FieldError> {
    if value.is_empty() {
        vec![FieldError::required(path, required_detail)]
    } else if !supported.contains(&value) {
        vec![FieldError::not_supported(path, value, supported)]
    } else {
        Vec::new()
    }
}

fn validate_containers(containers: &[Value], p: &str, grace: Option<i64>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if containers.is_empty() {
        errs.push(FieldError::required(p, ""));
        return errs;
    }
    let mut names: HashSet<&str> = HashSet::new();
    for (n, c) in containers.iter().enumerate() {
        let cp = index(p, n);
        errs.extend(validate_container_common(c, &cp));
        let name = s(c, "name");
        if !names.insert(name) {
            errs.push(FieldError::duplicate(child(&cp, "name"), name));
        }
        errs.extend(validate_sidecar_fields(c, &cp, grace));
        if get(c, "restartPolicy").is_some() {
            errs.push(FieldError::forbidden(
                child(&cp, "restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    errs.extend(host_port_conflicts(containers.iter().enumerate(), p));
    errs
}

fn validate_init_containers(
    init: &[Value],
    regular: &[Value],
    p: &str,
    grace: Option<i64>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names: HashSet<&str> = regular.iter().map(|c| s(c, "name")).collect();
    for (n, c) in init.iter().enumerate() {
        let cp = index(p, n);
        errs.extend(validate_container_common(c, &cp));
        let mut restart_always = false;
        if let Some(policy) = opt_s(c, "restartPolicy") {
            if policy == "Always" {
                restart_always = true;
            } else {
                errs.push(FieldError::not_supported(
                    child(&cp, "restartPolicy"),
                    policy,
                    &["Always"],
                ));
            }
        }
        let name = s(c, "name");
        if names.contains(name) {
            errs.push(FieldError::duplicate(child(&cp, "name"), name));
        } else if !name.is_empty() {
            names.insert(name);
        }
        errs.extend(host_port_conflicts(std::iter::once((n, c)), p));
        if restart_always {
            errs.extend(validate_sidecar_fields(c, &cp, grace));
        } else {
            for field in [
                "lifecycle",
                "livenessProbe",
                "readinessProbe",
                "startupProbe",
            ] {
                if get(c, field).is_some() {
                    errs.push(FieldError::forbidden(
                        child(&cp, field),
                        "may not be set for init containers without restartPolicy=Always",
                    ));
                }
            }
        }
    }
    errs
}

/// Lifecycle hooks and probes, allowed on regular and restartable init containers.
fn validate_sidecar_fields(c: &Value, cp: &str, grace: Option<i64>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(lifecycle) = get(c, "lifecycle") {
        let lp = child(cp, "lifecycle");
        for hook in ["postStart", "preStop"] {
            if let Some(h) = get(lifecycle, hook) {
                errs.extend(validate_handler(
                    h,
                    &child(&lp, hook),
                    HandlerKinds::Lifecycle,
                    grace,
                ));
            }
        }
    }
    for probe in PROBES {
        let Some(pr) = get(c, probe) else {
            continue;
        };
        let pp = child(cp, probe);
        errs.extend(validate_probe(pr, &pp, grace));
        if *probe == "readinessProbe" {
            if let Some(v) = get(pr, "terminationGracePeriodSeconds") {
                errs.push(FieldError::invalid(
                    child(&pp, "terminationGracePeriodSeconds"),
                    v,
                    "must not be set for readinessProbes",
                ));
            }
        } else {
            let st = i(pr, "successThreshold");
            if st != 1 {
                errs.push(FieldError::invalid(
                    child(&pp, "successThreshold"),
                    &st,
                    "must be 1",
                ));
            }
        }
    }
    errs
}

/// `validateContainerCommon`.
fn validate_container_common(c: &Value, cp: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = s(c, "name");
    if name.is_empty() {
        errs.push(FieldError::required(child(cp, "name"), ""));
    } else {
        errs.extend(validate_dns1123_label(name, &child(cp, "name")));
    }
    if s(c, "image").is_empty() {
        errs.push(FieldError::required(child(cp, "image"), ""));
    }
    let tmp = s(c, "terminationMessagePolicy");
    let tmp_path = child(cp, "terminationMessagePolicy");
    match tmp {
        "File" | "FallbackToLogsOnError" => {}
        "" => errs.push(FieldError::required(
            tmp_path,
            "must be 'File' or 'FallbackToLogsOnError'",
        )),
        other => errs.push(FieldError::invalid(
            tmp_path,
            other,
            "must be 'File' or 'FallbackToLogsOnError'",
        )),
    }
    errs.extend(validate_container_ports(
        arr(c, "ports"),
        &child(cp, "ports"),
    ));
    errs.extend(validate_env(arr(c, "env"), &child(cp, "env")));
    errs.extend(enum_field(
        s(c, "imagePullPolicy"),
        &child(cp, "imagePullPolicy"),
        &["Always", "IfNotPresent", "Never"],
        "",
    ));
    errs
}

/// `validateContainerPorts`.
fn validate_container_ports(ports: &[Value], p: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names: HashSet<&str> = HashSet::new();
    for (n, port) in ports.iter().enumerate() {
        let pp = index(p, n);
        let name = s(port, "name");
        if !name.is_empty() {
            let msgs = port_name_errors(name);
            if !msgs.is_empty() {
                errs.extend(invalid_each(&child(&pp, "name"), name, msgs));
            } else if !names.insert(name) {
                errs.push(FieldError::duplicate(child(&pp, "name"), name));
            }
        }
        let container_port = i(port, "containerPort");
        if container_port == 0 {
            errs.push(FieldError::required(child(&pp, "containerPort"), ""));
        } else {
            for msg in port_num_errors(container_port) {
                errs.push(FieldError::invalid(
                    child(&pp, "containerPort"),
                    &container_port,
                    msg,
                ));
            }
        }
        let host_port = i(port, "hostPort");
        if host_port != 0 {
            for msg in port_num_errors(host_port) {
                errs.push(FieldError::invalid(child(&pp, "hostPort"), &host_port, msg));
            }
        }
        errs.extend(protocol_errors(
            s(port, "protocol"),
            &child(&pp, "protocol"),
        ));
    }
    errs
}

/// A port's `protocol`: required, one of SCTP, TCP, UDP.
pub fn protocol_errors(protocol: &str, path: &str) -> Vec<FieldError> {
    enum_field(protocol, path, SUPPORTED_PORT_PROTOCOLS, "")
}

/// `AccumulateUniqueHostPorts`: one host port per host IP and protocol.
fn host_port_conflicts<'a>(
    containers: impl Iterator<Item = (usize, &'a Value)>,
    p: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for (ci, c) in containers {
        let ports_path = child(&index(p, ci), "ports");
        for (pi, port) in arr(c, "ports").iter().enumerate() {
            let host_port = i(port, "hostPort");
            if host_port == 0 {
                continue;
            }
            let key = format!(
                "{}/{}/{}",
                s(port, "hostIP"),
                s(port, "protocol"),
                host_port
            );
            if seen.contains(&key) {
                errs.push(FieldError::duplicate(
                    child(&index(&ports_path, pi), "hostPort"),
                    key.as_str(),
                ));
            } else {
                seen.insert(key);
            }
        }
    }
    errs
}

/// `ValidateEnv` with the value sources' basic rules.
fn validate_env(env: &[Value], p: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (n, e) in env.iter().enumerate() {
        let ep = index(p, n);
        let name = s(e, "name");
        if name.is_empty() {
            errs.push(FieldError::required(child(&ep, "name"), ""));
        }
        errs.extend(invalid_each(
            &child(&ep, "name"),
            name,
            env_var_name_errors(name),
        ));
        let Some(from) = get(e, "valueFrom") else {
            continue;
        };
        let fp = child(&ep, "valueFrom");
        let sources: Vec<&str> = [
            "fieldRef",
            "resourceFieldRef",
            "configMapKeyRef",
            "secretKeyRef",
        ]
        .into_iter()
        .filter(|k| get(from, k).is_some())
        .collect();
        if let Some(field_ref) = get(from, "fieldRef") {
            errs.extend(validate_field_ref(field_ref, &child(&fp, "fieldRef")));
        }
        for key_ref in ["configMapKeyRef", "secretKeyRef"] {
            if let Some(r) = get(from, key_ref)
                && s(r, "key").is_empty()
            {
                errs.push(FieldError::required(child(&child(&fp, key_ref), "key"), ""));
            }
        }
        if let Some(r) = get(from, "resourceFieldRef")
            && s(r, "resource").is_empty()
        {
            errs.push(FieldError::required(
                child(&child(&fp, "resourceFieldRef"), "resource"),
                "",
            ));
        }
        if sources.is_empty() {
            errs.push(FieldError::invalid(
                fp,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if !s(e, "value").is_empty() {
            errs.push(FieldError::invalid(
                fp,
                "",
                "may not be specified when `value` is not empty",
            ));
        } else if sources.len() > 1 {
            errs.push(FieldError::invalid(
                fp,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
    errs
}

/// `validateObjectFieldSelector` for environment variables.
fn validate_field_ref(r: &Value, p: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let api_version = s(r, "apiVersion");
    if api_version.is_empty() {
        errs.push(FieldError::required(child(p, "apiVersion"), ""));
        return errs;
    }
    let field_path = s(r, "fieldPath");
    if field_path.is_empty() {
        errs.push(FieldError::required(child(p, "fieldPath"), ""));
        return errs;
    }
    if api_version != "v1" {
        errs.push(FieldError::invalid(
            child(p, "fieldPath"),
            field_path,
            format!("error converting fieldPath: field label not supported: {field_path}"),
        ));
        return errs;
    }
    if let Some((path, rest)) = field_path.split_once("['") {
        let Some(subscript) = rest.strip_suffix("']") else {
            errs.push(FieldError::not_supported(
                child(p, "fieldPath"),
                field_path,
                ENV_FIELD_PATHS,
            ));
            return errs;
        };
        match path {
            "metadata.annotations" => errs.extend(invalid_each(
                p,
                &subscript.to_lowercase(),
                qualified_name_errors(&subscript.to_lowercase()),
            )),
            "metadata.labels" => {
                errs.extend(invalid_each(p, subscript, qualified_name_errors(subscript)))
            }
            _ => errs.push(FieldError::invalid(p, path, "does not support subscript")),
        }
    } else if !ENV_FIELD_PATHS.contains(&field_path) {
        errs.push(FieldError::not_supported(
            child(p, "fieldPath"),
            field_path,
            ENV_FIELD_PATHS,
        ));
    }
    errs
}

/// `validateProbe`.
fn validate_probe(probe: &Value, p: &str, grace: Option<i64>) -> Vec<FieldError> {
    let mut errs = validate_handler(probe, p, HandlerKinds::Probe, grace);
    for field in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        let v = i(probe, field);
        if v < 0 {
            errs.push(FieldError::invalid(
                child(p, field),
                &v,
                "must be greater than or equal to 0",
            ));
        }
    }
    if let Some(tgps) = opt_i(probe, "terminationGracePeriodSeconds")
        && tgps <= 0
    {
        errs.push(FieldError::invalid(
            child(p, "terminationGracePeriodSeconds"),
            &tgps,
            "must be greater than 0",
        ));
    }
    errs
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandlerKinds {
    Probe,
    Lifecycle,
}

/// `validateHandler`: exactly one action.
fn validate_handler(
    h: &Value,
    p: &str,
    kinds: HandlerKinds,
    grace: Option<i64>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let actions: &[&str] = match kinds {
        HandlerKinds::Probe => &["exec", "httpGet", "tcpSocket", "grpc"],
        HandlerKinds::Lifecycle => &["exec", "httpGet", "tcpSocket", "sleep"],
    };
    let mut count = 0;
    for action in actions {
        let Some(a) = get(h, action) else {
            continue;
        };
        let ap = child(p, action);
        if count > 0 {
            errs.push(FieldError::forbidden(
                ap,
                "may not specify more than 1 handler type",
            ));
            continue;
        }
        count += 1;
        match *action {
            "exec" if arr(a, "command").is_empty() => {
                errs.push(FieldError::required(child(&ap, "command"), ""));
            }
            "httpGet" => {
                if s(a, "path").is_empty() {
                    errs.push(FieldError::required(child(&ap, "path"), ""));
                }
                errs.extend(validate_port_num_or_name(
                    get(a, "port").unwrap_or(&NULL),
                    &child(&ap, "port"),
                ));
                let scheme = s(a, "scheme");
                if !matches!(scheme, "HTTP" | "HTTPS") {
                    errs.push(FieldError::not_supported(
                        child(&ap, "scheme"),
                        scheme,
                        &["HTTP", "HTTPS"],
                    ));
                }
                for header in arr(a, "httpHeaders") {
                    let name = s(header, "name");
                    errs.extend(invalid_each(
                        &child(&ap, "httpHeaders"),
                        name,
                        http_header_name_errors(name),
                    ));
                }
            }
            "tcpSocket" => errs.extend(validate_port_num_or_name(
                get(a, "port").unwrap_or(&NULL),
                &child(&ap, "port"),
            )),
            "grpc" => {
                let port = i(a, "port");
                for msg in port_num_errors(port) {
                    errs.push(FieldError::invalid(child(&ap, "port"), &port, msg));
                }
            }
            "sleep" => {
                let seconds = i(a, "seconds");
                if let Some(g) = grace
                    && (seconds < 0 || seconds > g)
                {
                    errs.push(FieldError::invalid(
                        ap,
                        &seconds,
                        format!(
                            "must be non-negative and less than terminationGracePeriodSeconds ({g})"
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    if count == 0 {
        errs.push(FieldError::required(p, "must specify a handler type"));
    }
    errs
}

/// `ValidatePortNumOrName` on an IntOrString: a port number, or a port name.
pub fn validate_port_num_or_name(port: &Value, p: &str) -> Vec<FieldError> {
    match port {
        Value::String(name) => invalid_each(p, name, port_name_errors(name)),
        other => {
            let n = other.as_i64().unwrap_or(0);
            port_num_errors(n)
                .into_iter()
                .map(|m| FieldError::invalid(p, &n, m))
                .collect()
        }
    }
}

/// `ValidateTolerations`.
fn validate_tolerations(tolerations: &[Value], p: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (n, t) in tolerations.iter().enumerate() {
        let tp = index(p, n);
        let (key, op, value, effect) =
            (s(t, "key"), s(t, "operator"), s(t, "value"), s(t, "effect"));
        if !key.is_empty() {
            errs.extend(invalid_each(
                &child(&tp, "key"),
                key,
                qualified_name_errors(key),
            ));
        }
        if key.is_empty() && op != "Exists" {
            errs.push(FieldError::invalid(
                child(&tp, "operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if get(t, "tolerationSeconds").is_some() && effect != "NoExecute" {
            errs.push(FieldError::invalid(
                child(&tp, "effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "" | "Equal" => {
                let msgs = label_value_errors(value);
                if !msgs.is_empty() {
                    errs.push(FieldError::invalid(
                        child(&tp, "operator"),
                        value,
                        msgs.join(";"),
                    ));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errs.push(FieldError::invalid(
                        child(&tp, "operator"),
                        &Rendered(toleration_struct(t)),
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                child(&tp, "operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() {
            errs.extend(validate_taint_effect(effect, &child(&tp, "effect")));
        }
    }
    errs
}

/// A toleration as Kubernetes prints its internal struct (JSON with Go field names).
fn toleration_struct(t: &Value) -> String {
    let seconds = opt_i(t, "tolerationSeconds").map_or("null".to_owned(), |x| x.to_string());
    format!(
        "{{\"Key\":{},\"Operator\":{},\"Value\":{},\"Effect\":{},\"TolerationSeconds\":{seconds}}}",
        go_json_str(s(t, "key")),
        go_json_str(s(t, "operator")),
        go_json_str(s(t, "value")),
        go_json_str(s(t, "effect")),
    )
}

// ---------------------------------------------------------------------------------------
// Update validation
// ---------------------------------------------------------------------------------------

/// `ValidatePodUpdate` beyond the create-validation of the new pod: only images, a
/// shorter `activeDeadlineSeconds`, added tolerations, and (podnet) a first `nodeName`
/// may change in `spec`.
pub fn validate_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ns = get(new, "spec").unwrap_or(&NULL);
    let os = get(old, "spec").unwrap_or(&NULL);
    let sp = "spec";
    for key in ["containers", "initContainers"] {
        let (nc, oc) = (arr(ns, key), arr(os, key));
        if nc.len() != oc.len() {
            errs.push(FieldError::forbidden(
                child(sp, key),
                "pod updates may not add or remove containers",
            ));
            return errs;
        }
        for (n, c) in nc.iter().enumerate() {
            let image = s(c, "image");
            if image.trim() != image {
                errs.push(FieldError::invalid(
                    child(&index(&child(sp, key), n), "image"),
                    image,
                    "must not have leading or trailing whitespace",
                ));
            }
        }
    }
    let ads_path = child(sp, "activeDeadlineSeconds");
    match (
        opt_i(ns, "activeDeadlineSeconds"),
        opt_i(os, "activeDeadlineSeconds"),
    ) {
        (Some(n), _) if !(0..=MAX_INT32).contains(&n) => {
            errs.push(FieldError::invalid(
                ads_path,
                &n,
                inclusive_range_error(0, MAX_INT32),
            ));
            return errs;
        }
        (Some(n), Some(o)) if o < n => {
            errs.push(FieldError::invalid(
                ads_path,
                &n,
                "must be less than or equal to previous value",
            ));
            return errs;
        }
        (None, Some(_)) => errs.push(FieldError::invalid(
            ads_path,
            &NULL,
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }

    let mut munged = ns.clone();
    if munged.is_object() {
        for key in ["containers", "initContainers"] {
            let old_items = arr(os, key);
            for (n, c) in items_mut(&mut munged, key).iter_mut().enumerate() {
                copy_member(c, old_items.get(n).unwrap_or(&NULL), "image");
            }
        }
        copy_member(&mut munged, os, "activeDeadlineSeconds");
        copy_member(&mut munged, os, "tolerations");
        let (new_grace, old_grace) = (
            opt_i(ns, "terminationGracePeriodSeconds"),
            opt_i(os, "terminationGracePeriodSeconds"),
        );
        if old_grace.is_some_and(|g| g < 0) && new_grace == Some(1) {
            copy_member(&mut munged, os, "terminationGracePeriodSeconds");
        }
        if s(os, "nodeName").is_empty() {
            copy_member(&mut munged, os, "nodeName");
        }
    }
    if !semantic_eq(&munged, os) {
        let mut lines = Vec::new();
        diff(sp, os, &munged, &mut lines);
        let mut detail =
            format!("pod updates may not change fields other than {UPDATABLE_POD_SPEC_FIELDS}");
        for line in lines {
            detail.push_str("\n  ");
            detail.push_str(&line);
        }
        errs.push(FieldError::forbidden(sp, detail));
    }
    errs.extend(validate_only_added_tolerations(
        arr(ns, "tolerations"),
        arr(os, "tolerations"),
        &child(sp, "tolerations"),
    ));
    errs
}

/// Sets `dst[k]` to `src[k]`, or removes it when `src` has none.
fn copy_member(dst: &mut Value, src: &Value, k: &str) {
    let Some(map) = dst.as_object_mut() else {
        return;
    };
    match get(src, k) {
        Some(v) => {
            map.insert(k.to_owned(), v.clone());
        }
        None => {
            map.remove(k);
        }
    }
}

/// `validateOnlyAddedTolerations`: existing tolerations stay, except their
/// `tolerationSeconds`.
fn validate_only_added_tolerations(new: &[Value], old: &[Value], p: &str) -> Vec<FieldError> {
    for o in old {
        let found = new.iter().any(|n| {
            let mut candidate = o.clone();
            copy_member(&mut candidate, n, "tolerationSeconds");
            semantic_eq(&candidate, n)
        });
        if !found {
            return vec![FieldError::forbidden(
                p,
                "existing toleration can not be modified except its tolerationSeconds",
            )];
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    fn defaulted(spec: Value) -> Value {
        let mut p = pod(spec);
        apply_defaults(&mut p);
        p
    }

    fn errors(p: &Value) -> Vec<String> {
        validate(p).iter().map(ToString::to_string).collect()
    }

    fn simple() -> Value {
        defaulted(json!({"containers": [{"name": "app", "image": "nginx:1.27"}]}))
    }

    #[test]
    fn defaults_as_kubernetes() {
        let p = defaulted(json!({"containers": [{
            "name": "app", "image": "nginx",
            "ports": [{"containerPort": 80}],
            "livenessProbe": {"httpGet": {"port": 80}},
            "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5},
            "startupProbe": {"grpc": {"port": 9000}},
            "lifecycle": {"preStop": {"httpGet": {"port": 80}}},
            "env": [{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
        }]}));
        let spec = &p["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["enableServiceLinks"], true);
        assert_eq!(spec["priority"], 0);
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert!(c["ports"][0].get("hostPort").is_none());
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
                "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(c["readinessProbe"]["periodSeconds"], 5);
        assert_eq!(c["startupProbe"]["grpc"]["service"], "");
        assert_eq!(c["lifecycle"]["preStop"]["httpGet"]["path"], "/");
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(
            p["status"],
            json!({"phase": "Pending", "qosClass": "BestEffort"})
        );
        assert!(validate(&p).is_empty(), "{:?}", errors(&p));
    }

    #[test]
    fn defaults_keep_given_values() {
        let mut p = pod(
            json!({"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
            "enableServiceLinks": false, "containers": [{"name": "a", "image": "x", "imagePullPolicy": "Never"}]}),
        );
        p["status"] = json!({"phase": "Running"});
        apply_defaults(&mut p);
        assert_eq!(p["spec"]["restartPolicy"], "Never");
        assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 0);
        assert_eq!(p["spec"]["enableServiceLinks"], false);
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Never");
        assert_eq!(p["status"], json!({"phase": "Running"}));
    }

    #[test]
    fn image_pull_policy_from_tag() {
        for (image, latest) in [
            ("nginx", true),
            ("nginx:latest", true),
            ("nginx:1.27", false),
            ("registry.k8s.io/pause:3.10", false),
            ("localhost:5000/app", true),
            ("localhost:5000/app:v1", false),
            ("nginx@sha256:0123", false),
            ("nginx:latest@sha256:0123", true),
            ("Nginx", false),
            ("", false),
            ("a b", false),
        ] {
            assert_eq!(image_tag_is_latest(image), latest, "{image}");
        }
    }

    #[test]
    fn host_network_ports_and_requests_default() {
        let p = defaulted(
            json!({"hostNetwork": true, "containers": [{"name": "a", "image": "x:1",
            "ports": [{"containerPort": 8080}],
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}}]}),
        );
        let c = &p["spec"]["containers"][0];
        assert_eq!(c["ports"][0]["hostPort"], 8080);
        assert_eq!(
            c["resources"]["requests"],
            json!({"cpu": "500m", "memory": "128Mi"})
        );
        assert_eq!(p["status"]["qosClass"], "Guaranteed");
        assert!(validate(&p).is_empty(), "{:?}", errors(&p));
    }

    #[test]
    fn qos_classes() {
        let qos = |containers: Value| qos_class(&json!({"containers": containers}));
        assert_eq!(qos(json!([{}])), "BestEffort");
        assert_eq!(
            qos(json!([{"resources": {"requests": {"cpu": "0"}}}])),
            "BestEffort"
        );
        assert_eq!(
            qos(json!([{"resources": {"requests": {"cpu": "100m"}}}])),
            "Burstable"
        );
        assert_eq!(
            qos(
                json!([{"resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                "limits": {"cpu": "1000m", "memory": "1024Mi"}}}])
            ),
            "Guaranteed"
        );
        assert_eq!(
            qos(
                json!([{"resources": {"requests": {"cpu": "0.5", "memory": "1G"},
                "limits": {"cpu": "1", "memory": "1G"}}}])
            ),
            "Burstable"
        );
        assert_eq!(
            qos(json!([
                {"resources": {"requests": {"cpu": "100m", "memory": "1e9"}, "limits": {"cpu": "100m", "memory": "1G"}}},
                {"resources": {"limits": {"cpu": "200m"}}}
            ])),
            "Burstable"
        );
        assert_eq!(
            qos(json!([
                {"resources": {"requests": {"cpu": "0.1", "memory": "1Mi"}, "limits": {"cpu": "100m", "memory": "1Mi"}}},
                {"resources": {"requests": {"cpu": "200m", "memory": "2Mi"}, "limits": {"cpu": "0.2", "memory": "2Mi"}}}
            ])),
            "Guaranteed"
        );
        assert!(Quantity::parse("1.5Gi").equals(&Quantity::parse("1536Mi")));
        assert!(
            Quantity::parse("100m")
                .add(&Quantity::parse("200m"))
                .equals(&Quantity::parse("0.3"))
        );
        assert!(Quantity::parse("2k").equals(&Quantity::parse("2e3")));
        assert_eq!(Quantity::parse("abc"), Quantity::Text("abc".into()));
        assert!(!Quantity::parse("-1").is_positive());
    }

    #[test]
    fn valid_pod() {
        assert!(validate(&simple()).is_empty(), "{:?}", errors(&simple()));
    }

    #[test]
    fn containers_required_and_unique() {
        assert_eq!(
            errors(&defaulted(json!({}))),
            vec!["spec.containers: Required value"]
        );
        let p = defaulted(json!({
            "containers": [{"name": "a", "image": "x"}, {"name": "a", "image": ""}],
            "initContainers": [{"name": "a", "image": "i"}, {"name": "Bad_Name", "image": "i"}]
        }));
        let errs = errors(&p);
        assert_eq!(errs[0], "spec.containers[1].image: Required value");
        assert_eq!(errs[1], "spec.containers[1].name: Duplicate value: \"a\"");
        assert_eq!(
            errs[2],
            "spec.initContainers[0].name: Duplicate value: \"a\""
        );
        assert!(errs[3].starts_with("spec.initContainers[1].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label must consist of"), "{}", errs[3]);
        assert_eq!(errs.len(), 4, "{errs:?}");
        let p = defaulted(json!({"containers": [{"name": "", "image": "x"}]}));
        assert_eq!(errors(&p), vec!["spec.containers[0].name: Required value"]);
    }

    #[test]
    fn container_ports() {
        let p = defaulted(json!({"containers": [{"name": "a", "image": "x", "ports": [
            {"containerPort": 80, "name": "http"},
            {"containerPort": 70000, "name": "http"},
            {"containerPort": 0, "hostPort": 70000, "protocol": "ABC", "name": "HTTP"},
            {"containerPort": 81, "name": "http"}
        ]}]}));
        assert_eq!(
            errors(&p),
            vec![
                "spec.containers[0].ports[1].name: Duplicate value: \"http\"",
                "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.containers[0].ports[2].name: Invalid value: \"HTTP\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.containers[0].ports[2].name: Invalid value: \"HTTP\": must contain at least one letter (a-z)",
                "spec.containers[0].ports[2].containerPort: Required value",
                "spec.containers[0].ports[2].hostPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.containers[0].ports[2].protocol: Unsupported value: \"ABC\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.containers[0].ports[3].name: Duplicate value: \"http\"",
            ]
        );
    }

    #[test]
    fn host_ports() {
        let p = defaulted(json!({"containers": [
            {"name": "a", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]},
            {"name": "b", "image": "x", "ports": [{"containerPort": 81, "hostPort": 8080},
                {"containerPort": 82, "hostPort": 8080, "protocol": "UDP"}]}
        ]}));
        assert_eq!(
            errors(&p),
            vec!["spec.containers[1].ports[0].hostPort: Duplicate value: \"/TCP/8080\""]
        );
        let p = defaulted(json!({"hostNetwork": true, "containers": [
            {"name": "a", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}));
        assert_eq!(
            errors(&p),
            vec![
                "spec.containers[0].ports[0].containerPort: Invalid value: 80: must match `hostPort` when `hostNetwork` is true"
            ]
        );
    }

    #[test]
    fn policies_and_spec_fields() {
        let mut p = simple();
        p["spec"]["restartPolicy"] = json!("Sometimes");
        p["spec"]["dnsPolicy"] = json!("");
        p["spec"]["terminationGracePeriodSeconds"] = json!(-1);
        p["spec"]["activeDeadlineSeconds"] = json!(0);
        p["spec"]["nodeSelector"] = json!({"disk": "s s"});
        p["spec"]["nodeName"] = json!("Node_1");
        p["spec"]["hostname"] = json!("a.b");
        p["spec"]["containers"][0]["imagePullPolicy"] = json!("Sometimes");
        p["spec"]["containers"][0]["terminationMessagePolicy"] = json!("Log");
        let errs = errors(&p);
        assert_eq!(
            errs[0],
            "spec.containers[0].terminationMessagePolicy: Invalid value: \"Log\": must be 'File' or 'FallbackToLogsOnError'"
        );
        assert_eq!(
            errs[1],
            "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\""
        );
        assert_eq!(
            errs[2],
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        );
        assert_eq!(errs[3], "spec.dnsPolicy: Required value");
        assert!(
            errs[4].starts_with("spec.nodeSelector: Invalid value: \"s s\": a valid label must be"),
            "{}",
            errs[4]
        );
        assert!(
            errs[5].starts_with(
                "spec.nodeName: Invalid value: \"Node_1\": a lowercase RFC 1123 subdomain"
            ),
            "{}",
            errs[5]
        );
        assert_eq!(
            errs[6],
            "spec.hostname: Invalid value: \"a.b\": must not contain dots"
        );
        assert_eq!(
            errs[7],
            "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive"
        );
        assert_eq!(
            errs[8],
            "spec.terminationGracePeriodSeconds: Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(errs.len(), 9, "{errs:?}");
    }

    #[test]
    fn probes() {
        let p = defaulted(json!({"containers": [{"name": "a", "image": "x",
            "livenessProbe": {},
            "readinessProbe": {"httpGet": {"port": 0}, "exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 5},
            "startupProbe": {"tcpSocket": {"port": "Bad"}, "successThreshold": 2, "initialDelaySeconds": -1}
        }]}));
        assert_eq!(
            errors(&p),
            vec![
                "spec.containers[0].livenessProbe: Required value: must specify a handler type",
                "spec.containers[0].readinessProbe.httpGet: Forbidden: may not specify more than 1 handler type",
                "spec.containers[0].readinessProbe.terminationGracePeriodSeconds: Invalid value: 5: must not be set for readinessProbes",
                "spec.containers[0].startupProbe.tcpSocket.port: Invalid value: \"Bad\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.containers[0].startupProbe.initialDelaySeconds: Invalid value: -1: must be greater than or equal to 0",
                "spec.containers[0].startupProbe.successThreshold: Invalid value: 2: must be 1",
            ]
        );
        let p = defaulted(json!({"containers": [{"name": "a", "image": "x",
            "livenessProbe": {"httpGet": {"port": 70000, "scheme": "FTP", "httpHeaders": [{"name": "X_Y", "value": "1"}]}},
            "readinessProbe": {"exec": {}},
            "startupProbe": {"grpc": {"port": 0}, "terminationGracePeriodSeconds": 0}
        }]}));
        assert_eq!(
            errors(&p),
            vec![
                "spec.containers[0].livenessProbe.httpGet.port: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.containers[0].livenessProbe.httpGet.scheme: Unsupported value: \"FTP\": supported values: \"HTTP\", \"HTTPS\"",
                "spec.containers[0].livenessProbe.httpGet.httpHeaders: Invalid value: \"X_Y\": a valid HTTP header must consist of alphanumeric characters or '-' (e.g. 'X-Header-Name', regex used for validation is '[-A-Za-z0-9]+')",
                "spec.containers[0].readinessProbe.exec.command: Required value",
                "spec.containers[0].startupProbe.grpc.port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.containers[0].startupProbe.terminationGracePeriodSeconds: Invalid value: 0: must be greater than 0",
            ]
        );
        let p = defaulted(json!({"containers": [{"name": "a", "image": "x",
            "readinessProbe": {"tcpSocket": {"port": "http"}},
            "lifecycle": {"postStart": {"grpc": {"port": 1}}, "preStop": {"sleep": {"seconds": 40}}}}]}));
        assert_eq!(
            errors(&p),
            vec![
                "spec.containers[0].lifecycle.postStart: Required value: must specify a handler type",
                "spec.containers[0].lifecycle.preStop.sleep: Invalid value: 40: must be non-negative and less than terminationGracePeriodSeconds (30)",
            ]
        );
    }

    #[test]
    fn init_containers() {
        let p = defaulted(
            json!({"containers": [{"name": "a", "image": "x", "restartPolicy": "Always"}],
            "initContainers": [
                {"name": "i", "image": "x", "readinessProbe": {"exec": {"command": ["x"]}}},
                {"name": "s", "image": "x", "restartPolicy": "Always", "readinessProbe": {"exec": {"command": ["x"]}}},
                {"name": "t", "image": "x", "restartPolicy": "Never"}
            ]}),
        );
        assert_eq!(
            errors(&p),
            vec![
                "spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers",
                "spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
                "spec.initContainers[2].restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
            ]
        );
    }

    #[test]
    fn env() {
        let p = defaulted(json!({"containers": [{"name": "a", "image": "x", "env": [
            {"name": "OK", "value": "1"},
            {"name": "1BAD"},
            {"name": ""},
            {"name": "A", "valueFrom": {}},
            {"name": "B", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "spec.hostNetwork"}}},
            {"name": "D", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}},
                "secretKeyRef": {"name": "s", "key": "k"}},
            {"name": "E", "valueFrom": {"configMapKeyRef": {"name": "c"}, "secretKeyRef": {"name": "s", "key": "k"}}}
        ]}]}));
        let errs = errors(&p);
        assert!(errs[0].starts_with("spec.containers[0].env[1].name: Invalid value: \"1BAD\": a valid environment variable name must consist of"), "{}", errs[0]);
        assert_eq!(errs[1], "spec.containers[0].env[2].name: Required value");
        assert!(errs[2].starts_with(
            "spec.containers[0].env[2].name: Invalid value: \"\": a valid environment"
        ));
        assert_eq!(
            errs[3],
            "spec.containers[0].env[3].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"
        );
        assert_eq!(
            errs[4],
            "spec.containers[0].env[4].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty"
        );
        assert_eq!(
            errs[5],
            "spec.containers[0].env[5].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.hostNetwork\": supported values: \"metadata.name\", \"metadata.namespace\", \"metadata.uid\", \"spec.nodeName\", \"spec.serviceAccountName\", \"status.hostIP\", \"status.hostIPs\", \"status.podIP\", \"status.podIPs\""
        );
        assert_eq!(
            errs[6],
            "spec.containers[0].env[7].valueFrom.configMapKeyRef.key: Required value"
        );
        assert_eq!(
            errs[7],
            "spec.containers[0].env[7].valueFrom: Invalid value: \"\": may not have more than one field specified at a time"
        );
        assert_eq!(errs.len(), 8, "{errs:?}");
    }

    #[test]
    fn tolerations() {
        let mut p = simple();
        p["spec"]["tolerations"] = json!([
            {"operator": "Exists"},
            {"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"},
            {"key": "", "operator": "Equal"},
            {"key": "k", "operator": "Exists", "value": "v"},
            {"key": "k", "operator": "Less"},
            {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5},
            {"key": "k", "effect": "Sometimes"},
            {"key": "k", "value": "-v"}
        ]);
        let errs = errors(&p);
        assert_eq!(
            errs[0],
            "spec.tolerations[2].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\""
        );
        assert_eq!(
            errs[1],
            "spec.tolerations[3].operator: Invalid value: {\"Key\":\"k\",\"Operator\":\"Exists\",\"Value\":\"v\",\"Effect\":\"\",\"TolerationSeconds\":null}: value must be empty when `operator` is 'Exists'"
        );
        assert_eq!(
            errs[2],
            "spec.tolerations[4].operator: Unsupported value: \"Less\": supported values: \"Equal\", \"Exists\""
        );
        assert_eq!(
            errs[3],
            "spec.tolerations[5].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set"
        );
        assert_eq!(
            errs[4],
            "spec.tolerations[6].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""
        );
        assert!(errs[5].starts_with(
            "spec.tolerations[7].operator: Invalid value: \"-v\": a valid label must be"
        ));
        assert_eq!(errs.len(), 6, "{errs:?}");
    }

    fn update_errors(new: &Value, old: &Value) -> Vec<String> {
        validate_update(new, old)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn updates_allow_images_deadlines_tolerations_and_a_first_node() {
        let old = simple();
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nginx:1.28");
        new["spec"]["activeDeadlineSeconds"] = json!(100);
        new["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists"}]);
        new["spec"]["nodeName"] = json!("node-1");
        assert!(
            update_errors(&new, &old).is_empty(),
            "{:?}",
            update_errors(&new, &old)
        );
        // the node, once set, stays
        let mut moved = new.clone();
        moved["spec"]["nodeName"] = json!("node-2");
        let errs = update_errors(&moved, &new);
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0],
            format!(
                "spec: Forbidden: pod updates may not change fields other than {UPDATABLE_POD_SPEC_FIELDS}\n  spec.nodeName: \"node-1\" -> \"node-2\""
            )
        );
        // deadlines only shrink, and are not removed
        let mut longer = new.clone();
        longer["spec"]["activeDeadlineSeconds"] = json!(200);
        assert_eq!(
            update_errors(&longer, &new),
            vec![
                "spec.activeDeadlineSeconds: Invalid value: 200: must be less than or equal to previous value"
            ]
        );
        let mut removed = new.clone();
        removed["spec"]
            .as_object_mut()
            .unwrap()
            .remove("activeDeadlineSeconds");
        assert_eq!(
            update_errors(&removed, &new),
            vec![
                "spec.activeDeadlineSeconds: Invalid value: null: must not update from a positive integer to nil value"
            ]
        );
        // tolerations: only additions, and tolerationSeconds changes
        let mut changed = new.clone();
        changed["spec"]["tolerations"] = json!([{"key": "other", "operator": "Exists"}]);
        assert_eq!(
            update_errors(&changed, &new),
            vec![
                "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"
            ]
        );
        let mut added = new.clone();
        added["spec"]["tolerations"] =
            json!([{"key": "k", "operator": "Exists"}, {"key": "x", "operator": "Exists"}]);
        assert!(update_errors(&added, &new).is_empty());
    }

    #[test]
    fn updates_refuse_other_spec_changes() {
        let old = simple();
        let mut new = old.clone();
        new["spec"]["containers"][0]["ports"] = json!([{"containerPort": 8080, "protocol": "TCP"}]);
        new["spec"]["restartPolicy"] = json!("Never");
        let errs = update_errors(&new, &old);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"));
        assert!(errs[0].contains("\n  spec.containers[0].ports: <unset> -> [{\"containerPort\":8080,\"protocol\":\"TCP\"}]"), "{}", errs[0]);
        assert!(
            errs[0].contains("\n  spec.restartPolicy: \"Always\" -> \"Never\""),
            "{}",
            errs[0]
        );
        let mut grace = old.clone();
        grace["spec"]["terminationGracePeriodSeconds"] = json!(10);
        assert_eq!(update_errors(&grace, &old).len(), 1);
        let mut negative = old.clone();
        negative["spec"]["terminationGracePeriodSeconds"] = json!(-5);
        let mut one = old.clone();
        one["spec"]["terminationGracePeriodSeconds"] = json!(1);
        assert!(update_errors(&one, &negative).is_empty());
        // zero values and absent ones are the same
        let mut explicit = old.clone();
        explicit["spec"]["hostNetwork"] = json!(false);
        explicit["spec"]["volumes"] = json!([]);
        assert!(update_errors(&explicit, &old).is_empty());
        let mut more = old.clone();
        more["spec"]["containers"] =
            json!([{"name": "app", "image": "x"}, {"name": "b", "image": "y"}]);
        assert_eq!(
            update_errors(&more, &old),
            vec!["spec.containers: Forbidden: pod updates may not add or remove containers"]
        );
        let mut spaced = old.clone();
        spaced["spec"]["containers"][0]["image"] = json!(" nginx");
        assert_eq!(
            update_errors(&spaced, &old),
            vec![
                "spec.containers[0].image: Invalid value: \" nginx\": must not have leading or trailing whitespace"
            ]
        );
    }
}
