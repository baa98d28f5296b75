//! CNI error results: the spec's error codes and JSON error object.

use std::fmt;

use serde_json::{Map, Value, json};

/// An error as a CNI plugin reports it: a well-known code, a short message and optional
/// details. Rendered with [`CniError::to_json`] on stdout, per the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    /// Code 1: incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Code 2: unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Code 3: container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Code 4: invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// Code 5: I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Code 6: failed to decode content.
    pub const DECODE_FAILURE: u32 = 6;
    /// Code 7: invalid network config.
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// Code 11: try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// Code 50: the plugin is not available (STATUS).
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// Code 100 (podnet): internal error.
    pub const INTERNAL: u32 = 100;
    /// Code 101 (podnet): the address pool is exhausted.
    pub const POOL_EXHAUSTED: u32 = 101;
    /// Code 102 (podnet): a kernel operation failed.
    pub const KERNEL: u32 = 102;
    /// Code 103 (podnet): the requested address is taken (CNI_ARGS `IP=`, the `ips`
    /// capability).
    pub const ADDRESS_IN_USE: u32 = 103;

    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds (replaces) the details text.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn incompatible_version(msg: impl Into<String>) -> Self {
        Self::new(Self::INCOMPATIBLE_VERSION, msg)
    }
    pub fn unsupported_field(msg: impl Into<String>) -> Self {
        Self::new(Self::UNSUPPORTED_FIELD, msg)
    }
    pub fn unknown_container(msg: impl Into<String>) -> Self {
        Self::new(Self::UNKNOWN_CONTAINER, msg)
    }
    pub fn invalid_env(msg: impl Into<String>) -> Self {
        Self::new(Self::INVALID_ENV, msg)
    }
    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(Self::IO_FAILURE, msg)
    }
    pub fn decode(msg: impl Into<String>) -> Self {
        Self::new(Self::DECODE_FAILURE, msg)
    }
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(Self::INVALID_NETWORK_CONFIG, msg)
    }
    pub fn try_again_later(msg: impl Into<String>) -> Self {
        Self::new(Self::TRY_AGAIN_LATER, msg)
    }
    pub fn plugin_not_available(msg: impl Into<String>) -> Self {
        Self::new(Self::PLUGIN_NOT_AVAILABLE, msg)
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(Self::INTERNAL, msg)
    }
    pub fn pool_exhausted(msg: impl Into<String>) -> Self {
        Self::new(Self::POOL_EXHAUSTED, msg)
    }
    pub fn kernel(msg: impl Into<String>) -> Self {
        Self::new(Self::KERNEL, msg)
    }
    pub fn address_in_use(msg: impl Into<String>) -> Self {
        Self::new(Self::ADDRESS_IN_USE, msg)
    }

    /// The spec's error object as a JSON value; `details` is left out when empty.
    pub fn to_value(&self, cni_version: &str) -> Value {
        let mut m = Map::new();
        m.insert("cniVersion".into(), json!(cni_version));
        m.insert("code".into(), json!(self.code));
        m.insert("msg".into(), json!(self.msg));
        if !self.details.is_empty() {
            m.insert("details".into(), json!(self.details));
        }
        Value::Object(m)
    }

    /// The spec's error object, pretty-printed the way the reference plugins print it.
    pub fn to_json(&self, cni_version: &str) -> String {
        serde_json::to_string_pretty(&self.to_value(cni_version))
            .unwrap_or_else(|_| format!("{{\"code\":{},\"msg\":\"internal error\"}}", self.code))
    }

    /// Parses a plugin's error object (for a runtime that executes plugins).
    pub fn from_json(bytes: &[u8]) -> Result<Self, CniError> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| CniError::decode(format!("plugin error output is not JSON: {e}")))?;
        let code = v
            .get("code")
            .and_then(Value::as_u64)
            .and_then(|c| u32::try_from(c).ok())
            .ok_or_else(|| CniError::decode("plugin error output has no numeric \"code\""))?;
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Ok(CniError {
            code,
            msg: s("msg"),
            details: s("details"),
        })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(CniError::incompatible_version("x").code, 1);
        assert_eq!(CniError::unsupported_field("x").code, 2);
        assert_eq!(CniError::unknown_container("x").code, 3);
        assert_eq!(CniError::invalid_env("x").code, 4);
        assert_eq!(CniError::io("x").code, 5);
        assert_eq!(CniError::decode("x").code, 6);
        assert_eq!(CniError::invalid_config("x").code, 7);
        assert_eq!(CniError::try_again_later("x").code, 11);
        assert_eq!(CniError::plugin_not_available("x").code, 50);
        assert_eq!(CniError::internal("x").code, 100);
        assert_eq!(CniError::pool_exhausted("x").code, 101);
        assert_eq!(CniError::kernel("x").code, 102);
    }

    #[test]
    fn json_shape() {
        let e = CniError::invalid_config("bad subnet");
        let v: Value = serde_json::from_str(&e.to_json("1.1.0")).unwrap();
        assert_eq!(v, json!({"cniVersion":"1.1.0","code":7,"msg":"bad subnet"}));
        let e = e.with_details("ipam.subnet");
        let v = e.to_value("1.0.0");
        assert_eq!(
            v,
            json!({"cniVersion":"1.0.0","code":7,"msg":"bad subnet","details":"ipam.subnet"})
        );
        let back = CniError::from_json(e.to_json("1.0.0").as_bytes()).unwrap();
        assert_eq!(back, e);
        assert_eq!(e.to_string(), "CNI error 7: bad subnet (ipam.subnet)");
    }
}
