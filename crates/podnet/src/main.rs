//! `podnet`: Kubernetes pod networking. This binary carries the lab, the pod
//! sandbox (`pause`) and small network probes used by the lab demo.

mod demo;
mod probe;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "podnet",
    version,
    about = "Kubernetes pod networking, for real"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The multi-node lab on this machine.
    Lab {
        #[command(subcommand)]
        command: LabCmd,
    },
    /// The pod sandbox process: holds a pod's network and UTS namespaces.
    Pause {
        /// Hostname of the pod.
        #[arg(long, default_value = "")]
        hostname: String,
    },
    /// Runs a command inside a running pod sandbox.
    Sandbox {
        #[command(subcommand)]
        command: SandboxCmd,
    },
    /// Tiny TCP/UDP client and server used inside pods by the demo and tests.
    Probe {
        #[command(subcommand)]
        command: probe::ProbeCmd,
    },
}

#[derive(Subcommand)]
enum LabCmd {
    /// Shows the article's ways of talking, live: containers of one pod over
    /// localhost, pod to pod on a node, and what is not built yet.
    Demo {
        /// Lab name (namespaces are called NAME-node1, NAME-node1-pod-a…).
        #[arg(long, default_value = "podnet")]
        name: String,
        /// Leave the lab up to explore.
        #[arg(long)]
        keep: bool,
    },
    /// Removes what `lab demo --keep` left.
    Down {
        #[arg(long, default_value = "podnet")]
        name: String,
    },
}

#[derive(Subcommand)]
enum SandboxCmd {
    /// Runs CMD in the network and UTS namespaces of the sandbox PID; exits
    /// with CMD's exit code.
    Exec {
        #[arg(long)]
        pid: i32,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Cmd::Pause { hostname } => podnet_agent::runtime::pause::run(&hostname),
        Cmd::Sandbox {
            command: SandboxCmd::Exec { pid, command },
        } => sandbox_exec(pid, &command),
        Cmd::Probe { command } => probe::run(command),
        Cmd::Lab { command } => match command {
            LabCmd::Demo { name, keep } => report(demo::run(&name, keep)),
            LabCmd::Down { name } => report(demo::down(&name)),
        },
    };
    std::process::exit(code);
}

fn report(result: anyhow::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("podnet: {e:#}");
            1
        }
    }
}

fn sandbox_exec(pid: i32, command: &[String]) -> i32 {
    let Some((program, args)) = command.split_first() else {
        eprintln!("podnet sandbox exec: give a command after --");
        return 2;
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    let spawned =
        podnet_agent::runtime::sandbox::join_namespaces(&mut cmd, pid).and_then(|c| c.status());
    match spawned {
        Ok(status) => status.code().unwrap_or(128 + nix_signal(&status)),
        Err(e) => {
            eprintln!("podnet sandbox exec: run {program} in sandbox {pid}: {e}");
            127
        }
    }
}

fn nix_signal(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.signal().unwrap_or(0)
}
