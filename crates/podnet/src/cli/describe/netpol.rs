//! `podnet describe networkpolicy`: kubectl's NetworkPolicy describer
//! (`describeNetworkPolicy`, `describeNetworkPolicySpec`, `printNetworkPolicySpecIngressFrom`
//! and `…EgressTo` in k8s.io/kubectl/pkg/describe), its wording and odd indentation kept
//! (`PodSelector:` is followed by a level-2 indent; peers sit two spaces under their `From:`).
//! It reads the typed k8s-openapi `NetworkPolicy`. kubectl shows no events for these.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use podnet_api::k8s::selector;
use serde_json::Value;

use super::{Out, annotations_multiline, labels_multiline};

/// What `printNetworkPolicySpecIngressFrom` and `…EgressTo` differ in.
struct Direction {
    peers: &'static str,
    isolated: &'static str,
    any_peer: &'static str,
}

const INGRESS: Direction = Direction {
    peers: "From",
    isolated: "<none> (Selected pods are isolated for ingress connectivity)",
    any_peer: "From: <any> (traffic not restricted by source)",
};

const EGRESS: Direction = Direction {
    peers: "To",
    isolated: "<none> (Selected pods are isolated for egress connectivity)",
    any_peer: "To: <any> (traffic not restricted by destination)",
};

/// The indent kubectl passes its rule printers (`initialIndent`).
const INDENT: &str = "    ";

/// The description of one NetworkPolicy (`obj` in the wire form).
pub fn describe_network_policy(obj: &Value) -> String {
    let np: NetworkPolicy = serde_json::from_value(obj.clone()).unwrap_or_default();
    let meta = &np.metadata;
    let mut out = Out::new();
    out.w(
        0,
        &format!("Name:\t{}\n", meta.name.as_deref().unwrap_or_default()),
    );
    out.w(
        0,
        &format!(
            "Namespace:\t{}\n",
            meta.namespace.as_deref().unwrap_or_default()
        ),
    );
    out.w(
        0,
        &format!(
            "Created on:\t{}\n",
            go_time(meta.creation_timestamp.as_ref())
        ),
    );
    labels_multiline(&mut out, "Labels", &obj["metadata"]["labels"]);
    annotations_multiline(&mut out, "Annotations", &obj["metadata"]["annotations"]);
    describe_spec(&mut out, &np.spec.unwrap_or_default());
    out.finish()
}

fn describe_spec(out: &mut Out, spec: &NetworkPolicySpec) {
    out.w(0, "Spec:\n");
    out.w(1, "PodSelector: ");
    match &spec.pod_selector {
        Some(sel) if !selector::is_empty(sel) => {
            out.w(2, &format!("{}\n", selector::format(Some(sel))));
        }
        _ => out.w(
            2,
            "<none> (Allowing the specific traffic to all pods in this namespace)\n",
        ),
    }
    let types = spec.policy_types.as_deref().unwrap_or_default();
    let has = |t: &str| types.iter().any(|p| p == t);
    if has("Ingress") {
        out.w(1, "Allowing ingress traffic:\n");
        let rules: Vec<(&[NetworkPolicyPort], Option<&[NetworkPolicyPeer]>)> = spec
            .ingress
            .iter()
            .flatten()
            .map(|r| (r.ports.as_deref().unwrap_or_default(), r.from.as_deref()))
            .collect();
        print_rules(out, &rules, &INGRESS);
    } else {
        out.w(1, "Not affecting ingress traffic\n");
    }
    if has("Egress") {
        out.w(1, "Allowing egress traffic:\n");
        let rules: Vec<(&[NetworkPolicyPort], Option<&[NetworkPolicyPeer]>)> = spec
            .egress
            .iter()
            .flatten()
            .map(|r| (r.ports.as_deref().unwrap_or_default(), r.to.as_deref()))
            .collect();
        print_rules(out, &rules, &EGRESS);
    } else {
        out.w(1, "Not affecting egress traffic\n");
    }
    let types = if types.is_empty() {
        "<none>".to_owned()
    } else {
        types.join(", ")
    };
    out.w(1, &format!("Policy Types: {types}\n"));
}

/// The rules of one direction: their ports, then their peers, `----------` between rules.
fn print_rules(
    out: &mut Out,
    rules: &[(&[NetworkPolicyPort], Option<&[NetworkPolicyPeer]>)],
    d: &Direction,
) {
    if rules.is_empty() {
        out.w(0, &format!("{INDENT}{}\n", d.isolated));
        return;
    }
    for (i, (ports, peers)) in rules.iter().enumerate() {
        if ports.is_empty() {
            out.w(
                0,
                &format!("{INDENT}To Port: <any> (traffic allowed to all ports)\n"),
            );
        }
        for port in *ports {
            out.w(0, &format!("{INDENT}{}\n", port_line(port)));
        }
        match peers.filter(|p| !p.is_empty()) {
            None => out.w(0, &format!("{INDENT}{}\n", d.any_peer)),
            Some(peers) => {
                for peer in peers {
                    out.w(0, &format!("{INDENT}{}:\n", d.peers));
                    print_peer(out, peer);
                }
            }
        }
        if i != rules.len() - 1 {
            out.w(0, &format!("{INDENT}----------\n"));
        }
    }
}

/// `To Port: 80/TCP`, `To Port: http/TCP`, `To Port Range: 32000-32768/UDP` (a missing port
/// prints as Go prints a nil `*IntOrString`: `<nil>`).
fn port_line(port: &NetworkPolicyPort) -> String {
    let number = match &port.port {
        Some(IntOrString::Int(n)) => n.to_string(),
        Some(IntOrString::String(s)) => s.clone(),
        None => "<nil>".to_owned(),
    };
    let proto = port.protocol.as_deref().unwrap_or("TCP");
    match port.end_port {
        None => format!("To Port: {number}/{proto}"),
        Some(end) => format!("To Port Range: {number}-{end}/{proto}"),
    }
}

fn print_peer(out: &mut Out, peer: &NetworkPolicyPeer) {
    let line = |out: &mut Out, what: &str, sel| {
        out.w(
            1,
            &format!("{INDENT}{what}: {}\n", selector::format(Some(sel))),
        );
    };
    match (&peer.pod_selector, &peer.namespace_selector, &peer.ip_block) {
        (Some(pods), Some(namespaces), _) => {
            line(out, "NamespaceSelector", namespaces);
            line(out, "PodSelector", pods);
        }
        (Some(pods), None, _) => line(out, "PodSelector", pods),
        (None, Some(namespaces), _) => line(out, "NamespaceSelector", namespaces),
        (None, None, Some(block)) => {
            out.w(1, &format!("{INDENT}IPBlock:\n"));
            out.w(2, &format!("{INDENT}CIDR: {}\n", block.cidr));
            let except = block.except.as_deref().unwrap_or_default().join(", ");
            out.w(2, &format!("{INDENT}Except: {except}\n"));
        }
        (None, None, None) => {}
    }
}

/// A `metav1.Time` as Go's `%s` prints it, in local time: `2026-12-07 13:23:42 +0000 UTC`
/// (the zone by name when it is UTC, else by its offset, as Go does for zones without an
/// abbreviation); Go's zero time when there is none.
fn go_time(t: Option<&Time>) -> String {
    let utc = t.and_then(|Time(ts)| {
        let nanos = u32::try_from(ts.subsec_nanosecond()).ok()?;
        chrono::DateTime::from_timestamp(ts.as_second(), nanos)
    });
    let Some(utc) = utc else {
        return "0001-01-01 00:00:00 +0000 UTC".to_owned();
    };
    let local = utc.with_timezone(&chrono::Local);
    let offset = local.format("%z").to_string();
    let zone = if offset == "+0000" {
        "UTC".to_owned()
    } else {
        offset.clone()
    };
    format!("{} {offset} {zone}", local.format("%Y-%m-%d %H:%M:%S%.f"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn like_kubectl() {
        let np = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"team": "web"}},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}, {"podSelector": {}}],
                     "ports": [{"port": 53, "protocol": "UDP"}, {"protocol": "TCP"}]},
                    {},
                ],
            },
        });
        let text = describe_network_policy(&np);
        assert_eq!(
            text,
            "Name:         web\nNamespace:    shop\nCreated on:   0001-01-01 00:00:00 +0000 UTC\nLabels:       team=web\nAnnotations:  <none>\nSpec:\n  PodSelector:     app=web\n  Not affecting ingress traffic\n  Allowing egress traffic:\n    To Port: 53/UDP\n    To Port: <nil>/TCP\n    To:\n      IPBlock:\n        CIDR: 10.0.0.0/8\n        Except: \n    To:\n      PodSelector: <none>\n    ----------\n    To Port: <any> (traffic allowed to all ports)\n    To: <any> (traffic not restricted by destination)\n  Policy Types: Egress\n"
        );
    }
}
