//! `podnet`: Kubernetes pod networking. This binary carries the lab, the pod
//! sandbox (`pause`) and small network probes used by the lab demo.

mod agent_cmd;
mod apiserver;
mod cli;
mod demo;
mod dns_cmd;
mod lab;
mod preflight;
mod probe;
mod ui;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "podnet",
    version,
    about = "Kubernetes pod networking, for real"
)]
struct Cli {
    #[command(flatten)]
    global: cli::GlobalArgs,
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
        /// The pod's resolv.conf, bind-mounted on /etc/resolv.conf in its mount namespace.
        #[arg(long)]
        resolv_conf: Option<std::path::PathBuf>,
        /// The pod's hosts file, bind-mounted on /etc/hosts in its mount namespace.
        #[arg(long)]
        hosts: Option<std::path::PathBuf>,
    },
    /// Runs a command inside a running pod sandbox.
    Sandbox {
        #[command(subcommand)]
        command: SandboxCmd,
    },
    /// The Kubernetes-compatible API server (control plane).
    Apiserver(apiserver::ApiserverArgs),
    /// The node agent: registers the Node, renews its Lease, sets up the node network and
    /// runs the node's pods.
    Agent(agent_cmd::AgentArgs),
    /// The cluster DNS server (what CoreDNS is behind the kube-dns Service): the cluster
    /// zone from the API, other names forwarded upstream.
    Dns(dns_cmd::DnsArgs),
    /// Creates or updates objects from manifests (kubectl apply).
    Apply(cli::apply::ApplyArgs),
    /// Lists objects or shows some (kubectl get).
    Get(cli::get::GetArgs),
    /// Shows objects in detail, with their events (kubectl describe).
    Describe(cli::describe::DescribeArgs),
    /// Deletes objects and waits until they are gone (kubectl delete).
    Delete(cli::delete::DeleteArgs),
    /// Runs a command in a pod's container (kubectl exec).
    Exec(cli::exec::ExecArgs),
    /// Prints a container's log (kubectl logs).
    Logs(cli::logs::LogsArgs),
    /// Explains the path of a connection from SRC to DST: routes, veths, bridges, the
    /// nftables rules that decide it (service DNAT, NetworkPolicy), the overlay, and
    /// whether anything listens; with --live, a real probe traced by the kernel.
    Trace(cli::trace::TraceArgs),
    /// A live flow log of the lab's nodes: connections as they start and end (with their
    /// bytes), and the packets NetworkPolicy drops, named after pods and Services.
    Observe(cli::observe::ObserveArgs),
    /// Serves a live picture of the cluster on loopback: nodes, pods, Services and their
    /// endpoints, the flows of the last seconds, and `trace` between a pod and a Service.
    Ui(ui::UiArgs),
    /// Tiny TCP/UDP client and server used inside pods by the demo and tests.
    Probe {
        #[command(subcommand)]
        command: probe::ProbeCmd,
    },
}

#[derive(Subcommand)]
enum LabCmd {
    /// Brings up a 2-node lab and shows the article's ways of talking, live:
    /// containers of one pod over localhost, pod to pod on a node and across
    /// nodes, and a pod to a Service on the other node, with the routes and
    /// rules that did it.
    Demo {
        /// Lab name (namespaces are called NAME-node1, NAME-node2…).
        #[arg(long, default_value = "podnet")]
        name: String,
        /// Leave the lab up to explore.
        #[arg(long)]
        keep: bool,
        /// Overlay backend: vxlan | host-gw | udp [default: vxlan].
        #[arg(long)]
        backend: Option<lab::Backend>,
        /// Service proxy mode: nftables | userspace [default: nftables].
        #[arg(long)]
        proxy_mode: Option<lab::ProxyMode>,
    },
    /// Builds a multi-node lab: an underlay switch, N node namespaces each
    /// running `podnet agent`, and the apiserver.
    Up(lab::UpArgs),
    /// Removes a lab (or what `lab demo --keep` left): processes,
    /// namespaces, mounts and files.
    Down {
        #[arg(long, default_value = "podnet")]
        name: String,
    },
    /// Shows a lab's nodes, agents and apiserver, and their health.
    Status(lab::StatusArgs),
    /// Writes the lab's topology (nodes, pods, Services, endpoints, overlay links) as a
    /// static picture: SVG (the UI's drawing) or Graphviz DOT.
    Graph(ui::GraphArgs),
}

#[derive(Subcommand)]
enum SandboxCmd {
    /// Runs CMD as a process of the pod whose PID 1 is PID (its network, UTS
    /// and PID namespaces); exits with CMD's exit code.
    Exec {
        #[arg(long)]
        pid: i32,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Cmd::Pause {
            hostname,
            resolv_conf,
            hosts,
        } => podnet_agent::runtime::pause::run(
            &hostname,
            &podnet_agent::runtime::pause::PodFiles { resolv_conf, hosts },
        ),
        Cmd::Sandbox {
            command: SandboxCmd::Exec { pid, command },
        } => sandbox_exec(pid, &command),
        Cmd::Probe { command } => probe::run(command),
        Cmd::Apply(args) => cli::apply(&cli.global, args),
        Cmd::Get(args) => cli::get(&cli.global, args),
        Cmd::Describe(args) => cli::describe(&cli.global, args),
        Cmd::Delete(args) => cli::delete(&cli.global, args),
        Cmd::Exec(args) => cli::exec(&cli.global, args),
        Cmd::Trace(args) => cli::trace(&cli.global, args),
        Cmd::Observe(args) => cli::observe(&cli.global, args),
        Cmd::Ui(args) => ui::run(&cli.global, args),
        Cmd::Logs(args) => cli::logs(&cli.global, args),
        Cmd::Dns(args) => {
            init_logging();
            report(dns_cmd::run(args))
        }
        Cmd::Agent(args) => {
            init_logging();
            report(agent_cmd::run(args))
        }
        Cmd::Apiserver(args) => {
            init_logging();
            report(apiserver::run(args))
        }
        Cmd::Lab { command } => match command {
            LabCmd::Demo {
                name,
                keep,
                backend,
                proxy_mode,
            } => report(demo::run(&name, keep, backend, proxy_mode)),
            LabCmd::Up(args) => report(lab::up::run(args)),
            LabCmd::Down { name } => report(lab::down::run(&name)),
            LabCmd::Status(args) => report(lab::status::run(args)),
            LabCmd::Graph(args) => ui::graph(&cli.global, args),
        },
    };
    std::process::exit(code);
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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

fn sandbox_exec(pid: i32, command: &[std::ffi::OsString]) -> i32 {
    let Some((program, args)) = command.split_first() else {
        eprintln!("podnet sandbox exec: give a command after --");
        return 2;
    };
    match podnet_agent::runtime::exec::run_in_pod(pid, program, args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("podnet sandbox exec: {e}");
            127
        }
    }
}
