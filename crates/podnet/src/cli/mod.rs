//! The kubectl-like verbs: `podnet apply`, `get`, `describe`, `delete`, `exec` and `logs`,
//! against the current lab or any kubeconfig, with kubectl's output, messages and exit codes.
//!
//! Every verb runs on a small current-thread tokio runtime; the server is reached through
//! kube-rs' client (so TLS and the kubeconfig's credentials work as kubectl's do) with raw
//! JSON requests, because the verbs work on any kind, including server-side Tables.

pub mod apply;
pub mod client;
pub mod delete;
pub mod describe;
pub mod exec;
pub mod get;
pub mod layout;
pub mod logs;
pub mod manifest;
pub mod observe;
pub mod output;
pub mod patch;
pub mod resources;
pub mod tabwriter;
pub mod trace;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;

use clap::Args;
use kube::core::Status;

/// Where the cluster is and which namespace: accepted before the verb (`podnet -n shop get
/// pods`) and after it (`podnet get pods -n shop`); the later one wins.
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// The kubeconfig to use (default: $KUBECONFIG, else the current lab's
    /// /var/lib/podnet/<lab>/kubeconfig, else ~/.kube/config).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The lab whose kubeconfig and pod files are used (default: $PODNET_LAB, else podnet).
    #[arg(long, value_name = "NAME")]
    pub lab: Option<String>,
    /// The namespace (default: the kubeconfig context's, else default).
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

impl GlobalArgs {
    /// These flags with `later`'s (given after the verb) taking precedence.
    pub fn merged(&self, later: &GlobalArgs) -> GlobalArgs {
        GlobalArgs {
            kubeconfig: later.kubeconfig.clone().or_else(|| self.kubeconfig.clone()),
            context: later.context.clone().or_else(|| self.context.clone()),
            lab: later.lab.clone().or_else(|| self.lab.clone()),
            namespace: later.namespace.clone().or_else(|| self.namespace.clone()),
            all_namespaces: self.all_namespaces || later.all_namespaces,
        }
    }

    /// `--lab`, else `$PODNET_LAB`, else `podnet`.
    pub fn lab_name(&self) -> String {
        self.lab
            .clone()
            .or_else(|| std::env::var("PODNET_LAB").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "podnet".to_owned())
    }
}

/// A failure as kubectl reports it.
#[derive(Debug, Clone)]
pub enum CliError {
    /// The server said no: `Error from server (Reason): <context><message>`.
    Api {
        status: Box<Status>,
        context: String,
    },
    /// A message kubectl prints as it is (connection errors).
    Standard(String),
    /// Anything else: `error: <message>` when it is the only error.
    Other(String),
}

impl CliError {
    pub fn api(status: Status) -> CliError {
        CliError::Api {
            status: Box::new(status),
            context: String::new(),
        }
    }

    pub fn standard(msg: String) -> CliError {
        CliError::Standard(msg)
    }

    pub fn other(msg: String) -> CliError {
        CliError::Other(msg)
    }

    /// The same error with `prefix` in front of the server's message (kubectl's
    /// `error when creating "FILE": …`).
    pub fn with_context(self, prefix: &str) -> CliError {
        match self {
            CliError::Api { status, context } => CliError::Api {
                status,
                context: format!("{prefix}{context}"),
            },
            CliError::Standard(m) => CliError::Standard(m),
            CliError::Other(m) => CliError::Other(format!("{prefix}{m}")),
        }
    }

    /// The line kubectl prints for this error among several (`MultipleErrors`).
    fn line_in_list(&self) -> String {
        match self {
            CliError::Api { status, context } => {
                let message = format!("{context}{}", status.message);
                if status.reason.is_empty() {
                    format!("Error from server: {message}")
                } else {
                    format!("Error from server ({}): {message}", status.reason)
                }
            }
            CliError::Standard(m) | CliError::Other(m) => m.clone(),
        }
    }

    /// What kubectl's `CheckErr` prints for this error alone.
    pub(crate) fn alone(&self) -> String {
        match self {
            CliError::Api { status, .. } if status.reason == "Invalid" => invalid_message(status),
            CliError::Other(m) if !m.starts_with("error: ") => format!("error: {m}"),
            other => other.line_in_list(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line_in_list())
    }
}

/// kubectl's rendering of an Invalid error on its own: `The Pod "x" is invalid: field: why`,
/// or one cause per `* ` line when there are several.
fn invalid_message(status: &Status) -> String {
    let Some(details) = status.details.as_ref() else {
        return format!("Error from server (Invalid): {}", status.message);
    };
    let head = if !details.kind.is_empty() || !details.name.is_empty() {
        format!("The {} \"{}\" is invalid", details.kind, details.name)
    } else {
        "The request is invalid".to_owned()
    };
    let causes: Vec<String> = details
        .causes
        .iter()
        .map(|c| {
            if c.field.is_empty() {
                c.message.clone()
            } else {
                format!("{}: {}", c.field, c.message)
            }
        })
        .collect();
    match causes.len() {
        0 => head,
        1 => format!("{head}: {}", causes[0]),
        _ => format!("{head}: \n* {}", causes.join("\n* ")),
    }
}

/// Prints errors the way kubectl does and gives the exit code: 0 without errors, else 1.
pub fn report(errors: &[CliError]) -> i32 {
    match errors {
        [] => 0,
        [one] => {
            eprintln!("{}", one.alone().trim_end_matches('\n'));
            1
        }
        many => {
            for e in many {
                eprintln!("{}", e.line_in_list().trim_end_matches('\n'));
            }
            1
        }
    }
}

/// Runs a verb's future on a runtime of its own; the verb returns its exit code.
fn block_on<F: Future<Output = i32>>(fut: F) -> i32 {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            1
        }
    }
}

/// `podnet apply`.
pub fn apply(global: &GlobalArgs, args: apply::ApplyArgs) -> i32 {
    let g = global.merged(&args.global);
    block_on(apply::run(g, args))
}

/// `podnet get`.
pub fn get(global: &GlobalArgs, args: get::GetArgs) -> i32 {
    let g = global.merged(&args.global);
    block_on(get::run(g, args))
}

/// `podnet describe`.
pub fn describe(global: &GlobalArgs, args: describe::DescribeArgs) -> i32 {
    let g = global.merged(&args.global);
    block_on(describe::run(g, args))
}

/// `podnet delete`.
pub fn delete(global: &GlobalArgs, args: delete::DeleteArgs) -> i32 {
    let g = global.merged(&args.global);
    block_on(delete::run(g, args))
}

/// `podnet exec`.
pub fn exec(global: &GlobalArgs, args: exec::ExecArgs) -> i32 {
    let g = global.merged(&args.global);
    block_on(exec::run(g, args))
}

/// `podnet observe`.
pub fn observe(global: &GlobalArgs, args: observe::ObserveArgs) -> i32 {
    let g = global.merged(&args.global);
    block_on(observe::run(g, args))
}

/// `podnet trace`.
pub fn trace(global: &GlobalArgs, args: trace::TraceArgs) -> i32 {
    let g = global.merged(&args.global);
    block_on(trace::run(g, args))
}

/// `podnet logs`.
pub fn logs(global: &GlobalArgs, args: logs::LogsArgs) -> i32 {
    let g = global.merged(&args.global);
    block_on(logs::run(g, args))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn status(v: serde_json::Value) -> Status {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn error_lines_like_kubectl() {
        let not_found = CliError::api(status(serde_json::json!({
            "status": "Failure", "code": 404, "reason": "NotFound", "message": "pods \"x\" not found"})));
        assert_eq!(
            not_found.alone(),
            "Error from server (NotFound): pods \"x\" not found"
        );
        let invalid = status(serde_json::json!({
            "status": "Failure", "code": 422, "reason": "Invalid",
            "message": "Service \"bad\" is invalid: [a: x, b: y]",
            "details": {"kind": "Service", "name": "bad", "causes": [
                {"field": "a", "message": "x"}, {"field": "b", "message": "y"}]}}));
        let e = CliError::api(invalid).with_context("error when creating \"f.yaml\": ");
        assert_eq!(
            e.line_in_list(),
            "Error from server (Invalid): error when creating \"f.yaml\": Service \"bad\" is invalid: [a: x, b: y]"
        );
        assert_eq!(
            e.alone(),
            "The Service \"bad\" is invalid: \n* a: x\n* b: y"
        );
        assert_eq!(CliError::other("x".into()).alone(), "error: x");
        assert_eq!(CliError::other("x".into()).line_in_list(), "x");
    }
}
