//! kubectl against a started apiserver, as a user types it: create and apply of a
//! multi-document manifest, get in every output format, describe, label, delete, and the
//! errors a user sees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::kubectl::Kubectl;
use common::{Backend, TestServer};

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: shop
  labels: {app: web}
spec:
  containers:
  - name: main
    image: busybox:1.36
    ports:
    - {name: http, containerPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
"#;

/// kubectl's tables: the header row, then one row per object.
fn header(table: &str) -> Vec<String> {
    table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_as_a_user_types_it() {
    let ts = TestServer::start(Backend::Embedded).await;
    let k = Kubectl::new(&ts);
    tokio::task::spawn_blocking(move || {
        let out = k.ok(&["create", "-f", "-"], Some(MANIFEST));
        assert_eq!(out.lines().collect::<Vec<_>>(), vec!["namespace/shop created", "pod/web-0 created", "service/web created"]);

        let again = k.run(&["create", "-f", "-"], Some(MANIFEST));
        assert_eq!(again.code, 1);
        assert!(again.stderr.contains("Error from server (AlreadyExists): error when creating \"STDIN\": namespaces \"shop\" already exists"), "{}", again.stderr);

        let applied = MANIFEST.replace("labels: {app: web}", "labels: {app: web, tier: front}");
        let out = k.ok(&["apply", "-f", "-"], Some(&applied));
        assert!(out.contains("pod/web-0 configured"), "{out}");
        assert!(out.contains("service/web configured") || out.contains("service/web unchanged"), "{out}");
        let out = k.ok(&["apply", "-f", "-"], Some(&applied));
        assert!(out.contains("pod/web-0 unchanged"), "{out}");

        let pods = k.ok(&["get", "pods", "-n", "shop", "-o", "wide"], None);
        assert_eq!(header(&pods), ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED", "NODE", "READINESS", "GATES"]);
        assert!(pods.lines().nth(1).unwrap().starts_with("web-0 "), "{pods}");
        assert!(pods.contains("Pending"), "{pods}");

        let svc = k.ok(&["get", "svc", "web", "-n", "shop", "-o", "yaml"], None);
        assert!(svc.contains("clusterIP: 10."), "{svc}");
        assert!(svc.contains("kind: Service"), "{svc}");
        let svc_json = k.ok(&["get", "services", "-n", "shop", "-o", "json"], None);
        let v: serde_json::Value = serde_json::from_str(&svc_json).unwrap();
        assert_eq!(v["items"][0]["spec"]["ports"][0]["targetPort"], "http");
        let table = k.ok(&["get", "svc", "-n", "shop"], None);
        assert_eq!(header(&table), ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]);
        assert!(table.contains("80/TCP"), "{table}");

        let ep = k.ok(&["get", "ep", "-n", "shop"], None);
        assert_eq!(header(&ep), ["NAME", "ENDPOINTS", "AGE"]);

        let node = "apiVersion: v1\nkind: Node\nmetadata:\n  name: node1\n";
        k.ok(&["create", "-f", "-"], Some(node));
        let nodes = k.ok(&["get", "nodes", "-o", "wide"], None);
        assert_eq!(header(&nodes)[..5], ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
        let cidr = k.ok(&["get", "node", "node1", "-o", "jsonpath={.spec.podCIDR}"], None);
        assert!(cidr.starts_with("10.244.") && cidr.ends_with("/24"), "{cidr}");

        let described = k.ok(&["describe", "pod", "web-0", "-n", "shop"], None);
        assert!(described.contains("Name:") && described.contains("web-0"), "{described}");
        assert!(described.contains("busybox:1.36"), "{described}");
        let described = k.ok(&["describe", "svc", "web", "-n", "shop"], None);
        assert!(described.contains("Selector:") && described.contains("app=web"), "{described}");

        let out = k.ok(&["label", "pod", "web-0", "-n", "shop", "env=prod"], None);
        assert_eq!(out.trim(), "pod/web-0 labeled");
        let selected = k.ok(&["get", "pods", "-n", "shop", "-l", "env=prod", "-o", "name"], None);
        assert_eq!(selected.trim(), "pod/web-0");
        let out = k.ok(&["label", "pod", "web-0", "-n", "shop", "env-"], None);
        if k.at_least(21, "`kubectl label` saying a removal unlabeled") {
            assert_eq!(out.trim(), "pod/web-0 unlabeled");
        }
        let selected = k.ok(&["get", "pods", "-n", "shop", "-l", "env=prod", "-o", "name"], None);
        assert_eq!(selected, "");

        let missing = k.run(&["get", "pod", "nope", "-n", "shop"], None);
        assert_eq!(missing.code, 1);
        assert_eq!(missing.stderr.trim(), "Error from server (NotFound): pods \"nope\" not found");

        let bad = "apiVersion: v1\nkind: Service\nmetadata:\n  name: bad\n  namespace: shop\nspec:\n  ports:\n  - port: 70000\n";
        let out = k.run(&["create", "-f", "-"], Some(bad));
        assert_eq!(out.code, 1);
        assert!(out.stderr.contains("The Service \"bad\" is invalid"), "{}", out.stderr);
        assert!(out.stderr.contains("spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"), "{}", out.stderr);

        let out = k.ok(&["delete", "svc", "web", "-n", "shop"], None);
        assert_eq!(out.trim(), "service \"web\" deleted");
        // Deleting the namespace waits until the namespace controller has emptied it.
        let out = k.ok(&["delete", "namespace", "shop"], None);
        assert_eq!(out.trim(), "namespace \"shop\" deleted");
        let gone = k.run(&["get", "ns", "shop"], None);
        assert_eq!(gone.code, 1, "{}", gone.stdout);
    })
    .await
    .unwrap();
    ts.stop().await;
}
