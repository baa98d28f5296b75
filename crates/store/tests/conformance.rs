//! The conformance suite: written once, run against every backend.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::{Harness, WAIT, expect_next_is_key, next_event, next_events};
use podnet_store::{Event, StoreError};
use tokio::sync::Barrier;

async fn revisions_increase_by_one(h: Harness) {
    let s = &h.store;
    let r0 = s.current_revision().await.unwrap();
    assert!(r0 >= 1);
    let a = s.create("/a", b"1".to_vec(), None).await.unwrap();
    assert_eq!(
        (a.create_revision, a.mod_revision, a.version),
        (r0 + 1, r0 + 1, 1)
    );
    let a2 = s.update("/a", b"2".to_vec(), a.mod_revision).await.unwrap();
    assert_eq!(
        (a2.create_revision, a2.mod_revision, a2.version),
        (r0 + 1, r0 + 2, 2)
    );
    let b = s.create("/b", b"x".to_vec(), None).await.unwrap();
    assert_eq!(b.mod_revision, r0 + 3);
    let d = s.delete("/a", Some(a2.mod_revision)).await.unwrap();
    assert_eq!(d.revision, r0 + 4);
    assert_eq!(d.prev_kv, a2);
    assert_eq!(s.current_revision().await.unwrap(), r0 + 4);
    // Failed writes do not advance the revision.
    assert!(s.create("/b", vec![], None).await.is_err());
    assert!(s.update("/b", vec![], b.mod_revision + 100).await.is_err());
    assert!(s.delete("/nope", None).await.is_err());
    assert_eq!(s.current_revision().await.unwrap(), r0 + 4);
    let got = s.get("/b").await.unwrap().unwrap();
    assert_eq!(got, b);
    assert_eq!(got.value, b"x");
    assert!(s.get("/a").await.unwrap().is_none());
}

async fn get_list_and_list_at_revision(h: Harness) {
    let s = &h.store;
    let a1 = s.create("/a/1", b"a1".to_vec(), None).await.unwrap();
    let a2 = s.create("/a/2", b"a2".to_vec(), None).await.unwrap();
    s.create("/b/1", b"b1".to_vec(), None).await.unwrap();
    // A key that shares the prefix as a string but not as a "directory".
    s.create("/ab", b"ab".to_vec(), None).await.unwrap();
    let old = s.list("/a/", None).await.unwrap();
    assert_eq!(old.revision, s.current_revision().await.unwrap());
    assert_eq!(
        old.items.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["/a/1", "/a/2"]
    );

    let a1b = s
        .update("/a/1", b"a1b".to_vec(), a1.mod_revision)
        .await
        .unwrap();
    s.delete("/a/2", None).await.unwrap();
    let a3 = s.create("/a/3", b"a3".to_vec(), None).await.unwrap();
    let a2b = s.create("/a/2", b"a2b".to_vec(), None).await.unwrap();
    assert!(a2b.create_revision > a2.create_revision);
    assert_eq!(a2b.version, 1);

    let now = s.list("/a/", None).await.unwrap();
    assert_eq!(now.items, vec![a1b.clone(), a2b.clone(), a3.clone()]);
    let then = s.list("/a/", Some(old.revision)).await.unwrap();
    assert_eq!(then.revision, old.revision);
    assert_eq!(then.items, old.items);
    assert_eq!(then.items, vec![a1.clone(), a2.clone()]);
    // In between: after the update and the delete.
    let mid = s.list("/a/", Some(a1b.mod_revision + 1)).await.unwrap();
    assert_eq!(mid.items, vec![a1b.clone()]);

    let all = s.list("", None).await.unwrap();
    assert_eq!(
        all.items.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["/a/1", "/a/2", "/a/3", "/ab", "/b/1"]
    );
    assert!(s.list("/zzz", None).await.unwrap().items.is_empty());
    let future = now.revision + 10;
    assert!(matches!(
        s.list("/a/", Some(future)).await,
        Err(StoreError::FutureRevision { .. })
    ));
    assert!(matches!(
        s.list("/a/", Some(0)).await,
        Err(StoreError::InvalidArgument { .. })
    ));
}

async fn create_only_if_absent(h: Harness) {
    let s = &h.store;
    s.create("/k", b"1".to_vec(), None).await.unwrap();
    let err = s.create("/k", b"2".to_vec(), None).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::AlreadyExists { key, .. } if key == "/k"),
        "{err:?}"
    );
    assert!(err.to_string().contains("/k"), "{err}");
    assert_eq!(s.get("/k").await.unwrap().unwrap().value, b"1");
    assert!(matches!(
        s.create("", vec![], None).await,
        Err(StoreError::InvalidArgument { .. })
    ));
}

async fn compare_and_swap(h: Harness) {
    let s = &h.store;
    let k = s.create("/k", b"1".to_vec(), None).await.unwrap();
    let err = s
        .update("/k", b"2".to_vec(), k.mod_revision - 1)
        .await
        .unwrap_err();
    match err {
        StoreError::Conflict {
            key,
            expected,
            current,
            ..
        } => {
            assert_eq!(key, "/k");
            assert_eq!(expected, k.mod_revision - 1);
            assert_eq!(current, k.mod_revision);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        s.update("/missing", vec![], 5).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.delete("/k", Some(k.mod_revision + 1)).await,
        Err(StoreError::Conflict { current, .. }) if current == k.mod_revision
    ));
    assert!(matches!(
        s.delete("/missing", None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.delete("/missing", Some(3)).await,
        Err(StoreError::NotFound { .. })
    ));
    let k2 = s.update("/k", b"2".to_vec(), k.mod_revision).await.unwrap();
    assert_eq!(k2.value, b"2");
    assert_eq!(k2.version, 2);
    s.delete("/k", Some(k2.mod_revision)).await.unwrap();
    assert!(s.get("/k").await.unwrap().is_none());
}

async fn cas_race_has_one_winner_per_round(h: Harness) {
    const TASKS: usize = 16;
    const ROUNDS: usize = 50;
    let s = Arc::clone(&h.store);
    s.create("/race", b"0".to_vec(), None).await.unwrap();
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let s = Arc::clone(&s);
        let barrier = Arc::clone(&barrier);
        handles.push(tokio::spawn(async move {
            let mut wins = Vec::new();
            for round in 0..ROUNDS {
                barrier.wait().await;
                let cur = s.get("/race").await.unwrap().unwrap();
                barrier.wait().await;
                match s
                    .update(
                        "/race",
                        format!("{t}:{round}").into_bytes(),
                        cur.mod_revision,
                    )
                    .await
                {
                    Ok(_) => wins.push(round),
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("unexpected error in round {round}: {e}"),
                }
            }
            wins
        }));
    }
    let mut per_round = vec![0usize; ROUNDS];
    for h in handles {
        for round in tokio::time::timeout(Duration::from_secs(120), h)
            .await
            .expect("racers finish")
            .unwrap()
        {
            per_round[round] += 1;
        }
    }
    assert_eq!(per_round, vec![1; ROUNDS]);
    let last = s.get("/race").await.unwrap().unwrap();
    assert_eq!(last.version, 1 + ROUNDS as i64);
}

async fn watch_replays_history_then_live(h: Harness) {
    let s = &h.store;
    let start = s.current_revision().await.unwrap();
    let a = s.create("/w/a", b"1".to_vec(), None).await.unwrap();
    s.create("/other", b"x".to_vec(), None).await.unwrap();
    let a2 = s
        .update("/w/a", b"2".to_vec(), a.mod_revision)
        .await
        .unwrap();
    let mut w = s.watch("/w/", start).await.unwrap();
    let evs = next_events(&mut w, 2).await;
    assert_eq!(
        evs[0],
        Event::Put {
            kv: a.clone(),
            prev_kv: None
        }
    );
    assert_eq!(
        evs[1],
        Event::Put {
            kv: a2.clone(),
            prev_kv: Some(a.clone())
        }
    );
    // Live.
    let d = s.delete("/w/a", None).await.unwrap();
    s.create("/other2", b"x".to_vec(), None).await.unwrap();
    let b = s.create("/w/b", b"b".to_vec(), None).await.unwrap();
    assert_eq!(
        next_event(&mut w).await,
        Event::Delete {
            key: "/w/a".into(),
            prev_kv: a2,
            revision: d.revision
        }
    );
    assert_eq!(
        next_event(&mut w).await,
        Event::Put {
            kv: b.clone(),
            prev_kv: None
        }
    );
    // Watching from "now" sees only what comes after.
    let now = s.current_revision().await.unwrap();
    let mut w2 = s.watch("/w/", now).await.unwrap();
    let c = s.create("/w/c", b"c".to_vec(), None).await.unwrap();
    assert_eq!(next_event(&mut w2).await.revision(), c.mod_revision);
    assert_eq!(next_event(&mut w).await.revision(), c.mod_revision);
    assert!(matches!(
        s.watch("/w/", -1).await,
        Err(StoreError::InvalidArgument { .. })
    ));
}

async fn watch_concurrent_writers_exactly_once_in_order(h: Harness) {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 25;
    let s = Arc::clone(&h.store);
    // Some history before the watch starts, so replay and live overlap.
    let start = s.current_revision().await.unwrap();
    s.create("/c/pre", b"p".to_vec(), None).await.unwrap();
    let mut w = s.watch("/c/", start).await.unwrap();
    let mut writers = Vec::new();
    for t in 0..WRITERS {
        let s = Arc::clone(&s);
        writers.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                let key = format!("/c/{t}");
                if i == 0 {
                    s.create(&key, vec![0], None).await.unwrap();
                } else {
                    let cur = s.get(&key).await.unwrap().unwrap();
                    s.update(&key, vec![i as u8], cur.mod_revision)
                        .await
                        .unwrap();
                }
            }
        }));
    }
    let total = 1 + WRITERS * PER_WRITER;
    let evs = next_events(&mut w, total).await;
    for wr in writers {
        wr.await.unwrap();
    }
    let revs: Vec<i64> = evs.iter().map(|e| e.revision()).collect();
    // In order, each revision once, and (nothing else wrote) gap-free.
    for pair in revs.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "revisions {revs:?}");
    }
    assert_eq!(revs[0], start + 1);
    // Per key: versions 1..=PER_WRITER in order, each once.
    let mut per_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for e in &evs {
        match e {
            Event::Put { kv, .. } => per_key.entry(kv.key.clone()).or_default().push(kv.version),
            Event::Delete { .. } => panic!("unexpected delete {e:?}"),
        }
    }
    for t in 0..WRITERS {
        assert_eq!(
            per_key[&format!("/c/{t}")],
            (1..=PER_WRITER as i64).collect::<Vec<_>>()
        );
    }
    // And nothing more: the next event is a marker written now.
    s.create("/c/zz-marker", vec![], None).await.unwrap();
    expect_next_is_key(&mut w, "/c/zz-marker").await;
}

async fn compaction_makes_old_revisions_unavailable(h: Harness) {
    let s = &h.store;
    let k = s.create("/k", b"1".to_vec(), None).await.unwrap();
    let mut last = k.clone();
    for i in 0..5 {
        last = s.update("/k", vec![i], last.mod_revision).await.unwrap();
    }
    let compact_at = last.mod_revision - 2;
    s.compact(compact_at).await.unwrap();
    // Compacting again at or below is a no-op.
    s.compact(compact_at).await.unwrap();
    s.compact(compact_at - 1).await.unwrap();

    let err = s.list("/k", Some(k.mod_revision)).await.unwrap_err();
    match &err {
        StoreError::Compacted {
            compacted_revision, ..
        } => assert_eq!(*compacted_revision, compact_at),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(err.is_compacted());
    let err = match s.watch("/k", k.mod_revision).await {
        Ok(_) => panic!("watch from a compacted revision succeeded"),
        Err(e) => e,
    };
    assert!(err.is_compacted(), "{err:?}");
    if let StoreError::Compacted {
        compacted_revision, ..
    } = err
    {
        assert_eq!(compacted_revision, compact_at);
    }
    // At the compaction revision and after, everything still works.
    let at = s.list("/k", Some(compact_at)).await.unwrap();
    assert_eq!(at.items.len(), 1);
    assert_eq!(at.items[0].mod_revision, compact_at);
    let mut w = s.watch("/k", compact_at).await.unwrap();
    let evs = next_events(&mut w, 2).await;
    assert_eq!(evs[0].revision(), compact_at + 1);
    assert_eq!(evs[1].revision(), compact_at + 2);
    assert!(matches!(
        s.compact(last.mod_revision + 100).await,
        Err(StoreError::FutureRevision { .. })
    ));
}

async fn leases_expire_and_delete_their_keys(h: Harness) {
    let s = &h.store;
    let lease = s.grant_lease(Duration::from_secs(1)).await.unwrap();
    let start = s.current_revision().await.unwrap();
    let a = s.create("/l/a", b"a".to_vec(), Some(lease)).await.unwrap();
    assert_eq!(a.lease, Some(lease));
    // Updates keep the lease.
    let a2 = s
        .update("/l/a", b"a2".to_vec(), a.mod_revision)
        .await
        .unwrap();
    assert_eq!(a2.lease, Some(lease));
    s.create("/l/b", b"b".to_vec(), Some(lease)).await.unwrap();
    s.create("/l/keep", b"k".to_vec(), None).await.unwrap();
    s.keep_alive(lease).await.unwrap();
    let mut w = s.watch("/l/", start).await.unwrap();
    let _ = next_events(&mut w, 4).await;
    // The expiry deletes both keys; wait for the events (bounded).
    let evs = next_events(&mut w, 2).await;
    let mut deleted = BTreeSet::new();
    for e in &evs {
        match e {
            Event::Delete { key, prev_kv, .. } => {
                assert_eq!(prev_kv.lease, Some(lease));
                deleted.insert(key.clone());
            }
            other => panic!("expected delete, got {other:?}"),
        }
    }
    assert_eq!(
        deleted,
        BTreeSet::from(["/l/a".to_owned(), "/l/b".to_owned()])
    );
    assert!(s.get("/l/a").await.unwrap().is_none());
    assert!(s.get("/l/keep").await.unwrap().is_some());
    assert!(matches!(
        s.keep_alive(lease).await,
        Err(StoreError::LeaseNotFound { .. })
    ));
    assert!(matches!(
        s.create("/l/c", vec![], Some(lease)).await,
        Err(StoreError::LeaseNotFound { .. })
    ));
}

async fn revoking_a_lease_deletes_its_keys(h: Harness) {
    let s = &h.store;
    let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    let other = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    assert_ne!(lease, other);
    let start = s.current_revision().await.unwrap();
    s.create("/r/a", b"a".to_vec(), Some(lease)).await.unwrap();
    s.create("/r/b", b"b".to_vec(), Some(lease)).await.unwrap();
    s.create("/r/o", b"o".to_vec(), Some(other)).await.unwrap();
    s.keep_alive(lease).await.unwrap();
    s.revoke_lease(lease).await.unwrap();
    let mut w = s.watch("/r/", start).await.unwrap();
    let evs = next_events(&mut w, 5).await;
    let dels: BTreeSet<&str> = evs[3..]
        .iter()
        .map(|e| match e {
            Event::Delete { key, .. } => key.as_str(),
            other => panic!("expected delete, got {other:?}"),
        })
        .collect();
    assert_eq!(dels, BTreeSet::from(["/r/a", "/r/b"]));
    let items = s.list("/r/", None).await.unwrap().items;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].key, "/r/o");
    assert!(matches!(
        s.revoke_lease(lease).await,
        Err(StoreError::LeaseNotFound { .. })
    ));
    assert!(matches!(
        s.keep_alive(lease).await,
        Err(StoreError::LeaseNotFound { .. })
    ));
    // Deleting a leased key by hand, then revoking, is fine.
    s.delete("/r/o", None).await.unwrap();
    s.revoke_lease(other).await.unwrap();
}

/// Instantiates every conformance test for one backend factory.
macro_rules! conformance {
    ($backend:ident, $factory:path) => {
        mod $backend {
            use super::*;
            conformance!(@tests $factory;
                revisions_increase_by_one,
                get_list_and_list_at_revision,
                create_only_if_absent,
                compare_and_swap,
                cas_race_has_one_winner_per_round,
                watch_replays_history_then_live,
                watch_concurrent_writers_exactly_once_in_order,
                compaction_makes_old_revisions_unavailable,
                leases_expire_and_delete_their_keys,
                revoking_a_lease_deletes_its_keys,
            );
        }
    };
    (@tests $factory:path; $($test:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                let h = $factory().await;
                tokio::time::timeout(WAIT * 6, super::$test(h))
                    .await
                    .expect("test finishes in bounded time");
            }
        )+
    };
}

conformance!(memory, common::memory);
conformance!(embedded, common::embedded);
#[cfg(feature = "etcd")]
conformance!(etcd, common::etcd);
