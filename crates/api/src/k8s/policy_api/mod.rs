//! The `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicy of kubernetes-sigs/network-policy-api
//! (the API that replaced AdminNetworkPolicy and BaselineAdminNetworkPolicy), as typed Rust
//! structs: k8s-openapi has no types for it, as it is a CRD upstream.
//!
//! The field names and shapes follow the v1alpha2 Go types (`apis/v1alpha2`) and the
//! experimental channel's CRD, which adds egress `nodes` and `domainNames` peers. The structs
//! carry the wire form as it is, not as it must be: fields the CRD requires are `Option`s too,
//! so that an object without them decodes and the validation
//! (`validation::cluster_network_policy`) refuses it with the CRD's own message (422), as
//! kube-apiserver does, instead of a decoding error. Enumerations (`tier`, `action`) are strings
//! for the same reason; the constants below name their values.
//!
//! [`ClusterNetworkPolicy`] implements k8s-openapi's `Resource`, `ListableResource` and
//! `Metadata`, so kube-rs takes it as it takes the built-in kinds (`Api<ClusterNetworkPolicy>`).
//! [`schema`] is its OpenAPI definition, as kube-apiserver publishes a CRD's.

pub mod schema;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

/// `spec.tier` of a policy evaluated before NetworkPolicies.
pub const TIER_ADMIN: &str = "Admin";
/// `spec.tier` of a policy evaluated after NetworkPolicies.
pub const TIER_BASELINE: &str = "Baseline";
/// The tiers, in the CRD's order.
pub const TIERS: &[&str] = &[TIER_ADMIN, TIER_BASELINE];

pub const ACTION_ACCEPT: &str = "Accept";
pub const ACTION_DENY: &str = "Deny";
pub const ACTION_PASS: &str = "Pass";
/// The rule actions, in the CRD's order.
pub const ACTIONS: &[&str] = &[ACTION_ACCEPT, ACTION_DENY, ACTION_PASS];

/// The lowest and highest `spec.priority`.
pub const PRIORITY_RANGE: (i32, i32) = (0, 1000);

/// A cluster-wide network policy.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct ClusterNetworkPolicy {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<ClusterNetworkPolicySpec>,
    #[serde(default)]
    pub status: Option<ClusterNetworkPolicyStatus>,
}

/// The wire form: `apiVersion` and `kind` first, as every Kubernetes object has them.
impl Serialize for ClusterNetworkPolicy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            api_version: &'static str,
            kind: &'static str,
            metadata: &'a ObjectMeta,
            #[serde(skip_serializing_if = "Option::is_none")]
            spec: &'a Option<ClusterNetworkPolicySpec>,
            #[serde(skip_serializing_if = "Option::is_none")]
            status: &'a Option<ClusterNetworkPolicyStatus>,
        }
        Wire {
            api_version: <Self as k8s_openapi::Resource>::API_VERSION,
            kind: <Self as k8s_openapi::Resource>::KIND,
            metadata: &self.metadata,
            spec: &self.spec,
            status: &self.status,
        }
        .serialize(serializer)
    }
}

impl k8s_openapi::Resource for ClusterNetworkPolicy {
    const API_VERSION: &'static str = "policy.networking.k8s.io/v1alpha2";
    const GROUP: &'static str = "policy.networking.k8s.io";
    const KIND: &'static str = "ClusterNetworkPolicy";
    const VERSION: &'static str = "v1alpha2";
    const URL_PATH_SEGMENT: &'static str = "clusternetworkpolicies";
    type Scope = k8s_openapi::ClusterResourceScope;
}

impl k8s_openapi::ListableResource for ClusterNetworkPolicy {
    const LIST_KIND: &'static str = "ClusterNetworkPolicyList";
}

impl k8s_openapi::Metadata for ClusterNetworkPolicy {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// What the policy selects and what it does to that traffic.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicySpec {
    /// [`TIER_ADMIN`] or [`TIER_BASELINE`]. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// 0 to 1000; lower values are evaluated first within a tier. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// The pods the policy applies to. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<ClusterNetworkPolicySubject>,
    /// At most 25, evaluated in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<ClusterNetworkPolicyIngressRule>>,
    /// At most 25, evaluated in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<ClusterNetworkPolicyEgressRule>>,
}

/// The pods a policy applies to: exactly one of the two.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicySubject {
    /// Every pod of the namespaces this selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// The pods this selects in the namespaces it selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// Pods by a namespace selector and a pod selector, both.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPod {
    /// Empty (or absent): every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Empty: every pod. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
}

/// A rule on traffic to the selected pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyIngressRule {
    /// At most 100 characters; for people and logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// One of [`ACTIONS`]. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// 1 to 25 sources. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<ClusterNetworkPolicyIngressPeer>>,
    /// 1 to 25 protocol matches; absent: any protocol and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<ClusterNetworkPolicyProtocol>>,
}

/// A rule on traffic from the selected pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyEgressRule {
    /// At most 100 characters; for people and logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// One of [`ACTIONS`]. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// 1 to 25 destinations. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<ClusterNetworkPolicyEgressPeer>>,
    /// 1 to 25 protocol matches; absent: any protocol and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<ClusterNetworkPolicyProtocol>>,
}

/// A source of traffic: exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyIngressPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// A destination of traffic: exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyEgressPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    /// Nodes by their labels (their addresses in `status.addresses`); experimental upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,
    /// 1 to 25 CIDRs, IPv4 or IPv6, no duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
    /// 1 to 25 domain names (`*.` prefix allowed), Accept rules only; experimental upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_names: Option<Vec<String>>,
}

/// A protocol match: exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyProtocol {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<ProtocolPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<ProtocolPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp: Option<ProtocolPort>,
    /// A container port by name (pods only: not with networks, nodes or domain names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_named_port: Option<String>,
}

/// The TCP, UDP or SCTP part of a match (`ClusterNetworkPolicyProtocolTCP` and its UDP and
/// SCTP twins upstream, which have the same shape); at least one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<Port>,
}

/// A port number or a range: exactly one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// 1 to 65535.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<PortRange>,
}

/// An inclusive range of ports, `start < end`, both required, each 1 to 65535.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<i32>,
}

/// What the implementation reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyStatus {
    /// Required when there is a status; a list map keyed by `type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_the_wire_form() {
        let wire = json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha2",
            "kind": "ClusterNetworkPolicy",
            "metadata": {"name": "deny-db"},
            "spec": {
                "tier": "Admin", "priority": 10,
                "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "db"}}}},
                "ingress": [{"name": "web", "action": "Accept",
                    "from": [{"namespaces": {"matchLabels": {"team": "web"}}}],
                    "protocols": [{"tcp": {"destinationPort": {"number": 5432}}},
                                  {"udp": {"destinationPort": {"range": {"start": 1000, "end": 2000}}}},
                                  {"destinationNamedPort": "pg"}]}],
                "egress": [{"action": "Deny", "to": [
                    {"networks": ["0.0.0.0/0", "::/0"]}, {"nodes": {}},
                    {"domainNames": ["*.example.com"]}]}],
            },
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Done",
                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        });
        let typed: ClusterNetworkPolicy = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(typed.spec.as_ref().unwrap().priority, Some(10));
        assert_eq!(serde_json::to_value(&typed).unwrap(), wire);
        let bare: ClusterNetworkPolicy = serde_json::from_value(json!({})).unwrap();
        assert_eq!(
            serde_json::to_value(&bare).unwrap(),
            json!({"apiVersion": "policy.networking.k8s.io/v1alpha2",
                "kind": "ClusterNetworkPolicy", "metadata": {}})
        );
    }
}
