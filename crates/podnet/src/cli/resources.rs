//! Resource types as a user names them (`po`, `pods`, `pod`, `Pod`, `endpointslices`,
//! `leases.coordination.k8s.io`) or as a manifest does (`apiVersion` + `kind`), resolved first
//! against the kinds podnet serves and then through the server's discovery (so a real
//! Kubernetes API server's other kinds work too).

use podnet_api::k8s::kinds::{self, ResourceKind};
use serde_json::Value;

use super::CliError;
use super::client::{Client, is_not_found};

/// One REST resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    /// Whether podnet's strategic-merge table knows this kind (the kinds podnet serves).
    pub builtin: bool,
}

impl Resource {
    pub fn from_kind(k: &ResourceKind) -> Resource {
        Resource {
            group: k.group.to_owned(),
            version: k.version.to_owned(),
            kind: k.kind.to_owned(),
            plural: k.plural.to_owned(),
            singular: k.singular.to_owned(),
            namespaced: k.namespaced,
            builtin: true,
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// kubectl's `pod`, `endpointslice.discovery.k8s.io`: what prefixes names in `-o name`
    /// and in apply's output.
    pub fn kind_prefix(&self) -> String {
        let kind = self.kind.to_lowercase();
        if self.group.is_empty() {
            kind
        } else {
            format!("{kind}.{}", self.group)
        }
    }

    /// `pods`, `leases.coordination.k8s.io`: how errors name the resource.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `/v1, Resource=pods`: how kubectl names a GroupVersionResource in errors.
    pub fn gvr_string(&self) -> String {
        format!("{}/{}, Resource={}", self.group, self.version, self.plural)
    }

    /// `/v1, Kind=Pod`.
    pub fn gvk_string(&self) -> String {
        format!("{}/{}, Kind={}", self.group, self.version, self.kind)
    }
}

/// Splits `name.group` (as in `leases.coordination.k8s.io`): the group part only when the
/// name has a dot.
fn split_group(arg: &str) -> (&str, Option<&str>) {
    match arg.split_once('.') {
        Some((n, g)) => (n, Some(g)),
        None => (arg, None),
    }
}

/// Whether `arg` names `k`: its plural, singular, kind or a short name, any case, optionally
/// qualified with the group.
fn names_kind(k: &ResourceKind, arg: &str) -> bool {
    let lower = arg.to_lowercase();
    let (name, group) = split_group(&lower);
    if let Some(g) = group
        && g != k.group
    {
        return false;
    }
    name == k.plural
        || name == k.singular
        || name == k.kind.to_lowercase()
        || k.short_names.contains(&name)
}

/// The served kind a user's type name means, without asking the server.
pub fn builtin_by_name(arg: &str) -> Option<Resource> {
    kinds::ALL
        .iter()
        .find(|k| names_kind(k, arg))
        .map(Resource::from_kind)
}

/// Resolves a type name, asking the server's discovery for names podnet does not know.
pub async fn by_name(client: &Client, arg: &str) -> Result<Resource, CliError> {
    if let Some(r) = builtin_by_name(arg) {
        return Ok(r);
    }
    let lower = arg.to_lowercase();
    let (name, group) = split_group(&lower);
    for res in discover(client).await? {
        if group.is_some_and(|g| g != res.group) {
            continue;
        }
        if name == res.plural || name == res.singular || name == res.kind.to_lowercase() {
            return Ok(res);
        }
    }
    Err(CliError::other(format!(
        "the server doesn't have a resource type \"{arg}\""
    )))
}

/// Resolves a manifest's `apiVersion` and `kind`; `None` when the server serves no such kind.
pub async fn by_kind(
    client: &Client,
    api_version: &str,
    kind: &str,
) -> Result<Option<Resource>, CliError> {
    if let Some(k) = kinds::by_kind(api_version, kind) {
        return Ok(Some(Resource::from_kind(k)));
    }
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let list = match discover_group_version(client, group, version).await {
        Ok(list) => list,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(list.into_iter().find(|r| r.kind == kind))
}

/// Every resource the server lists in discovery (subresources left out).
async fn discover(client: &Client) -> Result<Vec<Resource>, CliError> {
    let mut out = discover_group_version(client, "", "v1").await?;
    let groups = client.get("/apis").await?;
    for g in groups["groups"].as_array().into_iter().flatten() {
        let name = g["name"].as_str().unwrap_or_default();
        let version = g["preferredVersion"]["version"]
            .as_str()
            .unwrap_or_default();
        if name.is_empty() || version.is_empty() {
            continue;
        }
        match discover_group_version(client, name, version).await {
            Ok(list) => out.extend(list),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

async fn discover_group_version(
    client: &Client,
    group: &str,
    version: &str,
) -> Result<Vec<Resource>, CliError> {
    let path = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let list = client.get(&path).await?;
    Ok(parse_resource_list(&list, group, version))
}

fn parse_resource_list(list: &Value, group: &str, version: &str) -> Vec<Resource> {
    list["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let plural = r["name"].as_str()?;
            if plural.contains('/') {
                return None;
            }
            let kind = r["kind"].as_str()?;
            Some(Resource {
                group: group.to_owned(),
                version: version.to_owned(),
                kind: kind.to_owned(),
                plural: plural.to_owned(),
                singular: r["singularName"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .unwrap_or_else(|| kind.to_lowercase()),
                namespaced: r["namespaced"].as_bool().unwrap_or(false),
                builtin: false,
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_and_short_names() {
        for (arg, plural) in [
            ("po", "pods"),
            ("pod", "pods"),
            ("Pods", "pods"),
            ("svc", "services"),
            ("ep", "endpoints"),
            ("endpoints", "endpoints"),
            ("no", "nodes"),
            ("ns", "namespaces"),
            ("ev", "events"),
            ("events", "events"),
            ("endpointslices", "endpointslices"),
            ("endpointslice", "endpointslices"),
            ("endpointslices.discovery.k8s.io", "endpointslices"),
            ("leases", "leases"),
            ("lease.coordination.k8s.io", "leases"),
            ("netpol", "networkpolicies"),
            ("networkpolicy", "networkpolicies"),
            ("networkpolicies", "networkpolicies"),
            ("networkpolicies.networking.k8s.io", "networkpolicies"),
            ("cnp", "clusternetworkpolicies"),
            ("clusternetworkpolicy", "clusternetworkpolicies"),
            (
                "clusternetworkpolicies.policy.networking.k8s.io",
                "clusternetworkpolicies",
            ),
        ] {
            assert_eq!(
                builtin_by_name(arg).map(|r| r.plural),
                Some(plural.to_owned()),
                "{arg}"
            );
        }
        assert_eq!(builtin_by_name("leases.apps"), None);
        assert_eq!(builtin_by_name("widgets"), None);
    }

    #[test]
    fn prefixes() {
        let slice = builtin_by_name("endpointslices").unwrap();
        assert_eq!(slice.kind_prefix(), "endpointslice.discovery.k8s.io");
        assert_eq!(
            slice.gvr_string(),
            "discovery.k8s.io/v1, Resource=endpointslices"
        );
        let pods = builtin_by_name("po").unwrap();
        assert_eq!(pods.kind_prefix(), "pod");
        assert_eq!(pods.gvr_string(), "/v1, Resource=pods");
        assert_eq!(pods.gvk_string(), "/v1, Kind=Pod");
    }

    #[test]
    fn discovery_lists() {
        let list = serde_json::json!({"resources": [
            {"name": "deployments", "singularName": "deployment", "namespaced": true, "kind": "Deployment"},
            {"name": "deployments/status", "singularName": "", "namespaced": true, "kind": "Deployment"},
        ]});
        let r = parse_resource_list(&list, "apps", "v1");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].kind_prefix(), "deployment.apps");
        assert!(r[0].namespaced && !r[0].builtin);
    }
}
