//! Containers as processes: what to run (command, args, environment, working
//! directory, resolved as kubelet does), starting it inside the pod through
//! the sandbox with its output in a log file, noticing when it ends, and
//! stopping it.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::sync::mpsc;

use super::state::{proc_alive, proc_start};
use crate::runtime::exec::{EXIT_FILE_ENV, ExitRecord};
use crate::runtime::sandbox::pod_command;

/// `PATH` of a container that sets none (an image's usual default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a container could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchError {
    /// The spec cannot be run at all (`CreateContainerError`); retried
    /// without counting a restart.
    Create(String),
    /// The program could not be started (`RunContainerError`; the attempt
    /// ends as `StartError`, exit code 128).
    Start(String),
}

/// What a container runs, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<PathBuf>,
}

/// Values the environment of a container may refer to.
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub pod_ip: Option<String>,
    pub host_ip: Option<String>,
    pub hostname: String,
    /// The Service variables kubelet adds (`<NAME>_SERVICE_HOST`…), see `service_env`.
    pub service_env: Vec<(String, String)>,
}

/// Resolves what container `c` of the pod runs. Kubernetes' rules: `command`
/// replaces the image's entrypoint and `args` its arguments; `$(VAR)` in
/// command, args and env values refers to a variable defined before it
/// (`$$` is a literal `$`).
pub fn resolve(facts: &PodFacts, c: &Container) -> Result<Launch, LaunchError> {
    let command = c.command.clone().unwrap_or_default();
    if command.is_empty() {
        return Err(LaunchError::Create(format!(
            "container {} has no command: lab containers run host binaries, set command",
            c.name
        )));
    }
    let mut env: Vec<(String, String)> = Vec::new();
    // `$(VAR)` may name a Service variable too (kubelet's mapping function).
    let mut defined: HashMap<String, String> = facts.service_env.iter().cloned().collect();
    for var in c.env.as_deref().unwrap_or_default() {
        let value = env_value(facts, c, var, &defined)?;
        defined.insert(var.name.clone(), value.clone());
        env.retain(|(k, _)| k != &var.name);
        env.push((var.name.clone(), value));
    }
    // Then the Service variables the container does not set itself.
    for (k, v) in &facts.service_env {
        if !env.iter().any(|(d, _)| d == k) {
            env.push((k.clone(), v.clone()));
        }
    }
    if !defined.contains_key("PATH") {
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
        defined.insert("PATH".into(), DEFAULT_PATH.into());
    }
    if !defined.contains_key("HOSTNAME") {
        env.insert(1, ("HOSTNAME".into(), facts.hostname.clone()));
    }
    let mut argv: Vec<String> = command.iter().map(|a| expand(a, &defined)).collect();
    argv.extend(
        c.args
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|a| expand(a, &defined)),
    );
    let program = argv.remove(0);
    let working_dir = c
        .working_dir
        .as_deref()
        .filter(|w| !w.is_empty())
        .map(PathBuf::from);
    Ok(Launch {
        program,
        args: argv,
        env,
        working_dir,
    })
}

fn env_value(
    facts: &PodFacts,
    c: &Container,
    var: &EnvVar,
    defined: &HashMap<String, String>,
) -> Result<String, LaunchError> {
    let Some(from) = &var.value_from else {
        return Ok(expand(var.value.as_deref().unwrap_or_default(), defined));
    };
    let unsupported = |what: &str| {
        LaunchError::Create(format!(
            "container {} env {}: {what} is not supported by the podnet lab runtime: give a value or a fieldRef",
            c.name, var.name
        ))
    };
    if let Some(field) = &from.field_ref {
        return field_value(facts, &field.field_path).ok_or_else(|| {
            LaunchError::Create(format!(
                "container {} env {}: fieldRef {} is not supported: use metadata.name, metadata.namespace, metadata.uid, \
                 metadata.labels['KEY'], metadata.annotations['KEY'], spec.nodeName, spec.serviceAccountName, \
                 status.podIP, status.podIPs, status.hostIP or status.hostIPs",
                c.name, var.name, field.field_path
            ))
        });
    }
    if from.config_map_key_ref.is_some() {
        return Err(unsupported("configMapKeyRef"));
    }
    if from.secret_key_ref.is_some() {
        return Err(unsupported("secretKeyRef"));
    }
    if from.resource_field_ref.is_some() {
        return Err(unsupported("resourceFieldRef"));
    }
    Err(unsupported("this valueFrom"))
}

/// The value of a downward-API field path.
fn field_value(facts: &PodFacts, path: &str) -> Option<String> {
    let meta = &facts.pod.metadata;
    let spec = facts.pod.spec.as_ref();
    match path {
        "metadata.name" => Some(meta.name.clone().unwrap_or_default()),
        "metadata.namespace" => Some(meta.namespace.clone().unwrap_or_default()),
        "metadata.uid" => Some(meta.uid.clone().unwrap_or_default()),
        "spec.nodeName" => Some(spec.and_then(|s| s.node_name.clone()).unwrap_or_default()),
        "spec.serviceAccountName" => Some(
            spec.and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
        ),
        "status.podIP" | "status.podIPs" => Some(facts.pod_ip.clone().unwrap_or_default()),
        "status.hostIP" | "status.hostIPs" => Some(facts.host_ip.clone().unwrap_or_default()),
        _ => {
            let keyed = |field: &str, map: Option<&std::collections::BTreeMap<String, String>>| {
                subscript(path, field)
                    .map(|key| map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
            };
            keyed("metadata.labels", meta.labels.as_ref())
                .or_else(|| keyed("metadata.annotations", meta.annotations.as_ref()))
        }
    }
}

/// `KEY` of `FIELD['KEY']` (or `FIELD["KEY"]`).
fn subscript<'a>(path: &'a str, field: &str) -> Option<&'a str> {
    let inner = path
        .strip_prefix(field)?
        .strip_prefix('[')?
        .strip_suffix(']')?;
    inner
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, an
/// undefined reference is left as written, `$$` is a literal `$`.
pub fn expand(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Checks that the program exists and may be executed, and that the working
/// directory exists, as the host (whose files lab containers use) sees them.
pub fn check_runnable(launch: &Launch) -> Result<(), LaunchError> {
    if let Some(dir) = &launch.working_dir
        && !dir.is_dir()
    {
        return Err(LaunchError::Start(format!(
            "working directory {} does not exist on the node: create it or change workingDir",
            dir.display()
        )));
    }
    let program = &launch.program;
    if program.contains('/') {
        let path = match &launch.working_dir {
            Some(dir) if !program.starts_with('/') => dir.join(program),
            _ => PathBuf::from(program),
        };
        return if is_executable(&path) {
            Ok(())
        } else if path.exists() {
            Err(LaunchError::Start(format!(
                "exec: {program:?}: permission denied: the file is not executable"
            )))
        } else {
            Err(LaunchError::Start(format!(
                "exec: {program:?}: no such file or directory: lab containers run the node's binaries, \
                 install it there or fix the command"
            )))
        };
    }
    let path = launch
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_PATH);
    if path
        .split(':')
        .filter(|d| !d.is_empty())
        .any(|d| is_executable(&Path::new(d).join(program)))
    {
        Ok(())
    } else {
        Err(LaunchError::Start(format!(
            "exec: {program:?}: executable file not found in $PATH ({path}): lab containers run the node's \
             binaries, install it there or give its full path"
        )))
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A container process just started.
pub struct Started {
    /// The supervisor's host pid (the container's pid in the records).
    pub pid: i32,
    pub start_ticks: u64,
    pub child: tokio::process::Child,
}

/// Starts `launch` as a process of the pod whose PID 1 is `sandbox_pid`:
/// `podnet sandbox exec`, in a process group of its own, with stdout and
/// stderr appended to `log_path` and its exit recorded in `exit_file`.
pub fn spawn(
    podnet: &Path,
    sandbox_pid: i32,
    launch: &Launch,
    log_path: &Path,
    exit_file: &Path,
) -> Result<Started, String> {
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("create log directory {}: {e}", dir.display()))?;
    }
    if let Some(dir) = exit_file.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("create state directory {}: {e}", dir.display()))?;
    }
    let _ = std::fs::remove_file(exit_file);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| format!("open log file {}: {e}", log_path.display()))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("open log file {}: {e}", log_path.display()))?;
    let mut cmd = pod_command(podnet, sandbox_pid, &launch.program);
    cmd.args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .env(EXIT_FILE_ENV, exit_file)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0);
    if let Some(dir) = &launch.working_dir {
        cmd.current_dir(dir);
    }
    let child = tokio::process::Command::from(cmd)
        .spawn()
        .map_err(|e| format!("run {} sandbox exec: {e}", podnet.display()))?;
    let pid = child
        .id()
        .map(|p| p as i32)
        .ok_or_else(|| "the container process exited at once".to_string())?;
    let start_ticks = proc_start(pid).map(|(t, _)| t).unwrap_or_default();
    Ok(Started {
        pid,
        start_ticks,
        child,
    })
}

/// How a container process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    /// Set when the program could not be started.
    pub start_error: Option<String>,
    /// The exit was not seen: the process was gone when the agent looked.
    pub unknown: bool,
}

/// A process ended: reported to the pod's worker.
#[derive(Debug)]
pub struct Exited {
    pub container: String,
    pub attempt: u32,
    pub exit: Exit,
}

fn exit_from(record: Option<ExitRecord>, fallback: Option<i32>) -> Exit {
    match (record, fallback) {
        (Some(r), _) => Exit {
            code: r.exit_code,
            start_error: r.error,
            unknown: false,
        },
        (None, Some(code)) => Exit {
            code,
            start_error: None,
            unknown: false,
        },
        (None, None) => Exit {
            code: 137,
            start_error: None,
            unknown: true,
        },
    }
}

/// Waits for a process this agent started and reports its end.
pub async fn watch_child(
    mut child: tokio::process::Child,
    exit_file: PathBuf,
    container: String,
    attempt: u32,
    tx: mpsc::UnboundedSender<super::worker::Event>,
) {
    let status = child.wait().await.ok();
    let code = status.map(|s| s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9)));
    let exit = exit_from(ExitRecord::read(&exit_file), code.or(Some(137)));
    let _ = tx.send(super::worker::Event::Exited(Exited {
        container,
        attempt,
        exit,
    }));
}

/// Watches a process an earlier agent started (so not this one's child) and
/// reports its end, read from its exit record.
pub async fn watch_adopted(
    pid: i32,
    start_ticks: u64,
    exit_file: PathBuf,
    container: String,
    attempt: u32,
    tx: mpsc::UnboundedSender<super::worker::Event>,
) {
    while proc_alive(pid, start_ticks) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let exit = exit_from(ExitRecord::read(&exit_file), None);
    let _ = tx.send(super::worker::Event::Exited(Exited {
        container,
        attempt,
        exit,
    }));
}

/// The end of a process that was gone when the agent came back.
pub fn exit_of_vanished(exit_file: Option<&Path>) -> Exit {
    exit_from(exit_file.and_then(ExitRecord::read), None)
}

/// Asks a container process to stop: SIGTERM to its supervisor, which passes
/// it on to the program.
pub fn terminate(pid: i32, start_ticks: u64) {
    if proc_alive(pid, start_ticks) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

/// Kills a container process and everything in its process group.
pub fn kill_hard(pid: i32, start_ticks: u64) {
    if proc_alive(pid, start_ticks) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{EnvVarSource, ObjectFieldSelector, PodSpec};
    use kube::api::ObjectMeta;

    use super::*;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn facts(pod: &Pod) -> PodFacts<'_> {
        PodFacts {
            pod,
            pod_ip: Some("10.244.1.5".into()),
            host_ip: Some("192.0.2.1".into()),
            hostname: "web".into(),
            service_env: vec![("WEB_SERVICE_HOST".into(), "10.96.0.5".into())],
        }
    }

    fn field(name: &str, path: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let vars: HashMap<String, String> = [("A".to_string(), "1".to_string())].into();
        assert_eq!(expand("x$(A)y", &vars), "x1y");
        assert_eq!(expand("$(B)", &vars), "$(B)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("a$b", &vars), "a$b");
        assert_eq!(expand("$(A", &vars), "$(A");
    }

    #[test]
    fn resolve_builds_argv_and_env() {
        let pod = pod();
        let c = Container {
            name: "c".into(),
            command: Some(vec!["sh".into(), "-c".into()]),
            args: Some(vec!["echo $(MY_IP) $(NODE)".into()]),
            env: Some(vec![
                field("MY_IP", "status.podIP"),
                field("NODE", "spec.nodeName"),
                field("APP", "metadata.labels['app']"),
                field("HOST", "status.hostIP"),
                EnvVar {
                    name: "GREETING".into(),
                    value: Some("hi $(APP)".into()),
                    ..Default::default()
                },
            ]),
            working_dir: Some("/tmp".into()),
            ..Default::default()
        };
        let l = resolve(&facts(&pod), &c).unwrap();
        assert_eq!(l.program, "sh");
        assert_eq!(l.args, vec!["-c", "echo 10.244.1.5 n1"]);
        let env: HashMap<_, _> = l.env.iter().cloned().collect();
        assert_eq!(env["PATH"], DEFAULT_PATH);
        assert_eq!(env["HOSTNAME"], "web");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["HOST"], "192.0.2.1");
        assert_eq!(env["GREETING"], "hi web");
        assert_eq!(env["WEB_SERVICE_HOST"], "10.96.0.5");
        assert_eq!(l.working_dir, Some(PathBuf::from("/tmp")));
        check_runnable(&l).unwrap();
    }

    #[test]
    fn no_command_and_unsupported_env_are_create_errors() {
        let pod = pod();
        let c = Container {
            name: "c".into(),
            args: Some(vec!["x".into()]),
            ..Default::default()
        };
        assert_eq!(
            resolve(&facts(&pod), &c),
            Err(LaunchError::Create(
                "container c has no command: lab containers run host binaries, set command".into()
            ))
        );
        let c = Container {
            name: "c".into(),
            command: Some(vec!["true".into()]),
            env: Some(vec![field("X", "spec.nope")]),
            ..Default::default()
        };
        assert!(
            matches!(resolve(&facts(&pod), &c), Err(LaunchError::Create(m)) if m.contains("spec.nope"))
        );
    }

    #[test]
    fn missing_programs_and_directories_are_start_errors() {
        let launch = |program: &str, wd: Option<&str>| Launch {
            program: program.into(),
            args: vec![],
            env: vec![],
            working_dir: wd.map(PathBuf::from),
        };
        assert!(check_runnable(&launch("sh", None)).is_ok());
        assert!(check_runnable(&launch("/bin/sh", None)).is_ok());
        assert!(matches!(
            check_runnable(&launch("no-such-program-xyz", None)),
            Err(LaunchError::Start(m)) if m.contains("not found in $PATH")
        ));
        assert!(matches!(
            check_runnable(&launch("/nonexistent/prog", None)),
            Err(LaunchError::Start(m)) if m.contains("no such file")
        ));
        assert!(matches!(
            check_runnable(&launch("sh", Some("/nonexistent-dir-xyz"))),
            Err(LaunchError::Start(m)) if m.contains("working directory")
        ));
    }
}
