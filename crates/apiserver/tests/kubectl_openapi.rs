//! kubectl against a started apiserver where it reads the OpenAPI documents: `kubectl apply` of
//! a `kind: List` (validated on the client against `/openapi/v2`, which kubectl fetches as
//! gnostic protobuf), `kubectl explain` (OpenAPI v3), `--validate=strict` refusing unknown
//! fields (on the client for a List, by the server for one object), and discovery as kubectl 1.32
//! asks for it (aggregated first, then the legacy documents). Also the documents over HTTP:
//! content negotiation and ETags.
//!
//! The tests that run kubectl skip, saying so, where it is not installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::kubectl::Kubectl;
use common::{Backend, TestServer};
use podnet_api::k8s::{kinds, openapi};

const LIST: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    name: shop
- apiVersion: v1
  kind: Namespace
  metadata:
    name: depot
- apiVersion: v1
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
      resources:
        limits: {cpu: 100m, memory: 64Mi}
- apiVersion: v1
  kind: Pod
  metadata:
    name: store-0
    namespace: depot
    labels: {app: store}
  spec:
    containers:
    - name: main
      image: busybox:1.36
- apiVersion: v1
  kind: Service
  metadata:
    name: web
    namespace: shop
  spec:
    selector: {app: web}
    ports:
    - {name: http, port: 80, targetPort: http}
- apiVersion: v1
  kind: Service
  metadata:
    name: store
    namespace: depot
  spec:
    selector: {app: store}
    ports:
    - {port: 5432, targetPort: 5432}
"#;

/// The Accept header kubectl 1.32 sends for `/api` and `/apis`.
const AGGREGATED_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

/// A response to a plain HTTP/1.1 request.
struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// GET `path` from the server with `headers`, over one loopback connection.
fn get(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_applies_a_list_of_namespaces_pods_and_services() {
    let ts = TestServer::start(Backend::Embedded).await;
    let k = Kubectl::new(&ts);
    tokio::task::spawn_blocking(move || {
        let file = k.file("list.yaml", LIST);
        let out = k.ok(&["apply", "-f", &file], None);
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            [
                "namespace/shop created",
                "namespace/depot created",
                "pod/web-0 created",
                "pod/store-0 created",
                "service/web created",
                "service/store created",
            ]
        );
        let pods = k.ok(&["get", "pods", "-A", "-o", "name"], None);
        assert_eq!(pods.lines().collect::<Vec<_>>(), ["pod/store-0", "pod/web-0"]);
        let svc = k.ok(&["get", "svc", "web", "-n", "shop", "-o", "jsonpath={.spec.clusterIP}"], None);
        assert!(svc.starts_with("10."), "{svc}");

        // Applied again, changed: a strategic merge patch built from the v2 schemas (the merge
        // keys of containers and ports), which keeps what the server filled in.
        let changed = LIST
            .replace("image: busybox:1.36\n      ports", "image: busybox:1.37\n      ports")
            .replace("port: 80,", "port: 8080,");
        let file = k.file("list.yaml", &changed);
        let out = k.ok(&["apply", "-f", &file], None);
        assert!(out.contains("pod/web-0 configured"), "{out}");
        assert!(out.contains("service/web configured"), "{out}");
        assert!(out.contains("pod/store-0 unchanged"), "{out}");
        let image = k.ok(&["get", "pod", "web-0", "-n", "shop", "-o", "jsonpath={.spec.containers[0].image}"], None);
        assert_eq!(image, "busybox:1.37");
        let ports = k.ok(&["get", "svc", "web", "-n", "shop", "-o", "jsonpath={.spec.ports}"], None);
        let ports: serde_json::Value = serde_json::from_str(&ports).unwrap();
        assert_eq!(
            ports,
            serde_json::json!([{"name": "http", "port": 8080, "protocol": "TCP", "targetPort": "http"}])
        );
        let out = k.ok(&["apply", "-f", &file], None);
        assert!(out.contains("pod/web-0 unchanged"), "{out}");
    })
    .await
    .unwrap();
    ts.stop().await;
}

/// One object of every served kind, with the field types a manifest mixes (quantities as
/// numbers and strings, int-or-strings, maps, nested lists): the client-side validation of the
/// List refuses none of them.
const EVERY_KIND: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: every}
- apiVersion: v1
  kind: Node
  metadata: {name: n1, labels: {zone: a}}
  spec: {taints: [{key: k, effect: NoSchedule}]}
- apiVersion: v1
  kind: Endpoints
  metadata: {name: ext, namespace: every}
  subsets:
  - addresses: [{ip: 192.0.2.10}]
    ports: [{name: http, port: 80, protocol: TCP}]
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: ext-1, namespace: every, labels: {kubernetes.io/service-name: ext}}
  addressType: IPv4
  endpoints:
  - addresses: [192.0.2.10]
    conditions: {ready: true}
  ports: [{name: http, port: 80, protocol: TCP}]
- apiVersion: coordination.k8s.io/v1
  kind: Lease
  metadata: {name: l1, namespace: every}
  spec: {holderIdentity: me, leaseDurationSeconds: 10, renewTime: "2026-01-01T00:00:00.000000Z"}
- apiVersion: v1
  kind: Event
  metadata: {name: e1, namespace: every}
  involvedObject: {kind: Pod, name: full, namespace: every}
  reason: Test
  message: hello
  type: Normal
  firstTimestamp: "2026-01-01T00:00:00Z"
- apiVersion: v1
  kind: Service
  metadata: {name: lb, namespace: every}
  spec:
    type: NodePort
    selector: {app: full}
    ports: [{port: 443, targetPort: 8443}]
    sessionAffinity: ClientIP
    sessionAffinityConfig: {clientIP: {timeoutSeconds: 100}}
- apiVersion: v1
  kind: Pod
  metadata: {name: full, namespace: every, labels: {app: full}, annotations: {a: b}}
  spec:
    nodeSelector: {kubernetes.io/os: linux}
    tolerations: [{key: k, operator: Exists}]
    affinity:
      nodeAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]
    volumes: [{name: v, emptyDir: {sizeLimit: 1Gi}}]
    initContainers: [{name: init, image: busybox:1.36, command: [sh, -c, "true"]}]
    containers:
    - name: main
      image: busybox:1.36
      env: [{name: A, value: "1"}, {name: B, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]
      resources: {requests: {cpu: 0.5, memory: 64Mi}, limits: {cpu: 1}}
      readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 5}
      livenessProbe: {tcpSocket: {port: 8080}}
      ports: [{name: http, containerPort: 8080, protocol: TCP}]
      securityContext: {runAsUser: 1000, capabilities: {add: [NET_ADMIN]}}
      volumeMounts: [{name: v, mountPath: /v}]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_applies_a_list_of_every_served_kind() {
    let ts = TestServer::start(Backend::Embedded).await;
    let k = Kubectl::new(&ts);
    tokio::task::spawn_blocking(move || {
        let file = k.file("every.yaml", EVERY_KIND);
        let out = k.ok(&["apply", "-f", &file], None);
        for created in [
            "namespace/every",
            "node/n1",
            "endpoints/ext",
            "endpointslice.discovery.k8s.io/ext-1",
            "lease.coordination.k8s.io/l1",
            "event/e1",
            "service/lb",
            "pod/full",
        ] {
            assert!(out.contains(&format!("{created} created")), "{out}");
        }
        let changed = EVERY_KIND
            .replace("labels: {zone: a}", "labels: {zone: b}")
            .replace("holderIdentity: me", "holderIdentity: you")
            .replace("timeoutSeconds: 100", "timeoutSeconds: 200")
            .replace(
                "- name: main\n      image: busybox:1.36",
                "- name: main\n      image: busybox:1.37",
            );
        let file = k.file("every.yaml", &changed);
        let out = k.ok(&["apply", "-f", &file], None);
        for configured in [
            "node/n1",
            "lease.coordination.k8s.io/l1",
            "service/lb",
            "pod/full",
        ] {
            assert!(out.contains(&format!("{configured} configured")), "{out}");
        }
        assert!(
            out.contains("endpointslice.discovery.k8s.io/ext-1 unchanged"),
            "{out}"
        );
        let get = |args: &[&str]| k.ok(args, None);
        assert_eq!(
            get(&[
                "get",
                "node",
                "n1",
                "-o",
                "jsonpath={.metadata.labels.zone}"
            ]),
            "b"
        );
        assert_eq!(
            get(&[
                "get",
                "lease",
                "l1",
                "-n",
                "every",
                "-o",
                "jsonpath={.spec.holderIdentity}"
            ]),
            "you"
        );
        assert_eq!(
            get(&[
                "get",
                "pod",
                "full",
                "-n",
                "every",
                "-o",
                "jsonpath={.spec.containers[0].image}"
            ]),
            "busybox:1.37"
        );
        // The merge by key kept the second env var and the server's defaults.
        let env = get(&[
            "get",
            "pod",
            "full",
            "-n",
            "every",
            "-o",
            "jsonpath={.spec.containers[0].env[1].name}",
        ]);
        assert_eq!(env, "B");
    })
    .await
    .unwrap();
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_explain_answers_with_field_docs() {
    let ts = TestServer::start(Backend::Embedded).await;
    let k = Kubectl::new(&ts);
    tokio::task::spawn_blocking(move || {
        if k.minor() >= 27 {
            explained_from_v3(&k);
        } else {
            explained_from_v2(&k);
        }
        let out = k.run(&["explain", "pod.spec.nosuchfield"], None);
        assert_eq!(out.code, 1);
        assert!(
            out.stderr.contains("field \"nosuchfield\" does not exist"),
            "{}",
            out.stderr
        );
    })
    .await
    .unwrap();
    ts.stop().await;
}

/// `kubectl explain` as 1.27 and later print it, from the OpenAPI v3 schemas.
fn explained_from_v3(k: &Kubectl) {
    let out = k.ok(&["explain", "pod.spec"], None);
    assert!(
        out.starts_with("KIND:       Pod\nVERSION:    v1\n"),
        "{out}"
    );
    assert!(out.contains("FIELD: spec <PodSpec>"), "{out}");
    assert!(
        out.contains("Specification of the desired behavior of the pod."),
        "{out}"
    );
    assert!(
        out.contains("containers\t<[]Container> -required-"),
        "{out}"
    );
    assert!(
        out.contains("There must be at least one container in a Pod."),
        "{out}"
    );
    assert!(out.contains("restartPolicy\t<string>"), "{out}");

    let out = k.ok(&["explain", "svc.spec.ports.targetPort"], None);
    assert!(out.contains("FIELD: targetPort <IntOrString>"), "{out}");
    assert!(
        out.contains("Number or name of the port to access on the pods"),
        "{out}"
    );
    let out = k.ok(&["explain", "pod.spec.containers.resources.limits"], None);
    assert!(out.contains("FIELD: limits <map[string]Quantity>"), "{out}");

    let out = k.ok(&["explain", "endpointslices.endpoints"], None);
    assert!(out.contains("GROUP:      discovery.k8s.io"), "{out}");
    assert!(out.contains("addresses\t<[]string> -required-"), "{out}");
    let out = k.ok(&["explain", "leases.spec"], None);
    assert!(out.contains("holderIdentity\t<string>"), "{out}");
}

/// `kubectl explain` as kubectl before 1.27 (Debian 12's 1.20) prints it, from the OpenAPI
/// v2 document (which it fetches as protobuf).
fn explained_from_v2(k: &Kubectl) {
    let out = k.ok(&["explain", "pod.spec"], None);
    assert!(
        out.starts_with("KIND:     Pod\nVERSION:  v1\n\nRESOURCE: spec <Object>\n"),
        "{out}"
    );
    assert!(
        out.contains("Specification of the desired behavior of the pod."),
        "{out}"
    );
    assert!(
        out.contains("   containers\t<[]Object> -required-\n"),
        "{out}"
    );
    assert!(
        out.contains("There must be at least one container in a Pod."),
        "{out}"
    );
    assert!(out.contains("   restartPolicy\t<string>\n"), "{out}");

    let out = k.ok(&["explain", "svc.spec.ports.targetPort"], None);
    assert!(out.contains("FIELD:    targetPort <string>"), "{out}");
    assert!(
        out.contains("Number or name of the port to access on the pods"),
        "{out}"
    );
    let out = k.ok(&["explain", "pod.spec.containers.resources.limits"], None);
    assert!(
        out.contains("FIELD:    limits <map[string]string>"),
        "{out}"
    );

    let out = k.ok(&["explain", "endpointslices.endpoints"], None);
    assert!(out.contains("VERSION:  discovery.k8s.io/v1"), "{out}");
    assert!(
        out.contains("   addresses\t<[]string> -required-\n"),
        "{out}"
    );
    let out = k.ok(&["explain", "leases.spec"], None);
    assert!(out.contains("   holderIdentity\t<string>\n"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_strict_validation_refuses_unknown_fields() {
    let ts = TestServer::start(Backend::Embedded).await;
    let k = Kubectl::new(&ts);
    tokio::task::spawn_blocking(move || {
        let typo = LIST.replacen(
            "image: busybox:1.36\n",
            "image: busybox:1.36\n      imagePullPolicyy: Always\n",
            1,
        );
        // A List is checked by kubectl itself, against the v2 schemas.
        // `--validate=strict` is 1.25's; before, validation was on or off.
        let strict = if k.minor() >= 25 { "--validate=strict" } else { "--validate=true" };
        let file = k.file("list.yaml", &typo);
        let out = k.run(&["apply", strict, "-f", &file], None);
        assert_eq!(out.code, 1, "{}", out.stdout);
        assert!(
            out.stderr.contains(&format!(
                "error validating \"{file}\": error validating data: ValidationError(Pod.spec.containers[0]): \
                 unknown field \"imagePullPolicyy\" in io.k8s.api.core.v1.Container; \
                 if you choose to ignore these errors, turn validation off with --validate=false"
            )),
            "{}",
            out.stderr
        );
        // A wrong type too.
        let wrong = LIST.replacen("containerPort: 8080", "containerPort: eighty", 1);
        let file = k.file("wrong.yaml", &wrong);
        let out = k.run(&["apply", "-f", &file], None);
        assert_eq!(out.code, 1);
        assert!(
            out.stderr.contains("ValidationError(Pod.spec.containers[0].ports[0].containerPort): invalid type for io.k8s.api.core.v1.ContainerPort.containerPort: got \"string\", expected \"integer\""),
            "{}",
            out.stderr
        );
        let all = k.ok(&["get", "pods,svc", "-A", "-o", "name"], None);
        assert!(!all.contains("web-0") && !all.contains("service/web"), "{all}");

        // One object is left to the server (its PATCH takes fieldValidation) by kubectl
        // 1.25 and later; older ones check it against the v2 schemas themselves.
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: default}\nspec:\n  containers:\n  - name: main\n    image: busybox:1.36\n    imagePullPolicyy: Always\n";
        let file = k.file("pod.yaml", pod);
        let out = k.run(&["apply", strict, "-f", &file], None);
        assert_eq!(out.code, 1);
        let refused = if k.minor() >= 25 {
            format!(
                "Error from server (BadRequest): error when creating \"{file}\": Pod in version \"v1\" \
                 cannot be handled as a Pod: strict decoding error: unknown field \"spec.containers[0].imagePullPolicyy\""
            )
        } else {
            format!(
                "error validating \"{file}\": error validating data: ValidationError(Pod.spec.containers[0]): \
                 unknown field \"imagePullPolicyy\" in io.k8s.api.core.v1.Container"
            )
        };
        assert!(out.stderr.contains(&refused), "{}", out.stderr);
        assert_eq!(k.run(&["get", "pod", "bad"], None).code, 1);

        // Without validation the List goes through (the server drops the unknown field).
        let file = k.file("list.yaml", &typo);
        let out = k.ok(&["apply", "--validate=false", "-f", &file], None);
        assert!(out.contains("pod/web-0 created"), "{out}");
    })
    .await
    .unwrap();
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_as_kubectl_1_32_asks_for_it() {
    let ts = TestServer::start(Backend::Embedded).await;
    let addr = ts.server().local_addr();
    tokio::task::spawn_blocking(move || {
        // Aggregated discovery first: podnet answers with the legacy documents, which kubectl
        // takes (it falls back on the Content-Type).
        let api = get(addr, "/api", &[("Accept", AGGREGATED_ACCEPT)]);
        assert_eq!(api.status, 200);
        assert_eq!(api.header("content-type"), Some("application/json"));
        let api = api.json();
        assert_eq!(api["kind"], "APIVersions");
        assert_eq!(api["versions"], serde_json::json!(["v1"]));
        let apis = get(addr, "/apis", &[("Accept", AGGREGATED_ACCEPT)]);
        assert_eq!(apis.header("content-type"), Some("application/json"));
        let apis = apis.json();
        assert_eq!(apis["kind"], "APIGroupList");
        let groups: Vec<&str> = apis["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            groups,
            [
                "coordination.k8s.io",
                "discovery.k8s.io",
                "networking.k8s.io",
                "policy.networking.k8s.io"
            ]
        );
        for path in [
            "/api/v1",
            "/apis/discovery.k8s.io/v1",
            "/apis/coordination.k8s.io/v1",
        ] {
            let list = get(addr, path, &[("Accept", "application/json, */*")]).json();
            assert_eq!(list["kind"], "APIResourceList", "{path}");
        }
    })
    .await
    .unwrap();
    let k = Kubectl::new(&ts);
    tokio::task::spawn_blocking(move || {
        let out = k.ok(&["api-resources", "--no-headers", "-o", "name"], None);
        let mut names: Vec<&str> = out.lines().collect();
        names.sort_unstable();
        let mut want: Vec<String> = kinds::ALL
            .iter()
            .map(|k| match k.group {
                "" => k.plural.to_owned(),
                g => format!("{}.{g}", k.plural),
            })
            .collect();
        want.sort_unstable();
        assert_eq!(names, want);
        let versions = k.ok(&["api-versions"], None);
        assert_eq!(
            versions.lines().collect::<Vec<_>>(),
            [
                "coordination.k8s.io/v1",
                "discovery.k8s.io/v1",
                "networking.k8s.io/v1",
                "policy.networking.k8s.io/v1alpha2",
                "v1"
            ]
        );
    })
    .await
    .unwrap();
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_documents_over_http() {
    let ts = TestServer::start(Backend::Embedded).await;
    let addr = ts.server().local_addr();
    tokio::task::spawn_blocking(move || {
        let doc = openapi::v2().unwrap();
        // As client-go asks for it.
        let pb = get(addr, "/openapi/v2", &[("Accept", openapi::PROTOBUF_AT)]);
        assert_eq!(pb.status, 200);
        assert_eq!(pb.header("content-type"), Some(openapi::PROTOBUF));
        assert_eq!(pb.header("etag"), Some(doc.etag.as_str()));
        assert_eq!(pb.body, doc.protobuf);
        let json = get(addr, "/openapi/v2", &[("Accept", "application/json")]);
        assert_eq!(json.header("content-type"), Some("application/json"));
        assert_eq!(json.json()["swagger"], "2.0");
        let again = get(addr, "/openapi/v2", &[("If-None-Match", &doc.etag)]);
        assert_eq!(again.status, 304);
        assert!(again.body.is_empty());
        assert_eq!(
            get(addr, "/openapi/v2", &[("Accept", "text/html")]).status,
            406
        );

        let root = get(addr, "/openapi/v3", &[]).json();
        let url = root["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .to_owned();
        let v3 = get(addr, &url, &[("Accept", "application/json")]);
        assert_eq!(v3.status, 200);
        assert_eq!(v3.header("cache-control"), Some("public, immutable"));
        let schemas = &v3.json()["components"]["schemas"];
        assert!(schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"].is_object());
        let stale = get(addr, "/openapi/v3/api/v1?hash=0", &[]);
        assert_eq!(stale.status, 301);
        assert_eq!(stale.header("location"), Some(url.as_str()));
        assert_eq!(get(addr, "/openapi/v3/apis/apps/v1", &[]).status, 404);
    })
    .await
    .unwrap();
    ts.stop().await;
}
