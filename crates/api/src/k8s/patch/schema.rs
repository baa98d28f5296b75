//! The strategic-merge metadata of the served kinds: which list fields merge (and by which
//! key) instead of being replaced. This is the `patchStrategy` / `patchMergeKey` struct tags
//! of `k8s.io/api` (the `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key`
//! extensions of the OpenAPI document), written down as data.
//!
//! A path names a field from the object's root by its JSON field names, with list elements
//! left out: `spec.containers.ports` is the `ports` list of every element of
//! `spec.containers`. A field that is not in the table is merged if it is a map and replaced
//! if it is a list, as Kubernetes does for untagged fields.

/// How a strategic merge patch combines a field of the object with the patch's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `patchStrategy:"merge"`: a list of objects merges element-wise by the merge key; a
    /// list of primitives becomes the union of both.
    Merge,
    /// `patchStrategy:"merge,retainKeys"`: merges like [`Strategy::Merge`]; clients also put
    /// a `$retainKeys` directive in each element, which the merge honours wherever it appears.
    MergeRetainKeys,
    /// No tag, `patchStrategy:"replace"` or `+listType=atomic`: the patch's value replaces the
    /// object's. Listed only where it documents a deliberate choice; it is also the default
    /// for lists missing from the table.
    Replace,
}

impl Strategy {
    /// Whether lists with this strategy merge rather than being replaced.
    pub fn merges(self) -> bool {
        matches!(self, Strategy::Merge | Strategy::MergeRetainKeys)
    }
}

/// The strategic-merge metadata of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldRule {
    /// Dotted path of JSON field names from the object's root; list levels are left out.
    pub path: &'static str,
    /// The field of the list's elements that identifies them (`patchMergeKey`); `None` for
    /// lists of primitives and for replaced lists.
    pub merge_key: Option<&'static str>,
    pub strategy: Strategy,
}

const fn merge(path: &'static str, key: &'static str) -> FieldRule {
    FieldRule {
        path,
        merge_key: Some(key),
        strategy: Strategy::Merge,
    }
}

const fn merge_retain_keys(path: &'static str, key: &'static str) -> FieldRule {
    FieldRule {
        path,
        merge_key: Some(key),
        strategy: Strategy::MergeRetainKeys,
    }
}

/// A list of primitives whose values are unioned (`patchStrategy:"merge"` on `[]string`).
const fn merge_set(path: &'static str) -> FieldRule {
    FieldRule {
        path,
        merge_key: None,
        strategy: Strategy::Merge,
    }
}

const fn replace(path: &'static str) -> FieldRule {
    FieldRule {
        path,
        merge_key: None,
        strategy: Strategy::Replace,
    }
}

/// `ObjectMeta`, shared by every kind.
const METADATA: &[FieldRule] = &[
    merge_set("metadata.finalizers"),
    merge("metadata.ownerReferences", "uid"),
    replace("metadata.managedFields"),
];

/// `core/v1` Pod: `PodSpec`, `Container` (and `EphemeralContainerCommon`, which carries the
/// same tags) under each of the three container lists, and `PodStatus`.
const POD: &[FieldRule] = &[
    merge_retain_keys("spec.volumes", "name"),
    merge("spec.containers", "name"),
    merge("spec.containers.ports", "containerPort"),
    merge("spec.containers.env", "name"),
    merge("spec.containers.volumeMounts", "mountPath"),
    merge("spec.containers.volumeDevices", "devicePath"),
    merge("spec.initContainers", "name"),
    merge("spec.initContainers.ports", "containerPort"),
    merge("spec.initContainers.env", "name"),
    merge("spec.initContainers.volumeMounts", "mountPath"),
    merge("spec.initContainers.volumeDevices", "devicePath"),
    merge("spec.ephemeralContainers", "name"),
    merge("spec.ephemeralContainers.ports", "containerPort"),
    merge("spec.ephemeralContainers.env", "name"),
    merge("spec.ephemeralContainers.volumeMounts", "mountPath"),
    merge("spec.ephemeralContainers.volumeDevices", "devicePath"),
    merge("spec.imagePullSecrets", "name"),
    merge("spec.hostAliases", "ip"),
    merge("spec.topologySpreadConstraints", "topologyKey"),
    merge("spec.schedulingGates", "name"),
    merge_retain_keys("spec.resourceClaims", "name"),
    replace("spec.tolerations"),
    replace("spec.readinessGates"),
    merge("status.conditions", "type"),
    merge("status.podIPs", "ip"),
    merge("status.hostIPs", "ip"),
    merge_retain_keys("status.resourceClaimStatuses", "name"),
    replace("status.containerStatuses"),
    replace("status.initContainerStatuses"),
    replace("status.ephemeralContainerStatuses"),
];

const SERVICE: &[FieldRule] = &[
    merge("spec.ports", "port"),
    replace("spec.clusterIPs"),
    replace("spec.externalIPs"),
    replace("spec.ipFamilies"),
    merge("status.conditions", "type"),
    replace("status.loadBalancer.ingress"),
];

const NODE: &[FieldRule] = &[
    merge_set("spec.podCIDRs"),
    replace("spec.taints"),
    merge("status.addresses", "type"),
    merge("status.conditions", "type"),
    replace("status.images"),
    replace("status.volumesInUse"),
    replace("status.volumesAttached"),
];

const NAMESPACE: &[FieldRule] = &[
    replace("spec.finalizers"),
    merge("status.conditions", "type"),
];

const ENDPOINTS: &[FieldRule] = &[replace("subsets")];

const ENDPOINT_SLICE: &[FieldRule] = &[replace("endpoints"), replace("ports")];

/// Every list of a NetworkPolicy is atomic (`+listType=atomic`).
const NETWORK_POLICY: &[FieldRule] = &[
    replace("spec.ingress"),
    replace("spec.egress"),
    replace("spec.policyTypes"),
];

/// The rules of `kind` besides the metadata ones. Lease and Event (and any kind not named
/// here) have no tagged fields outside their metadata.
fn kind_rules(kind: &str) -> &'static [FieldRule] {
    match kind {
        "Pod" => POD,
        "Service" => SERVICE,
        "Node" => NODE,
        "Namespace" => NAMESPACE,
        "Endpoints" => ENDPOINTS,
        "EndpointSlice" => ENDPOINT_SLICE,
        "NetworkPolicy" => NETWORK_POLICY,
        _ => &[],
    }
}

/// The strategic-merge metadata of the field at `path` of an object of `kind`, if it has any.
pub fn lookup(kind: &str, path: &str) -> Option<&'static FieldRule> {
    if path.starts_with("metadata.") {
        METADATA.iter().find(|r| r.path == path)
    } else {
        kind_rules(kind).iter().find(|r| r.path == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let ports = lookup("Pod", "spec.containers.ports").unwrap();
        assert_eq!(ports.merge_key, Some("containerPort"));
        assert!(ports.strategy.merges());
        assert_eq!(
            lookup("Service", "spec.ports").unwrap().merge_key,
            Some("port")
        );
        assert!(!lookup("Pod", "spec.tolerations").unwrap().strategy.merges());
        assert!(lookup("Pod", "spec.nodeSelector").is_none());
        // Metadata rules hold for every kind, known or not.
        assert!(
            lookup("Lease", "metadata.finalizers")
                .unwrap()
                .strategy
                .merges()
        );
        assert_eq!(
            lookup("Widget", "metadata.ownerReferences")
                .unwrap()
                .merge_key,
            Some("uid")
        );
        // A kind's rules do not leak into another's.
        assert!(lookup("Service", "spec.containers").is_none());
    }

    #[test]
    fn no_duplicate_paths() {
        for kind in [
            "Pod",
            "Service",
            "Node",
            "Namespace",
            "Endpoints",
            "EndpointSlice",
            "NetworkPolicy",
        ] {
            let rules = kind_rules(kind);
            for (i, r) in rules.iter().enumerate() {
                assert!(
                    rules[i + 1..].iter().all(|o| o.path != r.path),
                    "{kind}: {} twice",
                    r.path
                );
                assert!(!r.path.starts_with("metadata."), "{kind}: {}", r.path);
                // A merged list of objects needs its key; a replaced list has none.
                if r.strategy == Strategy::Replace {
                    assert!(r.merge_key.is_none(), "{kind}: {}", r.path);
                }
            }
        }
    }
}
