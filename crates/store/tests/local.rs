//! Tests specific to the in-process backends: persistence of the embedded store, slow
//! watchers, auto-compaction.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Harness, WAIT, next_event, next_events};
use futures::StreamExt;
use podnet_store::{EmbeddedOptions, EmbeddedStore, Event, LocalOptions, Store, StoreError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let opts = EmbeddedOptions::default();
    let (a2, b, rev, lease) = {
        let s = EmbeddedStore::open(&path, opts.clone()).await.unwrap();
        let a = s.create("/a", b"1".to_vec(), None).await.unwrap();
        let a2 = s.update("/a", b"2".to_vec(), a.mod_revision).await.unwrap();
        let lease = s.grant_lease(Duration::from_secs(600)).await.unwrap();
        let b = s.create("/b", b"b".to_vec(), Some(lease)).await.unwrap();
        s.create("/c", b"c".to_vec(), None).await.unwrap();
        s.delete("/c", None).await.unwrap();
        (a2, b, s.current_revision().await.unwrap(), lease)
    };
    // Dropped: the file is closed, so it can be opened again.
    let s = EmbeddedStore::open(&path, opts).await.unwrap();
    assert_eq!(s.current_revision().await.unwrap(), rev);
    assert_eq!(s.get("/a").await.unwrap().unwrap(), a2);
    assert_eq!(s.get("/b").await.unwrap().unwrap(), b);
    assert!(s.get("/c").await.unwrap().is_none());
    // History survived: list at an old revision and watch from the beginning.
    let old = s.list("/", Some(a2.mod_revision - 1)).await.unwrap();
    assert_eq!(old.items.len(), 1);
    assert_eq!(old.items[0].value, b"1");
    let mut w = s.watch("/", 1).await.unwrap();
    let evs = next_events(&mut w, 5).await;
    assert_eq!(evs.last().unwrap().revision(), rev);
    assert!(matches!(evs.last().unwrap(), Event::Delete { key, .. } if key == "/c"));
    // The revision counter continues without a gap; the lease survived too.
    let d = s.create("/d", vec![], Some(lease)).await.unwrap();
    assert_eq!(d.mod_revision, rev + 1);
    assert_eq!(next_event(&mut w).await.revision(), rev + 1);
    s.keep_alive(lease).await.unwrap();
    s.revoke_lease(lease).await.unwrap();
    assert!(s.get("/b").await.unwrap().is_none());
    assert!(s.get("/d").await.unwrap().is_none());
}

/// The store file holds every object: its owner's only, as etcd keeps its data directory;
/// a file that was readable by others is tightened on open, and its data kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_file_is_the_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        let s = EmbeddedStore::open(&path, EmbeddedOptions::default())
            .await
            .unwrap();
        s.create("/a", b"1".to_vec(), None).await.unwrap();
    }
    assert_eq!(mode(&path), 0o600);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = EmbeddedStore::open(&path, EmbeddedOptions::default())
        .await
        .unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(s.get("/a").await.unwrap().unwrap().value, b"1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_expired_lease_is_revoked_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let opts = EmbeddedOptions::default();
    let rev = {
        let s = EmbeddedStore::open(&path, opts.clone()).await.unwrap();
        let lease = s.grant_lease(Duration::from_millis(300)).await.unwrap();
        s.create("/x", vec![], Some(lease)).await.unwrap();
        s.current_revision().await.unwrap()
    };
    let s = EmbeddedStore::open(&path, opts).await.unwrap();
    let mut w = s.watch("/", rev).await.unwrap();
    match next_event(&mut w).await {
        Event::Delete { key, .. } => assert_eq!(key, "/x"),
        other => panic!("expected delete, got {other:?}"),
    }
}

fn tiny_buffers() -> LocalOptions {
    LocalOptions {
        keep_revisions: None,
        watch_broadcast_capacity: 4,
        watch_channel_capacity: 2,
        history_chunk: 3,
    }
}

/// A watcher that reads nothing while 200 writes happen still gets all of them, in order:
/// it falls back to the history table. Writers are never blocked by it.
async fn slow_watcher_catches_up(h: Harness) {
    let s = &h.store;
    let start = s.current_revision().await.unwrap();
    let mut w = s.watch("/s/", start).await.unwrap();
    let mut kv = s.create("/s/k", vec![0], None).await.unwrap();
    for i in 1..200u8 {
        kv = s.update("/s/k", vec![i], kv.mod_revision).await.unwrap();
    }
    let evs = next_events(&mut w, 200).await;
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e.revision(), start + 1 + i as i64);
    }
    s.create("/s/marker", vec![], None).await.unwrap();
    assert_eq!(next_event(&mut w).await.key(), "/s/marker");
}

/// If the history a slow watcher needs is compacted away, it is told so; it never silently
/// skips events.
async fn slow_watcher_sees_compaction(h: Harness) {
    let s = &h.store;
    let start = s.current_revision().await.unwrap();
    let mut w = s.watch("/s/", start).await.unwrap();
    let mut kv = s.create("/s/k", vec![0], None).await.unwrap();
    for i in 1..100u8 {
        kv = s.update("/s/k", vec![i], kv.mod_revision).await.unwrap();
    }
    s.compact(kv.mod_revision).await.unwrap();
    let mut expected = start + 1;
    let mut saw_error = false;
    while let Ok(Some(item)) = tokio::time::timeout(WAIT, w.next()).await {
        match item {
            Ok(e) => {
                assert_eq!(e.revision(), expected, "no event skipped");
                expected += 1;
                if expected > kv.mod_revision {
                    break;
                }
            }
            Err(e) => {
                assert!(e.is_compacted(), "{e:?}");
                saw_error = true;
                break;
            }
        }
    }
    // A prefix of the events, in order, then the Compacted error.
    assert!(
        saw_error,
        "with 4+2 buffers the watcher must have lagged behind the compaction"
    );
}

async fn auto_compaction_keeps_last_n(h: Harness) {
    let s = &h.store;
    let mut kv = s.create("/k", vec![0], None).await.unwrap();
    for i in 1..30u8 {
        kv = s.update("/k", vec![i], kv.mod_revision).await.unwrap();
    }
    let cur = kv.mod_revision;
    // keep_revisions = 10: revisions >= cur - 10 are readable, older are not.
    s.list("/", Some(cur - 10)).await.unwrap();
    assert!(matches!(
        s.list("/", Some(cur - 11)).await,
        Err(StoreError::Compacted { compacted_revision, .. }) if compacted_revision == cur - 10
    ));
    assert!(s.watch("/", cur - 10).await.is_ok());
    assert!(matches!(s.watch("/", cur - 11).await, Err(e) if e.is_compacted()));
}

fn keep_ten() -> LocalOptions {
    LocalOptions {
        keep_revisions: Some(10),
        ..LocalOptions::default()
    }
}

macro_rules! local_tests {
    ($name:ident, $factory:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn slow_watcher_catches_up() {
                super::slow_watcher_catches_up($factory(tiny_buffers()).await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn slow_watcher_sees_compaction() {
                super::slow_watcher_sees_compaction($factory(tiny_buffers()).await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn auto_compaction_keeps_last_n() {
                super::auto_compaction_keeps_last_n($factory(keep_ten()).await).await
            }
        }
    };
}

local_tests!(memory, common::memory_with);
local_tests!(embedded, |local| common::embedded_with(EmbeddedOptions {
    local,
    durable: false
}));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_store_ends_watches() {
    let h = common::memory().await;
    let mut w = h.store.watch("/", 1).await.unwrap();
    drop(h);
    match tokio::time::timeout(WAIT, w.next()).await {
        Ok(Some(Err(StoreError::Closed { .. }))) => {}
        other => panic!("expected Closed, got {other:?}"),
    }
}
