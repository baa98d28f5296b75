//! `kubectl apply`'s client-side patch: a three-way diff of the last applied configuration
//! (`original`), the manifest (`modified`) and the live object (`current`), as
//! `strategicpatch.CreateThreeWayMergePatch` computes it. The patch holds:
//! - the fields the manifest dropped since the last apply (original → modified deletions),
//!   so fields others set (the server's defaults, allocated IPs and ports, status) are kept;
//! - whatever the manifest sets differently from the live object (current → modified,
//!   deletions ignored).
//!
//! For the kinds podnet serves this is a strategic merge patch: the lists the Kubernetes types
//! tag `patchStrategy: merge` (containers by `name`, service ports by `port`, …) are diffed
//! element by element, with `$patch: delete`, `$setElementOrder/…` and
//! `$deleteFromPrimitiveList/…` directives. For other kinds (found through discovery) it is a
//! JSON merge patch — lists replaced whole — as kubectl does for kinds it has no schema for.

use serde_json::{Map, Value};

/// Which list fields merge, and by which key: the apiserver's strategic-merge table
/// (`podnet_api::k8s::patch::schema`, the `patchMergeKey`/`patchStrategy` tags of
/// `k8s.io/api` for the kinds podnet serves); lists not named there are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Strategic merge for `kind`.
    Strategic(&'static str),
    /// JSON merge patch: every list is atomic.
    Merge,
}

/// A merged list: of objects merged by `Some(key)`, or of primitives unioned (`None`).
type MergeRule = Option<&'static str>;

impl Schema {
    /// The schema for a resource: strategic for the kinds podnet serves, but for the custom
    /// resources among them (which take no strategic merge patch, as kube-apiserver's do not).
    pub fn for_kind(kind: &str, builtin: bool) -> Schema {
        if !builtin {
            return Schema::Merge;
        }
        match podnet_api::k8s::kinds::ALL.iter().find(|k| k.kind == kind) {
            Some(k) if !k.custom_resource => Schema::Strategic(k.kind),
            _ => Schema::Merge,
        }
    }

    /// The PATCH `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Schema::Strategic(_) => "application/strategic-merge-patch+json",
            Schema::Merge => "application/merge-patch+json",
        }
    }

    /// How the list at `path` merges; `None`: it is replaced.
    fn list_rule(self, path: &str) -> Option<MergeRule> {
        let Schema::Strategic(kind) = self else {
            return None;
        };
        podnet_api::k8s::patch::schema::lookup(kind, path)
            .filter(|rule| rule.strategy.merges())
            .map(|rule| rule.merge_key)
    }
}

#[derive(Clone, Copy)]
struct Options {
    ignore_deletions: bool,
    ignore_changes_and_additions: bool,
}

/// The patch taking `current` to `modified`, removing what `original` had and `modified`
/// dropped. An empty object means nothing to do. `original` is `None` for an object never
/// applied (nothing is deleted then).
pub fn three_way(
    schema: Schema,
    original: Option<&Value>,
    modified: &Value,
    current: &Value,
) -> Map<String, Value> {
    let empty = Map::new();
    let as_map = |v: Option<&Value>| -> Map<String, Value> {
        v.and_then(Value::as_object).cloned().unwrap_or_default()
    };
    let modified = as_map(Some(modified));
    let current = as_map(Some(current));
    let delta = diff_maps(
        schema,
        "",
        &current,
        &modified,
        Options {
            ignore_deletions: true,
            ignore_changes_and_additions: false,
        },
    );
    let deletions = match original {
        Some(o) => diff_maps(
            schema,
            "",
            &as_map(Some(o)),
            &modified,
            Options {
                ignore_deletions: false,
                ignore_changes_and_additions: true,
            },
        ),
        None => empty,
    };
    let mut patch = combine(schema, "", deletions, delta);
    normalize_order(schema, "", &mut patch);
    if schema == Schema::Merge {
        drop_defaulted_lists(
            &mut patch,
            original,
            Some(&Value::Object(modified)),
            Some(&Value::Object(current)),
        );
    }
    patch
}

/// Without a schema every list is atomic, and a live list whose elements the server filled
/// in with defaults never equals the manifest's. Such a list is left out of the patch when
/// the manifest did not change it since the last apply and the live list holds it (same
/// length, every element a superset of the manifest's).
fn drop_defaulted_lists(
    patch: &mut Map<String, Value>,
    original: Option<&Value>,
    modified: Option<&Value>,
    current: Option<&Value>,
) {
    let keys: Vec<String> = patch.keys().cloned().collect();
    for key in keys {
        let o = original.and_then(|v| v.get(&key));
        let m = modified.and_then(|v| v.get(&key));
        let c = current.and_then(|v| v.get(&key));
        match patch.get_mut(&key) {
            Some(Value::Object(inner)) => {
                drop_defaulted_lists(inner, o, m, c);
                if inner.is_empty() {
                    patch.remove(&key);
                }
            }
            Some(Value::Array(_)) => {
                if let (Some(o), Some(m), Some(c)) = (o, m, c)
                    && o == m
                    && contains(c, m)
                {
                    patch.remove(&key);
                }
            }
            _ => {}
        }
    }
}

/// Whether `live` holds everything `wanted` says (maps may have more keys).
fn contains(live: &Value, wanted: &Value) -> bool {
    match (live, wanted) {
        (Value::Object(l), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| l.get(k).is_some_and(|lv| contains(lv, wv))),
        (Value::Array(l), Value::Array(w)) => {
            l.len() == w.len() && l.iter().zip(w).all(|(lv, wv)| contains(lv, wv))
        }
        (l, w) => l == w,
    }
}

/// Puts the elements of every merged list in the order of its `$setElementOrder`, with the
/// `$patch: delete` directives last, as the server requires (combining the deletions and
/// the delta may have interleaved them).
fn normalize_order(schema: Schema, path: &str, map: &mut Map<String, Value>) {
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        if key.starts_with('$') {
            continue;
        }
        let sub = join(path, &key);
        let order: Option<Vec<Value>> = map
            .get(&format!("$setElementOrder/{key}"))
            .and_then(Value::as_array)
            .cloned();
        let Some(value) = map.get_mut(&key) else {
            continue;
        };
        match value {
            Value::Object(inner) => normalize_order(schema, &sub, inner),
            Value::Array(items) => {
                if let Some(Some(mk)) = schema.list_rule(&sub) {
                    for item in items.iter_mut() {
                        if let Value::Object(m) = item {
                            normalize_order(schema, &sub, m);
                        }
                    }
                    if let Some(order) = order {
                        let rank = |v: &Value| -> usize {
                            if v.get("$patch").is_some() {
                                return usize::MAX;
                            }
                            let id = merge_key_of(v, mk);
                            order
                                .iter()
                                .position(|o| merge_key_of(o, mk) == id)
                                .unwrap_or(usize::MAX - 1)
                        };
                        items.sort_by_key(|v| rank(v));
                    }
                }
            }
            _ => {}
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn diff_maps(
    schema: Schema,
    path: &str,
    original: &Map<String, Value>,
    modified: &Map<String, Value>,
    o: Options,
) -> Map<String, Value> {
    let mut patch = Map::new();
    for (key, m) in modified {
        let sub = join(path, key);
        match original.get(key) {
            None => {
                if !o.ignore_changes_and_additions {
                    patch.insert(key.clone(), m.clone());
                }
            }
            Some(Value::Object(om)) if m.is_object() => {
                let Value::Object(mm) = m else { continue };
                let p = diff_maps(schema, &sub, om, mm, o);
                if !p.is_empty() {
                    patch.insert(key.clone(), Value::Object(p));
                }
            }
            Some(Value::Array(oa)) if m.is_array() => {
                let Value::Array(ma) = m else { continue };
                diff_lists(schema, &sub, key, oa, ma, o, &mut patch);
            }
            Some(ov) => {
                if ov != m && !o.ignore_changes_and_additions {
                    patch.insert(key.clone(), m.clone());
                }
            }
        }
    }
    if !o.ignore_deletions {
        for key in original.keys() {
            if !modified.contains_key(key) {
                patch.insert(key.clone(), Value::Null);
            }
        }
    }
    patch
}

fn merge_key_of<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object().and_then(|m| m.get(key))
}

#[allow(clippy::too_many_arguments)]
fn diff_lists(
    schema: Schema,
    path: &str,
    key: &str,
    original: &[Value],
    modified: &[Value],
    o: Options,
    patch: &mut Map<String, Value>,
) {
    let rule = schema.list_rule(path);
    match rule {
        Some(Some(mk))
            if original
                .iter()
                .chain(modified)
                .all(|v| merge_key_of(v, mk).is_some()) =>
        {
            diff_list_of_maps(schema, path, key, mk, original, modified, o, patch)
        }
        Some(None) if original.iter().chain(modified).all(|v| !v.is_object()) => {
            diff_list_of_scalars(key, original, modified, o, patch)
        }
        _ => {
            if original != modified && !o.ignore_changes_and_additions {
                patch.insert(key.to_owned(), Value::Array(modified.to_vec()));
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn diff_list_of_maps(
    schema: Schema,
    path: &str,
    key: &str,
    mk: &str,
    original: &[Value],
    modified: &[Value],
    o: Options,
    patch: &mut Map<String, Value>,
) {
    let mut list = Vec::new();
    for m in modified {
        let id = merge_key_of(m, mk);
        match original.iter().find(|x| merge_key_of(x, mk) == id) {
            Some(orig) => {
                let (Some(om), Some(mm)) = (orig.as_object(), m.as_object()) else {
                    continue;
                };
                let mut p = diff_maps(schema, path, om, mm, o);
                if !p.is_empty() {
                    if let Some(id) = id {
                        p.insert(mk.to_owned(), id.clone());
                    }
                    list.push(Value::Object(p));
                }
            }
            None => {
                if !o.ignore_changes_and_additions {
                    list.push(m.clone());
                }
            }
        }
    }
    if !o.ignore_deletions {
        for orig in original {
            let id = merge_key_of(orig, mk);
            if !modified.iter().any(|m| merge_key_of(m, mk) == id)
                && let Some(id) = id
            {
                let mut d = Map::new();
                d.insert(mk.to_owned(), id.clone());
                d.insert("$patch".to_owned(), Value::String("delete".to_owned()));
                list.push(Value::Object(d));
            }
        }
    }
    let order_same = original.len() == modified.len()
        && original
            .iter()
            .zip(modified)
            .all(|(a, b)| merge_key_of(a, mk) == merge_key_of(b, mk));
    let set_order = (!o.ignore_changes_and_additions && (!list.is_empty() || !order_same))
        || (!o.ignore_deletions && !list.is_empty());
    if !list.is_empty() {
        patch.insert(key.to_owned(), Value::Array(list));
    }
    if set_order {
        let order = modified
            .iter()
            .filter_map(|m| {
                let mut e = Map::new();
                e.insert(mk.to_owned(), merge_key_of(m, mk)?.clone());
                Some(Value::Object(e))
            })
            .collect();
        patch.insert(format!("$setElementOrder/{key}"), Value::Array(order));
    }
}

fn diff_list_of_scalars(
    key: &str,
    original: &[Value],
    modified: &[Value],
    o: Options,
    patch: &mut Map<String, Value>,
) {
    let additions: Vec<Value> = modified
        .iter()
        .filter(|m| !original.contains(m))
        .cloned()
        .collect();
    let deletions: Vec<Value> = original
        .iter()
        .filter(|x| !modified.contains(x))
        .cloned()
        .collect();
    if !o.ignore_changes_and_additions && !additions.is_empty() {
        patch.insert(key.to_owned(), Value::Array(additions));
    }
    let deleting = !o.ignore_deletions && !deletions.is_empty();
    if deleting {
        patch.insert(
            format!("$deleteFromPrimitiveList/{key}"),
            Value::Array(deletions),
        );
    }
    if deleting || (!o.ignore_changes_and_additions && original != modified) {
        patch.insert(
            format!("$setElementOrder/{key}"),
            Value::Array(modified.to_vec()),
        );
    }
}

/// Merges the delta into the deletions (they touch different fields, save for the
/// directives both may carry).
fn combine(
    schema: Schema,
    path: &str,
    mut a: Map<String, Value>,
    b: Map<String, Value>,
) -> Map<String, Value> {
    for (key, bv) in b {
        let sub = join(path, &key);
        let Some(av) = a.remove(&key) else {
            a.insert(key, bv);
            continue;
        };
        let merged = match (av, bv) {
            (Value::Object(am), Value::Object(bm)) => Value::Object(combine(schema, &sub, am, bm)),
            (Value::Array(aa), Value::Array(ba))
                if key.starts_with("$deleteFromPrimitiveList/") =>
            {
                Value::Array(union(aa, ba))
            }
            (Value::Array(aa), Value::Array(ba)) => match schema.list_rule(&sub) {
                Some(Some(mk)) if !key.starts_with('$') => {
                    let mut out = aa;
                    for e in ba {
                        let id = merge_key_of(&e, mk).cloned();
                        let same = out
                            .iter()
                            .position(|x| id.is_some() && merge_key_of(x, mk) == id.as_ref());
                        match (same, e) {
                            (Some(i), Value::Object(em)) => {
                                if let Value::Object(xm) = out.remove(i) {
                                    out.insert(i, Value::Object(combine(schema, &sub, xm, em)));
                                }
                            }
                            (_, e) => out.push(e),
                        }
                    }
                    Value::Array(out)
                }
                Some(None) if !key.starts_with('$') => Value::Array(union(aa, ba)),
                _ => Value::Array(ba),
            },
            (_, bv) => bv,
        };
        a.insert(key, merged);
    }
    a
}

fn union(mut a: Vec<Value>, b: Vec<Value>) -> Vec<Value> {
    for v in b {
        if !a.contains(&v) {
            a.push(v);
        }
    }
    a
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}})
    }

    #[test]
    fn schemas_by_kind() {
        assert_eq!(Schema::for_kind("Pod", true), Schema::Strategic("Pod"));
        assert_eq!(
            Schema::for_kind("NetworkPolicy", true),
            Schema::Strategic("NetworkPolicy")
        );
        // A custom resource takes JSON merge patches only.
        assert_eq!(
            Schema::for_kind("ClusterNetworkPolicy", true),
            Schema::Merge
        );
        assert_eq!(Schema::for_kind("Deployment", false), Schema::Merge);
    }

    #[test]
    fn nothing_changed_means_an_empty_patch() {
        let applied = pod(json!([{"name": "a", "image": "x", "ports": [{"containerPort": 80}]}]));
        let mut current = applied.clone();
        // Server defaults in the live object are not the manifest's business.
        current["spec"]["containers"][0]["imagePullPolicy"] = json!("Always");
        current["spec"]["containers"][0]["ports"][0]["protocol"] = json!("TCP");
        current["spec"]["restartPolicy"] = json!("Always");
        current["status"] = json!({"phase": "Pending"});
        let p = three_way(Schema::Strategic("Pod"), Some(&applied), &applied, &current);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn changed_and_dropped_fields() {
        let original = json!({"kind": "Pod", "metadata": {"name": "p", "labels": {"app": "web", "old": "x"}},
            "spec": {"containers": [{"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}});
        let modified = json!({"kind": "Pod", "metadata": {"name": "p", "labels": {"app": "web", "tier": "front"}},
            "spec": {"containers": [{"name": "a", "image": "y", "env": [{"name": "A", "value": "1"}]}]}});
        let mut current = original.clone();
        current["spec"]["containers"][0]["imagePullPolicy"] = json!("Always");
        let p = three_way(
            Schema::Strategic("Pod"),
            Some(&original),
            &modified,
            &current,
        );
        assert_eq!(
            Value::Object(p),
            json!({
                "metadata": {"labels": {"old": null, "tier": "front"}},
                "spec": {
                    "$setElementOrder/containers": [{"name": "a"}],
                    "containers": [{"name": "a", "image": "y",
                        "$setElementOrder/env": [{"name": "A"}],
                        "env": [{"name": "B", "$patch": "delete"}]}]
                }
            })
        );
    }

    #[test]
    fn service_ports_keep_allocated_node_ports() {
        let applied = json!({"kind": "Service", "spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": 8080}]}});
        let current = json!({"kind": "Service", "spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
            "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}]}});
        let modified = json!({"kind": "Service", "spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": 9090}]}});
        let p = three_way(
            Schema::Strategic("Service"),
            Some(&applied),
            &modified,
            &current,
        );
        assert_eq!(
            Value::Object(p),
            json!({"spec": {"$setElementOrder/ports": [{"port": 80}], "ports": [{"port": 80, "targetPort": 9090}]}})
        );
    }

    #[test]
    fn merge_patch_replaces_lists_and_deletes_dropped_fields() {
        let original = json!({"spec": {"a": 1, "list": [1, 2], "gone": true}});
        let modified = json!({"spec": {"a": 2, "list": [1]}});
        let current = json!({"spec": {"a": 1, "list": [1, 2], "gone": true, "server": "x"}});
        let p = three_way(Schema::Merge, Some(&original), &modified, &current);
        assert_eq!(
            Value::Object(p),
            json!({"spec": {"a": 2, "list": [1], "gone": null}})
        );
    }

    #[test]
    fn merge_patch_leaves_server_defaults_in_lists_alone() {
        let applied =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        let current = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "x", "imagePullPolicy": "Always"}]}}, "replicas": 1}});
        let p = three_way(Schema::Merge, Some(&applied), &applied, &current);
        assert!(p.is_empty(), "{p:?}");
        // A change in the manifest still replaces the list.
        let changed =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "y"}]}}}});
        let p = three_way(Schema::Merge, Some(&applied), &changed, &current);
        assert_eq!(Value::Object(p), changed);
        // Never applied before: the list is sent.
        let p = three_way(Schema::Merge, None, &applied, &current);
        assert_eq!(Value::Object(p), applied);
    }

    #[test]
    fn finalizers_are_a_set() {
        let original = json!({"metadata": {"finalizers": ["a", "b"]}});
        let modified = json!({"metadata": {"finalizers": ["a", "c"]}});
        let p = three_way(
            Schema::Strategic("Pod"),
            Some(&original),
            &modified,
            &original,
        );
        assert_eq!(
            Value::Object(p),
            json!({"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["b"], "$setElementOrder/finalizers": ["a", "c"]}})
        );
    }

    #[test]
    fn the_strategic_patch_does_what_the_server_does() {
        // The patch applied by the apiserver's own strategic merge gives the manifest's intent.
        let original = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 80}, {"containerPort": 81}]},
                                    {"name": "b", "image": "x"}]}});
        let modified = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "z"}, {"name": "a", "image": "x", "ports": [{"containerPort": 80}]}]}});
        let mut current = original.clone();
        current["spec"]["containers"][0]["ports"][0]["protocol"] = json!("TCP");
        current["spec"]["restartPolicy"] = json!("Always");
        let p = three_way(
            Schema::Strategic("Pod"),
            Some(&original),
            &modified,
            &current,
        );
        let patched = podnet_api::k8s::patch::apply_patch(
            "Pod",
            podnet_api::k8s::patch::PatchType::Strategic,
            &current,
            &Value::Object(p),
        )
        .unwrap();
        assert_eq!(
            patched["spec"],
            json!({"restartPolicy": "Always", "containers": [
                {"name": "c", "image": "z"},
                {"name": "a", "image": "x", "ports": [{"containerPort": 80, "protocol": "TCP"}]}
            ]})
        );
    }
}
