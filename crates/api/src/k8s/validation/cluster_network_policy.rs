//! policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicies, validated as kube-apiserver
//! validates a custom resource of the network-policy-api CRD (experimental channel): object
//! metadata (a DNS subdomain name, cluster-scoped), then the CRD's OpenAPI schema, its
//! `x-kubernetes-list-type: set` lists, and last its CEL rules (`x-kubernetes-validations`),
//! which kube-apiserver skips, saying so, when the schema already found a blocking error.
//!
//! The messages are the ones a CRD's validation produces (apiextensions-apiserver's
//! conversion of kube-openapi's schema errors into field errors): `Unsupported value` for an
//! enum, `Too many` for `maxItems`/`maxProperties`, `Too long` for `maxLength`, `Required value`,
//! and for the other keywords `Invalid value: V: PATH in body should …`; a failed CEL rule is
//! `Invalid value: "object"` (or `"string"`) with the rule's message. Like the CRD, it checks
//! label selectors only for their shape (no operator or label syntax rules).
//!
//! One difference remains: a field of the wrong JSON type is refused earlier, when the server
//! decodes the object into [`ClusterNetworkPolicy`] (400), where kube-apiserver answers 422.

use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::Value;

use super::FieldError;
use super::meta::{self, MetaRules};
use super::names::NameRule;
use super::util::{child, index};
use crate::k8s::policy_api::schema::{CIDR_RULE, DOMAIN_NAME_PATTERN, NAMED_PORT_RULE, RANGE_RULE};
use crate::k8s::policy_api::{
    ACTIONS, ClusterNetworkPolicy, ClusterNetworkPolicyEgressPeer, ClusterNetworkPolicyEgressRule,
    ClusterNetworkPolicyIngressPeer, ClusterNetworkPolicyIngressRule, ClusterNetworkPolicyProtocol,
    ClusterNetworkPolicySpec, ClusterNetworkPolicyStatus, ClusterNetworkPolicySubject,
    NamespacedPod, PRIORITY_RANGE, Port, TIERS,
};

mod schema;
#[cfg(test)]
mod tests;

use schema::Errors;

const META: MetaRules = MetaRules {
    name: NameRule::Dns1123Subdomain,
    namespaced: false,
    core: false,
};

/// The most rules, peers, protocols, networks or domain names a list may have.
const MAX_ITEMS: usize = 25;

/// Validates a ClusterNetworkPolicy (create or update: a CRD's rules are the same for both,
/// and `ValidateObjectMetaUpdate` is the caller's).
pub fn validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate(obj, META);
    let Ok(cnp) = serde_json::from_value::<ClusterNetworkPolicy>(obj.clone()) else {
        return errs;
    };
    let mut e = Errors::default();
    match &cnp.spec {
        Some(spec) => validate_spec(&mut e, spec, "spec"),
        None => e.required("spec"),
    }
    if let Some(status) = &cnp.status {
        validate_status(&mut e, status, "status");
    }
    errs.append(&mut e.list);
    list_sets(&mut errs, &cnp);
    if schema::has_blocking(&errs) {
        errs.push(schema::rules_not_checked());
    } else if let Some(spec) = &cnp.spec {
        cel_rules(&mut errs, spec);
    }
    errs
}

fn validate_spec(e: &mut Errors, spec: &ClusterNetworkPolicySpec, p: &str) {
    if let Some(tier) = &spec.tier {
        e.enumeration(&child(p, "tier"), tier, TIERS);
    }
    if let Some(priority) = spec.priority {
        let (lo, hi) = PRIORITY_RANGE;
        e.range(
            &child(p, "priority"),
            i64::from(priority),
            lo.into(),
            hi.into(),
        );
    }
    if let Some(subject) = &spec.subject {
        validate_subject(e, subject, &child(p, "subject"));
    }
    if let Some(rules) = &spec.ingress {
        let rp = child(p, "ingress");
        e.items(&rp, rules.len(), None, Some(MAX_ITEMS));
        for (i, rule) in rules.iter().enumerate() {
            validate_ingress_rule(e, rule, &index(&rp, i));
        }
    }
    if let Some(rules) = &spec.egress {
        let rp = child(p, "egress");
        e.items(&rp, rules.len(), None, Some(MAX_ITEMS));
        for (i, rule) in rules.iter().enumerate() {
            validate_egress_rule(e, rule, &index(&rp, i));
        }
    }
    for (field, present) in [
        ("priority", spec.priority.is_some()),
        ("subject", spec.subject.is_some()),
        ("tier", spec.tier.is_some()),
    ] {
        if !present {
            e.required(&child(p, field));
        }
    }
}

fn validate_subject(e: &mut Errors, s: &ClusterNetworkPolicySubject, p: &str) {
    let count = usize::from(s.namespaces.is_some()) + usize::from(s.pods.is_some());
    if !e.properties(p, count, 1, Some(1)) {
        return;
    }
    if let Some(pods) = &s.pods {
        validate_namespaced_pod(e, pods, &child(p, "pods"));
    }
}

fn validate_namespaced_pod(e: &mut Errors, pods: &NamespacedPod, p: &str) {
    if pods.pod_selector.is_none() {
        e.required(&child(p, "podSelector"));
    }
}

/// The fields both kinds of rule have.
fn validate_rule_common(
    e: &mut Errors,
    name: Option<&String>,
    action: Option<&String>,
    protocols: Option<&[ClusterNetworkPolicyProtocol]>,
    p: &str,
) {
    if let Some(action) = action {
        e.enumeration(&child(p, "action"), action, ACTIONS);
    }
    if let Some(name) = name {
        e.max_length(&child(p, "name"), name, 100);
    }
    if let Some(protocols) = protocols {
        let pp = child(p, "protocols");
        e.items(&pp, protocols.len(), Some(1), Some(MAX_ITEMS));
        for (i, proto) in protocols.iter().enumerate() {
            validate_protocol(e, proto, &index(&pp, i));
        }
    }
}

fn validate_ingress_rule(e: &mut Errors, rule: &ClusterNetworkPolicyIngressRule, p: &str) {
    validate_rule_common(
        e,
        rule.name.as_ref(),
        rule.action.as_ref(),
        rule.protocols.as_deref(),
        p,
    );
    if let Some(peers) = &rule.from {
        let fp = child(p, "from");
        e.items(&fp, peers.len(), Some(1), Some(MAX_ITEMS));
        for (i, peer) in peers.iter().enumerate() {
            validate_ingress_peer(e, peer, &index(&fp, i));
        }
    }
    rule_required(e, rule.action.is_some(), ("from", rule.from.is_some()), p);
}

fn validate_egress_rule(e: &mut Errors, rule: &ClusterNetworkPolicyEgressRule, p: &str) {
    validate_rule_common(
        e,
        rule.name.as_ref(),
        rule.action.as_ref(),
        rule.protocols.as_deref(),
        p,
    );
    if let Some(peers) = &rule.to {
        let tp = child(p, "to");
        e.items(&tp, peers.len(), Some(1), Some(MAX_ITEMS));
        for (i, peer) in peers.iter().enumerate() {
            validate_egress_peer(e, peer, &index(&tp, i));
        }
    }
    rule_required(e, rule.action.is_some(), ("to", rule.to.is_some()), p);
}

/// A rule's `required: [action, from|to]`, in that order.
fn rule_required(e: &mut Errors, action: bool, peers: (&str, bool), p: &str) {
    if !action {
        e.required(&child(p, "action"));
    }
    if !peers.1 {
        e.required(&child(p, peers.0));
    }
}

fn validate_ingress_peer(e: &mut Errors, peer: &ClusterNetworkPolicyIngressPeer, p: &str) {
    let count = usize::from(peer.namespaces.is_some()) + usize::from(peer.pods.is_some());
    if !e.properties(p, count, 1, Some(1)) {
        return;
    }
    if let Some(pods) = &peer.pods {
        validate_namespaced_pod(e, pods, &child(p, "pods"));
    }
}

fn validate_egress_peer(e: &mut Errors, peer: &ClusterNetworkPolicyEgressPeer, p: &str) {
    let count = [
        peer.namespaces.is_some(),
        peer.pods.is_some(),
        peer.nodes.is_some(),
        peer.networks.is_some(),
        peer.domain_names.is_some(),
    ]
    .iter()
    .filter(|present| **present)
    .count();
    if !e.properties(p, count, 1, Some(1)) {
        return;
    }
    if let Some(pods) = &peer.pods {
        validate_namespaced_pod(e, pods, &child(p, "pods"));
    }
    if let Some(networks) = &peer.networks {
        let np = child(p, "networks");
        e.items(&np, networks.len(), Some(1), Some(MAX_ITEMS));
        for (i, cidr) in networks.iter().enumerate() {
            e.max_length(&index(&np, i), cidr, 43);
        }
    }
    if let Some(names) = &peer.domain_names {
        let dp = child(p, "domainNames");
        e.items(&dp, names.len(), Some(1), Some(MAX_ITEMS));
        for (i, name) in names.iter().enumerate() {
            if !schema::is_domain_name(name) {
                e.pattern(&index(&dp, i), name, DOMAIN_NAME_PATTERN);
            }
        }
    }
}

fn validate_protocol(e: &mut Errors, proto: &ClusterNetworkPolicyProtocol, p: &str) {
    let transports = [
        ("tcp", &proto.tcp),
        ("udp", &proto.udp),
        ("sctp", &proto.sctp),
    ];
    let count = transports.iter().filter(|(_, t)| t.is_some()).count()
        + usize::from(proto.destination_named_port.is_some());
    if !e.properties(p, count, 1, Some(1)) {
        return;
    }
    for (name, transport) in transports {
        let Some(transport) = transport else {
            continue;
        };
        let tp = child(p, name);
        let fields = usize::from(transport.destination_port.is_some());
        if !e.properties(&tp, fields, 1, None) {
            continue;
        }
        if let Some(port) = &transport.destination_port {
            validate_port(e, port, &child(&tp, "destinationPort"));
        }
    }
}

fn validate_port(e: &mut Errors, port: &Port, p: &str) {
    let count = usize::from(port.number.is_some()) + usize::from(port.range.is_some());
    if !e.properties(p, count, 1, Some(1)) {
        return;
    }
    if let Some(n) = port.number {
        e.range(&child(p, "number"), n.into(), 1, 65535);
    }
    if let Some(range) = &port.range {
        let rp = child(p, "range");
        if let Some(end) = range.end {
            e.range(&child(&rp, "end"), end.into(), 1, 65535);
        }
        if let Some(start) = range.start {
            e.range(&child(&rp, "start"), start.into(), 1, 65535);
        }
        for (field, present) in [
            ("end", range.end.is_some()),
            ("start", range.start.is_some()),
        ] {
            if !present {
                e.required(&child(&rp, field));
            }
        }
    }
}

/// The status: `conditions` required, each a `metav1.Condition` with the CRD's constraints.
fn validate_status(e: &mut Errors, status: &ClusterNetworkPolicyStatus, p: &str) {
    let Some(conditions) = &status.conditions else {
        e.required(&child(p, "conditions"));
        return;
    };
    let cp = child(p, "conditions");
    for (i, c) in conditions.iter().enumerate() {
        validate_condition(e, c, &index(&cp, i));
    }
}

fn validate_condition(e: &mut Errors, c: &Condition, p: &str) {
    e.max_length(&child(p, "message"), &c.message, 32768);
    if let Some(g) = c.observed_generation {
        e.range(&child(p, "observedGeneration"), g, 0, i64::MAX);
    }
    let reason = child(p, "reason");
    e.max_length(&reason, &c.reason, 1024);
    e.min_length(&reason, &c.reason, 1);
    if !schema::is_condition_reason(&c.reason) {
        e.pattern(&reason, &c.reason, schema::REASON_PATTERN);
    }
    e.enumeration(
        &child(p, "status"),
        &c.status,
        &["True", "False", "Unknown"],
    );
    let ty = child(p, "type");
    e.max_length(&ty, &c.type_, 316);
    if !schema::is_condition_type(&c.type_) {
        e.pattern(&ty, &c.type_, schema::TYPE_PATTERN);
    }
}

/// `x-kubernetes-list-type: set` (networks, domain names) and `map` (conditions by type):
/// a repeated item is a `Duplicate value`.
fn list_sets(errs: &mut Vec<FieldError>, cnp: &ClusterNetworkPolicy) {
    let spec = cnp.spec.clone().unwrap_or_default();
    for (i, rule) in spec.egress.iter().flatten().enumerate() {
        for (j, peer) in rule.to.iter().flatten().enumerate() {
            let p = index(&child(&index("spec.egress", i), "to"), j);
            for (field, list) in [
                ("networks", &peer.networks),
                ("domainNames", &peer.domain_names),
            ] {
                for k in schema::repeated(list.as_deref().unwrap_or_default()) {
                    let item = &list.as_deref().unwrap_or_default()[k];
                    errs.push(FieldError::duplicate(index(&child(&p, field), k), item));
                }
            }
        }
    }
    let conditions = cnp
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let types: Vec<String> = conditions.iter().map(|c| c.type_.clone()).collect();
    for k in schema::repeated(&types) {
        let key = super::util::Rendered(format!(
            "{{\"type\":{}}}",
            super::util::go_json_str(&types[k])
        ));
        errs.push(FieldError::duplicate(index("status.conditions", k), &key));
    }
}

/// The CRD's CEL rules, in schema order.
fn cel_rules(errs: &mut Vec<FieldError>, spec: &ClusterNetworkPolicySpec) {
    let ingress = spec
        .ingress
        .iter()
        .flatten()
        .map(|r| r.protocols.as_deref());
    let egress = spec.egress.iter().flatten().map(|r| r.protocols.as_deref());
    for (direction, protocols) in ingress
        .enumerate()
        .map(|(i, p)| (index("spec.ingress", i), p))
        .chain(
            egress
                .enumerate()
                .map(|(i, p)| (index("spec.egress", i), p)),
        )
    {
        for (j, proto) in protocols.unwrap_or_default().iter().enumerate() {
            let pp = index(&child(&direction, "protocols"), j);
            for (name, t) in [
                ("tcp", &proto.tcp),
                ("udp", &proto.udp),
                ("sctp", &proto.sctp),
            ] {
                let range = t
                    .as_ref()
                    .and_then(|t| t.destination_port.as_ref())
                    .and_then(|p| p.range.as_ref());
                if let Some(r) = range
                    && let (Some(start), Some(end)) = (r.start, r.end)
                    && start >= end
                {
                    let at = child(&child(&child(&pp, name), "destinationPort"), "range");
                    errs.push(schema::rule_failed(&at, "object", RANGE_RULE.1));
                }
            }
        }
    }
    for (i, rule) in spec.egress.iter().flatten().enumerate() {
        let rp = index("spec.egress", i);
        for (j, peer) in rule.to.iter().flatten().enumerate() {
            let np = child(&index(&child(&rp, "to"), j), "networks");
            for (k, cidr) in peer.networks.iter().flatten().enumerate() {
                if !is_cidr(cidr) {
                    errs.push(schema::rule_failed(&index(&np, k), "string", CIDR_RULE.1));
                }
            }
        }
        if named_port_without_pods(rule) {
            errs.push(schema::rule_failed(&rp, "object", NAMED_PORT_RULE.1));
        }
    }
}

/// The egress rule's CEL rule fails: a networks, nodes or domain names peer with a named port.
fn named_port_without_pods(rule: &ClusterNetworkPolicyEgressRule) -> bool {
    let portless_peer = rule
        .to
        .iter()
        .flatten()
        .any(|p| p.networks.is_some() || p.nodes.is_some() || p.domain_names.is_some());
    let named_port = rule
        .protocols
        .iter()
        .flatten()
        .any(|p| p.destination_named_port.is_some());
    portless_peer && named_port
}

/// CEL's `isCIDR`: Go's `netip.ParsePrefix` (strict: no leading zeros, a plain decimal
/// length, no zone), host bits allowed, IPv4-mapped IPv6 refused.
pub fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    let plain = !bits.is_empty()
        && bits.bytes().all(|c| c.is_ascii_digit())
        && (bits == "0" || !bits.starts_with('0'));
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let fits = plain && bits.parse::<u32>().is_ok_and(|b| b <= max);
    let mapped = matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
    fits && !mapped
}
