//! The OpenAPI definition of ClusterNetworkPolicy, as kube-apiserver publishes a CRD's: one
//! definition, named by the reversed group (`io.k8s.networking.policy.v1alpha2.…`), every
//! nested object inline (`kubectl explain` shows them as `<Object>`), with the CRD's
//! validations (`enum`, `minimum`/`maximum`, `minItems`/`maxItems`, `minProperties`/
//! `maxProperties`, `maxLength`, `pattern`, `x-kubernetes-validations`) and list types, and
//! `metadata` a reference to `ObjectMeta`. The descriptions are podnet's own words.
//!
//! Label selectors and conditions are inlined from the definitions the other kinds use (the
//! k8s-openapi ones, with upstream's list and map types), as controller-gen inlines them.

use serde_json::{Map, Value, json};

use super::{ACTIONS, PRIORITY_RANGE, TIERS};

const LABEL_SELECTOR: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector";
const CONDITION: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Condition";
const V2_PREFIX: &str = "#/definitions/";

/// The pattern of `domainNames` items, as the CRD has it.
pub const DOMAIN_NAME_PATTERN: &str = r"^(\*\.)?([a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$";
/// The CEL rule of a port range and its message.
pub const RANGE_RULE: (&str, &str) = (
    "self.start < self.end",
    "Start port must be less than End port",
);
/// The CEL rule of a `networks` item and its message.
pub const CIDR_RULE: (&str, &str) = ("isCIDR(self)", "Invalid CIDR format provided");
/// The CEL rule of an egress rule and its message.
pub const NAMED_PORT_RULE: (&str, &str) = (
    "!(self.to.exists(peer, has(peer.networks) || has(peer.nodes) || has(peer.domainNames)) && has(self.protocols) && self.protocols.exists(protocol, has(protocol.destinationNamedPort)))",
    "networks/nodes/domainNames peer cannot be set with namedPorts since there are no namedPorts for networks/nodes/domainNames",
);

/// The ClusterNetworkPolicy definition (v2 form), given the other definitions (v2 form, with
/// upstream's extensions) for the label selector and condition schemas it inlines. Its
/// `x-kubernetes-group-version-kind` is added with the other kinds'.
pub fn definition(defs: &Map<String, Value>) -> Value {
    let selector = |description: &str| described(inline(defs, LABEL_SELECTOR), description);
    let spec = json!({
        "description": "The desired behaviour: the tier and priority of the policy, the pods it selects and its rules.",
        "type": "object",
        "required": ["priority", "subject", "tier"],
        "properties": {
            "tier": {
                "description": "Where the policy is evaluated: Admin (before NetworkPolicies, which cannot override it) or Baseline (after them, for pods no NetworkPolicy selects).",
                "type": "string",
                "enum": TIERS,
            },
            "priority": {
                "description": "The precedence of the policy in its tier, 0 to 1000: lower values are evaluated first. Policies of one tier with the same priority that match the same connection may be applied in any order.",
                "type": "integer",
                "format": "int32",
                "minimum": PRIORITY_RANGE.0,
                "maximum": PRIORITY_RANGE.1,
            },
            "subject": subject(&selector),
            "ingress": rules(&selector, false),
            "egress": rules(&selector, true),
        },
    });
    json!({
        "description": "ClusterNetworkPolicy is a network policy for the whole cluster, written by its administrators: tiered around NetworkPolicies, prioritized, with Accept, Deny and Pass rules.",
        "type": "object",
        "required": ["metadata", "spec"],
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string",
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string",
            },
            "metadata": {
                "$ref": format!("{V2_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
                "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
            },
            "spec": spec,
            "status": status(defs),
        },
    })
}

fn described(mut schema: Value, description: &str) -> Value {
    schema["description"] = json!(description);
    schema
}

fn subject(selector: &dyn Fn(&str) -> Value) -> Value {
    json!({
        "description": "The pods the policy applies to: exactly one of namespaces or pods. Host-network pods are never selected.",
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {
            "namespaces": selector("Every pod in the namespaces this selects."),
            "pods": namespaced_pod(selector, "The pods this selects, in the namespaces it selects."),
        },
    })
}

fn namespaced_pod(selector: &dyn Fn(&str) -> Value, description: &str) -> Value {
    json!({
        "description": description,
        "type": "object",
        "required": ["podSelector"],
        "properties": {
            "namespaceSelector": selector("The namespaces; empty selects all of them."),
            "podSelector": selector("The pods in those namespaces; empty selects all of them."),
        },
    })
}

/// `ingress` or `egress`: the list of rules.
fn rules(selector: &dyn Fn(&str) -> Value, egress: bool) -> Value {
    let (peers, peer_field, what) = if egress {
        ("to", egress_peer(selector), "from the selected pods to")
    } else {
        ("from", ingress_peer(selector), "to the selected pods from")
    };
    let mut rule = json!({
        "description": format!("A rule on traffic {what} its peers: what to do with it, and which of it (by protocol and port)."),
        "type": "object",
        "required": ["action", peers],
        "properties": {
            "name": {
                "description": "A name for the rule, at most 100 characters, for people and logs.",
                "type": "string",
                "maxLength": 100,
            },
            "action": {
                "description": "Accept (allow it and its replies; no later cluster or namespace rule applies), Deny (drop it; no later rule applies) or Pass (skip the rest of this tier: the next tier decides).",
                "type": "string",
                "enum": ACTIONS,
            },
            peers: {
                "description": "1 to 25 peers; the rule applies if any of them matches.",
                "type": "array",
                "minItems": 1,
                "maxItems": 25,
                "items": peer_field,
            },
            "protocols": protocols(),
        },
    });
    if egress {
        rule["x-kubernetes-validations"] =
            json!([{"rule": NAMED_PORT_RULE.0, "message": NAMED_PORT_RULE.1}]);
    }
    let direction = if egress { "Egress" } else { "Ingress" };
    json!({
        "description": format!("{direction} rules, at most 25, evaluated in the order written (the first that matches decides). Without any, the policy does not affect {} traffic.", direction.to_lowercase()),
        "type": "array",
        "maxItems": 25,
        "items": rule,
    })
}

fn ingress_peer(selector: &dyn Fn(&str) -> Value) -> Value {
    json!({
        "description": "A source: exactly one of its fields.",
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {
            "namespaces": selector("Every pod in the namespaces this selects (host-network pods are not)."),
            "pods": namespaced_pod(selector, "The pods this selects, in the namespaces it selects (host-network pods are not)."),
        },
    })
}

fn egress_peer(selector: &dyn Fn(&str) -> Value) -> Value {
    let set = |description: &str, item: Value| {
        json!({
            "description": description,
            "type": "array",
            "minItems": 1,
            "maxItems": 25,
            "items": item,
            "x-kubernetes-list-type": "set",
        })
    };
    json!({
        "description": "A destination: exactly one of its fields.",
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {
            "namespaces": selector("Every pod in the namespaces this selects (host-network pods are not)."),
            "pods": namespaced_pod(selector, "The pods this selects, in the namespaces it selects (host-network pods are not)."),
            "nodes": selector("The nodes this selects by their labels: the addresses in their status. Empty selects every node."),
            "networks": set(
                "1 to 25 CIDRs (IPv4 or IPv6), for destinations outside the cluster; traffic inside it matches too.",
                json!({
                    "description": "A CIDR, such as 10.0.0.0/8 or fd00::/8.",
                    "type": "string",
                    "maxLength": 43,
                    "x-kubernetes-validations": [{"rule": CIDR_RULE.0, "message": CIDR_RULE.1}],
                }),
            ),
            "domainNames": set(
                "1 to 25 domain names, for Accept rules only: example.com exactly, or *.example.com for the names below it.",
                json!({
                    "description": "A domain name, optionally starting with *. to match one or more labels.",
                    "type": "string",
                    "pattern": DOMAIN_NAME_PATTERN,
                }),
            ),
        },
    })
}

fn protocols() -> Value {
    let port = json!({
        "description": "The destination port: a number or a range, exactly one.",
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {
            "number": port_number("A port, 1 to 65535."),
            "range": {
                "description": "An inclusive range of ports.",
                "type": "object",
                "required": ["end", "start"],
                "properties": {
                    "start": port_number("The first port of the range; less than end."),
                    "end": port_number("The last port of the range."),
                },
                "x-kubernetes-validations": [{"rule": RANGE_RULE.0, "message": RANGE_RULE.1}],
            },
        },
    });
    let transport = |name: &str| {
        json!({
            "description": format!("{name} traffic, to the port given."),
            "type": "object",
            "minProperties": 1,
            "properties": {"destinationPort": port.clone()},
        })
    };
    json!({
        "description": "1 to 25 protocol matches; without them the rule matches any protocol and port.",
        "type": "array",
        "minItems": 1,
        "maxItems": 25,
        "items": {
            "description": "A protocol match: exactly one of its fields.",
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {
                "tcp": transport("TCP"),
                "udp": transport("UDP"),
                "sctp": transport("SCTP"),
                "destinationNamedPort": {
                    "description": "A destination port of a pod by the name of its container port; not for networks, nodes or domain names, which have no named ports.",
                    "type": "string",
                },
            },
        },
    })
}

fn port_number(description: &str) -> Value {
    json!({
        "description": description,
        "type": "integer",
        "format": "int32",
        "minimum": 1,
        "maximum": 65535,
    })
}

fn status(defs: &Map<String, Value>) -> Value {
    json!({
        "description": "What the implementation reports about the policy.",
        "type": "object",
        "required": ["conditions"],
        "properties": {
            "conditions": {
                "description": "The conditions of the policy, by type.",
                "type": "array",
                "items": inline(defs, CONDITION),
                "x-kubernetes-list-map-keys": ["type"],
                "x-kubernetes-list-type": "map",
            },
        },
    })
}

/// Definition `name` with every `$ref` in it replaced by the definition it names (a
/// reference's description kept), as a CRD's schema has them.
fn inline(defs: &Map<String, Value>, name: &str) -> Value {
    defs.get(name)
        .map(|d| inline_value(defs, d, 0))
        .unwrap_or_else(|| json!({"type": "object"}))
}

fn inline_value(defs: &Map<String, Value>, v: &Value, depth: usize) -> Value {
    match v {
        Value::Object(map) => {
            let target = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(V2_PREFIX))
                .and_then(|name| defs.get(name));
            let mut out = match target {
                // Deep enough for selectors and conditions; a cycle stops here.
                Some(def) if depth < 8 => match inline_value(defs, def, depth + 1) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                },
                _ => Map::new(),
            };
            for (k, value) in map {
                if k == "$ref" && target.is_some() && depth < 8 {
                    continue;
                }
                out.insert(k.clone(), inline_value(defs, value, depth));
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|i| inline_value(defs, i, depth)).collect())
        }
        other => other.clone(),
    }
}
