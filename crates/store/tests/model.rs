//! Property test: random operation sequences give the same results on the memory and the
//! embedded backend, every past revision can be listed exactly as it was, and replaying the
//! watch from the start rebuilds every snapshot.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::next_event;
use podnet_store::{
    EmbeddedOptions, EmbeddedStore, Event, KeyValue, LocalOptions, MemoryStore, Store,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Create(usize, u8),
    /// Update with the right expected revision (or a wrong one).
    Update(usize, u8, bool),
    Delete(usize, Option<bool>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4usize, any::<u8>()).prop_map(|(k, v)| Op::Create(k, v)),
        (0..4usize, any::<u8>(), any::<bool>()).prop_map(|(k, v, r)| Op::Update(k, v, r)),
        (0..4usize, proptest::option::of(any::<bool>())).prop_map(|(k, r)| Op::Delete(k, r)),
    ]
}

const KEYS: [&str; 4] = ["/a", "/a/b", "/b", "/bb"];

/// Runs one operation; returns a comparable description of its outcome.
async fn apply(s: &dyn Store, op: &Op) -> String {
    let cur = |k: usize| async move { s.get(KEYS[k]).await.unwrap() };
    let rev_of = |kv: Option<KeyValue>, right: bool| {
        let r = kv.map(|k| k.mod_revision).unwrap_or(1);
        if right { r } else { r + 1 }
    };
    match op {
        Op::Create(k, v) => format!(
            "{:?}",
            s.create(KEYS[*k], vec![*v], None).await.map_err(disc)
        ),
        Op::Update(k, v, right) => {
            let expected = rev_of(cur(*k).await, *right);
            format!(
                "{:?}",
                s.update(KEYS[*k], vec![*v], expected).await.map_err(disc)
            )
        }
        Op::Delete(k, cond) => {
            let expected = match cond {
                None => None,
                Some(right) => Some(rev_of(cur(*k).await, *right)),
            };
            format!("{:?}", s.delete(KEYS[*k], expected).await.map_err(disc))
        }
    }
}

/// The error's variant and fields that must agree across backends.
fn disc(e: podnet_store::StoreError) -> String {
    use podnet_store::StoreError as E;
    match e {
        E::AlreadyExists { key, .. } => format!("exists {key}"),
        E::NotFound { key, .. } => format!("notfound {key}"),
        E::Conflict { key, current, .. } => format!("conflict {key} {current}"),
        other => panic!("unexpected error {other}"),
    }
}

async fn check(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mem: Arc<dyn Store> = Arc::new(MemoryStore::with_options(LocalOptions::default()));
    let emb: Arc<dyn Store> = Arc::new(
        EmbeddedStore::open(
            dir.path().join("s.redb"),
            EmbeddedOptions {
                durable: false,
                ..EmbeddedOptions::default()
            },
        )
        .await
        .unwrap(),
    );
    let start = mem.current_revision().await.unwrap();
    let mut snapshots: BTreeMap<i64, Vec<KeyValue>> = BTreeMap::new();
    snapshots.insert(start, Vec::new());
    for op in &ops {
        let a = apply(&*mem, op).await;
        let b = apply(&*emb, op).await;
        assert_eq!(a, b, "{op:?}");
        let l = mem.list("", None).await.unwrap();
        assert_eq!(l, emb.list("", None).await.unwrap());
        snapshots.insert(l.revision, l.items);
    }
    let last = *snapshots.keys().last().unwrap();
    for s in [&mem, &emb] {
        for (rev, items) in &snapshots {
            let l = s.list("", Some(*rev)).await.unwrap();
            assert_eq!(&l.items, items, "list at {rev}");
            // A prefix list is the filtered snapshot.
            let l = s.list("/a", Some(*rev)).await.unwrap();
            let want: Vec<_> = items
                .iter()
                .filter(|k| k.key.starts_with("/a"))
                .cloned()
                .collect();
            assert_eq!(l.items, want, "list /a at {rev}");
        }
        // Replaying the watch rebuilds every snapshot.
        let mut w = s.watch("", start).await.unwrap();
        let mut state: BTreeMap<String, KeyValue> = BTreeMap::new();
        let mut rev = start;
        while rev < last {
            let ev = next_event(&mut w).await;
            rev = ev.revision();
            match ev {
                Event::Put { kv, prev_kv } => {
                    assert_eq!(prev_kv, state.get(&kv.key).cloned());
                    state.insert(kv.key.clone(), kv);
                }
                Event::Delete { key, prev_kv, .. } => {
                    assert_eq!(Some(prev_kv), state.remove(&key));
                }
            }
            assert_eq!(
                state.values().cloned().collect::<Vec<_>>(),
                snapshots[&rev],
                "after watch event at {rev}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn backends_agree_and_history_is_exact(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(check(ops));
    }
}
