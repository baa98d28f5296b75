//! Table-driven checks of ClusterNetworkPolicy validation against the CRD's rules and the
//! messages kube-apiserver gives for them.

use serde_json::{Value, json};

use super::*;

const NOT_CHECKED: &str = "<nil>: Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation";

fn cnp(spec: Value) -> Value {
    json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "deny-db"}, "spec": spec})
}

fn base() -> Value {
    json!({
        "tier": "Admin", "priority": 10,
        "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "db"}}}},
        "ingress": [{"name": "web", "action": "Accept",
            "from": [{"namespaces": {"matchLabels": {"team": "web"}}},
                     {"pods": {"podSelector": {}}}],
            "protocols": [{"tcp": {"destinationPort": {"number": 5432}}},
                          {"udp": {"destinationPort": {"range": {"start": 1000, "end": 2000}}}},
                          {"destinationNamedPort": "pg"}]}],
        "egress": [
            {"action": "Deny", "to": [{"networks": ["0.0.0.0/0", "::/0", "10.1.2.3/8"]}, {"nodes": {}}]},
            {"action": "Pass", "to": [{"pods": {"podSelector": {}}}], "protocols": [{"destinationNamedPort": "dns"}]},
            {"action": "Accept", "to": [{"domainNames": ["*.example.com", "example.org."]}]},
        ],
    })
}

fn errors(obj: &Value) -> Vec<String> {
    validate(obj).iter().map(ToString::to_string).collect()
}

/// `base()` with the value at JSON pointer `at` replaced (or removed, for `Value::Null`).
fn with(at: &str, value: Value) -> Value {
    let mut spec = base();
    let (parent, key) = at.rsplit_once('/').unwrap();
    match (spec.pointer_mut(parent).unwrap(), value.is_null()) {
        (Value::Object(m), true) => {
            m.remove(key);
        }
        (Value::Object(m), false) => {
            m.insert(key.to_owned(), value);
        }
        (Value::Array(a), true) => {
            a.remove(key.parse().unwrap());
        }
        (Value::Array(a), false) => a[key.parse::<usize>().unwrap()] = value,
        _ => panic!("{at}"),
    }
    cnp(spec)
}

#[test]
fn valid_policies() {
    assert_eq!(errors(&cnp(base())), Vec::<String>::new());
    let baseline = cnp(json!({"tier": "Baseline", "priority": 0,
        "subject": {"namespaces": {}}, "ingress": [{"action": "Pass", "from": [{"namespaces": {}}]}]}));
    assert_eq!(errors(&baseline), Vec::<String>::new());
    // The CRD checks selectors for their shape only.
    let odd = with(
        "/subject",
        json!({"namespaces": {"matchExpressions": [{"key": "a", "operator": "Has"}]}}),
    );
    assert_eq!(errors(&odd), Vec::<String>::new());
}

#[test]
fn schema_refusals_with_the_crd_messages() {
    let twenty_six: Vec<Value> = (0..26).map(|_| json!({"namespaces": {}})).collect();
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            with("/tier", json!("Cluster")),
            vec![
                "spec.tier: Unsupported value: \"Cluster\": supported values: \"Admin\", \"Baseline\"",
                NOT_CHECKED,
            ],
        ),
        (
            with("/priority", json!(1001)),
            vec![
                "spec.priority: Invalid value: 1001: spec.priority in body should be less than or equal to 1000",
            ],
        ),
        (
            with("/priority", json!(-1)),
            vec![
                "spec.priority: Invalid value: -1: spec.priority in body should be greater than or equal to 0",
            ],
        ),
        (
            with("/tier", Value::Null),
            vec!["spec.tier: Required value", NOT_CHECKED],
        ),
        (
            cnp(json!({})),
            vec![
                "spec.priority: Required value",
                "spec.subject: Required value",
                "spec.tier: Required value",
                NOT_CHECKED,
            ],
        ),
        (
            with(
                "/subject",
                json!({"namespaces": {}, "pods": {"podSelector": {}}}),
            ),
            vec![
                "spec.subject: Too many: 2: must have at most 1 item",
                NOT_CHECKED,
            ],
        ),
        (
            with("/subject", json!({})),
            vec![
                "spec.subject: Invalid value: 0: spec.subject in body should have at least 1 properties",
            ],
        ),
        (
            with("/subject/pods/podSelector", Value::Null),
            vec!["spec.subject.pods.podSelector: Required value", NOT_CHECKED],
        ),
        (
            with("/ingress/0/action", json!("Allow")),
            vec![
                "spec.ingress[0].action: Unsupported value: \"Allow\": supported values: \"Accept\", \"Deny\", \"Pass\"",
                NOT_CHECKED,
            ],
        ),
        (
            with("/ingress/0/name", json!("n".repeat(101))),
            vec![
                "spec.ingress[0].name: Too long: may not be more than 100 bytes",
                NOT_CHECKED,
            ],
        ),
        (
            with("/ingress/0/from", json!([])),
            vec![
                "spec.ingress[0].from: Invalid value: 0: spec.ingress[0].from in body should have at least 1 items",
            ],
        ),
        (
            with("/ingress/0/from", Value::Array(twenty_six)),
            vec![
                "spec.ingress[0].from: Too many: 26: must have at most 25 items",
                NOT_CHECKED,
            ],
        ),
        (
            with("/egress/0/to", Value::Null),
            vec!["spec.egress[0].to: Required value", NOT_CHECKED],
        ),
        (
            with("/egress/0/to/1", json!({"nodes": {}, "namespaces": {}})),
            vec![
                "spec.egress[0].to[1]: Too many: 2: must have at most 1 item",
                NOT_CHECKED,
            ],
        ),
        (
            with("/ingress/0/protocols/0", json!({"tcp": {}})),
            vec![
                "spec.ingress[0].protocols[0].tcp: Invalid value: 0: spec.ingress[0].protocols[0].tcp in body should have at least 1 properties",
            ],
        ),
        (
            with(
                "/ingress/0/protocols/0/tcp/destinationPort",
                json!({"number": 0}),
            ),
            vec![
                "spec.ingress[0].protocols[0].tcp.destinationPort.number: Invalid value: 0: spec.ingress[0].protocols[0].tcp.destinationPort.number in body should be greater than or equal to 1",
            ],
        ),
        (
            with(
                "/ingress/0/protocols/0/tcp/destinationPort",
                json!({"number": 80, "range": {"start": 1, "end": 2}}),
            ),
            vec![
                "spec.ingress[0].protocols[0].tcp.destinationPort: Too many: 2: must have at most 1 item",
                NOT_CHECKED,
            ],
        ),
        (
            with(
                "/ingress/0/protocols/1/udp/destinationPort/range",
                json!({"start": 70000}),
            ),
            vec![
                "spec.ingress[0].protocols[1].udp.destinationPort.range.start: Invalid value: 70000: spec.ingress[0].protocols[1].udp.destinationPort.range.start in body should be less than or equal to 65535",
                "spec.ingress[0].protocols[1].udp.destinationPort.range.end: Required value",
                NOT_CHECKED,
            ],
        ),
        (
            with(
                "/egress/0/to/0/networks",
                json!(["10.0.0.0/8", "10.0.0.0/8"]),
            ),
            vec!["spec.egress[0].to[0].networks[1]: Duplicate value: \"10.0.0.0/8\""],
        ),
        (
            with(
                "/egress/0/to/0/networks",
                json!([format!("{}/64", "0".repeat(41))]),
            ),
            vec![
                "spec.egress[0].to[0].networks[0]: Too long: may not be more than 43 bytes",
                NOT_CHECKED,
            ],
        ),
        (
            with("/egress/2/to/0/domainNames", json!(["example"])),
            vec![
                "spec.egress[2].to[0].domainNames[0]: Invalid value: \"example\": spec.egress[2].to[0].domainNames[0] in body should match '^(\\*\\.)?([a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\\.)+[a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\\.?$'",
            ],
        ),
    ];
    for (obj, want) in cases {
        assert_eq!(errors(&obj), want, "{}", obj["spec"]);
    }
    let mut no_spec = cnp(json!({}));
    no_spec.as_object_mut().unwrap().remove("spec");
    assert_eq!(errors(&no_spec), ["spec: Required value", NOT_CHECKED]);
    let mut namespaced = cnp(base());
    namespaced["metadata"]["namespace"] = json!("default");
    assert_eq!(
        errors(&namespaced),
        ["metadata.namespace: Forbidden: not allowed on this type"]
    );
}

#[test]
fn cel_rules_with_their_messages() {
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            with(
                "/ingress/0/protocols/1/udp/destinationPort/range",
                json!({"start": 2000, "end": 2000}),
            ),
            vec![
                "spec.ingress[0].protocols[1].udp.destinationPort.range: Invalid value: \"object\": Start port must be less than End port",
            ],
        ),
        (
            with(
                "/egress/0/to/0/networks",
                json!([
                    "10.0.0.0",
                    "010.0.0.0/8",
                    "10.0.0.0/33",
                    "::ffff:10.0.0.0/104",
                    "10.0.0.0/08"
                ]),
            ),
            vec![
                "spec.egress[0].to[0].networks[0]: Invalid value: \"string\": Invalid CIDR format provided",
                "spec.egress[0].to[0].networks[1]: Invalid value: \"string\": Invalid CIDR format provided",
                "spec.egress[0].to[0].networks[2]: Invalid value: \"string\": Invalid CIDR format provided",
                "spec.egress[0].to[0].networks[3]: Invalid value: \"string\": Invalid CIDR format provided",
                "spec.egress[0].to[0].networks[4]: Invalid value: \"string\": Invalid CIDR format provided",
            ],
        ),
        (
            with(
                "/egress/0/protocols",
                json!([{"destinationNamedPort": "http"}]),
            ),
            vec![
                "spec.egress[0]: Invalid value: \"object\": networks/nodes/domainNames peer cannot be set with namedPorts since there are no namedPorts for networks/nodes/domainNames",
            ],
        ),
    ];
    for (obj, want) in cases {
        assert_eq!(errors(&obj), want, "{}", obj["spec"]);
    }
    assert!(is_cidr("10.1.2.3/8") && is_cidr("fd00::/8") && is_cidr("0.0.0.0/0"));
}

#[test]
fn status_conditions() {
    let mut obj = cnp(base());
    obj["status"] = json!({"conditions": [
        {"type": "Ready", "status": "True", "reason": "Programmed", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
    ]});
    assert_eq!(errors(&obj), Vec::<String>::new());
    obj["status"] = json!({"conditions": [
        {"type": "Ready", "status": "Yes", "reason": "", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "Ready", "status": "True", "reason": "ok", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": -1},
    ]});
    assert_eq!(
        errors(&obj),
        [
            "status.conditions[0].reason: Invalid value: \"\": status.conditions[0].reason in body should be at least 1 chars long",
            "status.conditions[0].reason: Invalid value: \"\": status.conditions[0].reason in body should match '^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$'",
            "status.conditions[0].status: Unsupported value: \"Yes\": supported values: \"True\", \"False\", \"Unknown\"",
            "status.conditions[1].observedGeneration: Invalid value: -1: status.conditions[1].observedGeneration in body should be greater than or equal to 0",
            "status.conditions[1]: Duplicate value: {\"type\":\"Ready\"}",
            NOT_CHECKED,
        ]
    );
    obj["status"] = json!({});
    assert_eq!(
        errors(&obj),
        ["status.conditions: Required value", NOT_CHECKED]
    );
}
