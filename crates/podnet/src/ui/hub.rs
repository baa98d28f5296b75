//! What the server knows now and tells its pages: the current topology (with a revision
//! that moves on every change), the flows of the last minute, and the warnings of its
//! sources (a watch retrying, a node whose flows cannot be read). The watch and the flow
//! collector write here; every page's event stream reads the broadcasts.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

use super::topology::Topology;
use crate::cli::observe::Flow;

/// How long a flow is kept for pages that open later.
const KEEP_FLOWS: Duration = Duration::from_secs(60);
/// And at most how many.
const MAX_FLOWS: usize = 500;

/// A flow as the page gets it: observe's flow, numbered, with when it was seen.
#[derive(Debug, Clone, Serialize)]
pub struct SeenFlow {
    pub id: u64,
    /// Milliseconds since the Unix epoch, when the server saw it.
    pub at_ms: u64,
    #[serde(flatten)]
    pub flow: Flow,
}

/// What a page is told.
#[derive(Debug, Clone)]
pub enum Change {
    /// The topology is at this revision now.
    Topology(u64),
    Flow(Arc<SeenFlow>),
    /// The warnings changed.
    Warnings,
}

pub struct Hub {
    current: RwLock<(u64, Arc<Topology>)>,
    flows: Mutex<(u64, VecDeque<Arc<SeenFlow>>)>,
    warnings: Mutex<BTreeSet<String>>,
    changes: broadcast::Sender<Change>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Hub {
    pub fn new(topology: Topology) -> Arc<Hub> {
        let (changes, _) = broadcast::channel(1024);
        Arc::new(Hub {
            current: RwLock::new((1, Arc::new(topology))),
            flows: Mutex::new((0, VecDeque::new())),
            warnings: Mutex::new(BTreeSet::new()),
            changes,
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// The revision and the topology.
    pub fn topology(&self) -> (u64, Arc<Topology>) {
        let guard = self.current.read().unwrap_or_else(|e| e.into_inner());
        (guard.0, guard.1.clone())
    }

    /// Takes `topology` as the current one, when it differs; tells the pages.
    pub fn set_topology(&self, topology: Topology) {
        let revision = {
            let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
            if *guard.1 == topology {
                return;
            }
            *guard = (guard.0 + 1, Arc::new(topology));
            guard.0
        };
        let _ = self.changes.send(Change::Topology(revision));
    }

    /// Keeps `flow` and tells the pages.
    pub fn add_flow(&self, flow: Flow) {
        let at_ms = now_ms();
        let seen = {
            let mut guard = self.flows.lock().unwrap_or_else(|e| e.into_inner());
            guard.0 += 1;
            let seen = Arc::new(SeenFlow {
                id: guard.0,
                at_ms,
                flow,
            });
            let oldest = at_ms.saturating_sub(KEEP_FLOWS.as_millis() as u64);
            while guard.1.len() >= MAX_FLOWS || guard.1.front().is_some_and(|f| f.at_ms < oldest) {
                guard.1.pop_front();
            }
            guard.1.push_back(seen.clone());
            seen
        };
        let _ = self.changes.send(Change::Flow(seen));
    }

    /// The flows of the last minute, oldest first.
    pub fn recent_flows(&self) -> Vec<Arc<SeenFlow>> {
        let oldest = now_ms().saturating_sub(KEEP_FLOWS.as_millis() as u64);
        let guard = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .1
            .iter()
            .filter(|f| f.at_ms >= oldest)
            .cloned()
            .collect()
    }

    /// Adds a warning (shown on the page and printed once).
    pub fn warn(&self, warning: String) {
        let added = {
            let mut guard = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
            guard.insert(warning.clone())
        };
        if added {
            eprintln!("warning: {warning}");
            let _ = self.changes.send(Change::Warnings);
        }
    }

    /// Removes the warnings that start with `prefix` (their cause is gone).
    pub fn clear_warnings(&self, prefix: &str) {
        let removed = {
            let mut guard = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
            let before = guard.len();
            guard.retain(|w| !w.starts_with(prefix));
            before != guard.len()
        };
        if removed {
            let _ = self.changes.send(Change::Warnings);
        }
    }

    pub fn warnings(&self) -> Vec<String> {
        let guard = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        guard.iter().cloned().collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cli::observe::End;

    fn flow(port: u16) -> Flow {
        Flow {
            time: "12:00:00.000".into(),
            node: "n1".into(),
            verdict: "forwarded",
            event: "new",
            protocol: "tcp",
            source: End {
                ip: "10.244.1.2".parse().unwrap(),
                port: Some(port),
                name: Some("pod default/a".into()),
            },
            destination: End {
                ip: "10.244.2.2".parse().unwrap(),
                port: Some(8080),
                name: None,
            },
            via: None,
            bytes: None,
            policy: None,
        }
    }

    #[test]
    fn a_changed_topology_moves_the_revision_and_an_equal_one_does_not() {
        let hub = Hub::new(Topology::default());
        let mut rx = hub.subscribe();
        hub.set_topology(Topology::default());
        assert_eq!(hub.topology().0, 1);
        assert!(rx.try_recv().is_err());
        let t = Topology {
            namespaces: vec!["x".into()],
            ..Topology::default()
        };
        hub.set_topology(t.clone());
        assert_eq!(hub.topology().0, 2);
        assert_eq!(*hub.topology().1, t);
        assert!(matches!(rx.try_recv(), Ok(Change::Topology(2))));
    }

    #[test]
    fn flows_are_numbered_kept_and_bounded() {
        let hub = Hub::new(Topology::default());
        let mut rx = hub.subscribe();
        for p in 0..(MAX_FLOWS as u16 + 5) {
            hub.add_flow(flow(p));
        }
        let kept = hub.recent_flows();
        assert_eq!(kept.len(), MAX_FLOWS);
        assert_eq!(kept.last().unwrap().id, MAX_FLOWS as u64 + 5);
        assert_eq!(kept[0].id, 6);
        assert!(matches!(rx.try_recv(), Ok(Change::Flow(f)) if f.id == 1));
        let json = serde_json::to_value(&*kept[0]).unwrap();
        assert_eq!(json["source"]["name"], "pod default/a");
        assert!(json["at_ms"].as_u64().unwrap() > 0);
    }

    #[test]
    fn warnings_are_told_once_and_cleared_by_prefix() {
        let hub = Hub::new(Topology::default());
        let mut rx = hub.subscribe();
        hub.warn("flows of node n1: x".into());
        hub.warn("flows of node n1: x".into());
        hub.warn("watching Pods: y".into());
        assert_eq!(hub.warnings().len(), 2);
        assert!(matches!(rx.try_recv(), Ok(Change::Warnings)));
        assert!(matches!(rx.try_recv(), Ok(Change::Warnings)));
        assert!(rx.try_recv().is_err());
        hub.clear_warnings("watching Pods");
        assert_eq!(hub.warnings(), ["flows of node n1: x"]);
    }
}
