//! The kubectl-like verbs against a real `podnet apiserver` process, as a user types them:
//! apply (created, unchanged, configured), get in every output format, describe, delete,
//! the errors of bad manifests, and what exec and logs say when the pod's files are not on
//! this machine. Where kubectl is installed, some outputs are also compared with kubectl's
//! against the same server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PODNET: &str = env!("CARGO_BIN_EXE_podnet");

/// A `podnet apiserver` process on a free loopback port, stopped (by its PID) on drop.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
    kubeconfig: PathBuf,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        for _attempt in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr = format!("127.0.0.1:{port}");
            let log = std::fs::File::create(dir.path().join("apiserver.log")).unwrap();
            let child = Command::new(PODNET)
                .args(["apiserver", "--data-dir"])
                .arg(dir.path().join("data"))
                .args(["--bind", &addr])
                .args(extra)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start podnet apiserver");
            let kubeconfig = dir.path().join("data").join("kubeconfig");
            let mut server = Server {
                child,
                dir,
                addr,
                kubeconfig,
            };
            if server.wait_ready() {
                return server;
            }
            // Most likely the port was taken meanwhile: try another.
        }
        panic!("podnet apiserver did not start");
    }

    /// Waits for the kubeconfig and for the default namespace (the server's own set-up).
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if self.kubeconfig.exists() && self.run(&["get", "ns", "default"], None).code == 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("TZ", "UTC")
            .env_remove("KUBECONFIG")
            .env_remove("PODNET_LAB")
            .env("HOME", self.home())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn output(mut cmd: Command, stdin: Option<&str>) -> Out {
        let mut child = cmd.spawn().expect("spawn");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `podnet --kubeconfig KUBECONFIG ARGS…`
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut cmd = self.command(PODNET);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        Self::output(cmd, stdin)
    }

    /// Runs and requires success; gives stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert_eq!(
            out.code, 0,
            "podnet {args:?} failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    /// kubectl against the same server, when it is installed and new enough: podnet prints
    /// what kubectl 1.22 and later print (older ones add `selfLink: ""` to lists and know
    /// no `endPort`), so an older one is not compared with.
    fn kubectl(&self, args: &[&str]) -> Option<Out> {
        let bin = ["/usr/bin/kubectl", "/usr/local/bin/kubectl"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        match kubectl_minor(bin) {
            Some(minor) if minor >= MIN_KUBECTL_MINOR => {}
            other => {
                eprintln!(
                    "SKIPPED: {bin} is kubectl 1.{} (podnet prints as kubectl 1.{MIN_KUBECTL_MINOR} and later do)",
                    other.map(|m| m.to_string()).unwrap_or_else(|| "?".into())
                );
                return None;
            }
        }
        let mut cmd = self.command(bin);
        cmd.env("KUBECONFIG", &self.kubeconfig).args(args);
        Some(Self::output(cmd, None))
    }

    /// A raw HTTP request to the (plain HTTP) server, for what the CLI does not do (status).
    fn http(&self, method: &str, path: &str, content_type: &str, body: &str) -> u16 {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const MANIFEST: &str = r#"apiVersion: v1
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
    command: ["sleep", "3600"]
    ports:
    - {name: http, containerPort: 8080}
  - name: side
    image: busybox:1.36
    env:
    - {name: MODE, value: sidecar}
---
apiVersion: v1
kind: Pod
metadata:
  name: db-0
  namespace: shop
  labels: {app: db}
spec:
  containers:
  - name: main
    image: postgres:16
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

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

fn header(table: &str) -> &str {
    table.lines().next().unwrap_or_default()
}

#[test]
fn apply_is_create_then_unchanged_then_configured() {
    let s = Server::start(&[]);
    let file = s.write("shop.yaml", MANIFEST);
    let out = s.ok(&["apply", "-f", &file]);
    assert_eq!(
        lines(&out),
        [
            "namespace/shop created",
            "pod/web-0 created",
            "pod/db-0 created",
            "service/web created"
        ]
    );
    let out = s.ok(&["apply", "-f", &file]);
    assert_eq!(
        lines(&out),
        [
            "namespace/shop unchanged",
            "pod/web-0 unchanged",
            "pod/db-0 unchanged",
            "service/web unchanged"
        ]
    );

    // The annotation is kubectl's, so kubectl apply and podnet apply take turns.
    let json = s.ok(&["get", "pod", "db-0", "-n", "shop", "-o", "json"]);
    let pod: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        pod["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"annotations\":{},\"labels\":{\"app\":\"db\"},\"name\":\"db-0\",\"namespace\":\"shop\"},\"spec\":{\"containers\":[{\"image\":\"postgres:16\",\"name\":\"main\"}]}}\n"
    );

    // A label added, an image changed, a service port renamed, from standard input.
    let changed = MANIFEST
        .replace("labels: {app: web}", "labels: {app: web, tier: front}")
        .replace("image: postgres:16", "image: postgres:17")
        .replace("{name: http, port: 80", "{name: web, port: 80");
    let out = s.run(&["apply", "-f", "-"], Some(&changed));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        lines(&out.stdout),
        [
            "namespace/shop unchanged",
            "pod/web-0 configured",
            "pod/db-0 configured",
            "service/web configured"
        ]
    );
    let pods = s.ok(&[
        "get",
        "pods",
        "-n",
        "shop",
        "-l",
        "tier=front",
        "-o",
        "name",
    ]);
    assert_eq!(pods, "pod/web-0\n");
    let image = s.ok(&["get", "pod", "db-0", "-n", "shop", "-o", "yaml"]);
    assert!(image.contains("  - image: postgres:17\n"), "{image}");
    // What the server filled in survives a configure: the ClusterIP, the port's protocol.
    let svc = s.ok(&["get", "svc", "web", "-n", "shop", "-o", "json"]);
    let svc: serde_json::Value = serde_json::from_str(&svc).unwrap();
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("10.")
    );
    assert_eq!(
        svc["spec"]["ports"],
        serde_json::json!([{"name": "web", "port": 80, "protocol": "TCP", "targetPort": "http"}])
    );

    // A field dropped from the manifest is removed from the object.
    let dropped = changed.replace("labels: {app: web, tier: front}", "labels: {app: web}");
    let out = s.run(&["apply", "-f", "-"], Some(&dropped));
    assert!(
        out.stdout.contains("pod/web-0 configured"),
        "{}",
        out.stdout
    );
    assert_eq!(
        s.run(&["get", "pods", "-n", "shop", "-l", "tier=front"], None)
            .stderr,
        "No resources found in shop namespace.\n"
    );

    // A JSON List works as well as YAML.
    let list = r#"{"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "j-0"},
         "spec": {"containers": [{"name": "c", "image": "x"}]}}]}"#;
    let out = s.run(&["-n", "shop", "apply", "-f", "-"], Some(list));
    assert_eq!(out.stdout, "pod/j-0 created\n", "{}", out.stderr);
    assert_eq!(
        s.ok(&["get", "pod", "j-0", "-n", "shop", "-o", "name"]),
        "pod/j-0\n"
    );
}

#[test]
fn get_prints_what_kubectl_prints() {
    let s = Server::start(&[]);
    let file = s.write("shop.yaml", MANIFEST);
    s.ok(&["apply", "-f", &file]);

    let pods = s.ok(&["get", "pods", "-n", "shop"]);
    assert_eq!(header(&pods), "NAME    READY   STATUS    RESTARTS   AGE");
    assert!(
        pods.contains("\nweb-0   0/2     Pending   0          "),
        "{pods}"
    );
    assert!(
        pods.contains("\ndb-0    0/1     Pending   0          "),
        "{pods}"
    );
    let wide = s.ok(&["get", "po", "web-0", "-n", "shop", "-o", "wide"]);
    assert_eq!(
        header(&wide),
        "NAME    READY   STATUS    RESTARTS   AGE   IP       NODE     NOMINATED NODE   READINESS GATES"
    );
    let all = s.ok(&["get", "pods", "-A"]);
    assert_eq!(
        header(&all),
        "NAMESPACE   NAME    READY   STATUS    RESTARTS   AGE"
    );
    assert!(all.contains("\nshop        web-0   "), "{all}");

    let svc = s.ok(&["get", "svc", "-n", "shop"]);
    assert_eq!(
        header(&svc).split_whitespace().collect::<Vec<_>>(),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert!(
        svc.contains("ClusterIP") && svc.contains("<none>        80/TCP"),
        "{svc}"
    );
    let ep = s.ok(&["get", "ep", "-n", "shop"]);
    assert_eq!(header(&ep), "NAME   ENDPOINTS   AGE");
    assert!(ep.contains("\nweb    <none>      "), "{ep}");
    let slices = s.ok(&["get", "endpointslices", "-n", "shop"]);
    assert_eq!(
        header(&slices).split_whitespace().collect::<Vec<_>>(),
        ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    );
    assert!(slices.contains("\nweb-"), "{slices}");
    let ns = s.ok(&["get", "ns"]);
    assert_eq!(header(&ns), "NAME              STATUS   AGE");
    for name in ["default", "kube-system", "shop"] {
        assert!(ns.contains(&format!("\n{name} ")), "{ns}");
    }
    // Several types: names carry their type, tables are separated by an empty line.
    let both = s.ok(&["get", "po,svc", "-n", "shop"]);
    assert!(both.starts_with("NAME        READY"), "{both}");
    assert!(both.contains("\npod/web-0   "), "{both}");
    assert!(both.contains("\n\nNAME          TYPE"), "{both}");
    assert!(both.contains("\nservice/web   ClusterIP"), "{both}");
    let all = s.ok(&["get", "all", "-n", "shop", "-o", "name"]);
    assert_eq!(all, "pod/db-0\npod/web-0\nservice/web\n");
    let by_name = s.ok(&["get", "pod/db-0", "svc/web", "-n", "shop", "-o", "name"]);
    assert_eq!(by_name, "pod/db-0\nservice/web\n");
    let slices = s.ok(&["get", "endpointslices", "-n", "shop", "-o", "name"]);
    assert!(
        slices.starts_with("endpointslice.discovery.k8s.io/web-"),
        "{slices}"
    );

    // Selectors.
    assert_eq!(
        s.ok(&["get", "pods", "-n", "shop", "-l", "app=web", "-o", "name"]),
        "pod/web-0\n"
    );
    assert_eq!(
        s.ok(&[
            "get",
            "pods",
            "-n",
            "shop",
            "-l",
            "app in (db,web)",
            "-o",
            "name"
        ]),
        "pod/db-0\npod/web-0\n"
    );
    assert_eq!(
        s.ok(&[
            "get",
            "pods",
            "-n",
            "shop",
            "--field-selector",
            "metadata.name=db-0",
            "-o",
            "name"
        ]),
        "pod/db-0\n"
    );

    // YAML and JSON: one object for one name, a List otherwise; no managedFields.
    let yaml = s.ok(&["get", "svc", "web", "-n", "shop", "-o", "yaml"]);
    assert!(
        yaml.starts_with("apiVersion: v1\nkind: Service\nmetadata:\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains(
            "\n  ports:\n  - name: http\n    port: 80\n    protocol: TCP\n    targetPort: http\n"
        ),
        "{yaml}"
    );
    assert!(!yaml.contains("managedFields"), "{yaml}");
    let json = s.ok(&["get", "pods", "-n", "shop", "-o", "json"]);
    assert!(
        json.starts_with("{\n    \"apiVersion\": \"v1\",\n    \"items\": [\n"),
        "{json}"
    );
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["kind"], "Pod");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);

    // Errors and empty results.
    let missing = s.run(&["get", "pod", "nope", "-n", "shop"], None);
    assert_eq!(missing.code, 1);
    assert_eq!(
        missing.stderr,
        "Error from server (NotFound): pods \"nope\" not found\n"
    );
    let partly = s.run(
        &["get", "pods", "db-0", "nope", "-n", "shop", "-o", "name"],
        None,
    );
    assert_eq!(partly.code, 1);
    assert_eq!(partly.stdout, "pod/db-0\n");
    assert_eq!(
        partly.stderr,
        "Error from server (NotFound): pods \"nope\" not found\n"
    );
    let empty = s.run(&["get", "pods"], None);
    assert_eq!((empty.code, empty.stdout.as_str()), (0, ""));
    assert_eq!(empty.stderr, "No resources found in default namespace.\n");
    let empty = s.run(&["get", "nodes"], None);
    assert_eq!(
        (empty.code, empty.stderr.as_str()),
        (0, "No resources found\n")
    );
    let unknown = s.run(&["get", "widgets"], None);
    assert_eq!(unknown.code, 1);
    assert_eq!(
        unknown.stderr,
        "error: the server doesn't have a resource type \"widgets\"\n"
    );
    let bad = s.run(&["get", "pods", "-n", "shop", "-l", "app in (web"], None);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.starts_with("Error from server (BadRequest): Unable to find \"/v1, Resource=pods\" that match label selector \"app in (web\", field selector \"\": "), "{}", bad.stderr);

    // The same as kubectl, where the output does not depend on the second it is printed in.
    for args in [
        &["get", "svc", "web", "-n", "shop", "-o", "json"][..],
        &["get", "pods", "-n", "shop", "-o", "json"][..],
        &["get", "ns", "shop", "-o", "yaml"][..],
        &["get", "pods", "-n", "shop", "-o", "name"][..],
        &["get", "pod", "nope", "-n", "shop"][..],
        &["describe", "svc", "web", "-n", "shop"][..],
        &["describe", "ep", "web", "-n", "shop"][..],
        &["describe", "ns", "shop"][..],
    ] {
        let Some(k) = s.kubectl(args) else { break };
        let p = s.run(args, None);
        assert_eq!(p.stdout, k.stdout, "podnet {args:?} vs kubectl");
        assert_eq!(p.stderr, k.stderr, "podnet {args:?} vs kubectl");
        assert_eq!(p.code, k.code, "podnet {args:?} vs kubectl");
    }
}

#[test]
fn nodes_endpoints_and_describe() {
    let s = Server::start(&[]);
    let node = "apiVersion: v1\nkind: Node\nmetadata:\n  name: node1\n  labels: {kubernetes.io/hostname: node1}\n";
    assert_eq!(
        s.run(&["apply", "-f", "-"], Some(node)).stdout,
        "node/node1 created\n"
    );
    let status = r#"{"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ready",
            "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}"#;
    assert_eq!(
        s.http(
            "PATCH",
            "/api/v1/nodes/node1/status",
            "application/merge-patch+json",
            status
        ),
        200
    );
    let pod = MANIFEST.split("---").nth(1).unwrap().replace(
        "spec:\n  containers:",
        "spec:\n  nodeName: node1\n  containers:",
    );
    let svc = MANIFEST.split("---").nth(3).unwrap();
    let both = format!("{pod}---{svc}");
    s.ok(&[
        "apply",
        "-f",
        &s.write(
            "web.yaml",
            &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---{both}"),
        ),
    ]);
    let running = r#"{"status": {"phase": "Running", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}],
        "hostIP": "10.0.0.1", "startTime": "2026-01-01T00:00:00Z",
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"},
                       {"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [
            {"name": "main", "image": "busybox:1.36", "imageID": "", "ready": true, "restartCount": 1, "started": true,
             "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
             "lastState": {"terminated": {"exitCode": 2, "reason": "Error",
                 "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:00Z"}}},
            {"name": "side", "image": "busybox:1.36", "imageID": "", "ready": true, "restartCount": 0, "started": true,
             "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}}"#;
    assert_eq!(
        s.http(
            "PATCH",
            "/api/v1/namespaces/shop/pods/web-0/status",
            "application/merge-patch+json",
            running
        ),
        200
    );

    let nodes = s.ok(&["get", "no", "-o", "wide"]);
    assert_eq!(
        header(&nodes)
            .split_whitespace()
            .take(6)
            .collect::<Vec<_>>(),
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP"]
    );
    assert!(nodes.contains("\nnode1   Ready    <none>"), "{nodes}");
    assert!(nodes.contains("10.0.0.1"), "{nodes}");

    // The endpoints controller picks the ready pod up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ep = loop {
        let ep = s.ok(&["get", "ep", "web", "-n", "shop"]);
        if ep.contains("10.244.0.5:8080") || Instant::now() > deadline {
            break ep;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(ep.contains("\nweb    10.244.0.5:8080   "), "{ep}");
    let slices = s.ok(&["get", "endpointslices", "-n", "shop"]);
    assert!(
        slices.contains("IPv4          8080    10.244.0.5"),
        "{slices}"
    );

    let pod = s.ok(&["describe", "pod", "web-0", "-n", "shop"]);
    for line in [
        "Name:         web-0\n",
        "Namespace:    shop\n",
        "Node:         node1/10.0.0.1\n",
        "Labels:       app=web\n",
        "Annotations:  <none>\n",
        "Status:       Running\n",
        "IP:           10.244.0.5\n",
        "IPs:\n  IP:  10.244.0.5\n",
        "Containers:\n  main:\n",
        "    Image:         busybox:1.36\n",
        "    Port:          8080/TCP\n",
        "    Command:\n      sleep\n      3600\n",
        "    State:          Running\n",
        "    Last State:     Terminated\n      Reason:       Error\n      Exit Code:    2\n",
        "    Ready:          True\n    Restart Count:  1\n",
        "      MODE:  sidecar\n",
        "Conditions:\n  Type              Status\n  Ready             True \n",
        "Events:",
    ] {
        assert!(pod.contains(line), "{line:?} not in\n{pod}");
    }
    let svc = s.ok(&["describe", "svc", "web", "-n", "shop"]);
    for line in [
        "Name:                     web\n",
        "Selector:                 app=web\n",
        "Type:                     ClusterIP\n",
        "Port:                     http  80/TCP\n",
        "TargetPort:               http/TCP\n",
        "Endpoints:                10.244.0.5:8080\n",
        "Session Affinity:         None\n",
    ] {
        assert!(svc.contains(line), "{line:?} not in\n{svc}");
    }
    assert!(svc.contains("\nIP:                       10."), "{svc}");
    let node = s.ok(&["describe", "node", "node1"]);
    for line in [
        "Name:               node1\n",
        "Addresses:\n  InternalIP:  10.0.0.1\n",
        "  Ready   True    Thu, 01 Jan 2026 00:00:00 +0000",
        "PodCIDR:                      10.244.",
        "Non-terminated Pods:          (1 in total)\n",
        "  shop                        web-0    ",
    ] {
        assert!(node.contains(line), "{line:?} not in\n{node}");
    }
    let ep = s.ok(&["describe", "endpoints", "web", "-n", "shop"]);
    assert!(
        ep.contains("Subsets:\n  Addresses:          10.244.0.5\n"),
        "{ep}"
    );
    let ns = s.ok(&["describe", "namespace", "shop"]);
    assert!(ns.starts_with("Name:         shop\nLabels:       kubernetes.io/metadata.name=shop\nAnnotations:  <none>\nStatus:       Active\n"), "{ns}");
    let missing = s.run(&["describe", "pod", "nope", "-n", "shop"], None);
    assert_eq!(missing.code, 1);
    assert_eq!(
        missing.stderr,
        "Error from server (NotFound): pods \"nope\" not found\n"
    );

    // exec and logs work where the pod runs; this machine has no runtime files of it.
    let exec = s.run(
        &[
            "--lab",
            "no-such-lab",
            "exec",
            "web-0",
            "-n",
            "shop",
            "--",
            "true",
        ],
        None,
    );
    assert_eq!(exec.code, 1, "{}", exec.stderr);
    assert!(exec.stderr.starts_with("Defaulted container \"main\" out of: main, side\nerror: pod \"web-0\" runs on node \"node1\", but its runtime files are not on this machine (looked for /run/podnet/no-such-lab/nodes/node1/pods/"), "{}", exec.stderr);
    let logs = s.run(
        &[
            "logs",
            "web-0",
            "-n",
            "shop",
            "-c",
            "side",
            "--lab",
            "no-such-lab",
        ],
        None,
    );
    assert_eq!(logs.code, 1);
    assert!(logs.stderr.starts_with("error: pod \"web-0\" runs on node \"node1\", but its runtime files are not on this machine"), "{}", logs.stderr);
    let bad = s.run(&["logs", "web-0", "-n", "shop", "-c", "nope"], None);
    assert!(
        bad.stderr
            .contains("container \"nope\" is not valid for pod \"web-0\""),
        "{}",
        bad.stderr
    );
}

#[test]
fn delete_prints_and_waits() {
    let s = Server::start(&[]);
    let file = s.write("shop.yaml", MANIFEST);
    s.ok(&["apply", "-f", &file]);
    assert_eq!(
        s.ok(&["delete", "pod", "db-0", "-n", "shop"]),
        "pod \"db-0\" deleted\n"
    );
    let gone = s.run(&["get", "pod", "db-0", "-n", "shop"], None);
    assert_eq!(gone.code, 1);
    let out = s.run(&["delete", "pod", "web-0", "nope", "-n", "shop"], None);
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "pod \"web-0\" deleted\n");
    assert_eq!(
        out.stderr,
        "Error from server (NotFound): pods \"nope\" not found\n"
    );
    assert_eq!(
        s.ok(&["delete", "pod", "nope", "-n", "shop", "--ignore-not-found"]),
        ""
    );
    // Everything of a manifest; the namespace is waited for until it is gone.
    s.ok(&["apply", "-f", &file]);
    let out = s.run(&["delete", "-f", &file, "--timeout", "60s"], None);
    assert!(
        out.stdout.starts_with("namespace \"shop\" deleted\n"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    let gone = s.run(&["get", "ns", "shop"], None);
    assert_eq!(gone.code, 1, "{}", gone.stdout);
    let out = s.run(&["delete", "pods"], None);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "error: resource(s) were provided, but no name was specified\n"
    );
}

#[test]
fn bad_manifests_apply_nothing_of_themselves() {
    let s = Server::start(&[]);
    let run_apply = |name: &str, text: &str| s.run(&["apply", "-f", &s.write(name, text)], None);

    let widget = "apiVersion: v1\nkind: Widget\nmetadata:\n  name: x\n";
    let out = run_apply("widget.yaml", widget);
    assert_eq!(out.code, 1);
    let path = s.dir.path().join("widget.yaml");
    assert_eq!(
        out.stderr,
        format!(
            "error: resource mapping not found for name: \"x\" namespace: \"\" from \"{}\": no matches for kind \"Widget\" in version \"v1\"\nensure CRDs are installed first\n",
            path.display()
        )
    );

    let no_containers = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: empty\nspec: {}\n";
    let out = run_apply("empty.yaml", no_containers);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "The Pod \"empty\" is invalid: spec.containers: Required value\n"
    );

    let bad_name = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\nspec:\n  containers: [{name: a, image: b}]\n";
    let out = run_apply("badname.yaml", bad_name);
    assert_eq!(out.code, 1);
    assert!(out.stderr.starts_with("The Pod \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{}", out.stderr);

    // Several at once: each reported as kubectl reports a list of errors; the valid
    // object is applied all the same.
    let ok_pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: fine\nspec:\n  containers: [{name: a, image: b}]\n";
    let bad_svc =
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: bad\nspec:\n  ports:\n  - port: 70000\n";
    let all = [widget, no_containers, ok_pod, bad_svc].join("---\n");
    let out = run_apply("all.yaml", &all);
    let path = s.dir.path().join("all.yaml").display().to_string();
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "pod/fine created\n");
    let errs = lines(&out.stderr);
    assert_eq!(
        errs[0],
        format!(
            "resource mapping not found for name: \"x\" namespace: \"\" from \"{path}\": no matches for kind \"Widget\" in version \"v1\""
        )
    );
    assert_eq!(errs[1], "ensure CRDs are installed first");
    assert_eq!(
        errs[2],
        format!(
            "Error from server (Invalid): error when creating \"{path}\": Pod \"empty\" is invalid: spec.containers: Required value"
        )
    );
    assert!(errs[3].starts_with(&format!("Error from server (Invalid): error when creating \"{path}\": Service \"bad\" is invalid: [spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive")), "{}", errs[3]);
    assert_eq!(s.ok(&["get", "pods", "-o", "name"]), "pod/fine\n");
    s.ok(&["delete", "pod", "fine"]);

    // Malformed YAML anywhere: nothing at all is applied.
    let malformed =
        format!("{ok_pod}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n   bad: [\n");
    let out = run_apply("malformed.yaml", &malformed);
    assert_eq!(out.code, 1);
    let path = s.dir.path().join("malformed.yaml").display().to_string();
    assert!(
        out.stderr.starts_with(&format!(
            "error: error parsing {path}: YAML: line 12 column 7: "
        )),
        "{}",
        out.stderr
    );
    let out = s.run(
        &["apply", "-f", "-"],
        Some("{\"kind\": \"Pod\",\n \"metadata\": {,}}"),
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with("error: error parsing STDIN: JSON: "),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("line 2"), "{}", out.stderr);
    let none = s.run(&["get", "pods"], None);
    assert_eq!(none.stderr, "No resources found in default namespace.\n");

    let out = s.run(&["apply", "-f", "/no/such/file.yaml"], None);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "error: the path \"/no/such/file.yaml\" does not exist\n"
    );
}

#[test]
fn kubeconfig_namespace_and_tls() {
    let s = Server::start(&["--tls"]);
    let config = std::fs::read_to_string(&s.kubeconfig).unwrap();
    assert!(config.contains("https://"), "{config}");
    // TLS with the server's CA and the bearer token, from the kubeconfig.
    let ns = s.ok(&["get", "ns", "default", "-o", "name"]);
    assert_eq!(ns, "namespace/default\n");
    // $KUBECONFIG works as --kubeconfig does; -n before and after the verb.
    let mut cmd = s.command(PODNET);
    cmd.env("KUBECONFIG", &s.kubeconfig)
        .args(["-n", "kube-system", "get", "pods"]);
    let out = Server::output(cmd, None);
    assert_eq!(out.stderr, "No resources found in kube-system namespace.\n");
    let out = s.run(
        &["-n", "kube-system", "get", "pods", "-n", "kube-public"],
        None,
    );
    assert_eq!(out.stderr, "No resources found in kube-public namespace.\n");
    // No kubeconfig anywhere.
    let mut cmd = s.command(PODNET);
    cmd.args(["--lab", "no-such-lab", "get", "pods"]);
    let out = Server::output(cmd, None);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with("error: no cluster to talk to"),
        "{}",
        out.stderr
    );
    // A server that is not there.
    let dead = s.write(
        "dead-kubeconfig",
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:1\nusers:\n- name: u\n  user: {}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n",
    );
    let mut cmd = s.command(PODNET);
    cmd.args(["--kubeconfig", &dead, "get", "pods"]);
    let out = Server::output(cmd, None);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "The connection to the server 127.0.0.1:1 was refused - did you specify the right host or port?\n"
    );
}

/// A sandbox (pause process with its own namespaces), stopped on drop.
struct TestSandbox(Option<podnet_agent::runtime::Sandbox>);

impl Drop for TestSandbox {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            let _ = s.stop(Duration::from_secs(2));
        }
    }
}

/// A lab's runtime directories made by the test, removed on drop.
struct LabDirs {
    run: PathBuf,
    lib: PathBuf,
}

impl Drop for LabDirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.run);
        let _ = std::fs::remove_dir_all(&self.lib);
    }
}

fn pod_record(sandbox_pid: i32, side_pid: u32, main_restarts: u32, main_log: &Path) -> String {
    serde_json::json!({
        "namespace": "shop", "name": "web-0", "uid": "x", "sandbox_name": "x", "netns": "/x",
        "sandbox_pid": sandbox_pid,
        "containers": [
            {"name": "main", "restart_count": main_restarts, "pid": sandbox_pid,
             "log_path": main_log},
            {"name": "side", "restart_count": 0, "pid": side_pid}]
    })
    .to_string()
}

/// A running process standing for the side container, with the environment the runtime
/// gives it (exec reads a running container's environment from its process); killed on drop.
struct SideContainer(std::process::Child);

impl SideContainer {
    fn start() -> SideContainer {
        let child = Command::new("sleep")
            .arg("120")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOSTNAME", "web-0")
            .env("MODE", "sidecar")
            .spawn()
            .expect("start the side container's process");
        SideContainer(child)
    }
}

impl Drop for SideContainer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// exec and logs on the machine that runs the pod: the runtime's record and log files in
/// the lab's layout, and a real sandbox. Needs root (namespaces), as the lab does.
#[test]
fn exec_and_logs_use_the_node_runtime_files() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let s = Server::start(&[]);
    let pod = MANIFEST.split("---").nth(1).unwrap().replace(
        "spec:\n  containers:",
        "spec:\n  nodeName: node1\n  containers:",
    );
    s.run(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n"),
    );
    s.run(&["apply", "-f", "-"], Some(&pod));
    let json = s.ok(&["get", "pod", "web-0", "-n", "shop", "-o", "json"]);
    let uid = serde_json::from_str::<serde_json::Value>(&json).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();

    let lab = format!("clit{}", std::process::id());
    let dirs = LabDirs {
        run: Path::new("/run/podnet").join(&lab),
        lib: Path::new("/var/lib/podnet").join(&lab),
    };
    let state_dir = dirs.run.join("nodes/node1/pods");
    let log_dir = dirs.lib.join(format!("nodes/node1/logs/shop_web-0_{uid}"));
    std::fs::create_dir_all(&state_dir).unwrap();
    std::fs::create_dir_all(log_dir.join("main")).unwrap();
    std::fs::create_dir_all(log_dir.join("side")).unwrap();
    std::fs::write(log_dir.join("main/0.log"), "first attempt\n").unwrap();
    std::fs::write(log_dir.join("main/1.log"), "line1\nline2\nline3\n").unwrap();
    std::fs::write(log_dir.join("side/0.log"), "side\n").unwrap();
    let sandbox = TestSandbox(Some(
        podnet_agent::runtime::Sandbox::start(
            Path::new(PODNET),
            &format!("clit-{}", std::process::id()),
            "web-0",
        )
        .expect("sandbox"),
    ));
    let pid = sandbox.0.as_ref().unwrap().pid();
    let record = state_dir.join(format!("{uid}.json"));
    let side = SideContainer::start();
    std::fs::write(
        &record,
        pod_record(pid, side.0.id(), 1, &log_dir.join("main/1.log")),
    )
    .unwrap();

    let podnet = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["--lab", lab.as_str(), "-n", "shop"];
        all.extend_from_slice(args);
        s.run(&all, stdin)
    };
    // exec: in the pod (its hostname), exit code passed through, stdin only with -i, the
    // container's environment.
    let out = podnet(&["exec", "web-0", "-c", "main", "--", "hostname"], None);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (0, "web-0\n", "")
    );
    let out = podnet(
        &["exec", "web-0", "-c", "main", "--", "sh", "-c", "exit 7"],
        None,
    );
    assert_eq!(out.code, 7);
    let out = podnet(
        &["exec", "-i", "web-0", "-c", "main", "--", "cat"],
        Some("hello\n"),
    );
    assert_eq!(out.stdout, "hello\n");
    let out = podnet(
        &["exec", "web-0", "-c", "main", "--", "cat"],
        Some("hello\n"),
    );
    assert_eq!(out.stdout, "");
    let out = podnet(
        &[
            "exec",
            "web-0",
            "-c",
            "side",
            "--",
            "sh",
            "-c",
            "echo $MODE $HOSTNAME",
        ],
        None,
    );
    assert_eq!(out.stdout, "sidecar web-0\n");
    let out = podnet(&["exec", "web-0", "--", "true"], None);
    assert_eq!(
        out.stderr,
        "Defaulted container \"main\" out of: main, side\n"
    );

    // logs: the current attempt, the previous one, the tail, another container.
    let out = podnet(&["logs", "web-0"], None);
    assert_eq!(out.stdout, "line1\nline2\nline3\n");
    assert_eq!(
        out.stderr,
        "Defaulted container \"main\" out of: main, side\n"
    );
    assert_eq!(
        podnet(&["logs", "web-0", "-c", "main", "--previous"], None).stdout,
        "first attempt\n"
    );
    assert_eq!(
        podnet(&["logs", "pod/web-0", "main", "--tail", "1"], None).stdout,
        "line3\n"
    );
    assert_eq!(
        podnet(&["logs", "web-0", "-c", "side"], None).stdout,
        "side\n"
    );
    let out = podnet(&["logs", "web-0", "-c", "side", "-p"], None);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "Error from server (BadRequest): previous terminated container \"side\" in pod \"web-0\" not found\n"
    );

    // -f prints what is appended and stops when the attempt ends.
    let mut cmd = s.command(PODNET);
    cmd.arg("--kubeconfig").arg(&s.kubeconfig).args([
        "--lab", &lab, "-n", "shop", "logs", "-f", "web-0", "-c", "main",
    ]);
    let mut follow = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(log_dir.join("main/1.log"))
        .unwrap();
    f.write_all(b"line4\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(
        &record,
        pod_record(pid, side.0.id(), 2, &log_dir.join("main/2.log")),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while follow.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if follow.try_wait().unwrap().is_none() {
        let _ = follow.kill();
        panic!("logs -f did not stop when the attempt ended");
    }
    let mut followed = String::new();
    follow
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut followed)
        .unwrap();
    assert_eq!(followed, "line1\nline2\nline3\nline4\n");

    // A record whose sandbox is gone.
    drop(sandbox);
    let out = podnet(&["exec", "web-0", "-c", "main", "--", "true"], None);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with(&format!(
            "error: the sandbox of pod \"web-0\" (pid {pid}) is not running"
        )),
        "{}",
        out.stderr
    );
}

const POLICIES: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web
  namespace: shop
  labels: {team: web}
  annotations: {note: front door}
spec:
  podSelector:
    matchLabels: {app: web}
    matchExpressions:
    - {key: tier, operator: In, values: [b, a]}
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
    - podSelector: {}
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
  - to:
    - ipBlock: {cidr: 10.0.0.0/8}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: shop}
spec:
  podSelector: {}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-only, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Egress]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: protect-db}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: shop}}}
  ingress:
  - action: Deny
    from: [{namespaces: {}}]
"#;

#[test]
fn network_policies_get_and_describe_as_kubectl() {
    let s = Server::start(&[]);
    let file = s.write("policies.yaml", POLICIES);
    assert_eq!(
        s.ok(&["apply", "-f", &file]),
        "namespace/shop created\nnetworkpolicy.networking.k8s.io/web created\nnetworkpolicy.networking.k8s.io/deny-all created\nnetworkpolicy.networking.k8s.io/egress-only created\nclusternetworkpolicy.policy.networking.k8s.io/protect-db created\n"
    );
    for ty in ["networkpolicy", "networkpolicies", "netpol"] {
        let table = s.ok(&["get", ty, "-n", "shop"]);
        assert_eq!(header(&table), "NAME          POD-SELECTOR            AGE");
        let rows: Vec<Vec<&str>> = lines(&table)[1..]
            .iter()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0][..2], ["deny-all", "<none>"]);
        assert_eq!(rows[1][..2], ["egress-only", "app=db"]);
        assert_eq!(rows[2][..2], ["web", "app=web,tier"]);
        assert_eq!(rows[2][2..4], ["in", "(a,b)"]);
    }
    let cnp = s.ok(&["get", "cnp"]);
    assert_eq!(header(&cnp), "NAME         TIER    PRIORITY   AGE");
    assert!(
        lines(&cnp)[1].starts_with("protect-db   Admin   10         "),
        "{cnp}"
    );
    // kubectl's tables and descriptions of the same objects, where kubectl is installed.
    for args in [
        &["get", "netpol", "-n", "shop"][..],
        &["get", "cnp", "-o", "wide"][..],
        &["describe", "netpol", "web", "-n", "shop"][..],
        &["describe", "netpol", "-n", "shop"][..],
        &["describe", "networkpolicy", "deny"][..],
        &["describe", "cnp", "protect-db"][..],
    ] {
        let ours = s.run(args, None);
        let Some(theirs) = s.kubectl(args) else {
            eprintln!("SKIPPED: kubectl is not installed; podnet's output is not compared");
            break;
        };
        assert_eq!(ours.code, theirs.code, "{args:?}: {}", ours.stderr);
        assert_eq!(
            ages_masked(&ours.stdout),
            ages_masked(&theirs.stdout),
            "{args:?}"
        );
    }
    let web = s.ok(&["describe", "netpol", "web", "-n", "shop"]);
    assert!(web.contains("Spec:\n  PodSelector:     app=web,tier in (a,b)\n  Allowing ingress traffic:\n    To Port: 80/TCP\n    To Port: http/TCP\n    To Port Range: 32000-32768/UDP\n    From:\n      NamespaceSelector: team=front\n      PodSelector: role=client\n    From:\n      IPBlock:\n        CIDR: 172.17.0.0/16\n        Except: 172.17.1.0/24, 172.17.2.0/24\n    From:\n      PodSelector: <none>\n    ----------\n"), "{web}");
    let egress = s.ok(&["describe", "netpol", "egress-only", "-n", "shop"]);
    assert!(egress.ends_with("Spec:\n  PodSelector:     app=db\n  Not affecting ingress traffic\n  Allowing egress traffic:\n    <none> (Selected pods are isolated for egress connectivity)\n  Policy Types: Egress\n"), "{egress}");
}

/// A table with its AGE column (the last) read as a duration and masked: two commands run
/// one after the other may print the same object's age a second apart.
fn ages_masked(table: &str) -> String {
    let mut rows = table.lines();
    let Some(head) = rows.next() else {
        return String::new();
    };
    if !head.ends_with("   AGE") {
        return table.to_owned();
    }
    let mut out = format!("{head}\n");
    for row in rows {
        let (front, age) = row.rsplit_once(' ').unwrap_or(("", row));
        let is_age = age.len() >= 2
            && age.chars().all(|c| c.is_ascii_alphanumeric())
            && age.starts_with(|c: char| c.is_ascii_digit())
            && age.ends_with(['s', 'm', 'h', 'd', 'y']);
        assert!(is_age, "not an age at the end of {row:?}");
        out.push_str(&format!("{front} <age>\n"));
    }
    out
}

/// The oldest kubectl whose output podnet's is compared with.
const MIN_KUBECTL_MINOR: u32 = 22;

/// kubectl's minor version (`"minor": "32"`, or `"20+"` in some builds).
fn kubectl_minor(bin: &str) -> Option<u32> {
    let out = Command::new(bin)
        .args(["version", "--client", "-o", "json"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let minor = v["clientVersion"]["minor"].as_str()?;
    minor.trim_end_matches('+').parse().ok()
}
