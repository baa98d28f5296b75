//! Executing CNI plugins exactly as a container runtime does: the plugin
//! binary found on the plugin path, `CNI_*` variables in its environment, the
//! per-plugin config (with `prevResult` chained) on stdin, the result or error
//! JSON on stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use podnet_api::cni::{CniError, NetConfList};
use podnet_kernel::NetNs;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum CniExecError {
    #[error("CNI plugin {plugin} not found in {dirs}: install it or fix the CNI bin dir")]
    NotFound { plugin: String, dirs: String },
    #[error("run CNI plugin {plugin}: {source}")]
    Spawn {
        plugin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} {command} failed: {error}")]
    Plugin {
        plugin: String,
        command: String,
        error: CniError,
    },
    #[error("CNI plugin {plugin} {command} printed an unreadable result: {why}")]
    Output {
        plugin: String,
        command: String,
        why: String,
    },
    #[error("CNI config: {0}")]
    Config(CniError),
}

/// One attachment of a container to a network.
pub struct AttachmentRef<'a> {
    pub container_id: &'a str,
    pub netns: &'a Path,
    pub ifname: &'a str,
}

/// A network (conflist) and where its plugins live; plugins run in the
/// namespace `host_ns` (the node's), or the caller's when `None`.
pub struct CniNetwork {
    pub list: NetConfList,
    pub bin_dirs: Vec<PathBuf>,
    pub host_ns: Option<NetNs>,
}

impl CniNetwork {
    /// Runs ADD through the plugin chain; returns the last plugin's result.
    pub fn add(&self, a: &AttachmentRef) -> Result<Value, CniExecError> {
        self.add_with_args(a, "")
    }

    /// ADD with `CNI_ARGS` (`K8S_POD_NAMESPACE=…;K8S_POD_NAME=…`, as
    /// kubelet's runtimes pass them; empty for none).
    pub fn add_with_args(&self, a: &AttachmentRef, cni_args: &str) -> Result<Value, CniExecError> {
        let mut prev: Option<Value> = None;
        for i in 0..self.list.plugins.len() {
            let out = self.exec(i, "ADD", a, prev.as_ref(), cni_args)?;
            prev =
                Some(out.ok_or_else(|| self.output_err(i, "ADD", "no result on stdout".into()))?);
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// Runs DEL through the chain in reverse order.
    pub fn del(&self, a: &AttachmentRef, prev: Option<&Value>) -> Result<(), CniExecError> {
        self.del_with_args(a, prev, "")
    }

    /// DEL with `CNI_ARGS` (see [`CniNetwork::add_with_args`]).
    pub fn del_with_args(
        &self,
        a: &AttachmentRef,
        prev: Option<&Value>,
        cni_args: &str,
    ) -> Result<(), CniExecError> {
        for i in (0..self.list.plugins.len()).rev() {
            self.exec(i, "DEL", a, prev, cni_args)?;
        }
        Ok(())
    }

    /// Runs CHECK through the chain with the ADD result as `prevResult`.
    pub fn check(&self, a: &AttachmentRef, prev: &Value) -> Result<(), CniExecError> {
        for i in 0..self.list.plugins.len() {
            self.exec(i, "CHECK", a, Some(prev), "")?;
        }
        Ok(())
    }

    /// Runs GC (CNI 1.1) through the chain: every plugin may release what
    /// belongs to no attachment in `valid` (container ID, interface name).
    /// Skipped when the list sets `disableGC`.
    pub fn gc(&self, valid: &[(String, String)]) -> Result<(), CniExecError> {
        if self.list.disable_gc {
            return Ok(());
        }
        let valid: Vec<Value> = valid
            .iter()
            .map(|(id, ifname)| serde_json::json!({"containerID": id, "ifname": ifname}))
            .collect();
        for i in 0..self.list.plugins.len() {
            let mut config: Value = self
                .list
                .plugin_config(i, None)
                .map_err(CniExecError::Config)
                .and_then(|bytes| {
                    serde_json::from_slice(&bytes)
                        .map_err(|e| self.output_err(i, "GC", format!("encode the config: {e}")))
                })?;
            config["cni.dev/valid-attachments"] = Value::Array(valid.clone());
            let stdin = serde_json::to_vec(&config)
                .map_err(|e| self.output_err(i, "GC", format!("encode the config: {e}")))?;
            self.run_plugin(i, "GC", None, &stdin, "")?;
        }
        Ok(())
    }

    fn plugin_name(&self, i: usize) -> String {
        self.list.plugin_type(i).unwrap_or("?").to_string()
    }

    fn output_err(&self, i: usize, command: &str, why: String) -> CniExecError {
        CniExecError::Output {
            plugin: self.plugin_name(i),
            command: command.into(),
            why,
        }
    }

    fn find_binary(&self, plugin: &str) -> Result<PathBuf, CniExecError> {
        self.bin_dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| CniExecError::NotFound {
                plugin: plugin.to_string(),
                dirs: self
                    .bin_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
            })
    }

    fn exec(
        &self,
        i: usize,
        command: &str,
        a: &AttachmentRef,
        prev: Option<&Value>,
        cni_args: &str,
    ) -> Result<Option<Value>, CniExecError> {
        let config = self
            .list
            .plugin_config(i, prev)
            .map_err(CniExecError::Config)?;
        self.run_plugin(i, command, Some(a), &config, cni_args)
    }

    /// Executes plugin `i` with `config` on stdin; `a` is `None` for the
    /// commands that concern no attachment (GC).
    fn run_plugin(
        &self,
        i: usize,
        command: &str,
        a: Option<&AttachmentRef>,
        config: &[u8],
        cni_args: &str,
    ) -> Result<Option<Value>, CniExecError> {
        let plugin = self.plugin_name(i);
        let binary = self.find_binary(&plugin)?;
        let path = std::env::join_paths(&self.bin_dirs).unwrap_or_default();
        let mut cmd = Command::new(&binary);
        cmd.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", path);
        if let Some(a) = a {
            cmd.env("CNI_CONTAINERID", a.container_id)
                .env("CNI_NETNS", a.netns)
                .env("CNI_IFNAME", a.ifname);
        }
        if !cni_args.is_empty() {
            cmd.env("CNI_ARGS", cni_args);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_err = |source| CniExecError::Spawn {
            plugin: plugin.clone(),
            source,
        };
        if let Some(ns) = &self.host_ns {
            ns.enter_on_exec(&mut cmd)
                .map_err(|e| spawn_err(std::io::Error::other(e.to_string())))?;
        }
        let mut child = cmd.spawn().map_err(spawn_err)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(config).map_err(spawn_err)?;
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        if !out.status.success() {
            let error = CniError::from_json(&out.stdout).unwrap_or_else(|_| {
                CniError::internal(format!(
                    "exit status {}; stdout: {}; stderr: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            });
            return Err(CniExecError::Plugin {
                plugin,
                command: command.into(),
                error,
            });
        }
        if out.stdout.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(None);
        }
        serde_json::from_slice(&out.stdout)
            .map(Some)
            .map_err(|e| self.output_err(i, command, e.to_string()))
    }
}
