//! The Kubernetes API as podnet serves and uses it: the resource kinds, validation and
//! defaulting, patch semantics and table printing. All of it works on JSON values
//! (`serde_json::Value`) in the Kubernetes wire format, decoding into the typed structs
//! (k8s-openapi's, and [`policy_api`]'s for the network-policy-api kinds) where a rule needs
//! the object's shape; nothing here does I/O.

pub mod kinds;
pub mod openapi;
pub mod patch;
pub mod policy_api;
pub mod selector;
pub mod table;
pub mod validation;
