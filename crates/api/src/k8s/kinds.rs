//! The resource kinds podnet's apiserver serves, with what discovery needs to know of them.

/// One resource type (a "kind" and its REST resource name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceKind {
    /// API group; empty for the core ("legacy") group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The REST path segment, e.g. `pods`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Subresources served besides the object itself, e.g. `status`.
    pub subresources: &'static [&'static str],
    /// Categories for `kubectl get all`.
    pub categories: &'static [&'static str],
    /// Served as kube-apiserver serves the kind of a CustomResourceDefinition (the
    /// network-policy-api kinds, which are CRDs upstream): its OpenAPI definition is named by
    /// the reversed group (`io.k8s.networking.policy.v1alpha2.ClusterNetworkPolicy`) and a
    /// strategic merge patch is refused (415), as for any custom resource.
    pub custom_resource: bool,
}

impl ResourceKind {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kind of a list of these, e.g. `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Whether `sub` is a subresource this kind serves.
    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }

    /// The path prefix of this kind's group version: `/api/v1` or `/apis/GROUP/VERSION`.
    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }
}

pub const NAMESPACE: ResourceKind = ResourceKind {
    group: "",
    version: "v1",
    kind: "Namespace",
    plural: "namespaces",
    singular: "namespace",
    namespaced: false,
    short_names: &["ns"],
    subresources: &["status", "finalize"],
    categories: &[],
    custom_resource: false,
};

pub const NODE: ResourceKind = ResourceKind {
    group: "",
    version: "v1",
    kind: "Node",
    plural: "nodes",
    singular: "node",
    namespaced: false,
    short_names: &["no"],
    subresources: &["status"],
    categories: &[],
    custom_resource: false,
};

pub const POD: ResourceKind = ResourceKind {
    group: "",
    version: "v1",
    kind: "Pod",
    plural: "pods",
    singular: "pod",
    namespaced: true,
    short_names: &["po"],
    subresources: &["status", "binding"],
    categories: &["all"],
    custom_resource: false,
};

pub const SERVICE: ResourceKind = ResourceKind {
    group: "",
    version: "v1",
    kind: "Service",
    plural: "services",
    singular: "service",
    namespaced: true,
    short_names: &["svc"],
    subresources: &["status"],
    categories: &["all"],
    custom_resource: false,
};

pub const ENDPOINTS: ResourceKind = ResourceKind {
    group: "",
    version: "v1",
    kind: "Endpoints",
    plural: "endpoints",
    singular: "endpoints",
    namespaced: true,
    short_names: &["ep"],
    subresources: &[],
    categories: &[],
    custom_resource: false,
};

pub const EVENT: ResourceKind = ResourceKind {
    group: "",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    namespaced: true,
    short_names: &["ev"],
    subresources: &[],
    categories: &[],
    custom_resource: false,
};

pub const LEASE: ResourceKind = ResourceKind {
    group: "coordination.k8s.io",
    version: "v1",
    kind: "Lease",
    plural: "leases",
    singular: "lease",
    namespaced: true,
    short_names: &[],
    subresources: &[],
    categories: &[],
    custom_resource: false,
};

pub const ENDPOINT_SLICE: ResourceKind = ResourceKind {
    group: "discovery.k8s.io",
    version: "v1",
    kind: "EndpointSlice",
    plural: "endpointslices",
    singular: "endpointslice",
    namespaced: true,
    short_names: &[],
    subresources: &[],
    categories: &[],
    custom_resource: false,
};

pub const NETWORK_POLICY: ResourceKind = ResourceKind {
    group: "networking.k8s.io",
    version: "v1",
    kind: "NetworkPolicy",
    plural: "networkpolicies",
    singular: "networkpolicy",
    namespaced: true,
    short_names: &["netpol"],
    subresources: &[],
    categories: &[],
    custom_resource: false,
};

/// The cluster-wide policy of kubernetes-sigs/network-policy-api (v1alpha2, which replaced
/// AdminNetworkPolicy and BaselineAdminNetworkPolicy); a CRD upstream, served natively here.
pub const CLUSTER_NETWORK_POLICY: ResourceKind = ResourceKind {
    group: "policy.networking.k8s.io",
    version: "v1alpha2",
    kind: "ClusterNetworkPolicy",
    plural: "clusternetworkpolicies",
    singular: "clusternetworkpolicy",
    namespaced: false,
    short_names: &["cnp"],
    subresources: &["status"],
    categories: &[],
    custom_resource: true,
};

/// Every kind served, core group first.
pub const ALL: &[ResourceKind] = &[
    NAMESPACE,
    NODE,
    POD,
    SERVICE,
    ENDPOINTS,
    EVENT,
    LEASE,
    ENDPOINT_SLICE,
    NETWORK_POLICY,
    CLUSTER_NETWORK_POLICY,
];

/// The kind served at `group`/`version` under the REST name `plural`.
pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static ResourceKind> {
    ALL.iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// The kind named `kind` in `api_version` (`v1` or `group/version`).
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceKind> {
    ALL.iter()
        .find(|k| k.kind == kind && k.api_version() == api_version)
}

/// The API groups served (besides the core group), each with its one version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for k in ALL.iter().filter(|k| !k.group.is_empty()) {
        if !out.iter().any(|(g, v)| *g == k.group && *v == k.version) {
            out.push((k.group, k.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert_eq!(by_plural("", "v1", "pods"), Some(&POD));
        assert_eq!(
            by_plural("discovery.k8s.io", "v1", "endpointslices"),
            Some(&ENDPOINT_SLICE)
        );
        assert_eq!(by_kind("coordination.k8s.io/v1", "Lease"), Some(&LEASE));
        assert_eq!(by_kind("v1", "Lease"), None);
        assert_eq!(
            groups(),
            vec![
                ("coordination.k8s.io", "v1"),
                ("discovery.k8s.io", "v1"),
                ("networking.k8s.io", "v1"),
                ("policy.networking.k8s.io", "v1alpha2"),
            ]
        );
        assert_eq!(
            by_plural("networking.k8s.io", "v1", "networkpolicies"),
            Some(&NETWORK_POLICY)
        );
        assert_eq!(
            by_kind("policy.networking.k8s.io/v1alpha2", "ClusterNetworkPolicy"),
            Some(&CLUSTER_NETWORK_POLICY)
        );
        assert_eq!(POD.group_version_path(), "/api/v1");
        assert_eq!(LEASE.group_version_path(), "/apis/coordination.k8s.io/v1");
    }
}
