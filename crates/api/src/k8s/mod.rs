//! The Kubernetes API as podnet serves and uses it: the resource kinds, validation and
//! defaulting, patch semantics and table printing. All of it works on JSON values
//! (`serde_json::Value`) in the Kubernetes wire format; nothing here does I/O.

pub mod kinds;
pub mod openapi;
pub mod patch;
pub mod table;
pub mod validation;
