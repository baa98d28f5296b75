//! Reading and rewriting the allocated fields of Service objects (kept as JSON).

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::space::Space;
use super::{child_mut, invalid, map_mut, non_empty, quoted, str_list};
use crate::error::ApiResult;

pub(super) fn service_type(svc: &Value) -> &str {
    non_empty(svc, "/spec/type").unwrap_or("ClusterIP")
}

pub(super) fn needs_cluster_ip(svc: &Value) -> bool {
    service_type(svc) != "ExternalName"
}

pub(super) fn needs_node_ports(svc: &Value) -> bool {
    matches!(service_type(svc), "NodePort" | "LoadBalancer")
}

/// Whether node ports are allocated for ports that do not ask for one (a LoadBalancer may
/// opt out with `allocateLoadBalancerNodePorts: false`).
pub(super) fn auto_node_ports(svc: &Value) -> bool {
    match service_type(svc) {
        "NodePort" => true,
        "LoadBalancer" => {
            svc.pointer("/spec/allocateLoadBalancerNodePorts")
                .and_then(Value::as_bool)
                != Some(false)
        }
        _ => false,
    }
}

pub(super) fn needs_health_check(svc: &Value) -> bool {
    service_type(svc) == "LoadBalancer"
        && non_empty(svc, "/spec/externalTrafficPolicy") == Some("Local")
}

pub(super) fn node_port_of(port: &Value) -> Option<i64> {
    port.get("nodePort")
        .and_then(Value::as_i64)
        .filter(|p| *p != 0)
}

pub(super) fn node_ports(svc: &Value) -> Vec<i64> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ports| ports.iter().filter_map(node_port_of).collect())
        .unwrap_or_default()
}

pub(super) fn health_check_port(svc: &Value) -> Option<i64> {
    svc.pointer("/spec/healthCheckNodePort")
        .and_then(Value::as_i64)
        .filter(|p| *p != 0)
}

pub(super) fn ingress_ips(svc: &Value) -> Vec<Ipv4Addr> {
    svc.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .map(|ingress| {
            ingress
                .iter()
                .filter_map(|i| i.get("ip").and_then(Value::as_str))
                .filter_map(|s| s.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The ingress IPs of `svc` that are in `pool`.
pub(super) fn lb_ips(svc: &Value, pool: &Space) -> Vec<Ipv4Addr> {
    ingress_ips(svc)
        .into_iter()
        .filter(|ip| pool.contains(u64::from(u32::from(*ip))))
        .collect()
}

/// Refuses IPv6 families and dual-stack policies, with Kubernetes' wording.
#[allow(clippy::result_large_err)]
pub(super) fn check_ip_families(svc: &Value, name: &str) -> ApiResult<()> {
    let families = str_list(svc, "/spec/ipFamilies");
    if let Some((i, family)) = families.iter().enumerate().find(|(_, f)| *f != "IPv4") {
        return Err(invalid(
            "Service",
            name,
            &format!("spec.ipFamilies[{i}]"),
            format!(
                "Invalid value: {}: not configured on this cluster",
                quoted(family)
            ),
        ));
    }
    if non_empty(svc, "/spec/ipFamilyPolicy") == Some("RequireDualStack") {
        return Err(invalid(
            "Service",
            name,
            "spec.ipFamilyPolicy",
            "Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services",
        ));
    }
    Ok(())
}

/// Sets `spec.clusterIP` and `spec.clusterIPs`, and the IP family fields when absent.
pub(super) fn set_cluster_ip(svc: &mut Value, ip: &str) {
    let spec = map_mut(child_mut(svc, "spec"));
    spec.insert("clusterIP".into(), json!(ip));
    spec.insert("clusterIPs".into(), json!([ip]));
    let families_missing = spec
        .get("ipFamilies")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if families_missing {
        spec.insert("ipFamilies".into(), json!(["IPv4"]));
    }
    if spec.get("ipFamilyPolicy").and_then(Value::as_str).is_none() {
        spec.insert("ipFamilyPolicy".into(), json!("SingleStack"));
    }
}

/// Copies into `new` the allocated values it leaves out but `old` holds and `new` still needs
/// (a PUT or apply without `clusterIP` or `nodePort`), as Kubernetes' `patchAllocatedValues`.
pub(super) fn patch_allocated_values(new: &mut Value, old: &Value) {
    if needs_cluster_ip(old) && needs_cluster_ip(new) {
        let spec = map_mut(child_mut(new, "spec"));
        let empty = |v: Option<&Value>| v.and_then(Value::as_str).is_none_or(str::is_empty);
        if empty(spec.get("clusterIP"))
            && let Some(ip) = old.pointer("/spec/clusterIP").filter(|v| !empty(Some(v)))
        {
            spec.insert("clusterIP".into(), ip.clone());
        }
        let no_list = spec
            .get("clusterIPs")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if no_list
            && let Some(ips) = old
                .pointer("/spec/clusterIPs")
                .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        {
            spec.insert("clusterIPs".into(), ips.clone());
        }
    }
    if needs_node_ports(old) && needs_node_ports(new) {
        let old_ports: Vec<(String, i64)> = old
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map(|ports| {
                ports
                    .iter()
                    .filter_map(|p| Some((port_name(p).to_owned(), node_port_of(p)?)))
                    .collect()
            })
            .unwrap_or_default();
        let new_set: HashSet<i64> = node_ports(new).into_iter().collect();
        let mut used: HashSet<i64> = old_ports
            .iter()
            .map(|(_, np)| *np)
            .filter(|np| new_set.contains(np))
            .collect();
        if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for port in ports.iter_mut() {
                if node_port_of(port).is_some() {
                    continue;
                }
                let name = port_name(port).to_owned();
                if let Some((_, np)) = old_ports.iter().find(|(n, _)| *n == name)
                    && used.insert(*np)
                {
                    map_mut(port).insert("nodePort".into(), json!(np));
                }
            }
        }
    }
    if needs_health_check(old)
        && needs_health_check(new)
        && health_check_port(new).is_none()
        && let Some(hc) = health_check_port(old)
    {
        map_mut(child_mut(new, "spec")).insert("healthCheckNodePort".into(), json!(hc));
    }
}

/// Removes from `new` the allocated values its type no longer uses, when the user left them
/// as they were (as Kubernetes' `dropTypeDependentFields`), so they are freed after the write.
pub(super) fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    if needs_cluster_ip(old) && !needs_cluster_ip(new) {
        let same = |ptr: &str| new.pointer(ptr) == old.pointer(ptr);
        let (ips, list, families, policy) = (
            same("/spec/clusterIP"),
            same("/spec/clusterIPs"),
            same("/spec/ipFamilies"),
            same("/spec/ipFamilyPolicy"),
        );
        let spec = map_mut(child_mut(new, "spec"));
        if ips && list {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
        if families {
            spec.remove("ipFamilies");
        }
        if policy {
            spec.remove("ipFamilyPolicy");
        }
    }
    if needs_node_ports(old) && !needs_node_ports(new) {
        let old_set: HashSet<i64> = node_ports(old).into_iter().collect();
        // Only if the user added no node port of their own.
        if node_ports(new).iter().all(|np| old_set.contains(np))
            && let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut)
        {
            for port in ports.iter_mut() {
                if let Some(map) = port.as_object_mut() {
                    map.remove("nodePort");
                }
            }
        }
    }
    if needs_health_check(old)
        && !needs_health_check(new)
        && health_check_port(new) == health_check_port(old)
        && let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.remove("healthCheckNodePort");
    }
}

pub(super) fn port_name(port: &Value) -> &str {
    port.get("name").and_then(Value::as_str).unwrap_or("")
}
