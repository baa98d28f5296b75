//! PLACEHOLDER for the pod runtime (another helper writes it and replaces this file): only
//! the interface the agent calls. It runs no pods; it waits for shutdown.

use std::path::PathBuf;

/// What the pod runtime is started with.
#[derive(Debug, Clone)]
pub struct PodRuntimeConfig {
    pub node_name: String,
    pub podnet_bin: PathBuf,
    pub cni_bin_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
}

/// Why the pod runtime stopped.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PodRuntimeError(pub String);

/// Runs the pod runtime until `shutdown` turns `true`. Placeholder: does nothing else.
pub async fn run(
    config: PodRuntimeConfig,
    client: kube::Client,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), PodRuntimeError> {
    let _ = (config, client);
    let _ = shutdown.wait_for(|stop| *stop).await;
    Ok(())
}
