//! kubectl 1.32 against a started apiserver, for the policy kinds: `networking.k8s.io/v1`
//! NetworkPolicies (apply, `get netpol` as kubectl prints its table, `describe` as kubectl's
//! NetworkPolicy describer writes it, `explain`, `get -w` seeing a change, patches, refusals
//! with upstream's messages) and `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicies
//! (apply, the CRD's printer columns, the CRD's refusals, no strategic merge patch).
//!
//! The tests skip, saying so, where kubectl is not installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use common::kubectl::Kubectl;
use common::{Backend, TestServer};

const POLICIES: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web
  namespace: shop
  labels: {team: web}
spec:
  podSelector:
    matchLabels: {app: web}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {team: front}
      podSelector:
        matchLabels: {role: client}
    - ipBlock:
        cidr: 172.17.0.0/16
        except: [172.17.1.0/24, 172.17.2.0/24]
    ports:
    - {protocol: TCP, port: 80}
    - {port: http}
    - {protocol: UDP, port: 32000, endPort: 32768}
  - {}
  egress:
  - to:
    - namespaceSelector: {}
    ports:
    - {protocol: UDP, port: 53}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: shop}
spec:
  podSelector: {}
"#;

const WEB_DESCRIBED: &str = "Name:         web
Namespace:    shop
Created on:   CREATED
Labels:       team=web
Annotations:  <none>
Spec:
  PodSelector:     app=web
  Allowing ingress traffic:
    To Port: 80/TCP
    To Port: http/TCP
    To Port Range: 32000-32768/UDP
    From:
      NamespaceSelector: team=front
      PodSelector: role=client
    From:
      IPBlock:
        CIDR: 172.17.0.0/16
        Except: 172.17.1.0/24, 172.17.2.0/24
    ----------
    To Port: <any> (traffic allowed to all ports)
    From: <any> (traffic not restricted by source)
  Allowing egress traffic:
    To Port: 53/UDP
    To:
      NamespaceSelector: <none>
  Policy Types: Ingress, Egress
";

const DENY_ALL_DESCRIBED: &str = "Name:         deny-all
Namespace:    shop
Created on:   CREATED
Labels:       <none>
Annotations:  <none>
Spec:
  PodSelector:     <none> (Allowing the specific traffic to all pods in this namespace)
  Allowing ingress traffic:
    <none> (Selected pods are isolated for ingress connectivity)
  Not affecting egress traffic
  Policy Types: Ingress
";

const BAD_POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: shop}
spec:
  podSelector: {matchExpressions: [{key: app, operator: Equals, values: [web]}]}
  ingress:
  - from: [{}, {podSelector: {}, ipBlock: {cidr: 10.0.0.0/8}}, {ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]
    ports: [{port: 8080, endPort: 80}, {port: http, endPort: 90}, {endPort: 9}, {port: 80, protocol: ICMP}]
  policyTypes: [Ingress, Sideways]
"#;

const BAD_POLICY_REFUSED: &str = "The NetworkPolicy \"bad\" is invalid: 
* spec.podSelector.matchExpressions[0].operator: Invalid value: \"Equals\": not a valid selector operator
* spec.ingress[0].ports[0].endPort: Invalid value: 80: must be greater than or equal to `port`
* spec.ingress[0].ports[1].endPort: Invalid value: 90: may not be specified when `port` is non-numeric
* spec.ingress[0].ports[2].endPort: Invalid value: 9: may not be specified when `port` is not specified
* spec.ingress[0].ports[3].protocol: Unsupported value: \"ICMP\": supported values: \"TCP\", \"UDP\", \"SCTP\"
* spec.ingress[0].from[0]: Required value: must specify a peer
* spec.ingress[0].from[1]: Forbidden: may not specify both ipBlock and another peer
* spec.ingress[0].from[2].ipBlock.except[0]: Invalid value: \"10.1.0.0/24\": must be a strict subset of `cidr`
* spec.policyTypes[1]: Unsupported value: \"Sideways\": supported values: \"Ingress\", \"Egress\"
";

const CLUSTER_POLICIES: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: protect-db}
spec:
  tier: Admin
  priority: 10
  subject:
    pods:
      namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}
      podSelector: {matchLabels: {app: db}}
  ingress:
  - name: from-web
    action: Accept
    from:
    - pods:
        namespaceSelector: {}
        podSelector: {matchLabels: {app: web}}
    protocols:
    - tcp: {destinationPort: {number: 5432}}
  - name: rest
    action: Deny
    from: [{namespaces: {}}]
  egress:
  - action: Deny
    to: [{networks: [0.0.0.0/0, "::/0"]}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: baseline}
spec:
  tier: Baseline
  priority: 1000
  subject: {namespaces: {}}
  ingress:
  - action: Pass
    from: [{namespaces: {}}]
"#;

const BAD_CLUSTER_POLICY: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: bad}
spec:
  tier: Cluster
  priority: 1001
  subject: {namespaces: {}, pods: {podSelector: {}}}
  egress:
  - action: Allow
    to: [{networks: [10.0.0.0/8, 10.0.0.0/8]}]
"#;

const BAD_CLUSTER_POLICY_REFUSED: &str = "The ClusterNetworkPolicy \"bad\" is invalid: 
* spec.tier: Unsupported value: \"Cluster\": supported values: \"Admin\", \"Baseline\"
* spec.priority: Invalid value: 1001: spec.priority in body should be less than or equal to 1000
* spec.subject: Too many: 2: must have at most 1 item
* spec.egress[0].action: Unsupported value: \"Allow\": supported values: \"Accept\", \"Deny\", \"Pass\"
* spec.egress[0].to[0].networks[1]: Duplicate value: \"10.0.0.0/8\"
* <nil>: Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation
";

const CEL_REFUSED_POLICY: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: bad2}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {}}
  egress:
  - action: Deny
    to: [{networks: [10.0.0.0]}]
    protocols: [{destinationNamedPort: http}, {tcp: {destinationPort: {range: {start: 90, end: 80}}}}]
"#;

const CEL_REFUSED: &str = "The ClusterNetworkPolicy \"bad2\" is invalid: 
* spec.egress[0].protocols[1].tcp.destinationPort.range: Invalid value: \"object\": Start port must be less than End port
* spec.egress[0].to[0].networks[0]: Invalid value: \"string\": Invalid CIDR format provided
* spec.egress[0]: Invalid value: \"object\": networks/nodes/domainNames peer cannot be set with namedPorts since there are no namedPorts for networks/nodes/domainNames
";

/// The AGE cell of the table row of `name` (its last column).
fn age_of(table: &str, name: &str) -> String {
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in\n{table}"));
    let age = row.split_whitespace().last().unwrap().to_owned();
    assert!(age.ends_with('s') && age.len() <= 3, "{age} in\n{table}");
    age
}

/// `metav1.Time` as describe's `%s` prints it in UTC: `2026-12-07 13:23:42 +0000 UTC`.
fn go_time(rfc3339: &str) -> String {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
    t.with_timezone(&chrono::Utc)
        .format("%Y-%m-%d %H:%M:%S +0000 UTC")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_applies_gets_describes_and_explains_network_policies() {
    let ts = TestServer::start(Backend::Embedded).await;
    let k = Kubectl::new(&ts);
    tokio::task::spawn_blocking(move || {
        let file = k.file("policies.yaml", POLICIES);
        let out = k.ok(&["apply", "-f", &file], None);
        assert_eq!(
            out,
            "namespace/shop created\nnetworkpolicy.networking.k8s.io/web created\nnetworkpolicy.networking.k8s.io/deny-all created\n"
        );
        let table = k.ok(&["get", "netpol", "-n", "shop"], None);
        let (a, b) = (age_of(&table, "deny-all"), age_of(&table, "web"));
        assert_eq!(
            table,
            format!(
                "NAME       POD-SELECTOR   AGE\ndeny-all   <none>         {a}\nweb        app=web        {b}\n"
            )
        );
        for name in ["networkpolicies", "networkpolicy", "networkpolicies.networking.k8s.io"] {
            let names = k.ok(&["get", name, "-n", "shop", "-o", "name"], None);
            assert_eq!(
                names,
                "networkpolicy.networking.k8s.io/deny-all\nnetworkpolicy.networking.k8s.io/web\n"
            );
        }
        // Defaults as upstream: the named port's protocol, policyTypes of the deny-all.
        let proto = k.ok(&["get", "netpol", "web", "-n", "shop", "-o", "jsonpath={.spec.ingress[0].ports[1].protocol}"], None);
        assert_eq!(proto, "TCP");
        let types = k.ok(&["get", "netpol", "deny-all", "-n", "shop", "-o", "jsonpath={.spec.policyTypes}"], None);
        assert_eq!(types, "[\"Ingress\"]");

        for (name, want) in [("web", WEB_DESCRIBED), ("deny-all", DENY_ALL_DESCRIBED)] {
            let created = k.ok(&["get", "netpol", name, "-n", "shop", "-o", "jsonpath={.metadata.creationTimestamp}"], None);
            let text = k.ok(&["describe", "netpol", name, "-n", "shop"], None);
            let mut want = want.replace("CREATED", &go_time(&created));
            if k.minor() < 21 {
                // kubectl before endPort (Debian 12's 1.20) prints a range's first port only.
                want = want.replace("To Port Range: 32000-32768/UDP", "To Port: 32000/UDP");
            }
            assert_eq!(text, want);
        }

        let explained = k.ok(&["explain", "networkpolicy.spec.ingress"], None);
        let end_port = k.ok(&["explain", "netpol.spec.ingress.ports.endPort"], None);
        if k.minor() >= 27 {
            // From the OpenAPI v3 schemas.
            assert!(
                explained.starts_with("GROUP:      networking.k8s.io\nKIND:       NetworkPolicy\nVERSION:    v1\n\nFIELD: ingress <[]NetworkPolicyIngressRule>\n"),
                "{explained}"
            );
            assert!(explained.contains("FIELDS:\n  from\t<[]NetworkPolicyPeer>\n"), "{explained}");
            assert!(explained.contains("\n  ports\t<[]NetworkPolicyPort>\n"), "{explained}");
            assert!(end_port.contains("FIELD: endPort <integer>"), "{end_port}");
        } else {
            // From the OpenAPI v2 document.
            assert!(
                explained.starts_with("KIND:     NetworkPolicy\nVERSION:  networking.k8s.io/v1\n\nRESOURCE: ingress <[]Object>\n"),
                "{explained}"
            );
            assert!(explained.contains("FIELDS:\n   from\t<[]Object>\n"), "{explained}");
            assert!(explained.contains("\n   ports\t<[]Object>\n"), "{explained}");
            assert!(end_port.contains("FIELD:    endPort <integer>"), "{end_port}");
        }

        // A strategic merge patch (kubectl patch's default) and a refused JSON patch.
        let out = k.ok(&["patch", "netpol", "web", "-n", "shop", "-p", r#"{"spec":{"podSelector":{"matchLabels":{"app":"store"}}}}"#], None);
        assert_eq!(out, "networkpolicy.networking.k8s.io/web patched\n");
        let selector = k.ok(&["get", "netpol", "web", "-n", "shop", "-o", "jsonpath={.spec.podSelector.matchLabels}"], None);
        assert_eq!(selector, r#"{"app":"store"}"#);
        let out = k.run(
            &["patch", "netpol", "web", "-n", "shop", "--type=json", "-p",
              r#"[{"op":"replace","path":"/spec/ingress/0/ports/0/port","value":99999}]"#],
            None,
        );
        assert_eq!(out.code, 1);
        assert_eq!(
            out.stderr,
            "The NetworkPolicy \"web\" is invalid: spec.ingress[0].ports[0].port: Invalid value: 99999: must be between 1 and 65535, inclusive\n"
        );

        // Every invalid case of one policy, with upstream's fields and messages.
        let file = k.file("bad.yaml", BAD_POLICY);
        let out = k.run(&["apply", "-f", &file], None);
        assert_eq!(out.code, 1);
        assert_eq!(out.stderr, BAD_POLICY_REFUSED);

        let out = k.ok(&["delete", "netpol", "--all", "-n", "shop"], None);
        assert_eq!(
            out,
            "networkpolicy.networking.k8s.io \"deny-all\" deleted\nnetworkpolicy.networking.k8s.io \"web\" deleted\n"
        );
    })
    .await
    .unwrap();
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_get_watch_sees_a_network_policy_change() {
    let ts = TestServer::start(Backend::Embedded).await;
    let k = Kubectl::new(&ts);
    tokio::task::spawn_blocking(move || {
        let file = k.file("policies.yaml", POLICIES);
        k.ok(&["apply", "-f", &file], None);
        let mut watch = k
            .command(&["get", "netpol", "web", "-n", "shop", "-w", "--no-headers"])
            .spawn()
            .expect("kubectl get -w");
        let stdout = watch.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let next = || {
            rx.recv_timeout(Duration::from_secs(20))
                .expect("a line from kubectl get -w")
        };
        let first = next();
        assert!(first.starts_with("web   app=web   "), "{first}");
        k.ok(
            &[
                "patch",
                "netpol",
                "web",
                "-n",
                "shop",
                "--type=merge",
                "-p",
                r#"{"spec":{"podSelector":{"matchLabels":{"app":"cart"}}}}"#,
            ],
            None,
        );
        let changed = next();
        assert!(changed.starts_with("web   app=cart   "), "{changed}");
        watch.kill().unwrap();
        watch.wait().unwrap();
    })
    .await
    .unwrap();
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_applies_gets_and_refuses_cluster_network_policies() {
    let ts = TestServer::start(Backend::Embedded).await;
    let k = Kubectl::new(&ts);
    tokio::task::spawn_blocking(move || {
        let file = k.file("cnp.yaml", CLUSTER_POLICIES);
        let out = k.ok(&["apply", "-f", &file], None);
        assert_eq!(
            out,
            "clusternetworkpolicy.policy.networking.k8s.io/protect-db created\nclusternetworkpolicy.policy.networking.k8s.io/baseline created\n"
        );
        let table = k.ok(&["get", "cnp"], None);
        let (a, b) = (age_of(&table, "baseline"), age_of(&table, "protect-db"));
        assert_eq!(
            table,
            format!(
                "NAME         TIER       PRIORITY   AGE\nbaseline     Baseline   1000       {a}\nprotect-db   Admin      10         {b}\n"
            )
        );
        let names = k.ok(&["get", "clusternetworkpolicies.policy.networking.k8s.io", "-o", "name"], None);
        assert_eq!(
            names,
            "clusternetworkpolicy.policy.networking.k8s.io/baseline\nclusternetworkpolicy.policy.networking.k8s.io/protect-db\n"
        );
        // Applied again unchanged, then changed: kubectl sends a JSON merge patch.
        let out = k.ok(&["apply", "-f", &file], None);
        assert!(out.contains("protect-db unchanged"), "{out}");
        let file = k.file("cnp.yaml", &CLUSTER_POLICIES.replace("priority: 1000", "priority: 900"));
        let out = k.ok(&["apply", "-f", &file], None);
        assert!(out.contains("clusternetworkpolicy.policy.networking.k8s.io/baseline configured"), "{out}");
        let priority = k.ok(&["get", "cnp", "baseline", "-o", "jsonpath={.spec.priority}"], None);
        assert_eq!(priority, "900");
        // No strategic merge patch for a custom resource.
        let out = k.run(&["patch", "cnp", "baseline", "-p", r#"{"spec":{"priority":5}}"#], None);
        assert_eq!(out.code, 1);
        let refused = "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json\n";
        if k.minor() >= 21 {
            // The server's refusal, which kubectl names the patch type and kind in.
            assert_eq!(out.stderr, format!("error: application/strategic-merge-patch+json is not supported by policy.networking.k8s.io/v1alpha2, Kind=ClusterNetworkPolicy: {refused}"));
        } else {
            // Debian 12's 1.20 prints the server's refusal as it is.
            assert_eq!(out.stderr, format!("Error from server (UnsupportedMediaType): {refused}"));
        }

        let explained = k.ok(&["explain", "cnp.spec.tier"], None);
        let want = if k.minor() >= 27 {
            "GROUP:      policy.networking.k8s.io\nKIND:       ClusterNetworkPolicy\nVERSION:    v1alpha2\n\nFIELD: tier <string>\nENUM:\n    Admin\n    Baseline\n"
        } else {
            "KIND:     ClusterNetworkPolicy\nVERSION:  policy.networking.k8s.io/v1alpha2\n\nFIELD:    tier <string>\n\nDESCRIPTION:\n     Where the policy is evaluated: Admin"
        };
        assert!(explained.starts_with(want), "{explained}");

        for (name, manifest, refused) in [
            ("bad.yaml", BAD_CLUSTER_POLICY, BAD_CLUSTER_POLICY_REFUSED),
            ("cel.yaml", CEL_REFUSED_POLICY, CEL_REFUSED),
        ] {
            let file = k.file(name, manifest);
            let out = k.run(&["apply", "-f", &file], None);
            assert_eq!(out.code, 1);
            assert_eq!(out.stderr, refused);
        }
    })
    .await
    .unwrap();
    ts.stop().await;
}
