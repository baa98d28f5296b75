//! Test helpers: backend factories (with the guards that clean up after them) and watch
//! helpers with bounded waits.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use podnet_store::{
    EmbeddedOptions, EmbeddedStore, Event, LocalOptions, MemoryStore, Store, WatchStream,
};

#[cfg(feature = "etcd")]
pub use podnet_store::testing as etcd_server;

/// Upper bound for waiting on something that should happen; only a failure guard.
pub const WAIT: Duration = Duration::from_secs(20);

/// A store under test plus whatever must live as long as it (temp dir, etcd process).
pub struct Harness {
    pub store: Arc<dyn Store>,
    pub guard: Box<dyn std::any::Any + Send>,
}

pub async fn memory() -> Harness {
    Harness {
        store: Arc::new(MemoryStore::new()),
        guard: Box::new(()),
    }
}

pub async fn memory_with(opts: LocalOptions) -> Harness {
    Harness {
        store: Arc::new(MemoryStore::with_options(opts)),
        guard: Box::new(()),
    }
}

pub async fn embedded() -> Harness {
    embedded_with(EmbeddedOptions {
        // No fsync in tests: the suite checks semantics, not crash durability.
        durable: false,
        ..EmbeddedOptions::default()
    })
    .await
}

pub async fn embedded_with(opts: EmbeddedOptions) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("store.redb"), opts)
        .await
        .unwrap();
    Harness {
        store: Arc::new(store),
        guard: Box::new(dir),
    }
}

#[cfg(feature = "etcd")]
pub async fn etcd() -> Harness {
    let server = etcd_server::EtcdServer::start().await;
    let store = podnet_store::EtcdStore::connect(podnet_store::EtcdOptions {
        endpoints: vec![server.client_url()],
        prefix: "/podnet-test".into(),
        ..podnet_store::EtcdOptions::default()
    })
    .await
    .unwrap();
    Harness {
        store: Arc::new(store),
        guard: Box::new(server),
    }
}

/// The next item of a watch, which must be an event and must come within [`WAIT`].
pub async fn next_event(w: &mut WatchStream) -> Event {
    match tokio::time::timeout(WAIT, w.next()).await {
        Err(_) => panic!("no watch event within {WAIT:?}"),
        Ok(None) => panic!("watch stream ended"),
        Ok(Some(Err(e))) => panic!("watch stream failed: {e}"),
        Ok(Some(Ok(ev))) => ev,
    }
}

pub async fn next_events(w: &mut WatchStream, n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next_event(w).await);
    }
    out
}

/// Asserts that nothing more is delivered right now: a write to a sentinel key outside the
/// watched prefix cannot be used, so callers write a marker key inside it and check that the
/// marker is the very next event.
pub async fn expect_next_is_key(w: &mut WatchStream, key: &str) {
    let ev = next_event(w).await;
    assert_eq!(ev.key(), key, "unexpected event {ev:?}");
}
