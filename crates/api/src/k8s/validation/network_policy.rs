//! networking.k8s.io/v1 NetworkPolicies: `SetDefaults_NetworkPolicy` and
//! `SetDefaults_NetworkPolicyPort` (`pkg/apis/networking/v1/defaults.go`), and
//! `ValidateNetworkPolicy`, `ValidateNetworkPolicyUpdate` with their port, peer and ipBlock
//! rules (`pkg/apis/networking/validation/validation.go`), with upstream's messages.
//!
//! The object is read as k8s-openapi's typed `NetworkPolicy` (the server has decoded it into
//! that type before it gets here); only `metadata` goes through the shared JSON rules.

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::FieldError;
use super::meta::{self, MetaRules};
use super::names::{
    NameRule, invalid_each, parse_cidr_sloppy, port_name_errors, port_num_errors, validate_cidr,
};
use super::selector::{self, SelectorOptions};
use super::util::{child, index};

const META: MetaRules = MetaRules {
    name: NameRule::Dns1123Subdomain,
    namespaced: true,
    core: false,
};

const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
const POLICY_TYPES: &[&str] = &["Ingress", "Egress"];

/// The typed policy in `obj`; `None` if it does not decode (the server decodes every body
/// into the type before defaulting and validation, so this does not happen there).
fn decode(obj: &Value) -> Option<NetworkPolicy> {
    serde_json::from_value(obj.clone()).ok()
}

/// Ports default to TCP; `policyTypes` to `[Ingress]`, plus `Egress` when there are egress
/// rules; `podSelector` is always there (a Go struct, not a pointer, upstream).
pub fn apply_defaults(obj: &mut Value) {
    let Some(mut np) = decode(obj) else {
        return;
    };
    let spec = np.spec.get_or_insert_with(NetworkPolicySpec::default);
    spec.pod_selector.get_or_insert_with(LabelSelector::default);
    let ports = spec
        .ingress
        .iter_mut()
        .flatten()
        .flat_map(|r| r.ports.iter_mut().flatten())
        .chain(
            spec.egress
                .iter_mut()
                .flatten()
                .flat_map(|r| r.ports.iter_mut().flatten()),
        );
    for port in ports {
        port.protocol.get_or_insert_with(|| "TCP".to_owned());
    }
    if spec.policy_types.as_ref().is_none_or(Vec::is_empty) {
        let mut types = vec!["Ingress".to_owned()];
        if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
            types.push("Egress".to_owned());
        }
        spec.policy_types = Some(types);
    }
    if let Ok(v) = serde_json::to_value(&np) {
        *obj = v;
    }
}

/// `ValidateNetworkPolicy` of a new policy.
pub fn validate(obj: &Value) -> Vec<FieldError> {
    validate_with(obj, SelectorOptions::default())
}

fn validate_with(obj: &Value, opts: SelectorOptions) -> Vec<FieldError> {
    let mut errs = meta::validate(obj, META);
    if let Some(np) = decode(obj) {
        errs.extend(validate_spec(&spec_of(&np), opts, "spec"));
    }
    errs
}

fn spec_of(np: &NetworkPolicy) -> NetworkPolicySpec {
    np.spec.clone().unwrap_or_default()
}

/// The strategy's `ValidateUpdate`: `ValidateNetworkPolicy` and `ValidateNetworkPolicyUpdate`,
/// both (so the spec is checked twice and a bad field is named twice among the causes, as
/// upstream). A pod selector that was already invalid may keep its invalid values
/// (`ValidationOptionsForNetworking`). Upstream's other update option, keeping CIDRs that
/// strict parsing refuses, has nothing to do here: podnet parses CIDRs the legacy way only.
pub fn validate_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let strict = SelectorOptions::default();
    let old_selector_invalid = decode(old).is_some_and(|np| {
        let spec = spec_of(&np);
        !selector::validate(spec.pod_selector.as_ref(), strict, "").is_empty()
    });
    let opts = SelectorOptions {
        allow_invalid_label_value: old_selector_invalid,
    };
    let mut errs = validate_with(new, opts);
    if let Some(np) = decode(new) {
        errs.extend(validate_spec(&spec_of(&np), opts, "spec"));
    }
    errs
}

/// `ValidateNetworkPolicySpec`.
fn validate_spec(spec: &NetworkPolicySpec, opts: SelectorOptions, p: &str) -> Vec<FieldError> {
    let empty = LabelSelector::default();
    let pod_selector = spec.pod_selector.as_ref().unwrap_or(&empty);
    let mut errs = selector::validate(Some(pod_selector), opts, &child(p, "podSelector"));
    for (i, rule) in spec.ingress.iter().flatten().enumerate() {
        let rp = index(&child(p, "ingress"), i);
        errs.extend(validate_ports(rule.ports.as_deref(), &rp));
        let peers = child(&rp, "from");
        for (j, peer) in rule.from.iter().flatten().enumerate() {
            errs.extend(validate_peer(peer, opts, &index(&peers, j)));
        }
    }
    for (i, rule) in spec.egress.iter().flatten().enumerate() {
        let rp = index(&child(p, "egress"), i);
        errs.extend(validate_ports(rule.ports.as_deref(), &rp));
        let peers = child(&rp, "to");
        for (j, peer) in rule.to.iter().flatten().enumerate() {
            errs.extend(validate_peer(peer, opts, &index(&peers, j)));
        }
    }
    errs.extend(validate_policy_types(
        spec.policy_types.as_deref().unwrap_or_default(),
        &child(p, "policyTypes"),
    ));
    errs
}

fn validate_ports(ports: Option<&[NetworkPolicyPort]>, rule: &str) -> Vec<FieldError> {
    let list = child(rule, "ports");
    ports
        .unwrap_or_default()
        .iter()
        .enumerate()
        .flat_map(|(i, port)| validate_port(port, &index(&list, i)))
        .collect()
}

/// `ValidateNetworkPolicyPort`.
pub fn validate_port(port: &NetworkPolicyPort, p: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(proto) = &port.protocol
        && !PROTOCOLS.contains(&proto.as_str())
    {
        errs.push(FieldError::not_supported(
            child(p, "protocol"),
            proto,
            PROTOCOLS,
        ));
    }
    let end_path = child(p, "endPort");
    match (&port.port, port.end_port) {
        (Some(IntOrString::Int(n)), end) => {
            let port_path = child(p, "port");
            for msg in port_num_errors(i64::from(*n)) {
                errs.push(FieldError::invalid(&port_path, n, msg));
            }
            if let Some(end) = end {
                if end < *n {
                    errs.push(FieldError::invalid(
                        &end_path,
                        &end,
                        "must be greater than or equal to `port`",
                    ));
                }
                for msg in port_num_errors(i64::from(end)) {
                    errs.push(FieldError::invalid(&end_path, &end, msg));
                }
            }
        }
        (Some(IntOrString::String(name)), end) => {
            if let Some(end) = end {
                errs.push(FieldError::invalid(
                    &end_path,
                    &end,
                    "may not be specified when `port` is non-numeric",
                ));
            }
            errs.extend(invalid_each(
                &child(p, "port"),
                name,
                port_name_errors(name),
            ));
        }
        (None, Some(end)) => errs.push(FieldError::invalid(
            &end_path,
            &end,
            "may not be specified when `port` is not specified",
        )),
        (None, None) => {}
    }
    errs
}

/// `ValidateNetworkPolicyPeer`: exactly one kind of peer, selectors together or an ipBlock.
pub fn validate_peer(peer: &NetworkPolicyPeer, opts: SelectorOptions, p: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut peers = 0;
    if let Some(sel) = &peer.pod_selector {
        peers += 1;
        errs.extend(selector::validate(
            Some(sel),
            opts,
            &child(p, "podSelector"),
        ));
    }
    if let Some(sel) = &peer.namespace_selector {
        peers += 1;
        errs.extend(selector::validate(
            Some(sel),
            opts,
            &child(p, "namespaceSelector"),
        ));
    }
    if let Some(block) = &peer.ip_block {
        peers += 1;
        errs.extend(validate_ip_block(block, &child(p, "ipBlock")));
    }
    if peers == 0 {
        errs.push(FieldError::required(p, "must specify a peer"));
    } else if peers > 1 && peer.ip_block.is_some() {
        errs.push(FieldError::forbidden(
            p,
            "may not specify both ipBlock and another peer",
        ));
    }
    errs
}

/// `ValidateIPBlock`: a valid `cidr`, and each `except` a valid CIDR strictly inside it.
pub fn validate_ip_block(block: &IPBlock, p: &str) -> Vec<FieldError> {
    let cidr_path = child(p, "cidr");
    if block.cidr.is_empty() {
        return vec![FieldError::required(cidr_path, "")];
    }
    let mut errs = validate_cidr(&block.cidr, &cidr_path);
    let Some(outer) = network(&block.cidr) else {
        return errs;
    };
    let except = child(p, "except");
    for (i, e) in block.except.iter().flatten().enumerate() {
        let ep = index(&except, i);
        let bad = validate_cidr(e, &ep);
        if !bad.is_empty() {
            errs.extend(bad);
            continue;
        }
        let Some(inner) = network(e) else {
            continue;
        };
        if !outer.contains(&inner.network()) || outer.prefix_len() >= inner.prefix_len() {
            errs.push(FieldError::invalid(
                &ep,
                e,
                "must be a strict subset of `cidr`",
            ));
        }
    }
    errs
}

/// The network of a CIDR as `netutils.ParseCIDRSloppy` reads it (host bits cleared).
fn network(cidr: &str) -> Option<IpNet> {
    let (ip, len) = parse_cidr_sloppy(cidr)?;
    IpNet::new(ip, len).ok().map(|n| n.trunc())
}

/// At most two policy types, each `Ingress` or `Egress` (upstream checks no duplicates).
fn validate_policy_types(types: &[String], p: &str) -> Vec<FieldError> {
    if types.len() > POLICY_TYPES.len() {
        return vec![FieldError::invalid(
            p,
            types,
            "may not specify more than two policyTypes",
        )];
    }
    types
        .iter()
        .enumerate()
        .filter(|(_, t)| !POLICY_TYPES.contains(&t.as_str()))
        .map(|(i, t)| FieldError::not_supported(index(p, i), t, POLICY_TYPES))
        .collect()
}

#[cfg(test)]
mod tests;
