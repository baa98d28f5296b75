//! Services: `SetDefaults_Service`, the Service REST's update preparation
//! (`patchAllocatedValues`, `normalizeClusterIPs`, `dropTypeDependentFields`) and
//! `ValidateService`/`ValidateServiceUpdate`.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::FieldError;
use super::meta::{self, MetaRules};
use super::names::{
    NameRule, dns1123_subdomain_errors, invalid_each, is_ipv6, port_num_errors, validate_cidr,
    validate_dns1123_label, validate_ip, validate_labels, validate_non_special_ip,
    validate_qualified_name,
};
use super::pod::{protocol_errors, validate_port_num_or_name};
use super::util::{
    Rendered, arr, child, default_to, ensure_obj, get, go_json_str, i, index, items_mut, obj,
    opt_i, opt_s, s, semantic_eq, strings,
};

const META: MetaRules = MetaRules {
    name: NameRule::Dns1035Label,
    namespaced: true,
    core: true,
};

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const IP_FAMILY_POLICIES: &[&str] = &["PreferDualStack", "RequireDualStack", "SingleStack"];
const IP_FAMILIES: &[&str] = &["IPv4", "IPv6"];
const TRAFFIC_POLICIES: &[&str] = &["Cluster", "Local"];
const MAX_CLIENT_IP_AFFINITY_SECONDS: i64 = 86400;
const DEFAULT_CLIENT_IP_AFFINITY_SECONDS: i64 = 10800;
const KUBELET_PORT: i64 = 10250;

static NULL: Value = Value::Null;

/// The type, `ClusterIP` when unset (as defaulting makes it).
fn service_type(spec: &Value) -> &str {
    match s(spec, "type") {
        "" => "ClusterIP",
        t => t,
    }
}

/// `isHeadlessService`.
fn is_headless(spec: &Value) -> bool {
    let ips = strings(spec, "clusterIPs");
    if ips.is_empty() {
        s(spec, "clusterIP") == "None"
    } else {
        ips.len() == 1 && ips[0] == "None"
    }
}

/// `apiservice.ExternallyAccessible`.
fn externally_accessible(spec: &Value) -> bool {
    match service_type(spec) {
        "LoadBalancer" | "NodePort" => true,
        "ClusterIP" => !arr(spec, "externalIPs").is_empty(),
        _ => false,
    }
}

/// `apiservice.NeedsHealthCheck`.
fn needs_health_check(spec: &Value) -> bool {
    service_type(spec) == "LoadBalancer" && s(spec, "externalTrafficPolicy") == "Local"
}

/// Whether the type gets NodePorts.
fn needs_node_port(spec: &Value) -> bool {
    match service_type(spec) {
        "NodePort" => true,
        "LoadBalancer" => get(spec, "allocateLoadBalancerNodePorts")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// Defaults
// ---------------------------------------------------------------------------------------

pub fn apply_defaults(svc: &mut Value) {
    let spec = ensure_obj(svc, "spec");
    default_to(spec, "sessionAffinity", json!("None"));
    match s(spec, "sessionAffinity") {
        "None" => {
            if let Some(m) = spec.as_object_mut() {
                m.remove("sessionAffinityConfig");
            }
        }
        "ClientIP" => {
            let has_timeout = get(spec, "sessionAffinityConfig")
                .and_then(|c| get(c, "clientIP"))
                .and_then(|c| opt_i(c, "timeoutSeconds"))
                .is_some();
            if !has_timeout {
                spec["sessionAffinityConfig"] =
                    json!({"clientIP": {"timeoutSeconds": DEFAULT_CLIENT_IP_AFFINITY_SECONDS}});
            }
        }
        _ => {}
    }
    default_to(spec, "type", json!("ClusterIP"));
    for port in items_mut(spec, "ports") {
        default_to(port, "protocol", json!("TCP"));
        let unset = match get(port, "targetPort") {
            None => true,
            Some(Value::String(t)) => t.is_empty(),
            Some(t) => t.as_i64() == Some(0),
        };
        if unset && let Some(p) = get(port, "port").cloned() {
            port["targetPort"] = p;
        }
    }
    if externally_accessible(spec) {
        default_to(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    let typ = service_type(spec).to_owned();
    if matches!(typ.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        default_to(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if typ == "LoadBalancer" {
        default_to(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if typ == "ExternalName" {
        return;
    }
    // clusterIP and clusterIPs name the same primary address
    let cluster_ip = s(spec, "clusterIP").to_owned();
    let ips = strings(spec, "clusterIPs");
    if !cluster_ip.is_empty() && ips.is_empty() {
        spec["clusterIPs"] = json!([cluster_ip]);
    } else if cluster_ip.is_empty() && !ips.is_empty() {
        spec["clusterIP"] = json!(ips[0]);
    }
    let headless = is_headless(spec);
    let has_selector = obj(spec, "selector").is_some_and(|m| !m.is_empty());
    if headless && !has_selector {
        return;
    }
    if arr(spec, "ipFamilies").is_empty() {
        let mut families: Vec<&str> = strings(spec, "clusterIPs")
            .iter()
            .filter(|ip| *ip != "None")
            .map(|ip| if is_ipv6(ip) { "IPv6" } else { "IPv4" })
            .collect();
        if families.is_empty() {
            families.push("IPv4");
        }
        spec["ipFamilies"] = json!(families);
    }
    let policy = if arr(spec, "ipFamilies").len() > 1 {
        "RequireDualStack"
    } else {
        "SingleStack"
    };
    default_to(spec, "ipFamilyPolicy", json!(policy));
}

// ---------------------------------------------------------------------------------------
// Update preparation
// ---------------------------------------------------------------------------------------

pub fn prepare_update(svc: &mut Value, old: &Value) {
    let os = get(old, "spec").unwrap_or(&NULL).clone();
    let spec = ensure_obj(svc, "spec");
    patch_allocated_values(spec, &os);
    normalize_cluster_ips(spec, &os);
    drop_type_dependent_fields(spec, &os);
}

/// `patchAllocatedValues`: what the server allocated stays when the client leaves it out.
fn patch_allocated_values(spec: &mut Value, os: &Value) {
    if service_type(os) != "ExternalName" && service_type(spec) != "ExternalName" {
        if s(spec, "clusterIP").is_empty() && !s(os, "clusterIP").is_empty() {
            spec["clusterIP"] = json!(s(os, "clusterIP"));
        }
        if arr(spec, "clusterIPs").is_empty() && !arr(os, "clusterIPs").is_empty() {
            spec["clusterIPs"] = os["clusterIPs"].clone();
        }
    }
    if needs_node_port(os) && needs_node_port(spec) {
        let used_by = |sp: &Value| -> HashSet<i64> {
            arr(sp, "ports")
                .iter()
                .map(|p| i(p, "nodePort"))
                .filter(|n| *n != 0)
                .collect()
        };
        let used: HashSet<i64> = used_by(os).intersection(&used_by(spec)).copied().collect();
        let by_name: Vec<(String, i64)> = arr(os, "ports")
            .iter()
            .map(|p| (s(p, "name").to_owned(), i(p, "nodePort")))
            .collect();
        for port in items_mut(spec, "ports") {
            if i(port, "nodePort") != 0 {
                continue;
            }
            let name = s(port, "name");
            let old_value = by_name
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, v)| *v);
            if old_value != 0 && !used.contains(&old_value) {
                port["nodePort"] = json!(old_value);
            }
        }
    }
    if needs_health_check(os)
        && needs_health_check(spec)
        && i(spec, "healthCheckNodePort") == 0
        && let Some(v) = get(os, "healthCheckNodePort")
    {
        spec["healthCheckNodePort"] = v.clone();
    }
}

fn same_cluster_ips(a: &Value, b: &Value) -> bool {
    strings(a, "clusterIPs") == strings(b, "clusterIPs")
}

/// `normalizeClusterIPs` for an update.
fn normalize_cluster_ips(spec: &mut Value, os: &Value) {
    if !arr(os, "clusterIPs").is_empty()
        && arr(spec, "clusterIPs").is_empty()
        && s(os, "clusterIP") == s(spec, "clusterIP")
    {
        spec["clusterIPs"] = os["clusterIPs"].clone();
    }
    let (old_ip, new_ip) = (
        s(os, "clusterIP").to_owned(),
        s(spec, "clusterIP").to_owned(),
    );
    if old_ip != new_ip && same_cluster_ips(os, spec) {
        if !old_ip.is_empty() && new_ip.is_empty() {
            remove(spec, "clusterIPs");
        } else {
            spec["clusterIPs"] = json!([new_ip]);
        }
    }
}

/// `dropTypeDependentFields`: what only applied to the old type goes, unless the client
/// changed it.
fn drop_type_dependent_fields(spec: &mut Value, os: &Value) {
    let needs_cluster_ip = |sp: &Value| service_type(sp) != "ExternalName";
    if needs_cluster_ip(os) && !needs_cluster_ip(spec) {
        if same_cluster_ips(os, spec) {
            remove(spec, "clusterIP");
            remove(spec, "clusterIPs");
        }
        if semantic_eq(
            get(os, "ipFamilies").unwrap_or(&NULL),
            get(spec, "ipFamilies").unwrap_or(&NULL),
        ) {
            remove(spec, "ipFamilies");
        }
        if opt_s(os, "ipFamilyPolicy") == opt_s(spec, "ipFamilyPolicy") {
            remove(spec, "ipFamilyPolicy");
        }
    }
    if needs_node_port(os) && !needs_node_port(spec) {
        let node_ports = |sp: &Value| -> Vec<i64> {
            arr(sp, "ports").iter().map(|p| i(p, "nodePort")).collect()
        };
        if node_ports(os) == node_ports(spec) {
            for port in items_mut(spec, "ports") {
                remove(port, "nodePort");
            }
        }
    }
    if needs_health_check(os)
        && !needs_health_check(spec)
        && i(os, "healthCheckNodePort") == i(spec, "healthCheckNodePort")
    {
        remove(spec, "healthCheckNodePort");
    }
    if service_type(os) == "LoadBalancer" && service_type(spec) != "LoadBalancer" {
        let (o, n) = (
            get(os, "allocateLoadBalancerNodePorts"),
            get(spec, "allocateLoadBalancerNodePorts"),
        );
        if o.is_some() && o == n {
            remove(spec, "allocateLoadBalancerNodePorts");
        }
        if opt_s(os, "loadBalancerClass") == opt_s(spec, "loadBalancerClass") {
            remove(spec, "loadBalancerClass");
        }
    }
    if externally_accessible(os)
        && !externally_accessible(spec)
        && s(os, "externalTrafficPolicy") == s(spec, "externalTrafficPolicy")
    {
        remove(spec, "externalTrafficPolicy");
    }
}

fn remove(v: &mut Value, k: &str) {
    if let Some(m) = v.as_object_mut() {
        m.remove(k);
    }
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

pub fn validate(svc: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate(svc, META);
    let spec = get(svc, "spec").unwrap_or(&NULL);
    errs.extend(validate_spec(spec));
    errs
}

fn validate_spec(spec: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let sp = "spec";
    let typ = s(spec, "type");
    let headless = is_headless(spec);
    let ports = arr(spec, "ports");
    let ports_path = child(sp, "ports");
    if ports.is_empty() && !headless && typ != "ExternalName" {
        errs.push(FieldError::required(&ports_path, ""));
    }
    match typ {
        "LoadBalancer" | "NodePort" => {
            if headless {
                errs.push(FieldError::invalid(
                    index(&child(sp, "clusterIPs"), 0),
                    "None",
                    format!("may not be set to 'None' for {typ} services"),
                ));
            }
            if typ == "LoadBalancer" {
                for (n, port) in ports.iter().enumerate() {
                    if i(port, "port") == KUBELET_PORT {
                        errs.push(FieldError::invalid(
                            index(&ports_path, n),
                            &KUBELET_PORT,
                            format!("may not expose port {KUBELET_PORT} externally since it is used by kubelet"),
                        ));
                    }
                }
            }
        }
        "ExternalName" => {
            if !arr(spec, "clusterIPs").is_empty() || !s(spec, "clusterIP").is_empty() {
                errs.push(FieldError::forbidden(
                    child(sp, "clusterIPs"),
                    "may not be set for ExternalName services",
                ));
            }
            if !arr(spec, "ipFamilies").is_empty() {
                errs.push(FieldError::forbidden(
                    child(sp, "ipFamilies"),
                    "may not be set for ExternalName services",
                ));
            }
            if get(spec, "ipFamilyPolicy").is_some() {
                errs.push(FieldError::forbidden(
                    child(sp, "ipFamilyPolicy"),
                    "may not be set for ExternalName services",
                ));
            }
            let external_name = s(spec, "externalName");
            let cname = external_name.strip_suffix('.').unwrap_or(external_name);
            if cname.is_empty() {
                errs.push(FieldError::required(child(sp, "externalName"), ""));
            } else {
                errs.extend(invalid_each(
                    &child(sp, "externalName"),
                    cname,
                    dns1123_subdomain_errors(cname),
                ));
            }
        }
        _ => {}
    }

    let mut names: HashSet<&str> = HashSet::new();
    for (n, port) in ports.iter().enumerate() {
        errs.extend(validate_service_port(
            port,
            ports.len() > 1,
            &mut names,
            &index(&ports_path, n),
        ));
    }

    if let Some(selector) = get(spec, "selector") {
        errs.extend(validate_labels(selector, &child(sp, "selector")));
    }

    let affinity = s(spec, "sessionAffinity");
    let affinity_path = child(sp, "sessionAffinity");
    if affinity.is_empty() {
        errs.push(FieldError::required(affinity_path, ""));
    } else if !matches!(affinity, "ClientIP" | "None") {
        errs.push(FieldError::not_supported(
            affinity_path,
            affinity,
            &["ClientIP", "None"],
        ));
    }
    let config_path = child(sp, "sessionAffinityConfig");
    if affinity == "ClientIP" {
        errs.extend(validate_client_ip_affinity(
            get(spec, "sessionAffinityConfig"),
            &config_path,
        ));
    } else if affinity == "None" && get(spec, "sessionAffinityConfig").is_some() {
        errs.push(FieldError::forbidden(
            config_path,
            "must not be set when session affinity is None",
        ));
    }

    errs.extend(validate_cluster_ips(spec));

    let ext_path = child(sp, "externalIPs");
    for (n, ip) in arr(spec, "externalIPs").iter().enumerate() {
        let ip = ip.as_str().unwrap_or("");
        let ip_path = index(&ext_path, n);
        let ip_errs = validate_ip(ip, &ip_path);
        if ip_errs.is_empty() {
            errs.extend(validate_non_special_ip(ip, &ip_path));
        } else {
            errs.extend(ip_errs);
        }
    }

    let type_path = child(sp, "type");
    if typ.is_empty() {
        errs.push(FieldError::required(type_path, ""));
    } else if !SERVICE_TYPES.contains(&typ) {
        errs.push(FieldError::not_supported(type_path, typ, SERVICE_TYPES));
    }

    if matches!(typ, "ClusterIP" | "ExternalName") {
        for (n, port) in ports.iter().enumerate() {
            if i(port, "nodePort") != 0 {
                errs.push(FieldError::forbidden(
                    child(&index(&ports_path, n), "nodePort"),
                    format!("may not be used when `type` is '{typ}'"),
                ));
            }
        }
    }
    let mut node_ports: HashSet<(&str, i64)> = HashSet::new();
    for (n, port) in ports.iter().enumerate() {
        let node_port = i(port, "nodePort");
        if node_port == 0 {
            continue;
        }
        let np_path = child(&index(&ports_path, n), "nodePort");
        for msg in port_num_errors(node_port) {
            errs.push(FieldError::invalid(&np_path, &node_port, msg));
        }
        if !node_ports.insert((s(port, "protocol"), node_port)) {
            errs.push(FieldError::duplicate(np_path, &node_port));
        }
    }
    let mut seen: HashSet<(&str, i64)> = HashSet::new();
    for (n, port) in ports.iter().enumerate() {
        let (protocol, number) = (s(port, "protocol"), i(port, "port"));
        if !seen.insert((protocol, number)) {
            errs.push(FieldError::duplicate(
                index(&ports_path, n),
                &Rendered(format!(
                    "{{\"Name\":\"\",\"Protocol\":{},\"AppProtocol\":null,\"Port\":{number},\"TargetPort\":0,\"NodePort\":0}}",
                    go_json_str(protocol)
                )),
            ));
        }
    }

    let ranges = arr(spec, "loadBalancerSourceRanges");
    if !ranges.is_empty() {
        let ranges_path = child(sp, "LoadBalancerSourceRanges");
        if typ != "LoadBalancer" {
            errs.push(FieldError::forbidden(
                &ranges_path,
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        for (n, r) in ranges.iter().enumerate() {
            errs.extend(validate_cidr(
                r.as_str().unwrap_or("").trim(),
                &index(&ranges_path, n),
            ));
        }
    }
    let allocate = get(spec, "allocateLoadBalancerNodePorts");
    if allocate.is_some() && typ != "LoadBalancer" {
        errs.push(FieldError::forbidden(
            child(sp, "allocateLoadBalancerNodePorts"),
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if typ == "LoadBalancer" && allocate.is_none() {
        // sic: Kubernetes names this field without `spec.`
        errs.push(FieldError::required("allocateLoadBalancerNodePorts", ""));
    }
    if let Some(class) = opt_s(spec, "loadBalancerClass") {
        let class_path = child(sp, "loadBalancerClass");
        if typ == "LoadBalancer" {
            errs.extend(validate_qualified_name(class, &class_path));
        } else {
            errs.push(FieldError::forbidden(
                class_path,
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
    }

    errs.extend(validate_external_traffic_policy(spec));
    let itp_path = child(sp, "internalTrafficPolicy");
    match opt_s(spec, "internalTrafficPolicy").filter(|p| !p.is_empty()) {
        None => {
            if matches!(typ, "ClusterIP" | "NodePort" | "LoadBalancer") {
                errs.push(FieldError::required(itp_path, ""));
            }
        }
        Some(p) if !TRAFFIC_POLICIES.contains(&p) => {
            errs.push(FieldError::not_supported(itp_path, p, TRAFFIC_POLICIES));
        }
        Some(_) => {}
    }
    errs
}

/// `validateServicePort`.
fn validate_service_port<'a>(
    port: &'a Value,
    require_name: bool,
    names: &mut HashSet<&'a str>,
    p: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = s(port, "name");
    let name_path = child(p, "name");
    if require_name && name.is_empty() {
        errs.push(FieldError::required(name_path, ""));
    } else if !name.is_empty() {
        errs.extend(validate_dns1123_label(name, &name_path));
        if !names.insert(name) {
            errs.push(FieldError::duplicate(name_path, name));
        }
    }
    let number = i(port, "port");
    for msg in port_num_errors(number) {
        errs.push(FieldError::invalid(child(p, "port"), &number, msg));
    }
    errs.extend(protocol_errors(s(port, "protocol"), &child(p, "protocol")));
    errs.extend(validate_port_num_or_name(
        get(port, "targetPort").unwrap_or(&NULL),
        &child(p, "targetPort"),
    ));
    if let Some(app) = opt_s(port, "appProtocol") {
        errs.extend(validate_qualified_name(app, &child(p, "appProtocol")));
    }
    errs
}

/// `validateClientIPAffinityConfig`.
fn validate_client_ip_affinity(config: Option<&Value>, p: &str) -> Vec<FieldError> {
    let detail = "when session affinity type is ClientIP";
    let Some(config) = config else {
        return vec![FieldError::required(p, detail)];
    };
    let client_path = child(p, "clientIP");
    let Some(client) = get(config, "clientIP") else {
        return vec![FieldError::required(client_path, detail)];
    };
    let timeout_path = child(&client_path, "timeoutSeconds");
    let Some(timeout) = opt_i(client, "timeoutSeconds") else {
        return vec![FieldError::required(timeout_path, detail)];
    };
    if timeout <= 0 || timeout > MAX_CLIENT_IP_AFFINITY_SECONDS {
        return vec![FieldError::invalid(
            timeout_path,
            &timeout,
            format!("must be greater than 0 and less than {MAX_CLIENT_IP_AFFINITY_SECONDS}"),
        )];
    }
    Vec::new()
}

/// `ValidateServiceClusterIPsRelatedFields` (plus the REST's check that a single-stack
/// service has one family).
fn validate_cluster_ips(spec: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if s(spec, "type") == "ExternalName" {
        return errs;
    }
    let sp = "spec";
    let ips_path = child(sp, "clusterIPs");
    let families_path = child(sp, "ipFamilies");
    let policy_path = child(sp, "ipFamilyPolicy");
    let cluster_ip = s(spec, "clusterIP");
    let ips = strings(spec, "clusterIPs");
    if !cluster_ip.is_empty() {
        if ips.is_empty() {
            errs.push(FieldError::required(&ips_path, ""));
        } else if ips[0] != cluster_ip {
            errs.push(FieldError::invalid(
                &ips_path,
                &ips,
                "first value must match `clusterIP`",
            ));
        }
    } else if !ips.is_empty() {
        errs.push(FieldError::invalid(
            &ips_path,
            &ips,
            "must be empty when `clusterIP` is not specified",
        ));
    }
    let families = strings(spec, "ipFamilies");
    let mut seen: HashSet<&str> = HashSet::new();
    for (n, family) in families.iter().enumerate() {
        if !IP_FAMILIES.contains(&family.as_str()) {
            errs.push(FieldError::not_supported(
                index(&families_path, n),
                family,
                IP_FAMILIES,
            ));
        }
        if !seen.insert(family) {
            errs.push(FieldError::duplicate(index(&families_path, n), family));
        }
    }
    let policy = opt_s(spec, "ipFamilyPolicy");
    if let Some(pol) = policy
        && !IP_FAMILY_POLICIES.contains(&pol)
    {
        errs.push(FieldError::not_supported(
            &policy_path,
            pol,
            IP_FAMILY_POLICIES,
        ));
    }
    let mut has_invalid = false;
    for (n, ip) in ips.iter().enumerate() {
        if n == 0 && ip == "None" {
            if ips.len() > 1 {
                has_invalid = true;
                errs.push(FieldError::invalid(
                    &ips_path,
                    &ips,
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        let ip_errs = validate_ip(ip, &index(&ips_path, n));
        has_invalid |= !ip_errs.is_empty();
        errs.extend(ip_errs);
    }
    if ips.len() > 2 {
        errs.push(FieldError::invalid(
            &ips_path,
            &ips,
            "may only hold up to 2 values",
        ));
    }
    if has_invalid {
        return errs;
    }
    if ips.len() > 1 {
        let v6 = ips.iter().filter(|ip| is_ipv6(ip)).count();
        if v6 == 0 || v6 == ips.len() {
            errs.push(FieldError::invalid(
                &ips_path,
                &ips,
                "may specify no more than one IP for each IP family",
            ));
        }
    }
    if !is_headless(spec) {
        for (n, (ip, family)) in ips.iter().zip(&families).enumerate() {
            if family == "IPv4" && is_ipv6(ip) {
                errs.push(FieldError::invalid(
                    index(&ips_path, n),
                    ip,
                    format!("expected an IPv4 value as indicated by `ipFamilies[{n}]`"),
                ));
            }
            if family == "IPv6" && !is_ipv6(ip) {
                errs.push(FieldError::invalid(
                    index(&ips_path, n),
                    ip,
                    format!("expected an IPv6 value as indicated by `ipFamilies[{n}]`"),
                ));
            }
        }
    }
    if policy == Some("SingleStack") {
        let real_ips = ips.iter().filter(|ip| *ip != "None").count();
        if families.len() > 1 {
            errs.push(FieldError::invalid(
                &policy_path,
                "SingleStack",
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple 'ipFamilies' are specified",
            ));
        } else if real_ips > 1 {
            errs.push(FieldError::invalid(
                &policy_path,
                "SingleStack",
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
            ));
        }
    }
    errs
}

/// `validateServiceExternalTrafficPolicy`. The `healthCheckNodePort` a `Local`
/// LoadBalancer needs is allocated by the server, so it is not required here.
fn validate_external_traffic_policy(spec: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let etp = s(spec, "externalTrafficPolicy");
    let etp_path = "spec.externalTrafficPolicy";
    if !externally_accessible(spec) {
        if !etp.is_empty() {
            errs.push(FieldError::invalid(
                etp_path,
                etp,
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        errs.push(FieldError::required(etp_path, ""));
    } else if !TRAFFIC_POLICIES.contains(&etp) {
        errs.push(FieldError::not_supported(etp_path, etp, TRAFFIC_POLICIES));
    }
    let hcnp = i(spec, "healthCheckNodePort");
    let hcnp_path = "spec.healthCheckNodePort";
    if hcnp != 0 {
        if needs_health_check(spec) {
            for msg in port_num_errors(hcnp) {
                errs.push(FieldError::invalid(hcnp_path, &hcnp, msg));
            }
        } else {
            errs.push(FieldError::invalid(
                hcnp_path,
                &hcnp,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        }
    }
    errs
}

/// `ValidateServiceUpdate` beyond the create-validation of the new service.
pub fn validate_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let ns = get(new, "spec").unwrap_or(&NULL);
    let os = get(old, "spec").unwrap_or(&NULL);
    let mut errs = upgrade_downgrade_cluster_ips(ns, os);
    errs.extend(upgrade_downgrade_ip_families(ns, os));
    if service_type(ns) == "LoadBalancer"
        && service_type(os) == "LoadBalancer"
        && opt_s(ns, "loadBalancerClass") != opt_s(os, "loadBalancerClass")
    {
        errs.push(FieldError::invalid(
            "spec.loadBalancerClass",
            get(ns, "loadBalancerClass").unwrap_or(&NULL),
            "may not change once set",
        ));
    }
    if needs_health_check(ns)
        && needs_health_check(os)
        && i(ns, "healthCheckNodePort") != i(os, "healthCheckNodePort")
    {
        errs.push(FieldError::forbidden(
            "spec.healthCheckNodePort",
            "field is immutable",
        ));
    }
    errs
}

/// `validateUpgradeDowngradeClusterIPs`: the primary ClusterIP never changes; a
/// secondary one may be added, or released with `SingleStack`.
fn upgrade_downgrade_cluster_ips(ns: &Value, os: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if service_type(ns) == "ExternalName" || service_type(os) == "ExternalName" {
        return errs;
    }
    if is_headless(ns) && is_headless(os) {
        return errs;
    }
    let (old_ips, new_ips) = (strings(os, "clusterIPs"), strings(ns, "clusterIPs"));
    let first = index("spec.clusterIPs", 0);
    match old_ips.len().cmp(&new_ips.len()) {
        std::cmp::Ordering::Equal => {
            for (n, ip) in old_ips.iter().enumerate() {
                if *ip != new_ips[n] {
                    errs.push(FieldError::invalid(
                        index("spec.clusterIPs", n),
                        &new_ips,
                        "may not change once set",
                    ));
                }
            }
        }
        std::cmp::Ordering::Greater => {
            if new_ips.is_empty() {
                errs.push(FieldError::invalid(
                    &first,
                    &new_ips,
                    "primary clusterIP can not be unset",
                ));
            } else if new_ips[0] != old_ips[0] {
                errs.push(FieldError::invalid(
                    &first,
                    &new_ips,
                    "may not change once set",
                ));
            }
            if new_ips.len() == 1 && s(ns, "ipFamilyPolicy") != "SingleStack" {
                errs.push(FieldError::invalid(
                    &first,
                    &new_ips,
                    "`ipFamilyPolicy` must be set to 'SingleStack' when releasing the secondary clusterIP",
                ));
            }
        }
        std::cmp::Ordering::Less => {
            if !old_ips.is_empty() && new_ips[0] != old_ips[0] {
                errs.push(FieldError::invalid(
                    &first,
                    &new_ips,
                    "may not change once set",
                ));
            }
        }
    }
    errs
}

/// `validateUpgradeDowngradeIPFamilies`.
fn upgrade_downgrade_ip_families(ns: &Value, os: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if service_type(ns) == "ExternalName" || service_type(os) == "ExternalName" {
        return errs;
    }
    if is_headless(ns) || is_headless(os) {
        return errs;
    }
    let (old_f, new_f) = (strings(os, "ipFamilies"), strings(ns, "ipFamilies"));
    let first = index("spec.ipFamilies", 0);
    let new_ips = strings(ns, "clusterIPs");
    match old_f.len().cmp(&new_f.len()) {
        std::cmp::Ordering::Equal => {
            if old_f != new_f {
                errs.push(FieldError::invalid(
                    &first,
                    &new_f,
                    "may not change once set",
                ));
            }
        }
        std::cmp::Ordering::Greater => {
            if new_ips.is_empty() {
                errs.push(FieldError::invalid(
                    &first,
                    &new_f,
                    "primary ipFamily can not be unset",
                ));
            }
            if !new_f.is_empty() && new_f[0] != old_f[0] {
                errs.push(FieldError::invalid(
                    &first,
                    &new_ips,
                    "may not change once set",
                ));
            }
            if new_f.len() == 1 && s(ns, "ipFamilyPolicy") != "SingleStack" {
                errs.push(FieldError::invalid(
                    index("spec.clusterIPs", 0),
                    &new_ips,
                    "`ipFamilyPolicy` must be set to 'SingleStack' when releasing the secondary ipFamily",
                ));
            }
        }
        std::cmp::Ordering::Less => {
            if !old_f.is_empty() && new_f[0] != old_f[0] {
                errs.push(FieldError::invalid(
                    &first,
                    &new_ips,
                    "may not change once set",
                ));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    fn defaulted(spec: Value) -> Value {
        let mut s = svc(spec);
        apply_defaults(&mut s);
        s
    }

    fn errors(v: &Value) -> Vec<String> {
        validate(v).iter().map(ToString::to_string).collect()
    }

    fn simple() -> Value {
        defaulted(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}))
    }

    #[test]
    fn defaults_as_kubernetes() {
        let s = simple();
        assert_eq!(
            s["spec"],
            json!({"selector": {"app": "web"}, "type": "ClusterIP", "sessionAffinity": "None",
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
                "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"})
        );
        assert!(validate(&s).is_empty(), "{:?}", errors(&s));

        let lb = defaulted(
            json!({"type": "LoadBalancer", "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {}}, "clusterIP": "fd00::10",
            "ports": [{"port": 443, "targetPort": "https", "protocol": "UDP"}]}),
        );
        let spec = &lb["spec"];
        assert_eq!(
            spec["sessionAffinityConfig"],
            json!({"clientIP": {"timeoutSeconds": 10800}})
        );
        assert_eq!(spec["externalTrafficPolicy"], "Cluster");
        assert_eq!(spec["allocateLoadBalancerNodePorts"], true);
        assert_eq!(spec["ports"][0]["targetPort"], "https");
        assert_eq!(spec["ports"][0]["protocol"], "UDP");
        assert_eq!(spec["clusterIPs"], json!(["fd00::10"]));
        assert_eq!(spec["ipFamilies"], json!(["IPv6"]));
        assert!(validate(&lb).is_empty(), "{:?}", errors(&lb));

        let none = defaulted(
            json!({"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}},
            "clusterIP": "None", "ports": [{"port": 80, "targetPort": 0}]}),
        );
        assert!(none["spec"].get("sessionAffinityConfig").is_none());
        assert_eq!(none["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(none["spec"]["clusterIPs"], json!(["None"]));
        // headless without selector: no families (Kubernetes picks them per cluster)
        assert!(none["spec"].get("ipFamilies").is_none());
        assert!(none["spec"].get("ipFamilyPolicy").is_none());
        assert!(validate(&none).is_empty(), "{:?}", errors(&none));

        let external =
            defaulted(json!({"type": "ExternalName", "externalName": "db.example.com."}));
        assert_eq!(
            external["spec"],
            json!({"type": "ExternalName", "externalName": "db.example.com.", "sessionAffinity": "None"})
        );
        assert!(validate(&external).is_empty(), "{:?}", errors(&external));

        let ext_ips = defaulted(
            json!({"externalIPs": ["192.0.2.1"], "ports": [{"port": 80}],
            "clusterIPs": ["10.96.0.9", "fd00::9"]}),
        );
        assert_eq!(ext_ips["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(ext_ips["spec"]["clusterIP"], "10.96.0.9");
        assert_eq!(ext_ips["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
        assert_eq!(ext_ips["spec"]["ipFamilyPolicy"], "RequireDualStack");
        assert!(validate(&ext_ips).is_empty(), "{:?}", errors(&ext_ips));
    }

    #[test]
    fn names_are_dns1035_labels() {
        let mut s = simple();
        s["metadata"]["name"] = json!("1web");
        assert_eq!(
            errors(&s),
            vec![
                "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
            ]
        );
    }

    #[test]
    fn ports() {
        assert_eq!(
            errors(&defaulted(json!({}))),
            vec!["spec.ports: Required value"]
        );
        let s = defaulted(json!({"ports": [
            {"port": 70000, "name": "a"},
            {"port": 80, "protocol": "ABC", "targetPort": "HTTP"},
            {"port": 81, "name": "a", "targetPort": 0, "appProtocol": "a b"},
            {"port": 82, "name": "b", "nodePort": 30000},
            {"port": 82, "name": "c"},
        ]}));
        assert_eq!(
            errors(&s),
            vec![
                "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.ports[1].name: Required value",
                "spec.ports[1].protocol: Unsupported value: \"ABC\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.ports[1].targetPort: Invalid value: \"HTTP\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.ports[1].targetPort: Invalid value: \"HTTP\": must contain at least one letter (a-z)",
                "spec.ports[2].name: Duplicate value: \"a\"",
                "spec.ports[2].appProtocol: Invalid value: \"a b\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                "spec.ports[3].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
                "spec.ports[4]: Duplicate value: {\"Name\":\"\",\"Protocol\":\"TCP\",\"AppProtocol\":null,\"Port\":82,\"TargetPort\":0,\"NodePort\":0}",
            ]
        );
        let np = defaulted(json!({"type": "NodePort", "ports": [
            {"port": 80, "name": "a", "nodePort": 30080},
            {"port": 81, "name": "b", "nodePort": 30080},
            {"port": 82, "name": "c", "nodePort": 30080, "protocol": "UDP"},
            {"port": 83, "name": "d", "nodePort": 70000}
        ]}));
        assert_eq!(
            errors(&np),
            vec![
                "spec.ports[1].nodePort: Duplicate value: 30080",
                "spec.ports[3].nodePort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            ]
        );
    }

    #[test]
    fn types_and_cluster_ips() {
        let mut s = simple();
        s["spec"]["type"] = json!("Magic");
        s["spec"]["sessionAffinity"] = json!("Sticky");
        assert_eq!(
            errors(&s),
            vec![
                "spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"",
                "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
            ]
        );
        let np =
            defaulted(json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}));
        assert_eq!(
            errors(&np),
            vec![
                "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services"
            ]
        );
        let lb = defaulted(json!({"type": "LoadBalancer", "ports": [{"port": 10250}]}));
        assert_eq!(
            errors(&lb),
            vec![
                "spec.ports[0]: Invalid value: 10250: may not expose port 10250 externally since it is used by kubelet"
            ]
        );
        let bad_ip = defaulted(json!({"clusterIP": "10.96.0.300", "ports": [{"port": 80}]}));
        assert_eq!(
            errors(&bad_ip),
            vec![
                "spec.clusterIPs[0]: Invalid value: \"10.96.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
            ]
        );
        let mut mismatch = simple();
        mismatch["spec"]["clusterIP"] = json!("10.96.0.1");
        mismatch["spec"]["clusterIPs"] = json!(["10.96.0.2"]);
        assert_eq!(
            errors(&mismatch),
            vec![
                "spec.clusterIPs: Invalid value: [\"10.96.0.2\"]: first value must match `clusterIP`"
            ]
        );
        let mut two_v4 = simple();
        two_v4["spec"]["clusterIP"] = json!("10.96.0.1");
        two_v4["spec"]["clusterIPs"] = json!(["10.96.0.1", "10.96.0.2"]);
        assert_eq!(
            errors(&two_v4),
            vec![
                "spec.clusterIPs: Invalid value: [\"10.96.0.1\",\"10.96.0.2\"]: may specify no more than one IP for each IP family",
                "spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
            ]
        );
        let mut none_second = simple();
        none_second["spec"]["clusterIP"] = json!("None");
        none_second["spec"]["clusterIPs"] = json!(["None", "10.96.0.1"]);
        assert_eq!(
            errors(&none_second),
            vec![
                "spec.clusterIPs: Invalid value: [\"None\",\"10.96.0.1\"]: 'None' must be the first and only value"
            ]
        );
        let mut families = simple();
        families["spec"]["clusterIP"] = json!("fd00::1");
        families["spec"]["clusterIPs"] = json!(["fd00::1"]);
        families["spec"]["ipFamilies"] = json!(["IPv4", "IPv4", "IPv5"]);
        families["spec"]["ipFamilyPolicy"] = json!("Whatever");
        assert_eq!(
            errors(&families),
            vec![
                "spec.ipFamilies[1]: Duplicate value: \"IPv4\"",
                "spec.ipFamilies[2]: Unsupported value: \"IPv5\": supported values: \"IPv4\", \"IPv6\"",
                "spec.ipFamilyPolicy: Unsupported value: \"Whatever\": supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\"",
                "spec.clusterIPs[0]: Invalid value: \"fd00::1\": expected an IPv4 value as indicated by `ipFamilies[0]`",
            ]
        );
        let mut only_ips = simple();
        only_ips["spec"]["clusterIPs"] = json!(["10.96.0.1"]);
        assert_eq!(
            errors(&only_ips),
            vec![
                "spec.clusterIPs: Invalid value: [\"10.96.0.1\"]: must be empty when `clusterIP` is not specified"
            ]
        );
    }

    #[test]
    fn external_names() {
        let mut s = defaulted(json!({"type": "ExternalName", "clusterIP": "10.0.0.1",
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "ports": [{"port": 80, "nodePort": 30001}]}));
        assert_eq!(
            errors(&s),
            vec![
                "spec.clusterIPs: Forbidden: may not be set for ExternalName services",
                "spec.ipFamilies: Forbidden: may not be set for ExternalName services",
                "spec.ipFamilyPolicy: Forbidden: may not be set for ExternalName services",
                "spec.externalName: Required value",
                "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ExternalName'",
            ]
        );
        s["spec"] =
            json!({"type": "ExternalName", "externalName": "Bad_Name", "sessionAffinity": "None"});
        let errs = errors(&s);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with(
            "spec.externalName: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"
        ));
    }

    #[test]
    fn affinity_traffic_policies_and_addresses() {
        let mut s = simple();
        s["spec"]["sessionAffinity"] = json!("ClientIP");
        assert_eq!(
            errors(&s),
            vec![
                "spec.sessionAffinityConfig: Required value: when session affinity type is ClientIP"
            ]
        );
        s["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 86401}});
        assert_eq!(
            errors(&s),
            vec![
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 86401: must be greater than 0 and less than 86400"
            ]
        );
        s["spec"]["sessionAffinityConfig"] = json!({"clientIP": {}});
        assert_eq!(
            errors(&s),
            vec![
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Required value: when session affinity type is ClientIP"
            ]
        );
        let mut s = simple();
        s["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 1}});
        s["spec"]["externalTrafficPolicy"] = json!("Local");
        s["spec"]["internalTrafficPolicy"] = json!("Nearest");
        s["spec"]["healthCheckNodePort"] = json!(30000);
        s["spec"]["externalIPs"] = json!(["1.2.3", "127.0.0.1"]);
        s["spec"]["selector"] = json!({"app": "-x"});
        let errs = errors(&s);
        assert!(
            errs[0].starts_with("spec.selector: Invalid value: \"-x\": a valid label must be"),
            "{}",
            errs[0]
        );
        assert_eq!(
            errs[1..].to_vec(),
            vec![
                "spec.sessionAffinityConfig: Forbidden: must not be set when session affinity is None",
                "spec.externalIPs[0]: Invalid value: \"1.2.3\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                "spec.externalIPs[1]: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
                "spec.healthCheckNodePort: Invalid value: 30000: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
                "spec.internalTrafficPolicy: Unsupported value: \"Nearest\": supported values: \"Cluster\", \"Local\"",
            ]
        );
        let mut no_ext = simple();
        no_ext["spec"]["externalTrafficPolicy"] = json!("Local");
        assert_eq!(
            errors(&no_ext),
            vec![
                "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services"
            ]
        );
        let mut np = defaulted(json!({"type": "NodePort", "ports": [{"port": 80}]}));
        np["spec"]["externalTrafficPolicy"] = json!("Nowhere");
        np["spec"]["loadBalancerSourceRanges"] = json!(["10.0.0.0/8", "x"]);
        np["spec"]["loadBalancerClass"] = json!("example.com/lb");
        np["spec"]["allocateLoadBalancerNodePorts"] = json!(true);
        assert_eq!(
            errors(&np),
            vec![
                "spec.LoadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'",
                "spec.LoadBalancerSourceRanges[1]: Invalid value: \"x\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                "spec.allocateLoadBalancerNodePorts: Forbidden: may only be used when `type` is 'LoadBalancer'",
                "spec.loadBalancerClass: Forbidden: may only be used when `type` is 'LoadBalancer'",
                "spec.externalTrafficPolicy: Unsupported value: \"Nowhere\": supported values: \"Cluster\", \"Local\"",
            ]
        );
        let mut missing = simple();
        missing["spec"]
            .as_object_mut()
            .unwrap()
            .remove("internalTrafficPolicy");
        missing["spec"]
            .as_object_mut()
            .unwrap()
            .remove("sessionAffinity");
        missing["spec"].as_object_mut().unwrap().remove("type");
        assert_eq!(
            errors(&missing),
            vec![
                "spec.sessionAffinity: Required value",
                "spec.type: Required value"
            ]
        );
        let mut local_lb = defaulted(
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
        );
        assert!(validate(&local_lb).is_empty(), "{:?}", errors(&local_lb));
        local_lb["spec"]["healthCheckNodePort"] = json!(70000);
        assert_eq!(
            errors(&local_lb),
            vec![
                "spec.healthCheckNodePort: Invalid value: 70000: must be between 1 and 65535, inclusive"
            ]
        );
    }

    fn update_errors(new: &Value, old: &Value) -> Vec<String> {
        validate_update(new, old)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn allocated() -> Value {
        let mut s = simple();
        s["spec"]["clusterIP"] = json!("10.96.0.5");
        s["spec"]["clusterIPs"] = json!(["10.96.0.5"]);
        s
    }

    #[test]
    fn cluster_ips_are_immutable() {
        let old = allocated();
        assert!(update_errors(&old, &old).is_empty());
        let mut changed = old.clone();
        changed["spec"]["clusterIP"] = json!("10.96.0.6");
        changed["spec"]["clusterIPs"] = json!(["10.96.0.6"]);
        assert_eq!(
            update_errors(&changed, &old),
            vec!["spec.clusterIPs[0]: Invalid value: [\"10.96.0.6\"]: may not change once set"]
        );
        let mut headless = old.clone();
        headless["spec"]["clusterIP"] = json!("None");
        headless["spec"]["clusterIPs"] = json!(["None"]);
        assert_eq!(
            update_errors(&headless, &old),
            vec!["spec.clusterIPs[0]: Invalid value: [\"None\"]: may not change once set"]
        );
        let mut unset = old.clone();
        unset["spec"]["clusterIP"] = json!("");
        unset["spec"]["clusterIPs"] = json!([]);
        assert_eq!(
            update_errors(&unset, &old),
            vec!["spec.clusterIPs[0]: Invalid value: []: primary clusterIP can not be unset"]
        );
        // adding a secondary is fine; releasing it needs SingleStack
        let mut dual = old.clone();
        dual["spec"]["clusterIPs"] = json!(["10.96.0.5", "fd00::5"]);
        dual["spec"]["ipFamilies"] = json!(["IPv4", "IPv6"]);
        dual["spec"]["ipFamilyPolicy"] = json!("PreferDualStack");
        assert!(update_errors(&dual, &old).is_empty());
        let mut released = dual.clone();
        released["spec"]["clusterIPs"] = json!(["10.96.0.5"]);
        released["spec"]["ipFamilies"] = json!(["IPv4"]);
        assert_eq!(
            update_errors(&released, &dual),
            vec![
                "spec.clusterIPs[0]: Invalid value: [\"10.96.0.5\"]: `ipFamilyPolicy` must be set to 'SingleStack' when releasing the secondary clusterIP",
                "spec.clusterIPs[0]: Invalid value: [\"10.96.0.5\"]: `ipFamilyPolicy` must be set to 'SingleStack' when releasing the secondary ipFamily",
            ]
        );
        released["spec"]["ipFamilyPolicy"] = json!("SingleStack");
        assert!(update_errors(&released, &dual).is_empty());
        let mut family = old.clone();
        family["spec"]["ipFamilies"] = json!(["IPv6"]);
        assert_eq!(
            update_errors(&family, &old),
            vec!["spec.ipFamilies[0]: Invalid value: [\"IPv6\"]: may not change once set"]
        );
        // to ExternalName, anything goes
        let external = defaulted(json!({"type": "ExternalName", "externalName": "x.example"}));
        assert!(update_errors(&external, &old).is_empty());
    }

    #[test]
    fn health_check_port_and_class_are_immutable() {
        let old = defaulted(
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "loadBalancerClass": "example.com/a", "healthCheckNodePort": 31000, "ports": [{"port": 80}]}),
        );
        let mut new = old.clone();
        new["spec"]["healthCheckNodePort"] = json!(31001);
        new["spec"]["loadBalancerClass"] = json!("example.com/b");
        assert_eq!(
            update_errors(&new, &old),
            vec![
                "spec.loadBalancerClass: Invalid value: \"example.com/b\": may not change once set",
                "spec.healthCheckNodePort: Forbidden: field is immutable",
            ]
        );
    }

    #[test]
    fn prepare_update_keeps_allocations() {
        let mut old = defaulted(json!({"type": "NodePort", "ports": [
            {"name": "http", "port": 80}, {"name": "https", "port": 443}]}));
        old["spec"]["clusterIP"] = json!("10.96.0.5");
        old["spec"]["clusterIPs"] = json!(["10.96.0.5"]);
        old["spec"]["ports"][0]["nodePort"] = json!(30080);
        old["spec"]["ports"][1]["nodePort"] = json!(30443);
        // the manifest again, with https's NodePort taken by http
        let mut new = svc(json!({"type": "NodePort", "ports": [
            {"name": "http", "port": 80, "nodePort": 30443}, {"name": "https", "port": 443}]}));
        prepare_update(&mut new, &old);
        apply_defaults(&mut new);
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.5");
        assert_eq!(new["spec"]["clusterIPs"], json!(["10.96.0.5"]));
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30443);
        assert!(new["spec"]["ports"][1].get("nodePort").is_none());
        assert!(update_errors(&new, &old).is_empty());
        assert!(validate(&new).is_empty(), "{:?}", errors(&new));

        // same manifest: everything comes back
        let mut same = svc(json!({"type": "NodePort", "ports": [
            {"name": "http", "port": 80}, {"name": "https", "port": 443}]}));
        prepare_update(&mut same, &old);
        assert_eq!(same["spec"]["ports"][0]["nodePort"], 30080);
        assert_eq!(same["spec"]["ports"][1]["nodePort"], 30443);

        // to ClusterIP: the NodePorts go, the ClusterIP stays
        let mut cluster_ip = old.clone();
        cluster_ip["spec"]["type"] = json!("ClusterIP");
        prepare_update(&mut cluster_ip, &old);
        apply_defaults(&mut cluster_ip);
        assert!(cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
        assert!(cluster_ip["spec"].get("externalTrafficPolicy").is_none());
        assert_eq!(cluster_ip["spec"]["clusterIP"], "10.96.0.5");
        assert!(
            validate(&cluster_ip).is_empty(),
            "{:?}",
            errors(&cluster_ip)
        );
        assert!(update_errors(&cluster_ip, &old).is_empty());

        // to ExternalName: the ClusterIP and families go
        let mut external = old.clone();
        external["spec"]["type"] = json!("ExternalName");
        external["spec"]["externalName"] = json!("db.example.com");
        prepare_update(&mut external, &old);
        apply_defaults(&mut external);
        for gone in [
            "clusterIP",
            "clusterIPs",
            "ipFamilies",
            "ipFamilyPolicy",
            "externalTrafficPolicy",
        ] {
            assert!(external["spec"].get(gone).is_none(), "{gone}");
        }
        // internalTrafficPolicy stays, as in Kubernetes
        let errs = errors(&external);
        assert!(validate(&external).is_empty(), "{errs:?}");

        // LoadBalancer to ClusterIP: allocateLoadBalancerNodePorts goes
        let old_lb = defaulted(
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "healthCheckNodePort": 31000, "ports": [{"port": 80, "nodePort": 30001}]}),
        );
        let mut to_cip = old_lb.clone();
        to_cip["spec"]["type"] = json!("ClusterIP");
        prepare_update(&mut to_cip, &old_lb);
        apply_defaults(&mut to_cip);
        assert!(validate(&to_cip).is_empty(), "{:?}", errors(&to_cip));
        // a Local LoadBalancer keeps its health check port
        let mut lb_again = svc(
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
        );
        prepare_update(&mut lb_again, &old_lb);
        assert_eq!(lb_again["spec"]["healthCheckNodePort"], 31000);
        assert_eq!(lb_again["spec"]["ports"][0]["nodePort"], 30001);
    }

    #[test]
    fn normalizing_cluster_ips() {
        let old = allocated();
        // a client that only knows clusterIP changes it: clusterIPs follow
        let mut new = old.clone();
        new["spec"]["clusterIP"] = json!("10.96.0.7");
        prepare_update(&mut new, &old);
        assert_eq!(new["spec"]["clusterIPs"], json!(["10.96.0.7"]));
        // and clearing it clears both (then patched back as allocated)
        let mut cleared = old.clone();
        cleared["spec"]["clusterIP"] = json!("");
        prepare_update(&mut cleared, &old);
        assert_eq!(cleared["spec"]["clusterIP"], "10.96.0.5");
        assert_eq!(cleared["spec"]["clusterIPs"], json!(["10.96.0.5"]));
    }
}
