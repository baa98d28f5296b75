//! The paths and operations of the served kinds, as kube-apiserver documents them, in the two
//! forms it publishes: Swagger 2.0 (`/openapi/v2`) and OpenAPI 3.0 (`/openapi/v3/...`).
//!
//! Both forms name the same operations (ids, `x-kubernetes-action`,
//! `x-kubernetes-group-version-kind`, query parameters). They differ where the formats do
//! (parameter types inline or under `schema`, responses with or without `content`), and in one
//! thing on purpose: the v3 operations declare no request body (see the parent module), while the
//! v2 ones do, with `consumes` listing the media types podnet takes, as upstream's do.

use serde_json::{Map, Value, json};

use super::definitions::{self, V2_PREFIX, V3_PREFIX};
use crate::k8s::kinds::ResourceKind;
use crate::k8s::patch::PatchType;

/// Which document an operation goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    V2,
    V3,
}

impl Form {
    fn reference(self, name: &str) -> String {
        match self {
            Form::V2 => format!("{V2_PREFIX}{name}"),
            Form::V3 => format!("{V3_PREFIX}{name}"),
        }
    }
}

/// The REST operations, with the `x-kubernetes-action` each carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    List,
    WatchList,
    Create,
    DeleteCollection,
    Read,
    Replace,
    Patch,
    Delete,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::List => "list",
            Action::WatchList => "watchlist",
            Action::Create => "post",
            Action::DeleteCollection => "deletecollection",
            Action::Read => "get",
            Action::Replace => "put",
            Action::Patch => "patch",
            Action::Delete => "delete",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Action::List | Action::WatchList | Action::Read => "get",
            Action::Create => "post",
            Action::Replace => "put",
            Action::Patch => "patch",
            Action::Delete | Action::DeleteCollection => "delete",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Action::List => "list",
            Action::WatchList => "watch",
            Action::Create => "create",
            Action::DeleteCollection => "deleteCollection",
            Action::Read => "read",
            Action::Replace => "replace",
            Action::Patch => "patch",
            Action::Delete => "delete",
        }
    }

    /// The query parameters kube-apiserver accepts for this operation.
    fn query_parameters(self) -> &'static [&'static str] {
        const LIST: &[&str] = &[
            "allowWatchBookmarks",
            "continue",
            "fieldSelector",
            "labelSelector",
            "limit",
            "resourceVersion",
            "resourceVersionMatch",
            "sendInitialEvents",
            "timeoutSeconds",
            "watch",
        ];
        match self {
            Action::List | Action::WatchList => LIST,
            Action::Create | Action::Replace => &["dryRun", "fieldManager", "fieldValidation"],
            Action::Patch => &["dryRun", "fieldManager", "fieldValidation", "force"],
            Action::Delete => &[
                "dryRun",
                "gracePeriodSeconds",
                "orphanDependents",
                "propagationPolicy",
            ],
            Action::DeleteCollection => &[
                "continue",
                "dryRun",
                "fieldSelector",
                "gracePeriodSeconds",
                "labelSelector",
                "limit",
                "orphanDependents",
                "propagationPolicy",
                "resourceVersion",
                "resourceVersionMatch",
                "sendInitialEvents",
                "timeoutSeconds",
            ],
            Action::Read => &[],
        }
    }

    /// The definition a request body of this operation is, if it takes one.
    fn body(self, object: &str) -> Option<String> {
        match self {
            Action::Create | Action::Replace => Some(object.to_owned()),
            Action::Patch => Some(definitions::PATCH.to_owned()),
            Action::Delete | Action::DeleteCollection => {
                Some(definitions::DELETE_OPTIONS.to_owned())
            }
            Action::List | Action::WatchList | Action::Read => None,
        }
    }

    /// The media types of its request body (v2 `consumes`): no strategic merge patch for a
    /// custom resource, as kube-apiserver takes none for them.
    fn consumes(self, k: &ResourceKind) -> Vec<&'static str> {
        match self {
            Action::Patch => PatchType::accepted(k.custom_resource)
                .iter()
                .map(|t| t.content_type())
                .collect(),
            _ => vec!["application/json", "application/yaml"],
        }
    }

    /// The media types of its response (v2 `produces`).
    fn produces(self) -> Vec<&'static str> {
        match self {
            Action::List => vec!["application/json", "application/json;stream=watch"],
            Action::WatchList => vec!["application/json;stream=watch"],
            _ => vec!["application/json"],
        }
    }
}

/// `CoreV1`, `DiscoveryV1`, `CoordinationV1`, ...: the group version part of operation ids.
fn op_prefix(k: &ResourceKind) -> String {
    let mut out = group_prefix(k.group);
    out.push_str(&capitalize(k.version));
    out
}

/// `Core`, `Discovery`, `Coordination`.
fn group_prefix(group: &str) -> String {
    let group = if group.is_empty() {
        "core"
    } else {
        group.strip_suffix(".k8s.io").unwrap_or(group)
    };
    group.split('.').map(capitalize).collect()
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The tag of a group's (and version's) operations: `core_v1`, `discovery_v1`, `discovery`.
fn tag(group: &str, version: &str) -> String {
    let group = if group.is_empty() {
        "core"
    } else {
        group.strip_suffix(".k8s.io").unwrap_or(group)
    };
    let group = group.replace('.', "_");
    if version.is_empty() {
        group
    } else {
        format!("{group}_{version}")
    }
}

/// Adds the collection, item, all-namespaces, watch and status paths of kind `k`.
pub fn add_kind(paths: &mut Map<String, Value>, k: &ResourceKind, form: Form) {
    let base = k.group_version_path();
    let (ns, scope) = if k.namespaced {
        ("/namespaces/{namespace}", "Namespaced")
    } else {
        ("", "")
    };
    let prefix = op_prefix(k);
    let id = |a: Action, suffix: &str| match a {
        Action::DeleteCollection => format!("delete{prefix}Collection{scope}{}", k.kind),
        Action::WatchList => format!("watch{prefix}{scope}{}List{suffix}", k.kind),
        _ => format!("{}{prefix}{scope}{}{suffix}", a.verb(), k.kind),
    };
    let op = |a: Action, suffix: &str, sub: &str| operation(k, a, id(a, suffix), sub, form);
    let collection = format!("{base}{ns}/{}", k.plural);
    let item = format!("{collection}/{{name}}");

    let mut ops = vec![op(Action::List, "", ""), op(Action::Create, "", "")];
    // Kubernetes serves no deletecollection for namespaces.
    if k.kind != "Namespace" {
        ops.push(op(Action::DeleteCollection, "", ""));
    }
    paths.insert(collection, path_item(scoped(k, false, form), ops));
    let ops = [Action::Read, Action::Replace, Action::Patch, Action::Delete]
        .into_iter()
        .map(|a| op(a, "", ""))
        .collect();
    paths.insert(item.clone(), path_item(scoped(k, true, form), ops));
    paths.insert(
        format!("{base}/watch{ns}/{}", k.plural),
        path_item(scoped(k, false, form), vec![op(Action::WatchList, "", "")]),
    );
    if k.namespaced {
        let all = |a: Action| {
            let id = match a {
                Action::WatchList => format!("watch{prefix}{}ListForAllNamespaces", k.kind),
                _ => format!("list{prefix}{}ForAllNamespaces", k.kind),
            };
            operation(k, a, id, "", form)
        };
        let params = vec![pretty_parameter(form)];
        paths.insert(
            format!("{base}/{}", k.plural),
            path_item(params.clone(), vec![all(Action::List)]),
        );
        paths.insert(
            format!("{base}/watch/{}", k.plural),
            path_item(params, vec![all(Action::WatchList)]),
        );
    }
    if k.has_subresource("status") {
        let ops = [Action::Read, Action::Replace, Action::Patch]
            .into_iter()
            .map(|a| op(a, "Status", "status"))
            .collect();
        paths.insert(
            format!("{item}/status"),
            path_item(scoped(k, true, form), ops),
        );
    }
}

/// The path parameters (`name`, `namespace`) of kind `k`'s paths, and `pretty`.
fn scoped(k: &ResourceKind, name: bool, form: Form) -> Vec<Value> {
    let mut params = Vec::new();
    if name {
        let description = format!("name of the {}", k.kind);
        params.push(path_parameter("name", &description, form));
    }
    if k.namespaced {
        params.push(path_parameter(
            "namespace",
            "object name and auth scope, such as for teams and projects",
            form,
        ));
    }
    params.push(pretty_parameter(form));
    params
}

/// The discovery path of a group version (`/api/v1/`, `/apis/GROUP/VERSION/`): its resource
/// list.
pub fn add_group_version(paths: &mut Map<String, Value>, group: &str, version: &str, form: Form) {
    let (path, id) = if group.is_empty() {
        (
            format!("/api/{version}/"),
            "getCoreV1APIResources".to_owned(),
        )
    } else {
        let id = format!(
            "get{}{}APIResources",
            group_prefix(group),
            capitalize(version)
        );
        (format!("/apis/{group}/{version}/"), id)
    };
    let op = discovery_operation(
        "get available resources",
        &id,
        &tag(group, version),
        definitions::API_RESOURCE_LIST,
        form,
    );
    paths.insert(path, json!({ "get": op }));
}

/// The discovery paths above the group versions: `/api/`, `/apis/` and `/apis/GROUP/`.
pub fn add_discovery_roots(paths: &mut Map<String, Value>, groups: &[&str], form: Form) {
    let op = discovery_operation(
        "get available API versions",
        "getCoreAPIVersions",
        "core",
        definitions::API_VERSIONS,
        form,
    );
    paths.insert("/api/".to_owned(), json!({ "get": op }));
    let op = discovery_operation(
        "get available API versions",
        "getAPIVersions",
        "apis",
        definitions::API_GROUP_LIST,
        form,
    );
    paths.insert("/apis/".to_owned(), json!({ "get": op }));
    for group in groups {
        let id = format!("get{}APIGroup", group_prefix(group));
        let op = discovery_operation(
            "get information of a group",
            &id,
            &tag(group, ""),
            definitions::API_GROUP,
            form,
        );
        paths.insert(format!("/apis/{group}/"), json!({ "get": op }));
    }
}

fn discovery_operation(description: &str, id: &str, tag: &str, schema: &str, form: Form) -> Value {
    let mut op = json!({
        "tags": [tag],
        "description": description,
        "operationId": id,
        "responses": responses(&[("200", schema)], form),
    });
    if form == Form::V2 {
        op["consumes"] = json!(["application/json"]);
        op["produces"] = json!(["application/json"]);
        op["schemes"] = json!(["https"]);
    }
    op
}

fn path_item(parameters: Vec<Value>, operations: Vec<(&'static str, Value)>) -> Value {
    let mut item = Map::new();
    for (method, op) in operations {
        item.insert(method.to_owned(), op);
    }
    item.insert("parameters".to_owned(), Value::Array(parameters));
    Value::Object(item)
}

/// One operation on kind `k` (or on its `subresource`, if not empty), keyed by HTTP method.
fn operation(
    k: &ResourceKind,
    action: Action,
    operation_id: String,
    subresource: &str,
    form: Form,
) -> (&'static str, Value) {
    let object = definitions::name(k, k.kind);
    let list = definitions::name(k, &k.list_kind());
    let (codes, schema): (&[&str], &str) = match action {
        Action::List => (&["200"], &list),
        Action::WatchList => (&["200"], definitions::WATCH_EVENT),
        Action::Read => (&["200"], &object),
        Action::Create => (&["200", "201", "202"], &object),
        Action::Replace | Action::Patch => (&["200", "201"], &object),
        Action::Delete => (&["200", "202"], definitions::STATUS),
        Action::DeleteCollection => (&["200"], definitions::STATUS),
    };
    let codes: Vec<(&str, &str)> = codes.iter().map(|c| (*c, schema)).collect();
    let mut parameters: Vec<Value> = Vec::new();
    if let (Form::V2, Some(body)) = (form, action.body(&object)) {
        parameters.push(json!({
            "name": "body",
            "in": "body",
            "required": action != Action::Delete && action != Action::DeleteCollection,
            "schema": {"$ref": form.reference(&body)},
        }));
    }
    parameters.extend(
        action
            .query_parameters()
            .iter()
            .map(|name| query_parameter(name, form)),
    );
    let mut op = json!({
        "tags": [tag(k.group, k.version)],
        "description": describe(k, action, subresource),
        "operationId": operation_id,
        "responses": responses(&codes, form),
        "x-kubernetes-action": action.name(),
        "x-kubernetes-group-version-kind": definitions::gvk(k.group, k.version, k.kind),
    });
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    if form == Form::V2 {
        op["consumes"] = json!(action.consumes(k));
        op["produces"] = json!(action.produces());
        op["schemes"] = json!(["https"]);
    }
    (action.method(), op)
}

fn describe(k: &ResourceKind, action: Action, subresource: &str) -> String {
    let what = if subresource.is_empty() {
        format!("the specified {}", k.kind)
    } else {
        format!("{subresource} of the specified {}", k.kind)
    };
    match action {
        Action::List => format!("list or watch objects of kind {}", k.kind),
        Action::WatchList => format!(
            "watch individual changes to a list of {}. deprecated: use the 'watch' parameter \
             with a list operation instead.",
            k.kind
        ),
        Action::Create => format!("create a {}", k.kind),
        Action::DeleteCollection => format!("delete collection of {}", k.kind),
        Action::Read => format!("read {what}"),
        Action::Replace => format!("replace {what}"),
        Action::Patch => format!("partially update {what}"),
        Action::Delete => format!("delete a {}", k.kind),
    }
}

/// The responses of an operation: each code with the definition it returns, and 401.
fn responses(codes: &[(&str, &str)], form: Form) -> Value {
    let mut responses = Map::new();
    for (code, schema) in codes {
        let text = match *code {
            "201" => "Created",
            "202" => "Accepted",
            _ => "OK",
        };
        let schema = json!({"$ref": form.reference(schema)});
        let response = match form {
            Form::V2 => json!({"description": text, "schema": schema}),
            Form::V3 => json!({
                "description": text,
                "content": {"application/json": {"schema": schema}},
            }),
        };
        responses.insert((*code).to_owned(), response);
    }
    responses.insert("401".to_owned(), json!({"description": "Unauthorized"}));
    Value::Object(responses)
}

/// A parameter of type `ty` in the form's shape (v2 inline, v3 under `schema`).
fn parameter(name: &str, location: &str, description: &str, ty: &str, form: Form) -> Value {
    let mut p = json!({"name": name, "in": location, "description": description});
    match form {
        Form::V2 => {
            p["type"] = json!(ty);
            p["uniqueItems"] = json!(true);
        }
        Form::V3 => p["schema"] = json!({"type": ty, "uniqueItems": true}),
    }
    if location == "path" {
        p["required"] = json!(true);
    }
    p
}

fn path_parameter(name: &str, description: &str, form: Form) -> Value {
    parameter(name, "path", description, "string", form)
}

fn pretty_parameter(form: Form) -> Value {
    query_parameter("pretty", form)
}

/// A query parameter as kube-apiserver documents it.
fn query_parameter(name: &str, form: Form) -> Value {
    let (ty, description) = query_parameter_doc(name);
    parameter(name, "query", description, ty, form)
}

fn query_parameter_doc(name: &str) -> (&'static str, &'static str) {
    match name {
        "allowWatchBookmarks" => (
            "boolean",
            "allowWatchBookmarks requests watch events with type \"BOOKMARK\".",
        ),
        "continue" => (
            "string",
            "The continue option should be set when retrieving more results from the server.",
        ),
        "dryRun" => (
            "string",
            "When present, indicates that modifications should not be persisted. Valid values \
             are: - All: all dry run stages will be processed",
        ),
        "fieldManager" => (
            "string",
            "fieldManager is a name associated with the actor or entity that is making these \
             changes.",
        ),
        "fieldSelector" => (
            "string",
            "A selector to restrict the list of returned objects by their fields. Defaults to \
             everything.",
        ),
        "fieldValidation" => (
            "string",
            "fieldValidation instructs the server on how to handle objects in the request \
             (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - \
             Ignore, - Warn, - Strict.",
        ),
        "force" => (
            "boolean",
            "Force is going to \"force\" Apply requests. It means user will re-acquire \
             conflicting fields owned by other people.",
        ),
        "gracePeriodSeconds" => (
            "integer",
            "The duration in seconds before the object should be deleted.",
        ),
        "labelSelector" => (
            "string",
            "A selector to restrict the list of returned objects by their labels. Defaults to \
             everything.",
        ),
        "limit" => (
            "integer",
            "limit is a maximum number of responses to return for a list call.",
        ),
        "orphanDependents" => (
            "boolean",
            "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7.",
        ),
        "pretty" => ("string", "If 'true', then the output is pretty printed."),
        "propagationPolicy" => (
            "string",
            "Whether and how garbage collection will be performed.",
        ),
        "resourceVersion" => (
            "string",
            "resourceVersion sets a constraint on what resource versions a request may be \
             served from.",
        ),
        "resourceVersionMatch" => (
            "string",
            "resourceVersionMatch determines how resourceVersion is applied to list calls.",
        ),
        "sendInitialEvents" => (
            "boolean",
            "`sendInitialEvents=true` may be set together with `watch=true`.",
        ),
        "timeoutSeconds" => ("integer", "Timeout for the list/watch call."),
        "watch" => (
            "boolean",
            "Watch for changes to the described resources and return them as a stream of add, \
             update, and remove notifications.",
        ),
        _ => ("string", ""),
    }
}
