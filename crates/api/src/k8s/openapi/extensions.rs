//! The OpenAPI extensions upstream publishes on the fields of the served kinds, which
//! k8s-openapi's schemas leave out: `x-kubernetes-patch-strategy` and
//! `x-kubernetes-patch-merge-key` (how `kubectl apply` merges a list or map in a strategic merge
//! patch), `x-kubernetes-list-type`, `x-kubernetes-list-map-keys` and `x-kubernetes-map-type`
//! (how server-side apply treats them).
//!
//! The table was written from the Go sources of the release podnet builds against (k8s.io/api and
//! k8s.io/apimachinery v0.35: the `patchStrategy`/`patchMergeKey` struct tags and the
//! `+listType`, `+listMapKey`, `+mapType` and `+structType` markers, which kube-openapi turns into
//! these extensions), for the definitions the served kinds refer to. A test checks that every
//! entry names a property that exists.

use serde_json::{Map, Value, json};

use Ext::{List, ListMap, Map as MapType, MergeKey, Strategy};

const CORE: &str = "io.k8s.api.core.v1.";
const DISCOVERY: &str = "io.k8s.api.discovery.v1.";
const NETWORKING: &str = "io.k8s.api.networking.v1.";
const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.";

/// One extension of a property.
#[derive(Debug, Clone, Copy)]
enum Ext {
    /// `x-kubernetes-patch-strategy`.
    Strategy(&'static str),
    /// `x-kubernetes-patch-merge-key`.
    MergeKey(&'static str),
    /// `x-kubernetes-list-type` `atomic` or `set`.
    List(&'static str),
    /// `x-kubernetes-list-type: map` with these `x-kubernetes-list-map-keys`.
    ListMap(&'static [&'static str]),
    /// `x-kubernetes-map-type`.
    Map(&'static str),
}

/// (package, definition, property, extensions).
type Row = (&'static str, &'static str, &'static str, &'static [Ext]);

#[rustfmt::skip]
const FIELDS: &[Row] = &[
    (CORE, "PersistentVolumeClaimSpec", "accessModes", &[List("atomic")]),
    (CORE, "RBDVolumeSource", "monitors", &[List("atomic")]),
    (CORE, "CephFSVolumeSource", "monitors", &[List("atomic")]),
    (CORE, "SecretVolumeSource", "items", &[List("atomic")]),
    (CORE, "SecretProjection", "items", &[List("atomic")]),
    (CORE, "ISCSIVolumeSource", "portals", &[List("atomic")]),
    (CORE, "FCVolumeSource", "targetWWNs", &[List("atomic")]),
    (CORE, "FCVolumeSource", "wwids", &[List("atomic")]),
    (CORE, "ConfigMapVolumeSource", "items", &[List("atomic")]),
    (CORE, "ConfigMapProjection", "items", &[List("atomic")]),
    (CORE, "ProjectedVolumeSource", "sources", &[List("atomic")]),
    (CORE, "HTTPGetAction", "httpHeaders", &[List("atomic")]),
    (CORE, "ExecAction", "command", &[List("atomic")]),
    (CORE, "Capabilities", "add", &[List("atomic")]),
    (CORE, "Capabilities", "drop", &[List("atomic")]),
    (CORE, "ResourceRequirements", "claims", &[ListMap(&["name"])]),
    (CORE, "Container", "command", &[List("atomic")]),
    (CORE, "Container", "args", &[List("atomic")]),
    (CORE, "Container", "ports", &[Strategy("merge"), MergeKey("containerPort"), ListMap(&["containerPort", "protocol"])]),
    (CORE, "Container", "envFrom", &[List("atomic")]),
    (CORE, "Container", "env", &[Strategy("merge"), MergeKey("name"), ListMap(&["name"])]),
    (CORE, "Container", "resizePolicy", &[List("atomic")]),
    (CORE, "Container", "restartPolicyRules", &[List("atomic")]),
    (CORE, "Container", "volumeMounts", &[Strategy("merge"), MergeKey("mountPath"), ListMap(&["mountPath"])]),
    (CORE, "Container", "volumeDevices", &[Strategy("merge"), MergeKey("devicePath"), ListMap(&["devicePath"])]),
    (CORE, "ContainerStatus", "volumeMounts", &[Strategy("merge"), MergeKey("mountPath"), ListMap(&["mountPath"])]),
    (CORE, "ContainerStatus", "allocatedResourcesStatus", &[Strategy("merge"), MergeKey("name"), ListMap(&["name"])]),
    (CORE, "ResourceStatus", "resources", &[ListMap(&["resourceID"])]),
    (CORE, "LinuxContainerUser", "supplementalGroups", &[List("atomic")]),
    (CORE, "ContainerRestartRuleOnExitCodes", "values", &[List("set")]),
    (CORE, "NodeSelector", "nodeSelectorTerms", &[List("atomic")]),
    (CORE, "NodeSelectorTerm", "matchExpressions", &[List("atomic")]),
    (CORE, "NodeSelectorTerm", "matchFields", &[List("atomic")]),
    (CORE, "NodeSelectorRequirement", "values", &[List("atomic")]),
    (CORE, "PodAffinity", "requiredDuringSchedulingIgnoredDuringExecution", &[List("atomic")]),
    (CORE, "PodAffinity", "preferredDuringSchedulingIgnoredDuringExecution", &[List("atomic")]),
    (CORE, "PodAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution", &[List("atomic")]),
    (CORE, "PodAntiAffinity", "preferredDuringSchedulingIgnoredDuringExecution", &[List("atomic")]),
    (CORE, "PodAffinityTerm", "namespaces", &[List("atomic")]),
    (CORE, "PodAffinityTerm", "matchLabelKeys", &[List("atomic")]),
    (CORE, "PodAffinityTerm", "mismatchLabelKeys", &[List("atomic")]),
    (CORE, "NodeAffinity", "preferredDuringSchedulingIgnoredDuringExecution", &[List("atomic")]),
    (CORE, "PodSpec", "volumes", &[Strategy("merge,retainKeys"), MergeKey("name"), ListMap(&["name"])]),
    (CORE, "PodSpec", "initContainers", &[Strategy("merge"), MergeKey("name"), ListMap(&["name"])]),
    (CORE, "PodSpec", "containers", &[Strategy("merge"), MergeKey("name"), ListMap(&["name"])]),
    (CORE, "PodSpec", "ephemeralContainers", &[Strategy("merge"), MergeKey("name"), ListMap(&["name"])]),
    (CORE, "PodSpec", "nodeSelector", &[MapType("atomic")]),
    (CORE, "PodSpec", "imagePullSecrets", &[Strategy("merge"), MergeKey("name"), ListMap(&["name"])]),
    (CORE, "PodSpec", "tolerations", &[List("atomic")]),
    (CORE, "PodSpec", "hostAliases", &[Strategy("merge"), MergeKey("ip"), ListMap(&["ip"])]),
    (CORE, "PodSpec", "readinessGates", &[List("atomic")]),
    (CORE, "PodSpec", "topologySpreadConstraints", &[Strategy("merge"), MergeKey("topologyKey"), ListMap(&["topologyKey", "whenUnsatisfiable"])]),
    (CORE, "PodSpec", "schedulingGates", &[Strategy("merge"), MergeKey("name"), ListMap(&["name"])]),
    (CORE, "PodSpec", "resourceClaims", &[Strategy("merge,retainKeys"), MergeKey("name"), ListMap(&["name"])]),
    (CORE, "PodExtendedResourceClaimStatus", "requestMappings", &[List("atomic")]),
    (CORE, "TopologySpreadConstraint", "matchLabelKeys", &[List("atomic")]),
    (CORE, "HostAlias", "hostnames", &[List("atomic")]),
    (CORE, "PodSecurityContext", "supplementalGroups", &[List("atomic")]),
    (CORE, "PodSecurityContext", "sysctls", &[List("atomic")]),
    (CORE, "PodDNSConfig", "nameservers", &[List("atomic")]),
    (CORE, "PodDNSConfig", "searches", &[List("atomic")]),
    (CORE, "PodDNSConfig", "options", &[List("atomic")]),
    (CORE, "PodStatus", "conditions", &[Strategy("merge"), MergeKey("type"), ListMap(&["type"])]),
    (CORE, "PodStatus", "hostIPs", &[Strategy("merge"), MergeKey("ip"), List("atomic")]),
    (CORE, "PodStatus", "podIPs", &[Strategy("merge"), MergeKey("ip"), ListMap(&["ip"])]),
    (CORE, "PodStatus", "initContainerStatuses", &[List("atomic")]),
    (CORE, "PodStatus", "containerStatuses", &[List("atomic")]),
    (CORE, "PodStatus", "ephemeralContainerStatuses", &[List("atomic")]),
    (CORE, "PodStatus", "resourceClaimStatuses", &[Strategy("merge,retainKeys"), MergeKey("name"), ListMap(&["name"])]),
    (CORE, "ServiceStatus", "conditions", &[Strategy("merge"), MergeKey("type"), ListMap(&["type"])]),
    (CORE, "LoadBalancerStatus", "ingress", &[List("atomic")]),
    (CORE, "LoadBalancerIngress", "ports", &[List("atomic")]),
    (CORE, "ServiceSpec", "ports", &[Strategy("merge"), MergeKey("port"), ListMap(&["port", "protocol"])]),
    (CORE, "ServiceSpec", "selector", &[MapType("atomic")]),
    (CORE, "ServiceSpec", "clusterIPs", &[List("atomic")]),
    (CORE, "ServiceSpec", "externalIPs", &[List("atomic")]),
    (CORE, "ServiceSpec", "loadBalancerSourceRanges", &[List("atomic")]),
    (CORE, "ServiceSpec", "ipFamilies", &[List("atomic")]),
    (CORE, "Endpoints", "subsets", &[List("atomic")]),
    (CORE, "EndpointSubset", "addresses", &[List("atomic")]),
    (CORE, "EndpointSubset", "notReadyAddresses", &[List("atomic")]),
    (CORE, "EndpointSubset", "ports", &[List("atomic")]),
    (CORE, "NodeSpec", "podCIDRs", &[Strategy("merge"), List("set")]),
    (CORE, "NodeSpec", "taints", &[List("atomic")]),
    (CORE, "NodeStatus", "conditions", &[Strategy("merge"), MergeKey("type"), ListMap(&["type"])]),
    (CORE, "NodeStatus", "addresses", &[Strategy("merge"), MergeKey("type"), ListMap(&["type"])]),
    (CORE, "NodeStatus", "images", &[List("atomic")]),
    (CORE, "NodeStatus", "volumesInUse", &[List("atomic")]),
    (CORE, "NodeStatus", "volumesAttached", &[List("atomic")]),
    (CORE, "NodeStatus", "runtimeHandlers", &[List("atomic")]),
    (CORE, "NodeStatus", "declaredFeatures", &[List("atomic")]),
    (CORE, "ContainerImage", "names", &[List("atomic")]),
    (CORE, "NamespaceSpec", "finalizers", &[List("atomic")]),
    (CORE, "NamespaceStatus", "conditions", &[Strategy("merge"), MergeKey("type"), ListMap(&["type"])]),
    (CORE, "DownwardAPIVolumeSource", "items", &[List("atomic")]),
    (CORE, "DownwardAPIProjection", "items", &[List("atomic")]),
    (DISCOVERY, "EndpointSlice", "endpoints", &[List("atomic")]),
    (DISCOVERY, "EndpointSlice", "ports", &[List("atomic")]),
    (DISCOVERY, "Endpoint", "addresses", &[List("set")]),
    (DISCOVERY, "EndpointHints", "forZones", &[List("atomic")]),
    (DISCOVERY, "EndpointHints", "forNodes", &[List("atomic")]),
    (NETWORKING, "NetworkPolicySpec", "ingress", &[List("atomic")]),
    (NETWORKING, "NetworkPolicySpec", "egress", &[List("atomic")]),
    (NETWORKING, "NetworkPolicySpec", "policyTypes", &[List("atomic")]),
    (NETWORKING, "NetworkPolicyIngressRule", "ports", &[List("atomic")]),
    (NETWORKING, "NetworkPolicyIngressRule", "from", &[List("atomic")]),
    (NETWORKING, "NetworkPolicyEgressRule", "ports", &[List("atomic")]),
    (NETWORKING, "NetworkPolicyEgressRule", "to", &[List("atomic")]),
    (NETWORKING, "IPBlock", "except", &[List("atomic")]),
    (META, "ObjectMeta", "ownerReferences", &[Strategy("merge"), MergeKey("uid"), ListMap(&["uid"])]),
    (META, "ObjectMeta", "finalizers", &[Strategy("merge"), List("set")]),
    (META, "ObjectMeta", "managedFields", &[List("atomic")]),
    (META, "DeleteOptions", "dryRun", &[List("atomic")]),
    (META, "StatusDetails", "causes", &[List("atomic")]),
    (META, "APIVersions", "versions", &[List("atomic")]),
    (META, "APIVersions", "serverAddressByClientCIDRs", &[List("atomic")]),
    (META, "APIGroupList", "groups", &[List("atomic")]),
    (META, "APIGroup", "versions", &[List("atomic")]),
    (META, "APIGroup", "serverAddressByClientCIDRs", &[List("atomic")]),
    (META, "APIResource", "shortNames", &[List("atomic")]),
    (META, "APIResource", "categories", &[List("atomic")]),
    (META, "APIResourceList", "resources", &[List("atomic")]),
    (META, "LabelSelector", "matchExpressions", &[List("atomic")]),
    (META, "LabelSelectorRequirement", "values", &[List("atomic")]),
    (CORE, "EphemeralContainer", "command", &[List("atomic")]),
    (CORE, "EphemeralContainer", "args", &[List("atomic")]),
    (CORE, "EphemeralContainer", "ports", &[Strategy("merge"), MergeKey("containerPort"), ListMap(&["containerPort", "protocol"])]),
    (CORE, "EphemeralContainer", "envFrom", &[List("atomic")]),
    (CORE, "EphemeralContainer", "env", &[Strategy("merge"), MergeKey("name"), ListMap(&["name"])]),
    (CORE, "EphemeralContainer", "resizePolicy", &[List("atomic")]),
    (CORE, "EphemeralContainer", "restartPolicyRules", &[List("atomic")]),
    (CORE, "EphemeralContainer", "volumeMounts", &[Strategy("merge"), MergeKey("mountPath"), ListMap(&["mountPath"])]),
    (CORE, "EphemeralContainer", "volumeDevices", &[Strategy("merge"), MergeKey("devicePath"), ListMap(&["devicePath"])]),
];

/// The definitions upstream marks `x-kubernetes-map-type: atomic` (`+structType=atomic`): they
/// are replaced whole, never merged field by field.
const ATOMIC_STRUCTS: &[(&str, &str)] = &[
    (CORE, "FileKeySelector"),
    (CORE, "ObjectFieldSelector"),
    (CORE, "ResourceFieldSelector"),
    (CORE, "ConfigMapKeySelector"),
    (CORE, "SecretKeySelector"),
    (CORE, "NodeSelector"),
    (CORE, "NodeSelectorTerm"),
    (CORE, "EndpointAddress"),
    (CORE, "EndpointPort"),
    (CORE, "ObjectReference"),
    (CORE, "LocalObjectReference"),
    (CORE, "TypedLocalObjectReference"),
    (DISCOVERY, "EndpointPort"),
    (META, "OwnerReference"),
    (META, "LabelSelector"),
];

/// Puts the extensions of the tables on `defs` (definitions by full name, v2 form).
pub fn apply(defs: &mut Map<String, Value>) {
    for (package, definition, property, exts) in FIELDS {
        let name = format!("{package}{definition}");
        let Some(Value::Object(schema)) = defs
            .get_mut(&name)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(*property))
        else {
            continue;
        };
        for ext in *exts {
            match ext {
                Strategy(s) => insert(schema, "x-kubernetes-patch-strategy", json!(s)),
                MergeKey(k) => insert(schema, "x-kubernetes-patch-merge-key", json!(k)),
                List(t) => insert(schema, "x-kubernetes-list-type", json!(t)),
                ListMap(keys) => {
                    insert(schema, "x-kubernetes-list-map-keys", json!(keys));
                    insert(schema, "x-kubernetes-list-type", json!("map"));
                }
                MapType(t) => insert(schema, "x-kubernetes-map-type", json!(t)),
            }
        }
    }
    for (package, definition) in ATOMIC_STRUCTS {
        if let Some(Value::Object(def)) = defs.get_mut(&format!("{package}{definition}")) {
            insert(def, "x-kubernetes-map-type", json!("atomic"));
        }
    }
}

fn insert(schema: &mut Map<String, Value>, key: &str, value: Value) {
    schema.insert(key.to_owned(), value);
}

/// How upstream describes the list of `kind`: the list itself, its `metadata` and its `items`
/// (the doc comments of `PodList` and the others in k8s.io/api v0.35).
pub fn list_descriptions(kind: &str) -> (&'static str, &'static str, &'static str) {
    const META_KINDS: &str = "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";
    match kind {
        "Namespace" => (
            "NamespaceList is a list of Namespaces.",
            META_KINDS,
            "Items is the list of Namespace objects in the list. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/",
        ),
        "Node" => (
            "NodeList is the whole list of all Nodes which have been registered with master.",
            META_KINDS,
            "List of nodes",
        ),
        "Pod" => (
            "PodList is a list of Pods.",
            META_KINDS,
            "List of pods. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md",
        ),
        "Service" => (
            "ServiceList holds a list of services.",
            META_KINDS,
            "List of services",
        ),
        "Endpoints" => (
            "EndpointsList is a list of endpoints. Deprecated: This API is deprecated in v1.33+.",
            META_KINDS,
            "List of endpoints.",
        ),
        "Event" => (
            "EventList is a list of events.",
            META_KINDS,
            "List of events",
        ),
        "Lease" => (
            "LeaseList is a list of Lease objects.",
            "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
            "items is a list of schema objects.",
        ),
        "EndpointSlice" => (
            "EndpointSliceList represents a list of endpoint slices",
            "Standard list metadata.",
            "items is the list of endpoint slices",
        ),
        "NetworkPolicy" => (
            "NetworkPolicyList is a list of NetworkPolicy objects.",
            "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
            "items is a list of schema objects.",
        ),
        // A custom resource's list, as kube-apiserver describes it (`buildListSchema`).
        "ClusterNetworkPolicy" => (
            "ClusterNetworkPolicyList is a list of ClusterNetworkPolicy",
            META_KINDS,
            "List of clusternetworkpolicies. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md",
        ),
        _ => ("", "Standard list metadata.", ""),
    }
}

#[cfg(test)]
mod tests {
    use super::super::definitions;
    use super::*;

    #[test]
    fn every_entry_names_an_existing_property() {
        let defs = definitions::all();
        for (package, definition, property, exts) in FIELDS {
            let name = format!("{package}{definition}");
            let schema = &defs[&name]["properties"][*property];
            assert!(schema.is_object(), "{name}.{property}");
            assert!(!exts.is_empty());
            if exts.iter().any(|e| matches!(e, List(_) | ListMap(_))) {
                assert_eq!(schema["type"], "array", "{name}.{property}");
            }
        }
        for (package, definition) in ATOMIC_STRUCTS {
            let name = format!("{package}{definition}");
            assert_eq!(defs[&name]["x-kubernetes-map-type"], "atomic", "{name}");
        }
    }

    #[test]
    fn merge_keys_as_upstream() {
        let defs = definitions::all();
        let containers = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
        let ports = &defs["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "port");
        assert_eq!(
            ports["x-kubernetes-list-map-keys"],
            json!(["port", "protocol"])
        );
        let owners = &defs["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]["ownerReferences"];
        assert_eq!(owners["x-kubernetes-patch-merge-key"], "uid");
        let volumes = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"];
        assert_eq!(volumes["x-kubernetes-patch-strategy"], "merge,retainKeys");
        let selector = &defs["io.k8s.api.core.v1.ServiceSpec"]["properties"]["selector"];
        assert_eq!(selector["x-kubernetes-map-type"], "atomic");
    }

    #[test]
    fn every_served_list_is_described() {
        for k in crate::k8s::kinds::ALL {
            let (list, _, items) = list_descriptions(k.kind);
            assert!(!list.is_empty() && !items.is_empty(), "{}", k.kind);
        }
    }
}
