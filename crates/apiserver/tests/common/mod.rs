//! Starts an apiserver for one test, on a loopback port of its own, over the embedded
//! store (in a temp dir) or a private etcd; stopped when the guard drops.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use podnet_apiserver::alloc::AllocatorConfig;
use podnet_apiserver::controllers::ControllerConfig;
use podnet_apiserver::server::{ApiServer, Config, StoreConfig};
use podnet_store::testing::EtcdServer;

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Etcd,
}

pub mod kubectl;

pub struct TestServer {
    pub server: Option<ApiServer>,
    pub dir: tempfile::TempDir,
    pub etcd: Option<EtcdServer>,
    pub config: Config,
}

pub fn config(dir: &Path, store: StoreConfig) -> Config {
    Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        store,
        allocators: AllocatorConfig {
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            nodeport_range: 30000..=32767,
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            node_cidr_size: 24,
            lb_pool: Some("192.0.2.0/28".parse().unwrap()),
        },
        controllers: ControllerConfig {
            node_monitor_grace: Duration::from_secs(40),
            ..ControllerConfig::default()
        },
        bookmark_interval: Duration::from_secs(1),
        tls: Default::default(),
        extra_listeners: Vec::new(),
        versions: Default::default(),
    }
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let etcd = match backend {
            Backend::Embedded => None,
            Backend::Etcd => Some(EtcdServer::start().await),
        };
        let store = match &etcd {
            None => StoreConfig::Embedded,
            Some(e) => StoreConfig::Etcd {
                endpoints: vec![e.client_url()],
            },
        };
        let config = config(dir.path(), store);
        Self::start_with(dir, etcd, config).await
    }

    pub async fn start_with(
        dir: tempfile::TempDir,
        etcd: Option<EtcdServer>,
        config: Config,
    ) -> TestServer {
        let server = ApiServer::start(config.clone())
            .await
            .expect("apiserver starts");
        TestServer {
            server: Some(server),
            dir,
            etcd,
            config,
        }
    }

    pub fn server(&self) -> &ApiServer {
        self.server.as_ref().expect("server running")
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server().local_addr())
    }

    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Stops the server and starts it again on the same data (a new port).
    pub async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
        self.server = Some(
            ApiServer::start(self.config.clone())
                .await
                .expect("apiserver restarts"),
        );
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
    }
}

/// Waits (bounded) until `check` passes.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not true within {timeout:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
