//! Which API group versions the server serves: all of them unless switched off with
//! kube-apiserver's `--runtime-config GROUP/VERSION=false`, as an older cluster lacks one
//! (Kubernetes 1.20 serves no `discovery.k8s.io/v1`). A version switched off is absent from
//! discovery and its paths answer 404, as on a server that never had it; the objects in the
//! store stay and are served again when it is switched back on.

use std::collections::BTreeSet;

use podnet_api::k8s::kinds::{self, ResourceKind};

/// The group versions switched off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServedVersions {
    off: BTreeSet<(String, String)>,
}

impl ServedVersions {
    /// Reads `--runtime-config`: comma-separated `GROUP/VERSION=true|false` (`=false` switches
    /// the version off; `true`, or no value, leaves it on, as everything is on by default).
    pub fn from_runtime_config(spec: &str) -> Result<ServedVersions, String> {
        let mut off = BTreeSet::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (gv, value) = item.split_once('=').unwrap_or((item, "true"));
            let on = match value {
                "true" => true,
                "false" => false,
                other => {
                    return Err(format!(
                        "--runtime-config {item:?}: the value must be true or false, not {other:?}"
                    ));
                }
            };
            let (group, version) = split_group_version(gv)?;
            if group.is_empty() && !on {
                return Err(format!(
                    "--runtime-config {item:?}: the core API v1 cannot be switched off"
                ));
            }
            if !on {
                off.insert((group.to_owned(), version.to_owned()));
            }
        }
        Ok(ServedVersions { off })
    }

    /// Whether `group`/`version` is served.
    pub fn serves_version(&self, group: &str, version: &str) -> bool {
        !self.off.contains(&(group.to_owned(), version.to_owned()))
    }

    /// Whether `kind` is served.
    pub fn serves(&self, kind: &ResourceKind) -> bool {
        self.serves_version(kind.group, kind.version)
    }
}

/// `GROUP/VERSION` (or `api/v1`, or `v1`, for the core group) of a known API.
fn split_group_version(gv: &str) -> Result<(&'static str, &'static str), String> {
    let (group, version) = match gv.split_once('/') {
        Some(("api", v)) | Some(("", v)) => ("", v),
        Some((g, v)) => (g, v),
        None => ("", gv),
    };
    let known = std::iter::once(("", "v1")).chain(kinds::groups());
    let found = known.clone().find(|(g, v)| *g == group && *v == version);
    found.ok_or_else(|| {
        let served: Vec<String> = known
            .map(|(g, v)| {
                if g.is_empty() {
                    v.to_owned()
                } else {
                    format!("{g}/{v}")
                }
            })
            .collect();
        format!(
            "--runtime-config: {gv:?} is not an API this server serves ({})",
            served.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_config_switches_versions_off() {
        let v = ServedVersions::from_runtime_config(
            "discovery.k8s.io/v1=false, networking.k8s.io/v1=true,api/v1",
        )
        .unwrap();
        assert!(!v.serves(&kinds::ENDPOINT_SLICE));
        assert!(v.serves(&kinds::NETWORK_POLICY));
        assert!(v.serves(&kinds::POD));
        assert!(ServedVersions::default().serves(&kinds::ENDPOINT_SLICE));
    }

    #[test]
    fn unknown_versions_and_values_are_refused_with_what_is_served() {
        let e = ServedVersions::from_runtime_config("apps/v1=false").unwrap_err();
        assert!(
            e.contains("\"apps/v1\" is not an API this server serves (v1, "),
            "{e}"
        );
        assert!(e.contains("discovery.k8s.io/v1"), "{e}");
        let e = ServedVersions::from_runtime_config("discovery.k8s.io/v1=no").unwrap_err();
        assert!(e.contains("must be true or false"), "{e}");
        let e = ServedVersions::from_runtime_config("v1=false").unwrap_err();
        assert!(e.contains("core API v1 cannot be switched off"), "{e}");
    }
}
