//! The lab's own API calls (readiness, Nodes, Pods), through the users'
//! kubeconfig: the loopback listener, with whatever TLS and token the
//! apiserver serves there. Loopback only: the lab never sends to lab
//! addresses from the root namespace.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use kube::config::{KubeConfigOptions, Kubeconfig};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A blocking client for one apiserver.
pub struct Api {
    runtime: tokio::runtime::Runtime,
    client: kube::Client,
}

impl Api {
    /// A client for the server in `kubeconfig`.
    pub fn connect(kubeconfig: &Path) -> Result<Api> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start an async runtime for the API client")?;
        let client = runtime.block_on(async {
            let kc = Kubeconfig::read_from(kubeconfig)
                .with_context(|| format!("read the kubeconfig {}", kubeconfig.display()))?;
            let mut config =
                kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .with_context(|| format!("use the kubeconfig {}", kubeconfig.display()))?;
            config.connect_timeout = Some(TIMEOUT);
            config.read_timeout = Some(TIMEOUT);
            config.write_timeout = Some(TIMEOUT);
            kube::Client::try_from(config).context("set up the API client")
        })?;
        Ok(Api { runtime, client })
    }

    /// `GET /readyz`: Ok with the body when ready, Err saying why not.
    pub fn readyz(&self) -> Result<String, String> {
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        self.runtime
            .block_on(self.client.request_text(request))
            .map(|body| body.trim().to_string())
            .map_err(|e| error_chain(&e))
    }

    /// GET a JSON document.
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let request = http::Request::get(path)
            .body(Vec::new())
            .with_context(|| format!("build GET {path}"))?;
        self.runtime
            .block_on(self.client.request::<serde_json::Value>(request))
            .map_err(|e| anyhow!("GET {path}: {}", error_chain(&e)))
    }
}

impl Api {
    /// POST a JSON object to a collection; an object that exists already counts as made.
    pub fn create(&self, path: &str, body: &serde_json::Value) -> Result<()> {
        let request = http::Request::post(path)
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(body).context("encode the object")?)
            .with_context(|| format!("build POST {path}"))?;
        match self
            .runtime
            .block_on(self.client.request::<serde_json::Value>(request))
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(anyhow!("POST {path}: {}", error_chain(&e))),
        }
    }
}

/// An error with its causes, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
