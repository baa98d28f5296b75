//! The page's flows, from the same sources as `podnet observe` and through its code: each
//! node's tracked connections (its conntrack table, dumped and compared) and NetworkPolicy's
//! NFLOG drops ([`observe::listen`]), named after pods, Services and nodes
//! ([`observe::names`]) and made into observe's flows ([`observe::conn_flow`],
//! [`observe::drop_flow`]).
//!
//! Unlike `observe`, the UI runs for long: a node that joins later gets its listeners when
//! it appears in the topology, and a node whose namespace is not on this machine (a
//! kubeconfig of a real cluster) is a warning on the page, not a failure: the picture still
//! works, only its flows are missing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use super::hub::{Change, Hub};
use crate::cli::client::Client;
use crate::cli::observe::{self, Names, Seen};

/// How often the names of addresses are read anew, at most (when the topology changed).
const RENAME_EVERY: Duration = Duration::from_millis(500);

/// The nodes listened to, and the channel their listeners send on.
struct Listeners {
    group: u16,
    tx: mpsc::UnboundedSender<Seen>,
    stop: Arc<AtomicBool>,
    nodes: BTreeSet<String>,
}

impl Listeners {
    /// Starts the listeners of every node of the topology that has none yet.
    fn cover(&mut self, hub: &Hub) {
        let (_, topology) = hub.topology();
        for node in &topology.nodes {
            if self.nodes.contains(&node.name) {
                continue;
            }
            self.nodes.insert(node.name.clone());
            let prefix = flows_warning(&node.name);
            match observe::listen(
                node.name.clone(),
                self.group,
                observe::Source::Poll,
                self.tx.clone(),
                self.stop.clone(),
            ) {
                Ok(()) => hub.clear_warnings(&prefix),
                Err(e) => hub.warn(format!("{prefix}: {e}")),
            }
        }
    }
}

fn flows_warning(node: &str) -> String {
    format!("flows of node {node} are not shown")
}

/// What a listener saw, as a flow for the hub; a failed listener is forgotten (so that it
/// is started again when the topology next changes) and its reason shown.
fn take(seen: Seen, names: &Names, listeners: &mut Listeners, hub: &Hub) {
    match seen {
        Seen::Conn(node, e) => {
            if let Some(flow) = observe::conn_flow(names, node, &e) {
                hub.add_flow(flow);
            }
        }
        Seen::Drop(node, l) => hub.add_flow(observe::drop_flow(names, node, &l)),
        Seen::Failed(why) => {
            let node = why.split(':').next().unwrap_or_default().to_string();
            listeners.nodes.remove(&node);
            hub.warn(format!("{}: {why}", flows_warning(&node)));
        }
    }
}

/// Collects the flows of every node into `hub` until the process ends. `group` is the
/// NFLOG group the agents log policy drops to.
pub async fn run(client: Arc<Client>, hub: Arc<Hub>, group: u16) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut listeners = Listeners {
        group,
        tx,
        stop: Arc::new(AtomicBool::new(false)),
        nodes: BTreeSet::new(),
    };
    let mut names = observe::names(&client)
        .await
        .map(|(n, _)| n)
        .unwrap_or_default();
    listeners.cover(&hub);
    let mut changes = hub.subscribe();
    let mut rename = tokio::time::interval(RENAME_EVERY);
    let mut dirty = false;
    loop {
        tokio::select! {
            seen = rx.recv() => match seen {
                Some(seen) => take(seen, &names, &mut listeners, &hub),
                None => break,
            },
            change = changes.recv() => match change {
                Ok(Change::Topology(_)) | Err(broadcast::error::RecvError::Lagged(_)) => dirty = true,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = rename.tick(), if dirty => {
                dirty = false;
                if let Ok((n, _)) = observe::names(&client).await {
                    names = n;
                }
                listeners.cover(&hub);
            }
        }
    }
    listeners.stop.store(true, Ordering::Relaxed);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ui::topology::Topology;

    #[test]
    fn a_failed_listener_is_a_warning_and_is_started_again_later() {
        let hub = Hub::new(Topology::default());
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut listeners = Listeners {
            group: 100,
            tx,
            stop: Arc::new(AtomicBool::new(true)),
            nodes: ["n1".to_string(), "n2".to_string()].into(),
        };
        let failed = Seen::Failed("n1: conntrack events: no buffer space".into());
        take(failed, &Names::default(), &mut listeners, &hub);
        assert_eq!(listeners.nodes, ["n2".to_string()].into());
        assert_eq!(
            hub.warnings(),
            ["flows of node n1 are not shown: n1: conntrack events: no buffer space"]
        );
    }

    #[test]
    fn a_node_that_is_not_a_namespace_here_is_a_warning_not_a_failure() {
        let t = Topology::from_objects(&crate::ui::topology::tests::sample());
        let hub = Hub::new(t);
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut listeners = Listeners {
            group: 100,
            tx,
            stop: Arc::new(AtomicBool::new(true)),
            nodes: BTreeSet::new(),
        };
        // The sample's nodes n1 and n2 are no namespaces of this machine.
        listeners.cover(&hub);
        assert_eq!(listeners.nodes.len(), 2);
        let warnings = hub.warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("flows of node n1 are not shown: node n1:"));
    }
}
