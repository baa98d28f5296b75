//! API errors: Kubernetes `metav1.Status` objects with the HTTP code Kubernetes uses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use podnet_store::StoreError;
use serde_json::{Value, json};

/// One cause of an `Invalid` error (a field that is wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

/// An error as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: u16,
    /// The `metav1.StatusReason`, e.g. `NotFound`.
    pub reason: &'static str,
    pub message: String,
    /// `details`: boxed, so that results carrying an error stay small.
    pub details: Option<Box<Details>>,
}

/// The `details` of a `Status`: the object's name, group and kind, and field causes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    pub name: Option<String>,
    pub group: Option<String>,
    pub kind: Option<String>,
    pub causes: Vec<Cause>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.reason, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Result of an API operation.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, resource: &str, group: &str, name: &str) -> Self {
        let details = self.details.get_or_insert_with(Default::default);
        details.name = Some(name.to_owned());
        details.group = Some(group.to_owned());
        details.kind = Some(resource.to_owned());
        self
    }

    /// The field causes of an `Invalid` error.
    pub fn causes(&self) -> &[Cause] {
        self.details
            .as_ref()
            .map(|d| d.causes.as_slice())
            .unwrap_or(&[])
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// `pods "web" not found`, as Kubernetes says it (resource plural, with group if any).
    pub fn not_found(resource: &str, group: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(resource, group)),
        )
        .with_details(resource, group, name)
    }

    pub fn path_not_found(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource (path {path})"),
        )
    }

    pub fn already_exists(resource: &str, group: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(resource, group)),
        )
        .with_details(resource, group, name)
    }

    /// A stale `resourceVersion` on update or delete.
    pub fn conflict(resource: &str, group: &str, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(resource, group)
            ),
        )
        .with_details(resource, group, name)
    }

    /// A conflict of another kind (e.g. a requested address already taken).
    pub fn conflict_message(message: impl Into<String>) -> Self {
        Self::new(409, "Conflict", message)
    }

    /// The `resourceVersion` asked for was compacted away.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 422: `Service "web" is invalid: spec.ports[0].port: Invalid value: ...`.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Self {
        // `field.ErrorList.ToAggregate`: each message once (an update can name a field twice).
        let mut messages: Vec<String> = Vec::new();
        for c in &causes {
            let m = if c.field.is_empty() {
                c.message.clone()
            } else {
                format!("{}: {}", c.field, c.message)
            };
            if !messages.contains(&m) {
                messages.push(m);
            }
        }
        let joined = messages.join(", ");
        let summary = if messages.len() > 1 {
            format!("[{joined}]")
        } else {
            joined
        };
        // `schema.GroupKind.String`: `EndpointSlice.discovery.k8s.io`, `Pod`.
        let qualified = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        let mut err = Self::new(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {summary}"),
        )
        .with_details(kind, group, name);
        if let Some(details) = err.details.as_mut() {
            details.causes = causes;
        }
        err
    }

    /// 422 for one field.
    pub fn invalid_field(kind: &str, name: &str, field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::invalid(
            kind,
            "",
            name,
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message,
                field: field.to_owned(),
            }],
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {content_type}"),
        )
    }

    /// A patch type the kind does not take (a strategic merge patch of a custom resource), in
    /// kube-apiserver's words, listing the ones it takes.
    pub fn unsupported_patch_type(accepted: &[podnet_api::k8s::patch::PatchType]) -> Self {
        let accepted: Vec<&str> = accepted.iter().map(|t| t.content_type()).collect();
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The store is unreachable or failed.
    pub fn store(err: &StoreError) -> Self {
        match err {
            StoreError::Compacted { .. } => Self::gone(format!("too old resource version: {err}")),
            _ => Self::new(
                503,
                "ServiceUnavailable",
                format!("the storage backend failed: {err}; check that the store is reachable"),
            ),
        }
    }

    /// The `metav1.Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            let mut details = json!({});
            if let Some(name) = &d.name {
                details["name"] = json!(name);
            }
            if let Some(group) = d.group.as_deref().filter(|g| !g.is_empty()) {
                details["group"] = json!(group);
            }
            if let Some(kind) = &d.kind {
                details["kind"] = json!(kind);
            }
            if !d.causes.is_empty() {
                details["causes"] = d
                    .causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
            }
            status["details"] = details;
        }
        status
    }
}

fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.to_status().to_string(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_as_kubernetes_says_them() {
        let e = ApiError::not_found("pods", "", "web");
        assert_eq!(e.message, "pods \"web\" not found");
        assert_eq!(e.to_status()["details"]["kind"], "pods");
        let e = ApiError::not_found("leases", "coordination.k8s.io", "n1");
        assert_eq!(e.message, "leases.coordination.k8s.io \"n1\" not found");
        let e = ApiError::invalid_field("Service", "web", "spec.ports[0].port", "Invalid value: 0");
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "Service \"web\" is invalid: spec.ports[0].port: Invalid value: 0"
        );
    }
}
