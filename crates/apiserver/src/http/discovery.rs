//! Discovery documents (`/api`, `/apis`, resource lists), `/version` and OpenAPI, as
//! kubectl and kube-rs read them.

use podnet_api::k8s::kinds::{self, ResourceKind};

use crate::versions::ServedVersions;
use serde_json::{Value, json};

/// The Kubernetes version whose API podnet serves.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "35";

pub fn version() -> Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0-podnet.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// The API groups served (besides the core group), each with its one version.
fn served_groups(served: &ServedVersions) -> Vec<(&'static str, &'static str)> {
    kinds::groups()
        .into_iter()
        .filter(|(g, v)| served.serves_version(g, v))
        .collect()
}

/// `/apis`.
pub fn group_list(served: &ServedVersions) -> Value {
    let groups: Vec<Value> = served_groups(served)
        .into_iter()
        .map(|(g, v)| group(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/GROUP`, if served.
pub fn api_group(name: &str, served: &ServedVersions) -> Option<Value> {
    served_groups(served)
        .into_iter()
        .find(|(g, _)| *g == name)
        .map(|(g, v)| {
            let mut doc = group(g, v);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            doc
        })
}

fn group(name: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/{version}"), "version": version});
    json!({"name": name, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `/api/v1` or `/apis/GROUP/VERSION`: the resources served there.
pub fn resource_list(group: &str, version: &str, versions: &ServedVersions) -> Option<Value> {
    let served: Vec<&ResourceKind> = kinds::ALL
        .iter()
        .filter(|k| k.group == group && k.version == version && versions.serves(k))
        .collect();
    if served.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for k in served {
        resources.push(json!({
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            "shortNames": k.short_names,
            "categories": k.categories,
        }));
        for sub in k.subresources {
            let (kind, verbs) = match *sub {
                "binding" => ("Binding", json!(["create"])),
                "finalize" => (k.kind, json!(["update"])),
                _ => (k.kind, json!(["get", "patch", "update"])),
            };
            resources.push(json!({
                "name": format!("{}/{sub}", k.plural),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": kind,
                "verbs": verbs,
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents() {
        let all = ServedVersions::default();
        let core = resource_list("", "v1", &all).unwrap();
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"pods")
                && names.contains(&"pods/status")
                && names.contains(&"endpoints")
        );
        assert!(resource_list("apps", "v1", &all).is_none());
        assert_eq!(group_list(&all)["groups"].as_array().unwrap().len(), 4);
        let netpol = resource_list("networking.k8s.io", "v1", &all).unwrap();
        assert_eq!(netpol["resources"][0]["name"], "networkpolicies");
        assert_eq!(netpol["resources"][0]["shortNames"], json!(["netpol"]));
        let cnp = resource_list("policy.networking.k8s.io", "v1alpha2", &all).unwrap();
        let names: Vec<&str> = cnp["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["clusternetworkpolicies", "clusternetworkpolicies/status"]
        );
        assert_eq!(cnp["resources"][0]["namespaced"], false);
        assert_eq!(
            api_group("discovery.k8s.io", &all).unwrap()["preferredVersion"]["version"],
            "v1"
        );
        let no_slices = ServedVersions::from_runtime_config("discovery.k8s.io/v1=false").unwrap();
        assert!(api_group("discovery.k8s.io", &no_slices).is_none());
        assert!(resource_list("discovery.k8s.io", "v1", &no_slices).is_none());
        assert_eq!(
            group_list(&no_slices)["groups"].as_array().unwrap().len(),
            3
        );
    }
}
