//! `podnet ui` and `podnet lab graph`: the cluster as a picture.
//!
//! `podnet ui` serves a page on loopback (its assets are in the binary, no CDN): the nodes
//! with their pod subnets and overlay links, the pods on their nodes, the Services with
//! arrows to their endpoints, and the flows of the last seconds as the nodes' conntrack and
//! NFLOG report them; a pod and a Service clicked in turn are traced (`podnet trace`).
//! `podnet lab graph` writes the same topology once, as SVG or DOT.
//!
//! The parts: [`topology`] (the model, from the API objects), [`layout`] and [`svg`] (the
//! drawing, shared by the page and `lab graph`), [`dot`], [`watch`] (keeps the model
//! current), [`flows`] (the observe listeners), [`hub`] (what the pages are told) and
//! [`server`] (HTTP).

pub mod dot;
pub mod flows;
pub mod hub;
pub mod layout;
pub mod server;
pub mod svg;
pub mod topology;
pub mod watch;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;

use crate::cli::client::{Client, lab_kubeconfig};
use crate::cli::{CliError, GlobalArgs};
use hub::Hub;
use topology::Topology;

#[derive(Args, Debug)]
pub struct UiArgs {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The loopback address and port to serve the page on (port 0: any free one; the URL
    /// is printed).
    #[arg(long, default_value = "127.0.0.1:7480", value_name = "ADDR:PORT")]
    pub bind: SocketAddr,
    /// The NFLOG group the agents log refused packets to (their --policy-nflog-group).
    #[arg(long, default_value_t = 100)]
    pub log_group: u16,
}

#[derive(Args, Debug)]
pub struct GraphArgs {
    /// The lab to draw (default: the current lab, or --kubeconfig's cluster).
    #[arg(long)]
    pub name: Option<String>,
    /// svg or dot.
    #[arg(short = 'o', long, default_value = "svg", value_name = "FORMAT")]
    pub output: String,
    /// Only the pods and Services of this namespace (every node stays).
    #[arg(long = "only-namespace", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    // Two workers: a trace reads every node's kernel state while the page's event
    // streams go on.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::other(format!("starting the async runtime: {e}")))
}

fn exit_code(result: Result<(), CliError>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}", e.alone());
            1
        }
    }
}

/// `podnet ui`.
pub fn run(global: &GlobalArgs, args: UiArgs) -> i32 {
    let g = global.merged(&args.global);
    exit_code(runtime().and_then(|rt| rt.block_on(serve(g, &args))))
}

/// The page may start traces that read every node's kernel state: it is for this
/// machine's user only, so only a loopback address is accepted.
fn check_bind(bind: SocketAddr) -> Result<(), CliError> {
    if bind.ip().is_loopback() {
        return Ok(());
    }
    Err(CliError::other(format!(
        "--bind {bind}: podnet ui serves on loopback only (127.0.0.1 or ::1), as the page can read every node's network state"
    )))
}

async fn serve(g: GlobalArgs, args: &UiArgs) -> Result<(), CliError> {
    check_bind(args.bind)?;
    let client = Arc::new(Client::connect(&g).await?);
    // The first picture from one list, so the page has it before the watches are in.
    let objects = watch::list_objects(&client).await?;
    let hub = Hub::new(Topology::from_objects(&objects));
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| CliError::other(format!("listening on {}: {e}", args.bind)))?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::other(format!("listening on {}: {e}", args.bind)))?;
    tokio::spawn(watch::run(client.kube(), hub.clone()));
    tokio::spawn(flows::run(client.clone(), hub.clone(), args.log_group));
    let app = Arc::new(server::App {
        hub,
        client,
        global: g,
        hosts: server::loopback_hosts(local),
    });
    println!("podnet ui: http://{local}/ (Ctrl-C to stop)");
    let _ = std::io::stdout().flush();
    axum::serve(listener, server::router(app))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| CliError::other(format!("serving on {local}: {e}")))
}

/// `podnet lab graph`.
pub fn graph(global: &GlobalArgs, args: GraphArgs) -> i32 {
    let mut g = global.clone();
    // `--name` means that lab's cluster, whatever $KUBECONFIG says.
    if let Some(name) = &args.name {
        g.kubeconfig = Some(lab_kubeconfig(name));
        g.lab = Some(name.clone());
    }
    let drawn = runtime().and_then(|rt| rt.block_on(draw(&g, &args)));
    exit_code(drawn.and_then(|text| {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| CliError::other(format!("writing the graph: {e}")))
    }))
}

/// The topology in `format` (svg or dot).
pub fn render(t: &Topology, format: &str) -> Result<String, CliError> {
    match format {
        "svg" => Ok(svg::render(t)),
        "dot" => Ok(dot::render(t)),
        other => Err(CliError::other(format!(
            "unknown output format {other:?}: svg or dot"
        ))),
    }
}

async fn draw(g: &GlobalArgs, args: &GraphArgs) -> Result<String, CliError> {
    // The format first: a typo is told without a cluster.
    render(&Topology::default(), &args.output)?;
    let client = Client::connect(g).await?;
    let t = Topology::from_objects(&watch::list_objects(&client).await?);
    let t = match &args.namespace {
        Some(ns) => t.in_namespace(ns),
        None => t,
    };
    render(&t, &args.output)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_served_on() {
        assert!(check_bind("127.0.0.1:0".parse().unwrap()).is_ok());
        assert!(check_bind("[::1]:7480".parse().unwrap()).is_ok());
        let e = check_bind("0.0.0.0:7480".parse().unwrap()).unwrap_err();
        assert!(e.alone().contains("loopback only"), "{}", e.alone());
        assert!(check_bind("192.168.1.5:80".parse().unwrap()).is_err());
    }

    #[test]
    fn a_graph_is_svg_or_dot() {
        let t = Topology::from_objects(&topology::tests::sample());
        assert!(render(&t, "svg").unwrap().starts_with("<svg"));
        assert!(render(&t, "dot").unwrap().starts_with("digraph"));
        assert!(
            render(&t, "png")
                .unwrap_err()
                .alone()
                .contains("svg or dot")
        );
    }
}
