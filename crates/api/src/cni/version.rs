//! CNI spec versions: which configs podnet accepts and the VERSION command output.

use serde_json::{Value, json};

use super::CniError;

/// The spec versions podnet accepts in a network configuration.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// The spec version podnet implements.
pub const CURRENT: &str = "1.1.0";

/// True when `version` is one podnet accepts.
pub fn is_supported(version: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&version)
}

/// Checks a configuration's `cniVersion` (None when the field is missing): error code 1
/// naming the version and the supported ones.
pub fn check(version: Option<&str>) -> Result<&str, CniError> {
    match version {
        Some(v) if is_supported(v) => Ok(v),
        Some(v) => Err(CniError::incompatible_version(format!(
            "incompatible CNI version {v:?}: podnet-cni supports {}; set \"cniVersion\" in the network configuration to one of them",
            SUPPORTED_VERSIONS.join(", ")
        ))),
        None => Err(CniError::incompatible_version(format!(
            "the network configuration has no \"cniVersion\": set it to one of {}",
            SUPPORTED_VERSIONS.join(", ")
        ))),
    }
}

/// The VERSION command's output object.
pub fn version_info() -> Value {
    json!({"cniVersion": CURRENT, "supportedVersions": SUPPORTED_VERSIONS})
}

/// The VERSION command's output text.
pub fn version_json() -> String {
    version_info().to_string()
}

/// True for the 0.x result format (per-IP `"version"` field, no interface `mtu`).
pub fn is_legacy(version: &str) -> bool {
    version.starts_with("0.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported() {
        for v in SUPPORTED_VERSIONS {
            assert_eq!(check(Some(v)).unwrap(), v);
        }
        let e = check(Some("0.3.1")).unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.msg.contains("\"0.3.1\""), "{}", e.msg);
        assert!(e.msg.contains("0.4.0, 1.0.0, 1.1.0"), "{}", e.msg);
        let e = check(None).unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.msg.contains("cniVersion"));
    }

    #[test]
    fn version_output() {
        let v: Value = serde_json::from_str(&version_json()).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]})
        );
        assert!(is_legacy("0.4.0"));
        assert!(!is_legacy("1.0.0"));
    }
}
