//! Strategic merge patch as the Kubernetes apiserver applies it
//! (`k8s.io/apimachinery/pkg/util/strategicpatch`, `StrategicMergeMapPatch`), driven by the
//! field table in [`super::schema`] instead of Go struct tags.
//!
//! What it does, level by level:
//! - maps merge recursively; a `null` value deletes the key;
//! - `{"$patch": "replace"}` in a map makes the rest of the map replace the object's;
//!   `{"$patch": "delete"}` empties it;
//! - `"$retainKeys": [..]` drops every key of the object's map not listed, and the patch may
//!   only set listed keys;
//! - a list with merge strategy and a merge key merges element-wise: patch elements merge
//!   into the element with the same key, or are appended; `{"$patch": "delete", key: v}`
//!   removes the elements with that key; a `{"$patch": "replace"}` element makes the other
//!   elements replace the list;
//! - a list of primitives with merge strategy becomes the union of both lists;
//!   `"$deleteFromPrimitiveList/<field>": [..]` removes values from it;
//! - `"$setElementOrder/<field>": [..]` orders the merged list (patch items in that order,
//!   items only the object had kept in their relative place);
//! - every other list is replaced by the patch's.
//!
//! Unlike the Go code, which relies on decoding into typed structs afterwards, values taken
//! from the patch are cleaned here (directives applied, `null`s dropped), so the result never
//! carries `$`-directives. Fields the table does not know are accepted (maps merge, lists are
//! replaced) instead of failing the lookup of Go struct tags, and unknown `$`-directives are
//! rejected instead of being stored.

use serde_json::{Map, Value};

use super::schema::{self, FieldRule};
use super::{PatchError, type_name};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

type Object = Map<String, Value>;

/// The identity of a list element for ordering: its merge key's value, or the element itself
/// for lists without a merge key. `None` for an element that lacks the merge key.
type Ident = Option<Value>;

/// Applies the strategic merge patch `patch` to `original`, an object of `kind`.
pub(super) fn apply(kind: &str, original: Object, patch: Object) -> Result<Object, PatchError> {
    Merger { kind }.merge_map(original, patch, "")
}

struct Merger<'a> {
    kind: &'a str,
}

impl Merger<'_> {
    /// The rule of the field at `path` if the field is a list that merges.
    fn merging_rule(&self, path: &str) -> Option<&'static FieldRule> {
        schema::lookup(self.kind, path).filter(|r| r.strategy.merges())
    }

    fn merge_map(
        &self,
        mut original: Object,
        mut patch: Object,
        path: &str,
    ) -> Result<Object, PatchError> {
        if let Some(directive) = remove_key(&mut patch, DIRECTIVE) {
            return match directive.as_str() {
                Some("replace") => self.merge_map(Object::new(), patch, path),
                Some("delete") => Ok(Object::new()),
                _ => Err(invalid_directive(
                    path,
                    format!(
                        "\"{DIRECTIVE}\" in a map must be \"replace\" or \"delete\", not {directive}"
                    ),
                )),
            };
        }
        if let Some(retain) = remove_key(&mut patch, RETAIN_KEYS) {
            apply_retain_keys(&mut original, &patch, &retain, path)?;
        }

        let order_keys: Vec<String> = patch
            .keys()
            .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
            .cloned()
            .collect();
        for key in order_keys {
            let field = directive_field(&key, SET_ELEMENT_ORDER, path)?;
            if let Some(order) = remove_key(&mut patch, &key) {
                self.set_element_order(&mut original, &mut patch, &field, order, path)?;
            }
        }

        let mut deletions = Vec::new();
        for (key, value) in patch {
            if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
                deletions.push((
                    directive_field(&key, DELETE_FROM_PRIMITIVE_LIST, path)?,
                    value,
                ));
                continue;
            }
            if key.starts_with('$') {
                return Err(invalid_directive(
                    path,
                    format!("unknown directive {key:?}"),
                ));
            }
            if value.is_null() {
                remove_key(&mut original, &key);
                continue;
            }
            let field_path = join(path, &key);
            match original.get_mut(&key) {
                Some(slot) => {
                    let current = slot.take();
                    *slot = self.merge_value(current, value, &field_path)?;
                }
                None => {
                    let value = self.clean(value, &field_path)?;
                    original.insert(key, value);
                }
            }
        }
        // After the additions, so that a value both added and deleted ends up deleted.
        for (field, values) in deletions {
            delete_from_primitive_list(&mut original, &field, values, path)?;
        }
        Ok(original)
    }

    /// Merges `patch` into `current`, both present and non-null.
    fn merge_value(&self, current: Value, patch: Value, path: &str) -> Result<Value, PatchError> {
        match (current, patch) {
            (Value::Object(current), Value::Object(patch)) => {
                let replaces = schema::lookup(self.kind, path)
                    .is_some_and(|r| r.strategy == schema::Strategy::Replace);
                if replaces {
                    self.clean(Value::Object(patch), path)
                } else {
                    Ok(Value::Object(self.merge_map(current, patch, path)?))
                }
            }
            (Value::Array(current), Value::Array(patch)) => {
                Ok(Value::Array(self.merge_list_field(current, patch, path)?))
            }
            // A scalar, or the type changed: the patch's value wins.
            (_, patch) => self.clean(patch, path),
        }
    }

    /// A value taken from the patch as it is, with its directives applied and its `null`s
    /// dropped (that is, merged into nothing).
    fn clean(&self, value: Value, path: &str) -> Result<Value, PatchError> {
        match value {
            Value::Object(map) => Ok(Value::Object(self.merge_map(Object::new(), map, path)?)),
            Value::Array(list) => Ok(Value::Array(self.merge_list_field(
                Vec::new(),
                list,
                path,
            )?)),
            other => Ok(other),
        }
    }

    /// Merges the list field at `path` if the table says it merges, or replaces it.
    fn merge_list_field(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        path: &str,
    ) -> Result<Vec<Value>, PatchError> {
        match self.merging_rule(path) {
            Some(rule) => self.merge_list(original, patch, rule.merge_key, path),
            None => patch
                .into_iter()
                .map(|item| self.clean(item, path))
                .collect(),
        }
    }

    /// `mergeSlice`: merges two lists of a field with merge strategy.
    fn merge_list(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        merge_key: Option<&str>,
        path: &str,
    ) -> Result<Vec<Value>, PatchError> {
        if original.is_empty() && patch.is_empty() {
            return Ok(original);
        }
        if element_type(&original, &patch, path)? != "object" {
            // A set of primitives: the union, deduplicated.
            let server: Vec<Ident> = original.iter().cloned().map(Some).collect();
            let order: Vec<Ident> = patch.iter().cloned().map(Some).collect();
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for item in original.into_iter().chain(patch) {
                if !merged.iter().any(|m| json_eq(m, &item)) {
                    merged.push(item);
                }
            }
            return Ok(order_list(merged, &order, &server, None));
        }
        let Some(key) = merge_key else {
            return Err(unmergeable(
                path,
                "a list of objects cannot merge without a merge key",
            ));
        };

        // Special elements first: deletions and replacement.
        let mut original = original;
        let mut plain = Vec::with_capacity(patch.len());
        let mut replace = false;
        for (i, item) in patch.into_iter().enumerate() {
            let Value::Object(item) = item else {
                return Err(unmergeable(
                    path,
                    format!("list element {i} is not an object"),
                ));
            };
            let Some(directive) = item.get(DIRECTIVE) else {
                plain.push((i, item));
                continue;
            };
            match directive.as_str() {
                Some("delete") => {
                    let Some(value) = item.get(key) else {
                        return Err(invalid_directive(
                            path,
                            format!(
                                "list element {i} has \"$patch\": \"delete\" but no merge key {key:?}"
                            ),
                        ));
                    };
                    original.retain(|o| !key_matches(o, key, value));
                }
                Some("replace") => replace = true,
                Some("merge") => {
                    return Err(invalid_directive(
                        path,
                        format!(
                            "list element {i}: \"$patch\": \"merge\" is not supported in lists"
                        ),
                    ));
                }
                _ => {
                    return Err(invalid_directive(
                        path,
                        format!("list element {i} has an unknown \"$patch\" directive {directive}"),
                    ));
                }
            }
        }
        if replace {
            return plain
                .into_iter()
                .map(|(_, item)| self.merge_map(Object::new(), item, path).map(Value::Object))
                .collect();
        }

        let server: Vec<Ident> = original.iter().map(|o| o.get(key).cloned()).collect();
        let mut order: Vec<Ident> = Vec::with_capacity(plain.len());
        for (i, item) in plain {
            let Some(value) = item.get(key).cloned() else {
                return Err(PatchError::Malformed(format!(
                    "{}: list element {i} has no merge key {key:?}",
                    at(path)
                )));
            };
            match original.iter().position(|o| key_matches(o, key, &value)) {
                Some(found) => {
                    let current = match original[found].take() {
                        Value::Object(map) => map,
                        _ => Object::new(),
                    };
                    original[found] = Value::Object(self.merge_map(current, item, path)?);
                }
                None => original.push(Value::Object(self.merge_map(Object::new(), item, path)?)),
            }
            order.push(Some(value));
        }
        Ok(order_list(original, &order, &server, Some(key)))
    }

    /// `mergePatchIntoOriginal`: merges the list `field` (if the patch has it) and orders the
    /// result by the `$setElementOrder/<field>` list `order`.
    fn set_element_order(
        &self,
        original: &mut Object,
        patch: &mut Object,
        field: &str,
        order: Value,
        path: &str,
    ) -> Result<(), PatchError> {
        let Value::Array(order) = order else {
            return Err(invalid_directive(
                path,
                format!(
                    "{SET_ELEMENT_ORDER}/{field} must be a list, not {}",
                    type_name(&order)
                ),
            ));
        };
        let field_path = join(path, field);
        let rule = self.merging_rule(&field_path);
        let merge_key = rule.and_then(|r| r.merge_key);

        let patch_list = match remove_key(patch, field) {
            None => None,
            Some(Value::Array(list)) => Some(list),
            Some(other) => {
                return Err(PatchError::Malformed(format!(
                    "{}: the value must be a list when {SET_ELEMENT_ORDER}/{field} is given, not {}",
                    at(&field_path),
                    type_name(&other)
                )));
            }
        };
        if let (Some(_), Some(list)) = (rule, &patch_list) {
            validate_order(list, &order, merge_key, &field_path)?;
        }
        let order: Vec<Ident> = order
            .iter()
            .map(|item| required_ident(item, merge_key, &field_path, SET_ELEMENT_ORDER))
            .collect::<Result<_, _>>()?;

        let original_list = match original.get_mut(field).map(Value::take) {
            None => None,
            Some(Value::Null) => {
                remove_key(original, field);
                None
            }
            Some(Value::Array(list)) => Some(list),
            Some(other) => {
                return Err(unmergeable(
                    &field_path,
                    format!("the object has {} here, not a list", type_name(&other)),
                ));
            }
        };
        let server: Vec<Ident> = original_list
            .iter()
            .flatten()
            .map(|item| ident(item, merge_key))
            .collect();
        let merged = match (original_list, patch_list) {
            (None, None) => return Ok(()),
            (Some(list), None) => list,
            (None, Some(list)) => self.merge_list_field(Vec::new(), list, &field_path)?,
            (Some(current), Some(list)) => self.merge_list_field(current, list, &field_path)?,
        };
        let ordered = order_list(merged, &order, &server, merge_key);
        original.insert(field.to_owned(), Value::Array(ordered));
        Ok(())
    }
}

/// `applyRetainKeysDirective`: keeps only the listed keys of `original`; the patch may only
/// set listed keys.
fn apply_retain_keys(
    original: &mut Object,
    patch: &Object,
    retain: &Value,
    path: &str,
) -> Result<(), PatchError> {
    let bad = || {
        invalid_directive(
            path,
            format!("{RETAIN_KEYS} must be a list of field names, not {retain}"),
        )
    };
    let Value::Array(list) = retain else {
        return Err(bad());
    };
    let keep: Vec<&str> = list
        .iter()
        .map(Value::as_str)
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    for (key, value) in patch {
        if value.is_null()
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || key.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !keep.contains(&key.as_str()) {
            return Err(invalid_directive(
                path,
                format!("the patch sets {key:?}, which its {RETAIN_KEYS} list does not name"),
            ));
        }
    }
    original.retain(|k, _| keep.contains(&k.as_str()));
    Ok(())
}

/// `$deleteFromPrimitiveList/<field>`: removes `values` from the list `field`.
fn delete_from_primitive_list(
    original: &mut Object,
    field: &str,
    values: Value,
    path: &str,
) -> Result<(), PatchError> {
    let Value::Array(values) = values else {
        return Err(invalid_directive(
            path,
            format!(
                "{DELETE_FROM_PRIMITIVE_LIST}/{field} must be a list, not {}",
                type_name(&values)
            ),
        ));
    };
    if let Some(Value::Array(list)) = original.get_mut(field) {
        list.retain(|item| !values.iter().any(|v| json_eq(item, v)));
    }
    Ok(())
}

/// `validatePatchWithSetOrderList`: the patch's items (other than directives) must appear in
/// the `$setElementOrder` list, in the same relative order.
fn validate_order(
    patch: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
    path: &str,
) -> Result<(), PatchError> {
    if patch.is_empty() || order.is_empty() {
        return Ok(());
    }
    let mut next = order.iter();
    for item in patch.iter().filter(|item| item.get(DIRECTIVE).is_none()) {
        let wanted = required_ident(item, merge_key, path, "the patch")?;
        loop {
            let Some(candidate) = next.next() else {
                return Err(invalid_directive(
                    path,
                    format!(
                        "the patch's list does not match {SET_ELEMENT_ORDER}: {} is missing from it \
                         or out of order",
                        wanted.as_ref().map_or_else(String::new, Value::to_string)
                    ),
                ));
            };
            let id = required_ident(candidate, merge_key, path, SET_ELEMENT_ORDER)?;
            if idents_eq(&id, &wanted) {
                break;
            }
        }
    }
    Ok(())
}

/// `normalizeElementOrder`: the items of `merged` that `order` names come in that order; the
/// others keep the relative order they had in the object (`server`), and are interleaved by
/// their position there.
fn order_list(
    merged: Vec<Value>,
    order: &[Ident],
    server: &[Ident],
    merge_key: Option<&str>,
) -> Vec<Value> {
    let mut from_patch = Vec::new();
    let mut server_only = Vec::new();
    for item in merged {
        let id = ident(&item, merge_key);
        match position(order, &id) {
            Some(at) => from_patch.push((at, id, item)),
            None => server_only.push((position(server, &id).unwrap_or(usize::MAX), id, item)),
        }
    }
    // Stable sorts: ties (items missing from the order list) keep their relative order.
    from_patch.sort_by_key(|(at, _, _)| *at);
    server_only.sort_by_key(|(at, _, _)| *at);

    // `mergeSortedSlice`: take the server-only item first when both items are in the
    // object and it came first there.
    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = from_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((_, l, _)), Some((_, r, _))) => {
                matches!((position(server, l), position(server, r)), (Some(a), Some(b)) if a < b)
            }
        };
        let next = if take_left { left.next() } else { right.next() };
        if let Some((_, _, item)) = next {
            out.push(item);
        }
    }
    out
}

fn ident(item: &Value, merge_key: Option<&str>) -> Ident {
    match merge_key {
        Some(key) => item.get(key).cloned(),
        None => Some(item.clone()),
    }
}

/// The identity of an item of a patch or `$setElementOrder` list, which must have the key.
fn required_ident(
    item: &Value,
    merge_key: Option<&str>,
    path: &str,
    list: &str,
) -> Result<Ident, PatchError> {
    match (merge_key, ident(item, merge_key)) {
        (Some(key), None) => Err(PatchError::Malformed(format!(
            "{}: an item of {list} list has no merge key {key:?}: {item}",
            at(path)
        ))),
        (_, id) => Ok(id),
    }
}

fn position(list: &[Ident], id: &Ident) -> Option<usize> {
    id.as_ref()?;
    list.iter().position(|x| idents_eq(x, id))
}

fn idents_eq(a: &Ident, b: &Ident) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => json_eq(a, b),
        _ => false,
    }
}

fn key_matches(item: &Value, key: &str, value: &Value) -> bool {
    item.get(key).is_some_and(|v| json_eq(v, value))
}

/// Equality that takes `80` and `80.0` as the same number (Go decodes both to float64).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || ((x.is_f64() || y.is_f64()) && x.as_f64() == y.as_f64())
        }
        _ => a == b,
    }
}

/// `sliceElementType`: the JSON type shared by all elements of both lists.
fn element_type(
    original: &[Value],
    patch: &[Value],
    path: &str,
) -> Result<&'static str, PatchError> {
    let mut seen: Option<&'static str> = None;
    for item in original.iter().chain(patch) {
        let this = type_name(item);
        if this == "list" {
            return Err(unmergeable(path, "lists of lists cannot be merged"));
        }
        match seen {
            None => seen = Some(this),
            Some(other) if other != this => {
                return Err(unmergeable(
                    path,
                    format!("the list's elements are of different types ({other} and {this})"),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(seen.unwrap_or("null"))
}

/// The field a `$setElementOrder/<field>` or `$deleteFromPrimitiveList/<field>` key names.
fn directive_field(key: &str, prefix: &str, path: &str) -> Result<String, PatchError> {
    key.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|field| !field.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            invalid_directive(
                path,
                format!("{key:?} is not of the form \"{prefix}/<field>\""),
            )
        })
}

/// Removes `key` keeping the order of the other keys (with `preserve_order`, a plain
/// `remove` would swap the last key into its place).
fn remove_key(map: &mut Object, key: &str) -> Option<Value> {
    let value = map.get_mut(key).map(Value::take)?;
    map.retain(|k, _| k != key);
    Some(value)
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn at(path: &str) -> String {
    if path.is_empty() {
        "at the top level".to_owned()
    } else {
        format!("at {path}")
    }
}

fn invalid_directive(path: &str, reason: impl Into<String>) -> PatchError {
    PatchError::InvalidDirective {
        at: at(path),
        reason: reason.into(),
    }
}

fn unmergeable(path: &str, reason: impl Into<String>) -> PatchError {
    PatchError::Unmergeable {
        at: at(path),
        reason: reason.into(),
    }
}
