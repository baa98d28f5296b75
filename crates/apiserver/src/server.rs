//! Starting and stopping an apiserver: the store, bootstrap objects, allocator repair,
//! controllers, the HTTP listener and the kubeconfig it writes for clients.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::serve::ListenerExt;
use podnet_api::k8s::kinds;
use podnet_store::{EmbeddedOptions, EmbeddedStore, MemoryStore, Store};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::alloc::{AllocatorConfig, Allocators};
use crate::controllers::ControllerConfig;
use crate::error::ApiError;
use crate::http::{self, AppState};
use crate::metrics::{ApiMetrics, MeasuredStore};
use crate::registry::Registry;
use crate::rest::Rest;
use crate::tls::{self, TlsConfig, TlsListener};

/// Where objects are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// A redb file under the data directory (the default).
    Embedded,
    /// etcd v3 at these endpoints (`host:port` or `http://host:port`).
    Etcd { endpoints: Vec<String> },
    /// In memory, lost on exit (tests).
    Memory,
}

impl StoreConfig {
    /// Parses `embedded`, `memory` or `etcd://HOST:PORT[,HOST:PORT…]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "embedded" => Ok(StoreConfig::Embedded),
            "memory" => Ok(StoreConfig::Memory),
            _ => {
                let rest = s.strip_prefix("etcd://").ok_or_else(|| {
                    format!("unknown store {s:?}: use embedded, memory or etcd://HOST:PORT[,HOST:PORT...]")
                })?;
                let endpoints: Vec<String> = rest
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(|e| format!("http://{e}"))
                    .collect();
                if endpoints.is_empty() {
                    return Err(format!(
                        "store {s:?} names no etcd endpoint: use etcd://HOST:PORT"
                    ));
                }
                Ok(StoreConfig::Etcd { endpoints })
            }
        }
    }
}

/// Everything `podnet apiserver` is told.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    pub allocators: AllocatorConfig,
    pub controllers: ControllerConfig,
    pub bookmark_interval: Duration,
    /// When to serve TLS with a bearer token, and with which certificate and token.
    pub tls: TlsConfig,
    /// Listening sockets inherited from the parent, served too (always with TLS).
    pub extra_listeners: Vec<ExtraListener>,
    /// The group versions served: all but those switched off (`--runtime-config`).
    pub versions: crate::versions::ServedVersions,
}

/// A listening socket inherited from the parent (`--listen-fd`), e.g. one the lab opened
/// inside its underlay namespace; served with TLS and the token, with its own kubeconfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraListener {
    pub fd: std::os::fd::RawFd,
    /// Where to write the kubeconfig that reaches the API through this socket.
    pub kubeconfig: PathBuf,
}

/// Why the apiserver could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("opening the store: {0}")]
    Store(#[from] podnet_store::StoreError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "listening on {addr}: {source} (is another apiserver running there? pick another --bind port)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("bootstrapping the cluster objects: {0}")]
    Bootstrap(ApiError),
    #[error("setting up TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    ListenFd(#[from] crate::listeners::ListenFdError),
}

/// A running apiserver.
pub struct ApiServer {
    addr: SocketAddr,
    url: String,
    kubeconfig: PathBuf,
    store: Arc<dyn Store>,
    shutdown: watch::Sender<bool>,
    /// The listeners' tasks first, then the controllers'.
    tasks: Vec<JoinHandle<()>>,
    listener_tasks: usize,
}

impl ApiServer {
    /// Opens the store, bootstraps, starts controllers and begins serving.
    pub async fn start(config: Config) -> Result<ApiServer, StartError> {
        let mut extra = Vec::new();
        for l in &config.extra_listeners {
            let (listener, addr) = crate::listeners::take_listener(l.fd)?;
            extra.push((listener, addr, l.kubeconfig.clone()));
        }
        // An inherited socket is reachable from elsewhere: TLS and the token for all.
        let tls_on = tls::tls_enabled(config.bind.ip(), config.tls.mode) || !extra.is_empty();
        check_bind(&config.bind, tls_on)?;
        config.tls.validate(tls_on).map_err(StartError::Config)?;
        config.allocators.validate().map_err(StartError::Config)?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::Io {
            what: "creating the data directory",
            path: config.data_dir.clone(),
            source,
        })?;
        let metrics = ApiMetrics::new();
        let store: Arc<dyn Store> = Arc::new(MeasuredStore::new(
            open_store(&config).await?,
            metrics.clone(),
        ));
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        let registry = Registry::new(store.clone());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let allocators = Arc::new(Allocators::new(store.clone(), config.allocators.clone()));
        let tls_setup = if tls_on {
            let mut sans = config.tls.extra_sans.clone();
            sans.extend(extra.iter().map(|(_, addr, _)| addr.ip().to_string()));
            let names = tls::serving_names(
                config.bind.ip(),
                Some(allocators.kubernetes_service_ip()),
                tls::hostname().as_deref(),
                &sans,
            )
            .map_err(StartError::Config)?;
            Some(tls::prepare(&config.tls, &config.data_dir, &names)?)
        } else {
            None
        };
        let rest = Rest::new(registry.clone(), allocators.clone());
        let state = Arc::new(AppState {
            rest: rest.clone(),
            server_address: addr.to_string(),
            token: tls_setup.as_ref().map(|t| t.token.clone()),
            bookmark_interval: config.bookmark_interval,
            ready: Default::default(),
            shutdown: shutdown_rx.clone(),
            metrics,
            versions: config.versions.clone(),
        });
        let served = match &tls_setup {
            Some(t) => {
                Listening::Tls(TlsListener::new(listener, t.server_config.clone()).map_err(
                    |source| StartError::Bind {
                        addr: config.bind,
                        source,
                    },
                )?)
            }
            None => Listening::Plain(listener),
        };
        let mut tasks = vec![tokio::spawn(serve(
            served,
            state.clone(),
            shutdown_rx.clone(),
        ))];
        let mut extra_kubeconfigs = Vec::new();
        for (listener, extra_addr, kubeconfig) in extra {
            let tls = tls_setup.as_ref().ok_or_else(|| {
                StartError::Config("an inherited listener needs TLS, which is off".into())
            })?;
            let bind_err = |source| StartError::Bind {
                addr: extra_addr,
                source,
            };
            let listener = tokio::net::TcpListener::from_std(listener).map_err(bind_err)?;
            let listener =
                TlsListener::new(listener, tls.server_config.clone()).map_err(bind_err)?;
            tasks.push(tokio::spawn(serve(
                Listening::Tls(listener),
                state.clone(),
                shutdown_rx.clone(),
            )));
            extra_kubeconfigs.push((extra_addr, kubeconfig));
        }
        let listener_tasks = tasks.len();
        bootstrap(&rest, addr)
            .await
            .map_err(StartError::Bootstrap)?;
        if let Err(e) = allocators.repair(&registry, Duration::from_secs(60)).await {
            tracing::warn!(error = %e, "repairing allocations failed; will retry at the next start");
        }
        // Controllers run on one apiserver at a time when several share the store.
        tasks.push(crate::leader::spawn(
            store.clone(),
            registry,
            config.controllers.clone(),
            format!(
                "{}@{addr}",
                tls::hostname().unwrap_or_else(|| "apiserver".into())
            ),
            shutdown_rx,
        ));
        state.ready.store(true, Ordering::Release);
        let kubeconfig = config.data_dir.join("kubeconfig");
        let scheme = if tls_on { "https" } else { "http" };
        let url = format!("{scheme}://{}", client_addr(addr));
        let auth = tls_setup.as_ref().map(|t| KubeconfigAuth {
            ca_pem: t.ca_pem.as_deref(),
            token: &t.token,
        });
        write_kubeconfig(&kubeconfig, &url, auth.as_ref()).map_err(|source| StartError::Io {
            what: "writing the kubeconfig",
            path: kubeconfig.clone(),
            source,
        })?;
        for (extra_addr, path) in &extra_kubeconfigs {
            let extra_url = format!("https://{extra_addr}");
            write_kubeconfig(path, &extra_url, auth.as_ref()).map_err(|source| StartError::Io {
                what: "writing the kubeconfig of an inherited listener",
                path: path.clone(),
                source,
            })?;
            tracing::info!(addr = %extra_addr, kubeconfig = %path.display(), "also serving TLS on an inherited socket");
        }
        match &tls_setup {
            Some(t) => {
                tracing::info!(%addr, %url, certificate = %t.cert_file.display(), kubeconfig = %kubeconfig.display(), "apiserver serving TLS; API requests need the bearer token in the kubeconfig")
            }
            None => {
                tracing::info!(%addr, %url, kubeconfig = %kubeconfig.display(), "apiserver serving plain HTTP on loopback")
            }
        }
        Ok(ApiServer {
            addr,
            url,
            kubeconfig,
            store,
            shutdown,
            tasks,
            listener_tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL clients reach this server at (`https://…` when TLS is on), as in the
    /// kubeconfig.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The store objects are kept in (for maintenance such as compaction).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Stops serving and the controllers, and closes the store.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let mut tasks = self.tasks.into_iter();
        // The listeners first: they finish open requests and close idle connections, which
        // hold the store through the handlers' state.
        for listener in tasks.by_ref().take(self.listener_tasks) {
            if tokio::time::timeout(Duration::from_secs(5), listener)
                .await
                .is_err()
            {
                tracing::warn!("open API connections did not finish within 5 s");
            }
        }
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        // Aborted tasks drop their handles to the store on the runtime's next turns; the
        // embedded store's file is only closed (and can be reopened) once they all have.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.store) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if Arc::strong_count(&self.store) > 1 {
            tracing::warn!("parts of the apiserver still hold the store after stopping");
        }
    }
}

/// Plain HTTP without authentication is only for loopback; any other address is served
/// with TLS and a bearer token (`tls::tls_enabled` turns TLS on for it).
fn check_bind(bind: &SocketAddr, tls_on: bool) -> Result<(), StartError> {
    if tls_on || bind.ip().is_loopback() {
        return Ok(());
    }
    Err(StartError::Config(format!(
        "--bind {bind}: plain HTTP without authentication is only served on loopback; this address must be served with TLS and a bearer token (TLS mode auto or always)"
    )))
}

/// Where clients connect for a server bound to `addr`: a wildcard bind is reached over
/// loopback.
fn client_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

async fn open_store(config: &Config) -> Result<Arc<dyn Store>, StartError> {
    Ok(match &config.store {
        StoreConfig::Memory => Arc::new(MemoryStore::new()),
        StoreConfig::Embedded => {
            let path = config.data_dir.join("store.redb");
            Arc::new(EmbeddedStore::open(&path, EmbeddedOptions::default()).await?)
        }
        StoreConfig::Etcd { endpoints } => {
            let opts = podnet_store::EtcdOptions {
                endpoints: endpoints.clone(),
                ..Default::default()
            };
            Arc::new(podnet_store::EtcdStore::connect(opts).await?)
        }
    })
}

enum Listening {
    Plain(tokio::net::TcpListener),
    Tls(TlsListener),
}

async fn serve(listener: Listening, state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let app = http::router(state);
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    let result = match listener {
        Listening::Plain(l) => {
            // Watch events are small writes: without TCP_NODELAY, Nagle's algorithm holds
            // them back until the client's delayed ACK (tens of milliseconds).
            let l = l.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(l, app).with_graceful_shutdown(stop).await
        }
        Listening::Tls(l) => axum::serve(l, app).with_graceful_shutdown(stop).await,
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "the API listener failed");
    }
}

/// The namespaces every cluster has, and the `kubernetes` Service with its Endpoints.
async fn bootstrap(rest: &Rest, addr: SocketAddr) -> Result<(), ApiError> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        create_if_absent(rest.create(&kinds::NAMESPACE, "", obj).await)?;
    }
    let ip = rest.allocators().kubernetes_service_ip();
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": ip.to_string(),
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": addr.port()}]},
    });
    create_if_absent(rest.create(&kinds::SERVICE, "default", svc).await)?;
    let endpoints = http::kubernetes_endpoints(&endpoint_address(addr.ip()), addr.port());
    let existing = rest
        .registry()
        .try_get(&kinds::ENDPOINTS, "default", "kubernetes")
        .await?;
    if existing.is_none() {
        create_if_absent(rest.registry().create(&kinds::ENDPOINTS, endpoints).await)?;
    }
    Ok(())
}

fn endpoint_address(ip: IpAddr) -> String {
    ip.to_string()
}

fn create_if_absent(result: Result<Value, ApiError>) -> Result<(), ApiError> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.reason == "AlreadyExists" => Ok(()),
        Err(e) => Err(e),
    }
}

/// What a kubeconfig for a TLS-serving apiserver carries besides the address.
pub struct KubeconfigAuth<'a> {
    /// The CA (PEM) to trust; `None`: the client's system roots.
    pub ca_pem: Option<&'a str>,
    /// The bearer token.
    pub token: &'a str,
}

/// Writes a kubeconfig (mode 0600) that kubectl and podnet use to reach this server.
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    auth: Option<&KubeconfigAuth<'_>>,
) -> std::io::Result<()> {
    use base64::Engine;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut cluster = format!("    server: {server}\n");
    let mut user = " {}\n".to_owned();
    if let Some(auth) = auth {
        if let Some(ca) = auth.ca_pem {
            let data = base64::engine::general_purpose::STANDARD.encode(ca);
            cluster.push_str(&format!("    certificate-authority-data: {data}\n"));
        }
        // A JSON string is a YAML double-quoted scalar.
        user = format!("\n    token: {}\n", Value::from(auth.token));
    }
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: podnet\n  cluster:\n{cluster}users:\n- name: podnet-admin\n  user:{user}contexts:\n- name: podnet\n  context:\n    cluster: podnet\n    user: podnet-admin\n    namespace: default\ncurrent-context: podnet\npreferences: {{}}\n"
    );
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(check_bind(&addr("127.0.0.1:6443"), false).is_ok());
        assert!(check_bind(&addr("[::1]:6443"), false).is_ok());
        assert!(check_bind(&addr("0.0.0.0:6443"), true).is_ok());
        let err = check_bind(&addr("10.0.0.1:6443"), false).unwrap_err();
        assert!(err.to_string().contains("only served on loopback"), "{err}");
        assert_eq!(client_addr(addr("0.0.0.0:6443")), addr("127.0.0.1:6443"));
        assert_eq!(client_addr(addr("[::]:6443")), addr("[::1]:6443"));
        assert_eq!(client_addr(addr("10.0.0.1:6443")), addr("10.0.0.1:6443"));
    }

    #[test]
    fn kubeconfig_with_ca_and_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        let auth = KubeconfigAuth {
            ca_pem: Some("PEM"),
            token: "a:b#c",
        };
        write_kubeconfig(&path, "https://127.0.0.1:6443", Some(&auth)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = serde_saphyr::from_str(&text).unwrap();
        let cluster = &doc["clusters"][0]["cluster"];
        assert_eq!(cluster["server"], "https://127.0.0.1:6443");
        assert_eq!(cluster["certificate-authority-data"], "UEVN");
        assert_eq!(doc["users"][0]["user"]["token"], "a:b#c");
        write_kubeconfig(&path, "http://127.0.0.1:6443", None).unwrap();
        let doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["users"][0]["user"], json!({}));
    }

    #[test]
    fn store_flags() {
        assert_eq!(StoreConfig::parse("embedded"), Ok(StoreConfig::Embedded));
        assert_eq!(
            StoreConfig::parse("etcd://127.0.0.1:2379,127.0.0.2:2379"),
            Ok(StoreConfig::Etcd {
                endpoints: vec![
                    "http://127.0.0.1:2379".into(),
                    "http://127.0.0.2:2379".into()
                ]
            })
        );
        assert!(StoreConfig::parse("etcd://").is_err());
        assert!(
            StoreConfig::parse("mysql://x")
                .unwrap_err()
                .contains("use embedded")
        );
    }
}
