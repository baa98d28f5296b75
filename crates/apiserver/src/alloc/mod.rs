//! Allocators: Service ClusterIPs, NodePorts (and health-check node ports), node pod CIDRs and
//! load-balancer IPs.
//!
//! Every allocation is one key in the store, taken with create-if-absent:
//! `/registry/allocations/serviceips/10.96.0.5`, `/registry/allocations/nodeports/30080`,
//! `/registry/allocations/podcidrs/10.244.3.0-24`, `/registry/allocations/lbips/<ip>`. The
//! value records the holder, `{"owner":"services/default/web","at":<unix secs>}`. Because the
//! store decides who creates a key first, apiservers sharing one store never hand out the same
//! item, and nothing is kept in memory that could go stale.
//!
//! Dynamic allocation of service IPs and node ports starts at a random item and probes forward,
//! so concurrent requests rarely collide; after a few taken items it lists the range once and
//! tries only the free ones, so a full range is detected with one list, not one probe per item.
//! Pod CIDRs and load-balancer IPs go lowest first (as kube-controller-manager and MetalLB do).
//!
//! The request path: [`Allocators::allocate_service`] (or [`Allocators::allocate_node_cidr`])
//! before writing the object; [`Allocators::rollback`] if the write fails;
//! [`Allocators::release_dropped`] after an update committed; [`Allocators::release_service`] /
//! [`Allocators::release_node`] after a delete. [`Allocators::repair`] (at start and
//! periodically) frees what a crash left behind and re-takes what a crash lost.
//!
//! A full range is a 500 `InternalError`, as in Kubernetes (`Internal error occurred: failed
//! to allocate a serviceIP: range is full`): the request itself is valid, and the same request
//! succeeds once something is freed or the range is grown, so 422 ("this object is invalid")
//! would mislead; the message says which range is full and what to do. A *requested* item
//! that is taken or outside the range is the object's fault: 422 with Kubernetes' wording.

mod config;
mod fields;
mod node;
mod repair;
mod service;
mod space;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;
use podnet_store::Store;
use serde_json::{Map, Value};

pub use config::AllocatorConfig;
use config::Spaces;
use space::Taken;

use crate::error::{ApiError, ApiResult, Cause};

/// What one request newly took, so a failed write can give it back.
#[derive(Debug, Default)]
pub struct Allocated {
    taken: Vec<Taken>,
}

impl Allocated {
    pub fn is_empty(&self) -> bool {
        self.taken.is_empty()
    }

    pub fn len(&self) -> usize {
        self.taken.len()
    }

    /// The allocation keys taken.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.taken.iter().map(|t| t.key.as_str())
    }

    /// Adds what another call took (to give both back together).
    pub fn extend(&mut self, other: Allocated) {
        self.taken.extend(other.taken);
    }

    fn push(&mut self, taken: Taken) {
        self.taken.push(taken);
    }
}

/// The allocators of one apiserver; any number of them may share a store.
pub struct Allocators {
    store: Arc<dyn Store>,
    config: AllocatorConfig,
    spaces: Result<Spaces, String>,
}

/// One item an object holds: its allocation key, and whether it is inside the configured range.
#[derive(Debug, Clone)]
struct Held {
    key: String,
    in_range: bool,
    /// For messages: `cluster IP 10.96.0.5`, `node port 30080`.
    what: String,
}

impl Allocators {
    /// Allocators over `store`. An invalid `config` (see [`AllocatorConfig::validate`]) makes
    /// every allocation fail with the validation message.
    pub fn new(store: Arc<dyn Store>, config: AllocatorConfig) -> Self {
        let spaces = Spaces::new(&config);
        Allocators {
            store,
            config,
            spaces,
        }
    }

    pub fn config(&self) -> &AllocatorConfig {
        &self.config
    }

    /// The first address of the service range (reserved for the `kubernetes` Service; never
    /// handed out at random).
    pub fn kubernetes_service_ip(&self) -> IpAddr {
        match self.config.service_cidr {
            IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()).wrapping_add(1))),
            IpNet::V6(n) => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(n.network()).wrapping_add(1),
            )),
        }
    }

    // `ApiError` is the crate's error type; its size is not this module's choice.
    #[allow(clippy::result_large_err)]
    fn spaces(&self) -> ApiResult<&Spaces> {
        self.spaces.as_ref().map_err(|msg| {
            ApiError::internal(format!(
                "Internal error occurred: the apiserver's address ranges are invalid: {msg}"
            ))
        })
    }

    fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Gives back what a failed write took.
    pub async fn rollback(&self, allocated: Allocated) {
        for taken in allocated.taken {
            space::delete_at(self.store(), &taken.key, taken.revision).await;
        }
    }
}

/// A string at `ptr`, if present and not empty.
fn non_empty<'a>(obj: &'a Value, ptr: &str) -> Option<&'a str> {
    obj.pointer(ptr)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The strings of an array at `ptr` (non-strings as empty strings).
fn str_list(obj: &Value, ptr: &str) -> Vec<String> {
    obj.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A value as Kubernetes shows it in `Invalid value: ...`: a JSON string.
fn quoted(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// A list as Kubernetes shows it: `["10.96.0.5"]`.
fn render_list(items: Vec<String>) -> String {
    Value::from(items).to_string()
}

/// The object map of `v`, made an object if it is not one.
fn map_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(map) => map,
        // Unreachable: made an object just above.
        _ => unreachable!("value was just made an object"),
    }
}

/// The field `key` of the object `v`, created as an empty object if absent.
fn child_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    map_mut(v)
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()))
}

/// 422 for one field: `<Kind> "<name>" is invalid: <field>: <message>`.
fn invalid(kind: &str, name: &str, field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_field(kind, name, field, message)
}

/// 422 for a field that may not be set: `<field>: Forbidden: <message>`.
fn forbidden(kind: &str, name: &str, field: &str, message: &str) -> ApiError {
    ApiError::invalid(
        kind,
        "",
        name,
        vec![Cause {
            reason: "FieldValueForbidden".into(),
            message: format!("Forbidden: {message}"),
            field: field.to_owned(),
        }],
    )
}
