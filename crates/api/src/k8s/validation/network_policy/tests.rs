//! Table-driven checks of NetworkPolicy defaulting and validation against upstream's messages.

use serde_json::{Value, json};

use super::*;

fn policy(spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "web", "namespace": "shop"}, "spec": spec})
}

fn errors(obj: &Value) -> Vec<String> {
    validate(obj).iter().map(ToString::to_string).collect()
}

#[test]
fn defaults_as_upstream() {
    let mut np = policy(json!({
        "ingress": [{"ports": [{"port": 80}]}],
        "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}],
    }));
    apply_defaults(&mut np);
    assert_eq!(np["spec"]["podSelector"], json!({}));
    assert_eq!(np["spec"]["ingress"][0]["ports"][0]["protocol"], "TCP");
    assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "UDP");
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    let mut ingress_only = policy(json!({"podSelector": {"matchLabels": {"app": "web"}}}));
    apply_defaults(&mut ingress_only);
    assert_eq!(ingress_only["spec"]["policyTypes"], json!(["Ingress"]));
    let mut egress_only = policy(json!({"policyTypes": ["Egress"]}));
    apply_defaults(&mut egress_only);
    assert_eq!(egress_only["spec"]["policyTypes"], json!(["Egress"]));
    let mut bare = policy(Value::Null);
    bare.as_object_mut().unwrap().remove("spec");
    apply_defaults(&mut bare);
    assert_eq!(
        bare["spec"],
        json!({"podSelector": {}, "policyTypes": ["Ingress"]})
    );
}

#[test]
fn valid_policies() {
    let mut np = policy(json!({
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{
            "from": [
                {"podSelector": {"matchLabels": {"app": "shop"}},
                 "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]}},
                {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24", "10.0.2.7/32"]}},
                {"ipBlock": {"cidr": "fd00::/64", "except": ["fd00::/96"]}},
            ],
            "ports": [{"port": 80}, {"port": "http"}, {"port": 32000, "endPort": 32768}, {"protocol": "SCTP"}],
        }],
        "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"port": 53, "protocol": "UDP"}]}],
        "policyTypes": ["Ingress", "Egress"],
    }));
    apply_defaults(&mut np);
    assert_eq!(errors(&np), Vec::<String>::new());
    let mut empty = policy(json!({}));
    apply_defaults(&mut empty);
    assert_eq!(errors(&empty), Vec::<String>::new());
}

#[test]
fn refusals_with_upstream_fields_and_messages() {
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({"ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]}),
            vec![
                "spec.ingress[0].ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"TCP\", \"UDP\", \"SCTP\"",
            ],
        ),
        (
            json!({"ingress": [{"ports": [{"port": 0}]}]}),
            vec![
                "spec.ingress[0].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            ],
        ),
        (
            json!({"egress": [{"ports": [{"port": 70000}]}]}),
            vec![
                "spec.egress[0].ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
            ],
        ),
        (
            json!({"ingress": [{"ports": [{"port": "HTTP"}]}]}),
            vec![
                "spec.ingress[0].ports[0].port: Invalid value: \"HTTP\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.ingress[0].ports[0].port: Invalid value: \"HTTP\": must contain at least one letter (a-z)",
            ],
        ),
        (
            json!({"ingress": [{"ports": [{"port": "a-very-long-port-name"}]}]}),
            vec![
                "spec.ingress[0].ports[0].port: Invalid value: \"a-very-long-port-name\": must be no more than 15 characters",
            ],
        ),
        (
            json!({"ingress": [{"ports": [{"port": 8080, "endPort": 80}]}]}),
            vec![
                "spec.ingress[0].ports[0].endPort: Invalid value: 80: must be greater than or equal to `port`",
            ],
        ),
        (
            json!({"ingress": [{"ports": [{"port": 80, "endPort": 70000}]}]}),
            vec![
                "spec.ingress[0].ports[0].endPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            ],
        ),
        (
            json!({"ingress": [{"ports": [{"port": "http", "endPort": 90}]}]}),
            vec![
                "spec.ingress[0].ports[0].endPort: Invalid value: 90: may not be specified when `port` is non-numeric",
            ],
        ),
        (
            json!({"egress": [{"ports": [{"endPort": 90}]}]}),
            vec![
                "spec.egress[0].ports[0].endPort: Invalid value: 90: may not be specified when `port` is not specified",
            ],
        ),
        (
            json!({"ingress": [{"from": [{}]}]}),
            vec!["spec.ingress[0].from[0]: Required value: must specify a peer"],
        ),
        (
            json!({"egress": [{"to": [{"podSelector": {}, "ipBlock": {"cidr": "10.0.0.0/8"}}]}]}),
            vec!["spec.egress[0].to[0]: Forbidden: may not specify both ipBlock and another peer"],
        ),
        (
            json!({"ingress": [{"from": [{"ipBlock": {"cidr": ""}}]}]}),
            vec!["spec.ingress[0].from[0].ipBlock.cidr: Required value"],
        ),
        (
            json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0"}}]}]}),
            vec![
                "spec.ingress[0].from[0].ipBlock.cidr: Invalid value: \"10.0.0.0\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ],
        ),
        (
            json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24", "10.0.0.0/16", "10.0.0.0/8", "fd00::/64", "x"]}}]}]}),
            vec![
                "spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: \"10.1.0.0/24\": must be a strict subset of `cidr`",
                "spec.ingress[0].from[0].ipBlock.except[1]: Invalid value: \"10.0.0.0/16\": must be a strict subset of `cidr`",
                "spec.ingress[0].from[0].ipBlock.except[2]: Invalid value: \"10.0.0.0/8\": must be a strict subset of `cidr`",
                "spec.ingress[0].from[0].ipBlock.except[3]: Invalid value: \"fd00::/64\": must be a strict subset of `cidr`",
                "spec.ingress[0].from[0].ipBlock.except[4]: Invalid value: \"x\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ],
        ),
        (
            json!({"ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Equals", "values": ["a"]}]}}]}]}),
            vec![
                "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].operator: Invalid value: \"Equals\": not a valid selector operator",
            ],
        ),
        (
            json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn"}]}}),
            vec![
                "spec.podSelector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
            ],
        ),
        (
            json!({"policyTypes": ["Ingress", "Egress", "Ingress"]}),
            vec![
                "spec.policyTypes: Invalid value: [\"Ingress\",\"Egress\",\"Ingress\"]: may not specify more than two policyTypes",
            ],
        ),
        (
            json!({"policyTypes": ["Ingress", "Both"]}),
            vec![
                "spec.policyTypes[1]: Unsupported value: \"Both\": supported values: \"Ingress\", \"Egress\"",
            ],
        ),
    ];
    for (spec, want) in cases {
        let mut np = policy(spec.clone());
        apply_defaults(&mut np);
        assert_eq!(errors(&np), want, "{spec}");
    }
    // Upstream allows a type twice (two at most, each known).
    let twice = policy(json!({"policyTypes": ["Ingress", "Ingress"]}));
    assert!(errors(&twice).is_empty());
    let bad_name = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "Web", "namespace": "shop"}, "spec": {}});
    assert!(
        errors(&bad_name)[0]
            .starts_with("metadata.name: Invalid value: \"Web\": a lowercase RFC 1123 subdomain")
    );
}

#[test]
fn updates_check_the_spec_twice_and_keep_old_selector_values() {
    let old = policy(
        json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a b"]}]}}),
    );
    let mut new = old.clone();
    new["metadata"]["resourceVersion"] = json!("2");
    assert!(validate_update(&new, &old).is_empty());
    let good = policy(json!({}));
    let errs: Vec<String> = validate_update(&new, &good)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0], errs[1]);
    assert!(
        errs[0]
            .starts_with("spec.podSelector.matchExpressions[0].values[0]: Invalid value: \"a b\"")
    );
}
