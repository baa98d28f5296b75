//! `podnet ui` on a real 2-node lab, in a real browser: Debian's headless `chromium`, driven
//! over the DevTools protocol (a small WebSocket client below). The page loads with no
//! console error, no exception and no failed request; it shows every node, pod and Service
//! of the lab; a pod created and deleted is on it and gone again within 2 s; a connection a
//! pod makes through a Service is drawn as a flow; a pod and a Service clicked in turn show
//! the trace between them. A screenshot is kept as `target/tmp/lab_ui.png`. And `podnet lab
//! graph` writes the same topology: DOT and SVG (which the browser's XML parser reads) with
//! every node, pod and Service.
//!
//! The browser reaches only loopback: every host name resolves to nothing except
//! 127.0.0.1, and its background services are off.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Lab, PODNET, is_root, wait_for};
use serde_json::{Value, json};

/// A WebSocket to one DevTools target: requests in order, events kept.
struct Cdp {
    stream: TcpStream,
    next_id: u64,
    events: Vec<Value>,
}

impl Cdp {
    fn connect(port: u16, path: &str) -> Cdp {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: cG9kbmV0IHVpIHRlc3QhIQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "no WebSocket: {head}");
        Cdp {
            stream,
            next_id: 1,
            events: Vec::new(),
        }
    }

    /// Sends `text` as one masked text frame (a client must mask).
    fn send_text(&mut self, text: &str) {
        let data = text.as_bytes();
        let mut frame = vec![0x81u8];
        match data.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x5a, 0x17, 0xc3, 0x8e];
        frame.extend_from_slice(&mask);
        frame.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).unwrap();
    }

    /// The next whole message (fragments joined); pings answered.
    fn receive(&mut self) -> Value {
        let mut message = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.stream.read_exact(&mut h).unwrap();
            let len = match h[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.stream.read_exact(&mut b).unwrap();
                    u16::from_be_bytes(b) as usize
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.stream.read_exact(&mut b).unwrap();
                    u64::from_be_bytes(b) as usize
                }
                n => n as usize,
            };
            let mut payload = vec![0u8; len];
            self.stream.read_exact(&mut payload).unwrap();
            match h[0] & 0x0f {
                0x8 => panic!("the browser closed the DevTools connection"),
                0x9 => {
                    let pong = [0x8a, 0x80, 0, 0, 0, 0];
                    self.stream.write_all(&pong).unwrap();
                    continue;
                }
                _ => message.extend_from_slice(&payload),
            }
            if h[0] & 0x80 != 0 {
                return serde_json::from_slice(&message).unwrap();
            }
        }
    }

    /// Calls `method`; its result (events that come meanwhile are kept).
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send_text(&json!({"id": id, "method": method, "params": params}).to_string());
        loop {
            let m = self.receive();
            if m["id"] == id {
                assert!(m["error"].is_null(), "{method}: {}", m["error"]);
                return m["result"].clone();
            }
            self.events.push(m);
        }
    }

    /// The value of the JavaScript expression `js` in the page (a promise awaited).
    fn eval(&mut self, js: &str) -> Value {
        let params = json!({"expression": js, "returnByValue": true, "awaitPromise": true});
        let r = self.call("Runtime.evaluate", params);
        assert!(
            r["exceptionDetails"].is_null(),
            "{js}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// The page's errors so far: console errors, uncaught exceptions, failed loads.
    fn errors(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| {
                let p = &e["params"];
                match e["method"].as_str() {
                    Some("Runtime.exceptionThrown") => true,
                    Some("Runtime.consoleAPICalled") => {
                        p["type"] == "error" || p["type"] == "assert"
                    }
                    Some("Log.entryAdded") => p["entry"]["level"] == "error",
                    _ => false,
                }
            })
            .map(|e| e.to_string())
            .collect()
    }
}

/// Headless chromium with its DevTools on a free loopback port; stopped (by its PID) on drop.
struct Browser {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .args(["--remote-debugging-port=0", "--window-size=1400,900"])
            .args([
                "--disable-background-networking",
                "--disable-component-update",
            ])
            .args([
                "--disable-sync",
                "--disable-default-apps",
                "--no-default-browser-check",
            ])
            .args([
                "--disable-domain-reliability",
                "--disable-extensions",
                "--no-pings",
            ])
            // Loopback only: no other name resolves.
            .arg("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run chromium (apt-get install chromium)");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                    let port = rest.split('/').next().and_then(|p| p.parse::<u16>().ok());
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .ok()
            .flatten()
            .expect("chromium's DevTools address");
        Browser {
            child,
            port,
            _profile: profile,
        }
    }

    /// The first page's DevTools connection, with its events on.
    fn page(&self) -> Cdp {
        let (path, _) = wait_for(Duration::from_secs(10), "a page target", || {
            let list = http_get(self.port, "/json/list")?;
            let targets: Value = serde_json::from_str(&list).map_err(|e| e.to_string())?;
            targets
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                .and_then(|u| u.split_once("127.0.0.1:").map(|(_, r)| r.to_string()))
                .and_then(|r| r.find('/').map(|i| r[i..].to_string()))
                .ok_or_else(|| format!("no page in {list}"))
        });
        let mut cdp = Cdp::connect(self.port, &path);
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            cdp.call(domain, json!({}));
        }
        cdp
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SIGTERM lets chromium end its own helper processes.
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

/// A plain HTTP GET on loopback; the body (by its Content-Length: the DevTools server
/// keeps the connection open).
fn http_get(port: u16, path: &str) -> Result<String, String> {
    let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    (&s).write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(&s);
    let mut status = String::new();
    r.read_line(&mut status).map_err(|e| e.to_string())?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(status);
    }
    let mut length = 0;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v
                .trim()
                .parse()
                .map_err(|_| format!("bad length: {line}"))?;
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body).map_err(|e| e.to_string())?;
    String::from_utf8(body).map_err(|e| e.to_string())
}

/// `podnet ui` on a free loopback port; its URL. Stopped (by PID) on drop.
struct Ui {
    child: Child,
    url: String,
}

impl Ui {
    fn start(lab: &Lab) -> Ui {
        let mut child = Command::new(PODNET)
            .args([
                "--kubeconfig",
                &lab.kubeconfig,
                "ui",
                "--bind",
                "127.0.0.1:0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        Ui { child, url }
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `data-name`s of the page's elements of `kind`, sorted.
fn shown(cdp: &mut Cdp, kind: &str) -> Vec<String> {
    let js = format!(
        "Array.from(document.querySelectorAll('#picture [data-kind=\"{kind}\"]')).map(e => e.dataset.name).sort()"
    );
    serde_json::from_value(cdp.eval(&js)).unwrap()
}

/// The cluster's `namespace/name`s of `resource`, sorted (nodes: their names).
fn listed(lab: &Lab, resource: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(&lab.ok(&["get", resource, "-A", "-o", "json"])).unwrap();
    let mut names: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let m = &i["metadata"];
            match m["namespace"].as_str() {
                Some(ns) => format!("{ns}/{}", m["name"].as_str().unwrap()),
                None => m["name"].as_str().unwrap().to_string(),
            }
        })
        .collect();
    names.sort();
    names
}

/// Waits (polling the page every 50 ms) until `js` is true; how long it took.
fn page_until(cdp: &mut Cdp, within: Duration, what: &str, js: &str) -> Duration {
    let start = Instant::now();
    while cdp.eval(js) != Value::Bool(true) {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

fn has_pod(name: &str) -> String {
    format!(
        "Array.from(document.querySelectorAll('#picture [data-kind=\"pod\"]')).some(e => e.dataset.name === '{name}')"
    )
}

/// `lab graph -o dot` and `-o svg` name everything; the SVG is XML to the browser's parser.
fn check_graphs(lab: &Lab, cdp: &mut Cdp, names: &[String]) {
    let dot = lab.ok(&["lab", "graph", "--name", &lab.name, "-o", "dot"]);
    assert!(
        dot.starts_with("digraph podnet {") && dot.ends_with("}\n"),
        "{dot}"
    );
    let svg = lab.ok(&["lab", "graph", "--name", &lab.name, "-o", "svg"]);
    for name in names {
        assert!(
            dot.contains(&format!("/{name}\"")),
            "{name} not in the DOT:\n{dot}"
        );
        assert!(
            svg.contains(&format!("data-name=\"{name}\"")),
            "{name} not in the SVG"
        );
    }
    let js = format!(
        "(() => {{ const d = new DOMParser().parseFromString({}, 'image/svg+xml'); return d.getElementsByTagName('parsererror').length === 0 && d.documentElement.localName === 'svg'; }})()",
        serde_json::to_string(&svg).unwrap()
    );
    assert_eq!(
        cdp.eval(&js),
        Value::Bool(true),
        "the SVG is not well-formed XML"
    );
}

/// Clicks the page's element of `kind` named `name` (as a user would: on its box).
fn click(cdp: &mut Cdp, kind: &str, name: &str) {
    let js = format!(
        "(() => {{ const e = Array.from(document.querySelectorAll('#picture [data-kind=\"{kind}\"]')).find(e => e.dataset.name === '{name}'); e.querySelector('rect').dispatchEvent(new MouseEvent('click', {{bubbles: true}})); return true; }})()"
    );
    assert_eq!(cdp.eval(&js), Value::Bool(true));
}

#[test]
fn the_ui_shows_the_lab_live_in_a_real_browser() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let started = Instant::now();
    let browser = Browser::start();
    let lab = Lab::new("ui", "172.31.110.0/24");
    lab.up(2, &[]);
    lab.server_pod("p1", 1);
    lab.server_pod("p2", 2);
    lab.apply("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: NodePort\n  selector: {app: p2}\n  ports:\n  - {port: 80, targetPort: 8080}\n");
    lab.ready_ips(&["p1", "p2"]);
    let ui = Ui::start(&lab);
    let mut cdp = browser.page();
    cdp.call("Page.navigate", json!({"url": ui.url}));
    page_until(
        &mut cdp,
        Duration::from_secs(10),
        "the picture",
        "document.querySelector('#picture svg') !== null && document.body.dataset.revision !== undefined",
    );

    let nodes = listed(&lab, "nodes");
    assert_eq!(nodes, [lab.node(1), lab.node(2)]);
    assert_eq!(shown(&mut cdp, "node"), nodes);
    // Endpoints come a moment after their pods: wait until the arrows are in.
    page_until(
        &mut cdp,
        Duration::from_secs(5),
        "the endpoint arrows",
        "document.querySelector('#picture .endpoint[data-service=\"default/web\"][data-pod=\"default/p2\"]') !== null",
    );
    let pods = listed(&lab, "pods");
    assert!(pods.contains(&"default/p1".to_string()), "{pods:?}");
    assert_eq!(shown(&mut cdp, "pod"), pods);
    let services = listed(&lab, "services");
    assert_eq!(shown(&mut cdp, "service"), services);
    let text: String = serde_json::from_value(cdp.eval("document.body.innerText")).unwrap();
    assert!(
        text.contains("80/TCP→8080 node:3"),
        "no NodePort on the page:\n{text}"
    );

    lab.server_pod("p3", 1);
    let took = page_until(
        &mut cdp,
        Duration::from_secs(2),
        "the new pod on the page",
        &has_pod("default/p3"),
    );
    eprintln!("a new pod was on the page after {took:?}");
    lab.ok(&["delete", "pod", "p3", "--now"]);
    let gone = format!("!{}", has_pod("default/p3"));
    let took = page_until(
        &mut cdp,
        Duration::from_secs(2),
        "the deleted pod gone from the page",
        &gone,
    );
    eprintln!("a deleted pod was gone from the page after {took:?}");

    check_flow_and_trace(&lab, &mut cdp);
    check_graphs(&lab, &mut cdp, &[nodes, pods, services].concat());
    let png = cdp.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64::engine::general_purpose::STANDARD
        .decode(png["data"].as_str().unwrap())
        .unwrap();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("lab_ui.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {}", path.display());
    let errors: Vec<String> = serde_json::from_value(
        cdp.eval("Array.from(document.querySelectorAll('#errors p')).map(p => p.textContent)"),
    )
    .unwrap();
    assert!(errors.is_empty(), "the page shows errors: {errors:?}");
    // Every node's flows are read (a lab's nodes are namespaces here): no warning.
    let warnings = cdp.eval("document.getElementById('warnings').innerText");
    assert_eq!(warnings, "", "the page warns");
    assert!(
        cdp.errors().is_empty(),
        "the browser reported: {:#?}",
        cdp.errors()
    );
    eprintln!("the UI test took {:?}", started.elapsed());
}

/// A connection from p1 through Service web is drawn; p1 then web clicked shows the trace.
fn check_flow_and_trace(lab: &Lab, cdp: &mut Cdp) {
    let svc: Value = serde_json::from_str(&lab.ok(&["get", "svc", "web", "-o", "json"])).unwrap();
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let answer = lab.tcp_from(
        &lab.pod_netns("p1"),
        &format!("{cluster_ip}:80"),
        Duration::from_secs(5),
    );
    assert!(answer.starts_with("p2 got:"), "{answer}");
    let flow = "document.querySelector('#flows path.flow[data-source=\"pod default/p1\"][data-destination=\"pod default/p2\"]') !== null";
    let took = page_until(cdp, Duration::from_secs(3), "the flow drawn", flow);
    eprintln!("the flow was drawn after {took:?}");
    // Each node's flows come on their own (every node's table is read twice a second): the
    // one through the Service is node1's, the drawn one may be node2's.
    page_until(
        cdp,
        Duration::from_secs(3),
        "the flow listed through Service web",
        "document.getElementById('flow-list').innerText.includes('via service default/web')",
    );

    click(cdp, "pod", "default/p1");
    click(cdp, "service", "default/web");
    page_until(
        cdp,
        Duration::from_secs(10),
        "the trace",
        "['done', 'failed'].includes(document.getElementById('trace').className)",
    );
    let trace: String = serde_json::from_value(cdp.eval("document.getElementById('trace').className + '\\n' + document.getElementById('trace').textContent")).unwrap();
    assert!(
        trace.starts_with("done\n$ podnet trace default/p1 svc/default/web:80/tcp"),
        "{trace}"
    );
    assert!(
        trace.contains("DNAT") && trace.contains("pod default/p2"),
        "{trace}"
    );
}
