//! TLS with a bearer token, exercised on 127.0.0.1 with the TLS mode `Always`: kube-rs and
//! kubectl through the written kubeconfig, 401 without the token, anonymous health and
//! version, plain HTTP refused on the TLS port, the CA kept across restarts, and given
//! certificate and token files. (Binding off loopback is not tested by binding; the decision
//! is unit-tested in `tls.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::TestServer;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use podnet_apiserver::server::StoreConfig;
use podnet_apiserver::tls::{TlsConfig, TlsMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start_tls(tls: TlsConfig) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), StoreConfig::Embedded);
    config.tls = tls;
    TestServer::start_with(dir, None, config).await
}

fn always() -> TlsConfig {
    TlsConfig {
        mode: TlsMode::Always,
        ..TlsConfig::default()
    }
}

async fn kube_config(path: &Path) -> kube::Config {
    let kubeconfig = Kubeconfig::read_from(path).unwrap();
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap()
}

async fn client_from(path: &Path) -> kube::Client {
    kube::Client::try_from(kube_config(path).await).unwrap()
}

async fn namespace_names(client: kube::Client) -> Result<Vec<String>, kube::Error> {
    let list = Api::<Namespace>::all(client)
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|ns| ns.metadata.name)
        .collect())
}

fn status_code(result: Result<Vec<String>, kube::Error>) -> u16 {
    match result {
        Err(kube::Error::Api(status)) => status.code,
        other => panic!("expected an API error Status, got {other:?}"),
    }
}

#[tokio::test]
async fn kubeconfig_carries_the_ca_and_the_token() {
    let ts = start_tls(always()).await;
    let server = ts.server();
    assert_eq!(server.url(), format!("https://{}", server.local_addr()));
    let text = std::fs::read_to_string(server.kubeconfig_path()).unwrap();
    assert!(text.contains("certificate-authority-data: "), "{text}");
    let token = std::fs::read_to_string(ts.dir.path().join("token")).unwrap();
    assert!(text.contains(token.trim()), "{text}");

    let client = client_from(server.kubeconfig_path()).await;
    let names = namespace_names(client.clone()).await.unwrap();
    assert!(names.contains(&"default".to_owned()), "{names:?}");
    // The health and version endpoints answer through TLS with the token too.
    let healthz = client
        .request_text(
            axum::http::Request::get("/healthz")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(healthz, "ok");
    ts.stop().await;
}

#[tokio::test]
async fn api_requests_without_the_token_get_401() {
    let ts = start_tls(always()).await;
    let path = ts.server().kubeconfig_path().to_path_buf();

    let mut anonymous = kube_config(&path).await;
    anonymous.auth_info.token = None;
    let anonymous = kube::Client::try_from(anonymous).unwrap();
    assert_eq!(status_code(namespace_names(anonymous.clone()).await), 401);

    let mut wrong = kube_config(&path).await;
    wrong.auth_info.token = Some("not-the-token".to_owned().into());
    let wrong = kube::Client::try_from(wrong).unwrap();
    assert_eq!(status_code(namespace_names(wrong).await), 401);

    // As kube-apiserver allows anonymous access to them: health and version.
    for path in ["/healthz", "/livez", "/readyz"] {
        let text = anonymous
            .request_text(axum::http::Request::get(path).body(Vec::new()).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{path} without a token: {e}"));
        assert_eq!(text, "ok", "{path}");
    }
    let version = anonymous.apiserver_version().await.unwrap();
    assert!(!version.git_version.is_empty());
    // Discovery is not anonymous.
    let err = anonymous
        .request_text(axum::http::Request::get("/api").body(Vec::new()).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 401),
        "{err:?}"
    );
    // Nor are the metrics (kube-apiserver's /metrics needs authorization too).
    let metrics = || {
        axum::http::Request::get("/metrics")
            .body(Vec::new())
            .unwrap()
    };
    let err = anonymous.request_text(metrics()).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 401),
        "{err:?}"
    );
    let text = client_from(&path)
        .await
        .request_text(metrics())
        .await
        .unwrap();
    assert!(text.contains("\napiserver_request_total{"), "{text}");
    ts.stop().await;
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_refused() {
    let ts = start_tls(always()).await;
    let addr = ts.server().local_addr();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.0 400"), "{answer}");
    assert!(answer.contains("HTTPS server"), "{answer}");
    assert!(!answer.contains("NamespaceList"), "{answer}");
    // The server still serves TLS afterwards.
    let client = client_from(ts.server().kubeconfig_path()).await;
    namespace_names(client).await.unwrap();
    ts.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_the_ca_and_the_token() {
    let mut ts = start_tls(always()).await;
    let before = Kubeconfig::read_from(ts.server().kubeconfig_path()).unwrap();
    let pki = ts.dir.path().join("pki");
    let ca = std::fs::read(pki.join("ca.crt")).unwrap();
    let cert = std::fs::read(pki.join("apiserver.crt")).unwrap();
    ts.restart().await;
    assert_eq!(std::fs::read(pki.join("ca.crt")).unwrap(), ca);
    assert_eq!(std::fs::read(pki.join("apiserver.crt")).unwrap(), cert);

    // The kubeconfig from before the restart still works (only the port moved: the test
    // server binds port 0).
    let mut old = before.clone();
    for cluster in &mut old.clusters {
        if let Some(c) = cluster.cluster.as_mut() {
            c.server = Some(ts.server().url().to_owned());
        }
    }
    let config = kube::Config::from_custom_kubeconfig(old, &KubeConfigOptions::default())
        .await
        .unwrap();
    let names = namespace_names(kube::Client::try_from(config).unwrap())
        .await
        .unwrap();
    assert!(names.contains(&"kube-system".to_owned()));
    let after = Kubeconfig::read_from(ts.server().kubeconfig_path()).unwrap();
    let ca_data = |k: &Kubeconfig| {
        k.clusters[0]
            .cluster
            .as_ref()
            .unwrap()
            .certificate_authority_data
            .clone()
    };
    assert_eq!(ca_data(&before), ca_data(&after));
    ts.stop().await;
}

fn kubectl_binary() -> PathBuf {
    for p in ["/usr/bin/kubectl", "/usr/local/bin/kubectl"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("kubectl is not installed: install it with `apt-get install -y kubernetes-client`");
}

#[tokio::test]
async fn kubectl_uses_the_kubeconfig() {
    let ts = start_tls(always()).await;
    let kubeconfig = ts.server().kubeconfig_path().to_path_buf();
    let home = tempfile::tempdir().unwrap();
    let run = move |args: &[&str]| {
        Command::new(kubectl_binary())
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", home.path())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run kubectl")
    };
    let (ok, denied) = tokio::task::spawn_blocking(move || {
        let ok = run(&["get", "ns"]);
        // The kubeconfig's CA with another token: kubectl reports the 401.
        let denied = run(&["--token=not-the-token", "get", "ns"]);
        (ok, denied)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "kubectl get ns: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains("default") && stdout.contains("kube-system"),
        "{stdout}"
    );
    assert_eq!(denied.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("Unauthorized"), "{stderr}");
    ts.stop().await;
}

#[tokio::test]
async fn given_certificate_and_token_files() {
    // A CA and a serving certificate made elsewhere (here with rcgen, as an operator's
    // tooling would).
    let files = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "operator-ca");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let write = |name: &str, text: &str| {
        let p = files.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let tls = TlsConfig {
        mode: TlsMode::Always,
        cert_file: Some(write("server.crt", &cert.pem())),
        key_file: Some(write("server.key", &key.serialize_pem())),
        ca_file: Some(write("ca.crt", &ca_cert.pem())),
        token_file: Some(write("token", "operator-token-123\n")),
        extra_sans: Vec::new(),
    };
    let ts = start_tls(tls).await;
    assert!(!ts.dir.path().join("pki").exists());
    assert!(!ts.dir.path().join("token").exists());
    let text = std::fs::read_to_string(ts.server().kubeconfig_path()).unwrap();
    assert!(text.contains("token: \"operator-token-123\""), "{text}");
    let client = client_from(ts.server().kubeconfig_path()).await;
    namespace_names(client).await.unwrap();
    ts.stop().await;
}

#[tokio::test]
async fn a_mismatched_key_file_is_refused_with_a_reason() {
    let files = tempfile::tempdir().unwrap();
    let one = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    let cert = files.path().join("server.crt");
    let key = files.path().join("server.key");
    std::fs::write(&cert, one.cert.pem()).unwrap();
    std::fs::write(&key, other.serialize_pem()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), StoreConfig::Memory);
    config.tls = TlsConfig {
        mode: TlsMode::Always,
        cert_file: Some(cert),
        key_file: Some(key),
        ..TlsConfig::default()
    };
    let err = podnet_apiserver::server::ApiServer::start(config)
        .await
        .err()
        .expect("start fails");
    let msg = err.to_string();
    assert!(
        msg.contains("server.crt") && msg.contains("belong together"),
        "{msg}"
    );
}

#[tokio::test]
async fn loopback_stays_plain_http_without_a_token_by_default() {
    let ts = common::TestServer::start(common::Backend::Embedded).await;
    assert!(ts.server().url().starts_with("http://"));
    let text = std::fs::read_to_string(ts.server().kubeconfig_path()).unwrap();
    assert!(!text.contains("token") && !text.contains("certificate-authority"));
    assert!(!ts.dir.path().join("pki").exists());
    let client = client_from(ts.server().kubeconfig_path()).await;
    namespace_names(client).await.unwrap();
    ts.stop().await;
}

/// A listening socket handed over by descriptor (`--listen-fd`, how the lab's agents reach
/// the API from their namespaces) is served with TLS and the token, with its own
/// kubeconfig; the loopback listener then needs the token too.
#[tokio::test]
async fn an_inherited_listener_is_served_with_tls_and_its_own_kubeconfig() {
    use std::os::fd::IntoRawFd;
    let dir = tempfile::tempdir().unwrap();
    let inherited = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let inherited_addr = inherited.local_addr().unwrap();
    let extra_kubeconfig = dir.path().join("agent-kubeconfig");
    let mut config = common::config(dir.path(), StoreConfig::Embedded);
    config.extra_listeners = vec![podnet_apiserver::server::ExtraListener {
        fd: inherited.into_raw_fd(),
        kubeconfig: extra_kubeconfig.clone(),
    }];
    let ts = TestServer::start_with(dir, None, config).await;

    let text = std::fs::read_to_string(&extra_kubeconfig).unwrap();
    assert!(
        text.contains(&format!("server: https://{inherited_addr}")),
        "{text}"
    );
    let names = namespace_names(client_from(&extra_kubeconfig).await)
        .await
        .unwrap();
    assert!(names.contains(&"default".to_owned()), "{names:?}");
    // The loopback listener is TLS with the token as well, through its kubeconfig.
    assert!(
        ts.server().url().starts_with("https://"),
        "{}",
        ts.server().url()
    );
    let main = client_from(ts.server().kubeconfig_path()).await;
    assert!(namespace_names(main).await.is_ok());
    ts.stop().await;
}

#[tokio::test]
async fn a_descriptor_that_is_not_a_listening_socket_is_refused() {
    use std::os::fd::IntoRawFd;
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::open("/proc/self/status").unwrap();
    let mut config = common::config(dir.path(), StoreConfig::Embedded);
    config.extra_listeners = vec![podnet_apiserver::server::ExtraListener {
        fd: file.into_raw_fd(),
        kubeconfig: dir.path().join("k"),
    }];
    let err = podnet_apiserver::server::ApiServer::start(config)
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("--listen-fd") && msg.contains("not an open socket"),
        "{msg}"
    );
}
