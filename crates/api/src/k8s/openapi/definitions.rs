//! The schema definitions of every kind podnet serves, as kube-apiserver publishes them.
//!
//! The schemas themselves (properties, descriptions, `$ref`s, required fields) come from
//! k8s-openapi's `schemars` implementations, which are generated from the upstream OpenAPI
//! document of the Kubernetes release podnet builds against. A few things upstream publishes are
//! not in them, and are put back here:
//!
//! - the list-type, map-type and strategic-merge-patch extensions of the fields
//!   ([`super::extensions`]): `kubectl apply` builds its patches from them;
//! - `x-kubernetes-group-version-kind` on the kinds, their lists, `Status` and `DeleteOptions`:
//!   kubectl finds a kind's schema by it;
//! - the wire form of `IntOrString` and `Quantity` (`type: string`, the former with format
//!   `int-or-string`): k8s-openapi replaces it with `x-kubernetes-int-or-string`, which the
//!   validation in kubectl does not know;
//! - `metadata` is not required: k8s-openapi requires it on every object because its Rust field is
//!   not optional, upstream only on `core/v1` `Event`;
//! - the `…List` kinds, which k8s-openapi models as one generic type without a schema.
//!
//! The network-policy-api kinds have no k8s-openapi types; their definitions are built as
//! kube-apiserver builds a CRD's ([`crate::k8s::policy_api::schema`]) and named as it names
//! them, by the reversed group (`io.k8s.networking.policy.v1alpha2.ClusterNetworkPolicy`).
//!
//! The definitions are made once, in the OpenAPI v2 form (`#/definitions/…` references);
//! [`v3`] turns one into the OpenAPI v3 form.

use std::sync::OnceLock;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Event, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResourceList, APIVersions, Condition, DeleteOptions, Patch, Status,
    WatchEvent,
};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::extensions;
use crate::k8s::kinds::{self, ResourceKind};
use crate::k8s::policy_api;

/// Where the v2 document keeps its definitions.
pub const V2_PREFIX: &str = "#/definitions/";
/// Where a v3 document keeps them.
pub const V3_PREFIX: &str = "#/components/schemas/";

pub const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
pub const API_VERSIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions";
pub const API_GROUP_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroupList";
pub const API_GROUP: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup";
pub const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// Every definition, by name, in the v2 form; made on first use.
pub fn all() -> &'static Map<String, Value> {
    static ALL: OnceLock<Map<String, Value>> = OnceLock::new();
    ALL.get_or_init(build)
}

/// The definition name of a kind of `k`'s group version, as Kubernetes names them
/// (`io.k8s.api.core.v1.Pod`, `io.k8s.api.discovery.v1.EndpointSliceList`; a custom
/// resource's by its reversed group, `io.k8s.networking.policy.v1alpha2.ClusterNetworkPolicy`).
pub fn name(k: &ResourceKind, kind: &str) -> String {
    if k.custom_resource {
        let reversed: Vec<&str> = k.group.split('.').rev().collect();
        return format!("{}.{}.{kind}", reversed.join("."), k.version);
    }
    let package = if k.group.is_empty() {
        "core"
    } else {
        k.group.split('.').next().unwrap_or(k.group)
    };
    format!("io.k8s.api.{package}.{}.{kind}", k.version)
}

pub fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

/// The names of the definitions that `roots` refer to, directly or not, themselves included,
/// sorted.
pub fn closure<'a>(roots: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let defs = all();
    let mut seen: Vec<String> = Vec::new();
    let mut todo: Vec<String> = roots.into_iter().map(str::to_owned).collect();
    while let Some(name) = todo.pop() {
        if seen.contains(&name) {
            continue;
        }
        if let Some(def) = defs.get(&name) {
            collect_refs(def, &mut todo);
        }
        seen.push(name);
    }
    seen.sort_unstable();
    seen
}

/// The names of the definitions `v` refers to (in either form), in the order found.
pub fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(r)) => {
                        let name = r
                            .strip_prefix(V2_PREFIX)
                            .or_else(|| r.strip_prefix(V3_PREFIX));
                        if let Some(name) = name {
                            out.push(name.to_owned());
                        }
                    }
                    _ => collect_refs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, out)),
        _ => {}
    }
}

/// The definition `name` (`def`, from [`all`]) in the v3 form: [`for_v3`], and `IntOrString` and
/// `Quantity` as kube-apiserver writes them in v3 (`oneOf` their two JSON types, where v2 can
/// only say `type: string`).
pub fn v3(name: &str, def: &Value) -> Value {
    let mut out = for_v3(def);
    let one_of = match name {
        INT_OR_STRING => json!([{"type": "integer"}, {"type": "string"}]),
        QUANTITY => json!([{"type": "string"}, {"type": "number"}]),
        _ => return out,
    };
    if let Value::Object(map) = &mut out {
        map.remove("type");
        map.insert("oneOf".to_owned(), one_of);
    }
    out
}

/// A v2 definition in the v3 form: references under `#/components/schemas/`, and a reference
/// with siblings (a description) wrapped in `allOf`, as OpenAPI 3.0 ignores a `$ref`'s siblings
/// and kube-apiserver writes them so.
fn for_v3(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut out = Map::new();
            let reference = map.get("$ref").and_then(Value::as_str).map(|r| {
                let name = r.strip_prefix(V2_PREFIX).unwrap_or(r);
                json!(format!("{V3_PREFIX}{name}"))
            });
            match reference {
                Some(r) if map.len() > 1 => {
                    out.insert("allOf".to_owned(), json!([{"$ref": r}]));
                }
                Some(r) => {
                    out.insert("$ref".to_owned(), r);
                }
                None => {}
            }
            for (key, value) in map.iter().filter(|(k, _)| *k != "$ref") {
                out.insert(key.clone(), for_v3(value));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(for_v3).collect()),
        other => other.clone(),
    }
}

fn build() -> Map<String, Value> {
    let mut generator = SchemaSettings::draft07()
        .with(|s| {
            s.meta_schema = None;
            // Keep `$ref` siblings (descriptions), as Swagger 2.0 documents have them.
            s.transforms.clear();
        })
        .into_generator();
    for k in kinds::ALL {
        add_kind(&mut generator, k);
    }
    generator.subschema_for::<Status>();
    generator.subschema_for::<DeleteOptions>();
    generator.subschema_for::<Patch>();
    generator.subschema_for::<WatchEvent<Pod>>();
    generator.subschema_for::<APIVersions>();
    generator.subschema_for::<APIGroupList>();
    generator.subschema_for::<APIGroup>();
    generator.subschema_for::<APIResourceList>();
    // Inlined into the ClusterNetworkPolicy definition.
    generator.subschema_for::<Condition>();
    let mut defs = generator.take_definitions(false);
    upstream_forms(&mut defs);
    extensions::apply(&mut defs);
    let cnp = policy_api::schema::definition(&defs);
    defs.insert(
        name(&kinds::CLUSTER_NETWORK_POLICY, "ClusterNetworkPolicy"),
        cnp,
    );
    add_group_version_kinds(&mut defs);
    defs
}

/// Adds kind `k`'s schema (and what it refers to); false if podnet has none for it, which a test
/// keeps from happening.
fn add_kind(generator: &mut SchemaGenerator, k: &ResourceKind) -> bool {
    fn add<T: JsonSchema>(generator: &mut SchemaGenerator) -> bool {
        generator.subschema_for::<T>();
        true
    }
    match (k.group, k.version, k.kind) {
        ("", "v1", "Namespace") => add::<Namespace>(generator),
        ("", "v1", "Node") => add::<Node>(generator),
        ("", "v1", "Pod") => add::<Pod>(generator),
        ("", "v1", "Service") => add::<Service>(generator),
        ("", "v1", "Endpoints") => add::<Endpoints>(generator),
        ("", "v1", "Event") => add::<Event>(generator),
        ("coordination.k8s.io", "v1", "Lease") => add::<Lease>(generator),
        ("discovery.k8s.io", "v1", "EndpointSlice") => add::<EndpointSlice>(generator),
        ("networking.k8s.io", "v1", "NetworkPolicy") => add::<NetworkPolicy>(generator),
        // Built from the other definitions once they are all there (see `build`).
        ("policy.networking.k8s.io", "v1alpha2", "ClusterNetworkPolicy") => true,
        _ => false,
    }
}

/// The forms upstream publishes where k8s-openapi departs from them (see the module doc).
fn upstream_forms(defs: &mut Map<String, Value>) {
    if let Some(Value::Object(def)) = defs.get_mut(INT_OR_STRING) {
        def.remove("x-kubernetes-int-or-string");
        def.insert("type".to_owned(), json!("string"));
        def.insert("format".to_owned(), json!("int-or-string"));
    }
    if let Some(Value::Object(def)) = defs.get_mut(QUANTITY) {
        def.remove("x-kubernetes-int-or-string");
        def.insert("type".to_owned(), json!("string"));
    }
    for (name, def) in defs.iter_mut() {
        if name == "io.k8s.api.core.v1.Event" {
            continue;
        }
        let Some(def) = def.as_object_mut() else {
            continue;
        };
        if let Some(Value::Array(required)) = def.get_mut("required") {
            required.retain(|r| r != "metadata");
            if required.is_empty() {
                def.remove("required");
            }
        }
    }
}

/// `x-kubernetes-group-version-kind` on every kind and its list (the lists made here), and on
/// `Status`, `DeleteOptions` and `WatchEvent` for every served group version.
fn add_group_version_kinds(defs: &mut Map<String, Value>) {
    for k in kinds::ALL {
        let object = name(k, k.kind);
        if let Some(Value::Object(def)) = defs.get_mut(&object) {
            def.insert(
                "x-kubernetes-group-version-kind".to_owned(),
                json!([gvk(k.group, k.version, k.kind)]),
            );
        }
        defs.insert(name(k, &k.list_kind()), list_definition(k, &object));
    }
    let mut group_versions: Vec<(&str, &str)> = vec![("", "v1")];
    for k in kinds::ALL {
        if !group_versions.contains(&(k.group, k.version)) {
            group_versions.push((k.group, k.version));
        }
    }
    let set = |defs: &mut Map<String, Value>, name: &str, gvks: Vec<Value>| {
        if let Some(Value::Object(def)) = defs.get_mut(name) {
            def.insert("x-kubernetes-group-version-kind".to_owned(), json!(gvks));
        }
    };
    set(defs, STATUS, vec![gvk("", "v1", "Status")]);
    let of = |kind: &str| -> Vec<Value> {
        group_versions
            .iter()
            .map(|(g, v)| gvk(g, v, kind))
            .collect()
    };
    set(defs, DELETE_OPTIONS, of("DeleteOptions"));
    set(defs, WATCH_EVENT, of("WatchEvent"));
}

/// The `…List` definition of kind `k`, whose items are `object`s, worded as upstream words its
/// lists.
fn list_definition(k: &ResourceKind, object: &str) -> Value {
    let list_kind = k.list_kind();
    let (description, metadata, items) = extensions::list_descriptions(k.kind);
    let v2 = |name: &str| format!("{V2_PREFIX}{name}");
    json!({
        "description": description,
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string",
            },
            "items": {"description": items, "type": "array", "items": {"$ref": v2(object)}},
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string",
            },
            "metadata": {
                "$ref": v2(LIST_META),
                "description": metadata,
            },
        },
        "x-kubernetes-group-version-kind": [gvk(k.group, k.version, &list_kind)],
    })
}
