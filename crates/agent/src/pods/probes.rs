//! Container probes, run as kubelet runs them: `tcpSocket` and `httpGet`
//! connect to the pod's address from inside the pod's network namespace (a
//! thread that entered it creates the socket), `exec` runs the command in the
//! pod through the sandbox. Each probe of a running container has a task that
//! applies `initialDelaySeconds`, `periodSeconds`, `timeoutSeconds` and the
//! success and failure thresholds, and reports each change of its verdict.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use podnet_kernel::NetNs;
use tokio::sync::mpsc;

use crate::runtime::sandbox::pod_command;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Startup,
    Readiness,
    Liveness,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "startup",
            ProbeKind::Readiness => "readiness",
            ProbeKind::Liveness => "liveness",
        }
    }
}

/// Where a container's probes go.
pub struct ProbeTarget {
    /// The pod's network namespace.
    pub netns: PathBuf,
    pub pod_ip: Option<Ipv4Addr>,
    pub podnet: PathBuf,
    pub sandbox_pid: i32,
    /// The container's environment (exec probes run with it).
    pub env: Vec<(String, String)>,
    pub ports: Vec<ContainerPort>,
}

/// A probe's verdict changed.
#[derive(Debug)]
pub struct ProbeEvent {
    pub container: String,
    pub attempt: u32,
    pub kind: ProbeKind,
    pub ok: bool,
    pub message: Option<String>,
}

/// The probe's timing and thresholds, with Kubernetes' defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(probe: &Probe) -> Timing {
        let secs = |v: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(v.unwrap_or(default).max(min) as u64)
        };
        let count = |v: Option<i32>, default: i32| v.unwrap_or(default).max(1) as u32;
        Timing {
            initial_delay: secs(probe.initial_delay_seconds, 0, 0),
            period: secs(probe.period_seconds, 10, 1),
            timeout: secs(probe.timeout_seconds, 1, 1),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// Runs one probe of one container attempt until the task is aborted (or,
/// for startup and liveness probes, until its verdict is final).
pub async fn run(
    kind: ProbeKind,
    probe: Probe,
    target: Arc<ProbeTarget>,
    container: String,
    attempt: u32,
    tx: mpsc::UnboundedSender<super::worker::Event>,
) {
    let timing = Timing::of(&probe);
    tokio::time::sleep(timing.initial_delay).await;
    // Liveness holds until proven otherwise; readiness and startup do not.
    let mut verdict: Option<bool> = (kind == ProbeKind::Liveness).then_some(true);
    let (mut successes, mut failures) = (0u32, 0u32);
    loop {
        let result = match tokio::time::timeout(timing.timeout, probe_once(&probe, &target)).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {}s", timing.timeout.as_secs())),
        };
        let message = match result {
            Ok(()) => {
                successes += 1;
                failures = 0;
                None
            }
            Err(m) => {
                failures += 1;
                successes = 0;
                Some(format!("{} probe failed: {m}", kind.as_str()))
            }
        };
        let next = if successes >= timing.success_threshold {
            Some(true)
        } else if failures >= timing.failure_threshold {
            Some(false)
        } else {
            verdict
        };
        if next != verdict {
            verdict = next;
            let ok = next == Some(true);
            let event = ProbeEvent {
                container: container.clone(),
                attempt,
                kind,
                ok,
                message,
            };
            if tx.send(super::worker::Event::Probe(event)).is_err() {
                return;
            }
            let last = match kind {
                ProbeKind::Startup => true,
                ProbeKind::Liveness => !ok,
                ProbeKind::Readiness => false,
            };
            if last {
                return;
            }
        }
        tokio::time::sleep(timing.period).await;
    }
}

/// Runs the probe once: `Ok` on success, else why it failed.
pub async fn probe_once(probe: &Probe, target: &Arc<ProbeTarget>) -> Result<(), String> {
    if let Some(exec) = &probe.exec {
        return exec_probe(exec.command.as_deref().unwrap_or_default(), target).await;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let addr = socket_addr(tcp.host.as_deref(), &tcp.port, target)?;
        let netns = target.netns.clone();
        return blocking(move || {
            in_netns(&netns, move || {
                TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .map(drop)
                    .map_err(|e| format!("dial tcp {addr}: {e}"))
            })
        })
        .await;
    }
    if let Some(http) = &probe.http_get {
        if http
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"))
        {
            return Err(
                "HTTPS probes are not supported by the podnet lab runtime: use scheme HTTP".into(),
            );
        }
        let addr = socket_addr(http.host.as_deref(), &http.port, target)?;
        let request = http_request(http, addr);
        let netns = target.netns.clone();
        return blocking(move || in_netns(&netns, move || http_get(addr, &request))).await;
    }
    if probe.grpc.is_some() {
        return Err("gRPC probes are not supported by the podnet lab runtime: use tcpSocket, httpGet or exec".into());
    }
    Err("the probe has no handler: give exec, tcpSocket or httpGet".into())
}

async fn blocking<F>(f: F) -> Result<(), String>
where
    F: FnOnce() -> Result<(), String> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(format!("the probe thread failed: {e}")))
}

fn in_netns<F>(netns: &std::path::Path, f: F) -> Result<(), String>
where
    F: FnOnce() -> Result<(), String> + Send,
{
    let ns = NetNs::open_path(netns).map_err(|e| format!("the pod's network is gone: {e}"))?;
    ns.run(f)
        .map_err(|e| format!("enter the pod's network namespace: {e}"))?
}

/// The probe's address: `host` (an IP) or the pod's IP, and the port, by
/// number or by the name of a container port.
fn socket_addr(
    host: Option<&str>,
    port: &IntOrString,
    target: &ProbeTarget,
) -> Result<SocketAddr, String> {
    let port = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => match s.parse::<i32>() {
            Ok(n) => n,
            Err(_) => target
                .ports
                .iter()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("the container has no port named {s:?}"))?,
        },
    };
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("port {port} is out of range 1-65535"))?;
    let ip: IpAddr = match host.filter(|h| !h.is_empty()) {
        Some(h) => h
            .parse()
            .map_err(|_| format!("probe host {h:?} is not an IP address"))?,
        None => IpAddr::V4(target.pod_ip.unwrap_or(Ipv4Addr::LOCALHOST)),
    };
    Ok(SocketAddr::new(ip, port))
}

fn http_request(http: &HTTPGetAction, addr: SocketAddr) -> String {
    let path = http
        .path
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let mut headers = vec![
        ("Host".to_string(), addr.to_string()),
        ("User-Agent".to_string(), "kube-probe/1.35".to_string()),
        ("Accept".to_string(), "*/*".to_string()),
    ];
    for h in http.http_headers.as_deref().unwrap_or_default() {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&h.name));
        headers.push((h.name.clone(), h.value.clone()));
    }
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    req
}

/// A minimal HTTP/1.1 GET: success for a status of 200-399.
fn http_get(addr: SocketAddr, request: &str) -> Result<(), String> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("dial tcp {addr}: {e}"))?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    conn.write_all(request.as_bytes())
        .map_err(|e| format!("send the request to {addr}: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = conn
            .read(&mut buf)
            .map_err(|e| format!("read the response from {addr}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let code = status_code(&head).ok_or_else(|| {
        format!(
            "{addr} did not answer with HTTP: {:?}",
            String::from_utf8_lossy(&head[..head.len().min(80)])
        )
    })?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// The status code of an HTTP/1.x status line.
fn status_code(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head).ok()?;
    let line = text.split("\r\n").next()?;
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

async fn exec_probe(command: &[String], target: &ProbeTarget) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Err("the exec probe has no command".into());
    };
    let mut cmd = pod_command(&target.podnet, target.sandbox_pid, program);
    cmd.args(args)
        .env_clear()
        .envs(target.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let out = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("run {program}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.trim().is_empty() {
        if !text.is_empty() {
            text.push_str("; ");
        }
        text.push_str(err.trim());
    }
    text.truncate(256);
    Err(format!(
        "command {:?} exited with {}{}",
        command.join(" "),
        out.status.code().unwrap_or(-1),
        if text.is_empty() {
            String::new()
        } else {
            format!(": {text}")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_defaults() {
        let t = Timing::of(&Probe::default());
        assert_eq!(t.initial_delay, Duration::ZERO);
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 503 Nope\r\nX: y"), Some(503));
        assert_eq!(status_code(b"web got: GET / HTTP/1.1"), None);
    }

    #[test]
    fn named_ports_and_hosts() {
        let target = ProbeTarget {
            netns: "/nonexistent".into(),
            pod_ip: Some(Ipv4Addr::new(10, 244, 1, 5)),
            podnet: "/bin/false".into(),
            sandbox_pid: 1,
            env: vec![],
            ports: vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }],
        };
        assert_eq!(
            socket_addr(None, &IntOrString::String("http".into()), &target),
            Ok("10.244.1.5:8080".parse().unwrap())
        );
        assert_eq!(
            socket_addr(Some("127.0.0.1"), &IntOrString::Int(80), &target),
            Ok("127.0.0.1:80".parse().unwrap())
        );
        assert!(socket_addr(None, &IntOrString::String("x".into()), &target).is_err());
        assert!(socket_addr(None, &IntOrString::Int(70000), &target).is_err());
    }

    #[test]
    fn http_probe_against_a_local_server() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for (i, conn) in listener.incoming().take(2).enumerate() {
                let mut conn = conn.unwrap();
                let mut buf = [0u8; 1024];
                let n = conn.read(&mut buf).unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(req.starts_with("GET /healthz HTTP/1.1\r\n"), "{req}");
                assert!(req.contains("X-Probe: yes\r\n"), "{req}");
                let status = if i == 0 { "204 No Content" } else { "500 Oops" };
                conn.write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                )
                .unwrap();
            }
        });
        let http = HTTPGetAction {
            path: Some("/healthz".into()),
            port: IntOrString::Int(addr.port() as i32),
            http_headers: Some(vec![k8s_openapi::api::core::v1::HTTPHeader {
                name: "X-Probe".into(),
                value: "yes".into(),
            }]),
            ..Default::default()
        };
        let req = http_request(&http, addr);
        assert_eq!(http_get(addr, &req), Ok(()));
        assert_eq!(
            http_get(addr, &req),
            Err("HTTP probe failed with statuscode: 500".into())
        );
        server.join().unwrap();
    }
}
