//! `podnet exec POD [-c C] [-i] -- CMD…`: runs a command as a process of the pod, on the
//! machine that runs it. The pod (its uid and node) comes from the API; its sandbox from the
//! node runtime's record (see [`super::layout`]); the command then runs through
//! `podnet sandbox exec --pid <sandbox pid>` (this binary), joining the pod's network, UTS and
//! PID namespaces, with the container's environment, and this command's stdin (with `-i`),
//! stdout and stderr. Its exit code is passed through.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use clap::Args;
use serde_json::Value;

use super::client::{Client, resource_path};
use super::layout::{self, Found};
use super::resources::Resource;
use super::{CliError, GlobalArgs, report};

/// The `PATH` containers get when their spec sets none (the pod runtime's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The pod (NAME or pod/NAME).
    #[arg(value_name = "POD")]
    pub pod: String,
    /// The container (default: the pod's default container, else its first).
    #[arg(short = 'c', long, value_name = "CONTAINER")]
    pub container: Option<String>,
    /// Pass standard input to the command.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Accepted for kubectl compatibility; the command's output goes to this terminal as is.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The command and its arguments, after --.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// A pod and one of its containers, as `exec` and `logs` address them.
pub struct PodTarget {
    pub pod: Value,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub container: String,
}

/// `pod/NAME` or `NAME` → `NAME`.
pub fn pod_name(arg: &str) -> Result<&str, CliError> {
    match arg.split_once('/') {
        None => Ok(arg),
        Some((ty, name)) if matches!(ty, "pod" | "pods" | "po") && !name.is_empty() => Ok(name),
        Some(_) => Err(CliError::other(format!(
            "{arg:?}: podnet exec and logs take a pod: NAME or pod/NAME"
        ))),
    }
}

/// The container names of a pod: regular ones, then init containers.
fn container_names(pod: &Value) -> (Vec<String>, Vec<String>) {
    let names = |key: &str| -> Vec<String> {
        pod["spec"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    };
    (names("containers"), names("initContainers"))
}

/// The container to use: the one asked for, else the pod's
/// `kubectl.kubernetes.io/default-container`, else the first (with kubectl's note on
/// stderr when there was a choice).
pub fn choose_container(pod: &Value, asked: Option<&str>) -> Result<String, CliError> {
    let (containers, init) = container_names(pod);
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
    if let Some(c) = asked {
        if containers.iter().chain(&init).any(|n| n == c) {
            return Ok(c.to_owned());
        }
        return Err(CliError::other(format!(
            "container \"{c}\" is not valid for pod \"{pod_name}\": its containers are {}",
            containers
                .iter()
                .chain(&init)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if let Some(d) = pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"]
        .as_str()
        .filter(|d| containers.iter().any(|n| n == d))
    {
        return Ok(d.to_owned());
    }
    let Some(first) = containers.first() else {
        return Err(CliError::other(format!(
            "pod \"{pod_name}\" has no containers"
        )));
    };
    if containers.len() + init.len() > 1 {
        let all: Vec<String> = containers
            .iter()
            .cloned()
            .chain(init.iter().map(|i| format!("{i} (init)")))
            .collect();
        eprintln!("Defaulted container \"{first}\" out of: {}", all.join(", "));
    }
    Ok(first.clone())
}

/// Gets the pod and finds its runtime record on this machine.
pub async fn locate(
    g: &GlobalArgs,
    pod_arg: &str,
    container: Option<&str>,
    verb: &str,
) -> Result<(Client, PodTarget, Found), CliError> {
    let name = pod_name(pod_arg)?;
    let client = Client::connect(g).await?;
    let namespace = g
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace.clone());
    let pods = Resource::from_kind(&podnet_api::k8s::kinds::POD);
    let pod = client
        .get(&resource_path(&pods, Some(&namespace), Some(name), &[]))
        .await?;
    let container = choose_container(&pod, container)?;
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let node = pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if node.is_empty() {
        return Err(CliError::other(format!(
            "pod \"{name}\" is not on a node yet (phase {}): there is nothing to {verb}",
            pod["status"]["phase"].as_str().unwrap_or("Pending")
        )));
    }
    let lab = g
        .lab
        .clone()
        .or_else(|| std::env::var("PODNET_LAB").ok().filter(|s| !s.is_empty()))
        .or_else(|| client.lab())
        .unwrap_or_else(|| g.lab_name());
    let found = layout::find_pod(&layout::candidates(Some(&lab), &node), &uid)
        .map_err(|why| CliError::other(layout::not_here_message(verb, name, &node, &why)))?;
    Ok((
        client,
        PodTarget {
            name: name.to_owned(),
            namespace,
            uid,
            container,
            pod,
        },
        found,
    ))
}

/// The container's environment as the runtime gives it: PATH and HOSTNAME, then the
/// spec's literal values (references are resolved only by the runtime and left out).
fn container_env(pod: &Value, container: &str) -> Vec<(String, String)> {
    let spec = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .chain(pod["spec"]["initContainers"].as_array())
        .flatten()
        .find(|c| c["name"] == container);
    let hostname = pod["spec"]["hostname"]
        .as_str()
        .or(pod["metadata"]["name"].as_str())
        .unwrap_or_default();
    let mut env = vec![
        ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
        ("HOSTNAME".to_owned(), hostname.to_owned()),
    ];
    for var in spec.and_then(|c| c["env"].as_array()).into_iter().flatten() {
        let (Some(name), Some(value)) = (var["name"].as_str(), var["value"].as_str()) else {
            continue;
        };
        env.retain(|(k, _)| k != name);
        env.push((name.to_owned(), value.to_owned()));
    }
    env
}

/// The environment the runtime gave the running container (its supervisor's, which the
/// program inherits), so exec sees what the container sees, as kubectl exec does: the
/// Service variables and resolved references too. `None` when it is not running.
fn running_env(
    record: &super::layout::PodRecord,
    container: &str,
) -> Option<Vec<(String, String)>> {
    let pid = record
        .containers
        .iter()
        .find(|c| c.name == container)?
        .pid?;
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let exit_file = podnet_agent::runtime::exec::EXIT_FILE_ENV;
    Some(
        raw.split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                let (k, v) = kv.split_once('=')?;
                (k != exit_file).then(|| (k.to_string(), v.to_string()))
            })
            .collect(),
    )
}

pub async fn run(g: GlobalArgs, args: ExecArgs) -> i32 {
    let (_client, target, found) =
        match locate(&g, &args.pod, args.container.as_deref(), "exec").await {
            Ok(x) => x,
            Err(e) => return report(&[e]),
        };
    let phase = target.pod["status"]["phase"].as_str().unwrap_or_default();
    if matches!(phase, "Succeeded" | "Failed") {
        return report(&[CliError::other(format!(
            "cannot exec into a container in a completed pod; current phase is {phase}"
        ))]);
    }
    let pid = found.record.sandbox_pid;
    if pid <= 0 || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return report(&[CliError::other(format!(
            "the sandbox of pod \"{}\" (pid {pid}) is not running: the pod is stopping or its node's runtime is restarting it",
            target.name
        ))]);
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            return report(&[CliError::other(format!("finding the podnet binary: {e}"))]);
        }
    };
    let mut cmd = Command::new(&exe);
    cmd.args(["sandbox", "exec", "--pid", &pid.to_string(), "--"])
        .args(&args.command)
        .env_clear()
        .envs(
            running_env(&found.record, &target.container)
                .unwrap_or_else(|| container_env(&target.pod, &target.container)),
        );
    if args.tty {
        cmd.env(
            "TERM",
            std::env::var("TERM").unwrap_or_else(|_| "xterm".to_owned()),
        );
    }
    if let Some(dir) = target.pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == target.container.as_str())
        .and_then(|c| c["workingDir"].as_str())
        .filter(|d| std::path::Path::new(d).is_dir())
    {
        cmd.current_dir(dir);
    }
    if !args.stdin {
        cmd.stdin(Stdio::null());
    }
    match cmd.status() {
        Ok(status) => status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        Err(e) => report(&[CliError::other(format!(
            "running {} sandbox exec: {e}",
            exe.display()
        ))]),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_names() {
        assert_eq!(pod_name("web-0").unwrap(), "web-0");
        assert_eq!(pod_name("pod/web-0").unwrap(), "web-0");
        assert_eq!(pod_name("po/web-0").unwrap(), "web-0");
        assert!(pod_name("svc/web").is_err());
    }

    #[test]
    fn containers() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "main"}, {"name": "side"}],
            "initContainers": [{"name": "setup"}]}});
        assert_eq!(choose_container(&pod, None).unwrap(), "main");
        assert_eq!(choose_container(&pod, Some("side")).unwrap(), "side");
        assert_eq!(choose_container(&pod, Some("setup")).unwrap(), "setup");
        let err = choose_container(&pod, Some("nope"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("main, side, setup"), "{err}");
        let mut annotated = pod.clone();
        annotated["metadata"]["annotations"] =
            json!({"kubectl.kubernetes.io/default-container": "side"});
        assert_eq!(choose_container(&annotated, None).unwrap(), "side");
    }

    #[test]
    fn environment() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "main", "env": [
            {"name": "A", "value": "1"}, {"name": "PATH", "value": "/bin"},
            {"name": "REF", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}});
        let env = container_env(&pod, "main");
        assert_eq!(
            env,
            vec![
                ("HOSTNAME".to_owned(), "p".to_owned()),
                ("A".to_owned(), "1".to_owned()),
                ("PATH".to_owned(), "/bin".to_owned()),
            ]
        );
    }
}
