//! The etcd v3 backend, through `etcd-client`.
//!
//! Keys are stored under a prefix (e.g. `/podnet`), so several clusters or tests can share one
//! etcd. The store's revisions are etcd's revisions: other writers to the same etcd (even
//! outside the prefix) advance them too. Conditional writes are etcd transactions comparing
//! `create_revision`/`mod_revision`; updates keep the key's lease (`ignore_lease`); leases are
//! etcd leases (TTL rounded up to whole seconds, etcd's minimum applies).

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions,
    EventType, GetOptions, Identity, PutOptions, ResponseHeader, TlsOptions, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchOptions,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    Deleted, Event, KeyValue, LeaseId, ListResult, Op, Result, Store, StoreError, WatchStream,
    check_expected, check_key, check_list_revision, check_watch_revision,
};

/// TLS settings for the connection to etcd (PEM contents, not paths).
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// CA certificate(s) that signed the etcd server certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key, for etcd's `--client-cert-auth`.
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    /// Server name to verify, if not the endpoint's host.
    pub domain: Option<String>,
}

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs, e.g. `http://127.0.0.1:2379` (`https://` with TLS).
    pub endpoints: Vec<String>,
    /// Prepended to every key; the store never touches keys outside it.
    pub prefix: String,
    /// User name and password, if etcd has authentication enabled.
    pub user: Option<(String, String)>,
    pub tls: Option<EtcdTls>,
    pub connect_timeout: Duration,
    /// Deadline of each unary request (not of watch streams).
    pub request_timeout: Option<Duration>,
    /// Events buffered per watch stream.
    pub watch_channel_capacity: usize,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/podnet".into(),
            user: None,
            tls: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Some(Duration::from_secs(30)),
            watch_channel_capacity: 256,
        }
    }
}

/// A [`Store`] in etcd v3.
pub struct EtcdStore {
    client: Client,
    prefix: String,
    watch_capacity: usize,
}

/// What etcd said, for the errors the store distinguishes.
enum Kind {
    Compacted,
    FutureRevision,
    LeaseNotFound,
    Other,
}

fn classify(e: &etcd_client::Error) -> Kind {
    let msg = match e {
        etcd_client::Error::GRpcStatus(s) => s.message().to_owned(),
        etcd_client::Error::LeaseKeepAliveError(m) => m.clone(),
        _ => return Kind::Other,
    };
    if msg.contains("required revision has been compacted") {
        Kind::Compacted
    } else if msg.contains("required revision is a future revision") {
        Kind::FutureRevision
    } else if msg.contains("lease not found") {
        Kind::LeaseNotFound
    } else {
        Kind::Other
    }
}

/// etcd's "lease not found" as [`StoreError::LeaseNotFound`], anything else as a backend error.
fn lease_error(op: Op, key: &str, lease: LeaseId, e: etcd_client::Error) -> StoreError {
    match classify(&e) {
        Kind::LeaseNotFound => StoreError::LeaseNotFound { op, lease },
        _ => StoreError::backend(op, key, e),
    }
}

/// The revision a response was served at.
fn header_revision(op: Op, key: &str, header: Option<&ResponseHeader>) -> Result<i64> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::backend(op, key, "etcd response without a header"))
}

impl EtcdStore {
    /// Connects to etcd (and authenticates, if a user is given).
    pub async fn connect(opts: EtcdOptions) -> Result<Self> {
        let ctx = opts.endpoints.join(",");
        let mut co = ConnectOptions::new().with_connect_timeout(opts.connect_timeout);
        if let Some(t) = opts.request_timeout {
            co = co.with_timeout(t);
        }
        if let Some((u, p)) = &opts.user {
            co = co.with_user(u.clone(), p.clone());
        }
        if let Some(tls) = &opts.tls {
            let mut t = TlsOptions::new();
            if let Some(ca) = &tls.ca_pem {
                t = t.ca_certificate(Certificate::from_pem(ca));
            }
            match (&tls.client_cert_pem, &tls.client_key_pem) {
                (Some(c), Some(k)) => t = t.identity(Identity::from_pem(c, k)),
                (None, None) => {}
                _ => {
                    return Err(StoreError::InvalidArgument {
                        op: Op::Open,
                        key: ctx,
                        reason: "a TLS client certificate needs both the certificate and the key"
                            .into(),
                    });
                }
            }
            if let Some(d) = &tls.domain {
                t = t.domain_name(d.clone());
            }
            co = co.with_tls(t);
        }
        let client = Client::connect(&opts.endpoints, Some(co))
            .await
            .map_err(|e| StoreError::backend(Op::Open, &ctx, e))?;
        Ok(EtcdStore {
            client,
            prefix: opts.prefix,
            watch_capacity: opts.watch_channel_capacity.max(1),
        })
    }

    fn full(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn err(&self, op: Op, key: &str, e: etcd_client::Error) -> StoreError {
        StoreError::backend(op, key, e)
    }

    async fn compacted_error(&self, op: Op, key: &str, requested: i64) -> StoreError {
        StoreError::Compacted {
            op,
            key: key.to_owned(),
            requested,
            compacted_revision: self.compacted_revision().await.unwrap_or(0),
        }
    }

    async fn future_error(&self, op: Op, key: &str, requested: i64) -> StoreError {
        StoreError::FutureRevision {
            op,
            key: key.to_owned(),
            requested,
            current: self.current_revision().await.unwrap_or(0),
        }
    }

    /// etcd does not report the compacted revision on a failed range; a watch from revision 1
    /// is cancelled with it.
    async fn compacted_revision(&self) -> Option<i64> {
        let mut w = self
            .client
            .watch_client()
            .watch(
                self.prefix.clone(),
                Some(WatchOptions::new().with_start_revision(1)),
            )
            .await
            .ok()?;
        let find = async {
            while let Ok(Some(resp)) = w.message().await {
                if resp.compact_revision() > 0 {
                    return Some(resp.compact_revision());
                }
                if resp.canceled() || !resp.events().is_empty() {
                    return None;
                }
            }
            None
        };
        tokio::time::timeout(Duration::from_secs(5), find)
            .await
            .ok()
            .flatten()
    }

    fn convert(&self, op: Op, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        convert_kv(&self.prefix, op, kv)
    }

    /// The `kv` of the `get` in a failed transaction's else branch.
    fn else_get(&self, op: Op, resp: &TxnResponse) -> Result<Option<KeyValue>> {
        for r in resp.op_responses() {
            if let TxnOpResponse::Get(g) = r {
                return g.kvs().first().map(|kv| self.convert(op, kv)).transpose();
            }
        }
        Ok(None)
    }

    /// Runs `then` on `key` if `cmp` holds; if not, reads the key to tell
    /// [`StoreError::NotFound`] from [`StoreError::Conflict`]. Returns the response and its
    /// revision.
    async fn conditional(
        &self,
        op: Op,
        key: &str,
        expected: Option<i64>,
        cmp: Compare,
        then: TxnOp,
    ) -> Result<(TxnResponse, i64)> {
        let txn = Txn::new()
            .when([cmp])
            .and_then([then])
            .or_else([TxnOp::get(self.full(key), None)]);
        let resp = self
            .client
            .kv_client()
            .txn(txn)
            .await
            .map_err(|e| self.err(op, key, e))?;
        if !resp.succeeded() {
            return Err(self.precondition_failed(op, key, expected, &resp));
        }
        let rev = header_revision(op, key, resp.header())?;
        Ok((resp, rev))
    }

    /// A failed compare: the key is absent, or at another revision.
    fn precondition_failed(
        &self,
        op: Op,
        key: &str,
        expected: Option<i64>,
        resp: &TxnResponse,
    ) -> StoreError {
        match self.else_get(op, resp) {
            Err(e) => e,
            Ok(None) => StoreError::NotFound {
                op,
                key: key.to_owned(),
            },
            Ok(Some(cur)) => StoreError::Conflict {
                op,
                key: key.to_owned(),
                expected: expected.unwrap_or(0),
                current: cur.mod_revision,
            },
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        check_key(Op::Get, key)?;
        let resp = self
            .client
            .kv_client()
            .get(self.full(key), None)
            .await
            .map_err(|e| self.err(Op::Get, key, e))?;
        resp.kvs()
            .first()
            .map(|kv| self.convert(Op::Get, kv))
            .transpose()
    }

    async fn list(&self, prefix: &str, at_revision: Option<i64>) -> Result<ListResult> {
        check_list_revision(prefix, at_revision)?;
        // Read in chunks, all at one revision: one response must stay under gRPC's 4 MiB
        // message limit (10,000 Services are more than that), as kube-apiserver pages too.
        let full = self.full(prefix);
        let end = prefix_range_end(full.as_bytes());
        let mut start = full.clone().into_bytes();
        let mut revision = at_revision;
        let mut items = Vec::new();
        loop {
            let mut opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_CHUNK);
            if let Some(at) = revision {
                opts = opts.with_revision(at);
            }
            let resp = match self.client.kv_client().get(start.clone(), Some(opts)).await {
                Ok(r) => r,
                Err(e) => {
                    let at = revision.unwrap_or(0);
                    return Err(match classify(&e) {
                        Kind::Compacted => self.compacted_error(Op::List, prefix, at).await,
                        Kind::FutureRevision => self.future_error(Op::List, prefix, at).await,
                        _ => self.err(Op::List, prefix, e),
                    });
                }
            };
            if revision.is_none() {
                revision = Some(header_revision(Op::List, prefix, resp.header())?);
            }
            for kv in resp.kvs() {
                items.push(self.convert(Op::List, kv)?);
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        let revision = revision.ok_or_else(|| {
            StoreError::backend(Op::List, prefix, "etcd answered without a revision")
        })?;
        Ok(ListResult { items, revision })
    }

    async fn create(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<KeyValue> {
        check_key(Op::Create, key)?;
        let full = self.full(key);
        let mut put = PutOptions::new();
        if let Some(l) = lease {
            put = put.with_lease(l.0);
        }
        let txn = Txn::new()
            .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full, value.clone(), Some(put))]);
        let resp = self
            .client
            .kv_client()
            .txn(txn)
            .await
            .map_err(|e| match lease {
                Some(l) => lease_error(Op::Create, key, l, e),
                None => self.err(Op::Create, key, e),
            })?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists {
                op: Op::Create,
                key: key.to_owned(),
            });
        }
        let rev = header_revision(Op::Create, key, resp.header())?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: i64,
    ) -> Result<KeyValue> {
        check_key(Op::Update, key)?;
        check_expected(Op::Update, key, expected_mod_revision)?;
        let full = self.full(key);
        let (resp, rev) = self
            .conditional(
                Op::Update,
                key,
                Some(expected_mod_revision),
                Compare::mod_revision(full.clone(), CompareOp::Equal, expected_mod_revision),
                TxnOp::put(
                    full,
                    value.clone(),
                    Some(PutOptions::new().with_ignore_lease().with_prev_key()),
                ),
            )
            .await?;
        let prev = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Put(p) => p.prev_key().cloned(),
            _ => None,
        });
        let Some(prev) = prev else {
            return Err(StoreError::backend(
                Op::Update,
                key,
                "etcd did not return the previous value of an update",
            ));
        };
        let prev = self.convert(Op::Update, &prev)?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: prev.create_revision,
            mod_revision: rev,
            version: prev.version + 1,
            lease: prev.lease,
        })
    }

    async fn delete(&self, key: &str, expected_mod_revision: Option<i64>) -> Result<Deleted> {
        check_key(Op::Delete, key)?;
        if let Some(e) = expected_mod_revision {
            check_expected(Op::Delete, key, e)?;
        }
        let full = self.full(key);
        let cmp = match expected_mod_revision {
            Some(e) => Compare::mod_revision(full.clone(), CompareOp::Equal, e),
            None => Compare::version(full.clone(), CompareOp::Greater, 0),
        };
        let (resp, rev) = self
            .conditional(
                Op::Delete,
                key,
                expected_mod_revision,
                cmp,
                TxnOp::delete(full, Some(DeleteOptions::new().with_prev_key())),
            )
            .await?;
        let prev = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Delete(d) => d.prev_kvs().first().cloned(),
            _ => None,
        });
        let Some(prev) = prev else {
            return Err(StoreError::backend(
                Op::Delete,
                key,
                "etcd did not return the deleted value",
            ));
        };
        Ok(Deleted {
            prev_kv: self.convert(Op::Delete, &prev)?,
            revision: rev,
        })
    }

    async fn current_revision(&self) -> Result<i64> {
        let resp = self
            .client
            .kv_client()
            .get(
                self.prefix.clone(),
                Some(GetOptions::new().with_count_only()),
            )
            .await
            .map_err(|e| self.err(Op::CurrentRevision, "", e))?;
        header_revision(Op::CurrentRevision, "", resp.header())
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        if revision < 1 {
            return Ok(());
        }
        match self
            .client
            .kv_client()
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match classify(&e) {
                // Already compacted at or past it: nothing to do.
                Kind::Compacted => Ok(()),
                Kind::FutureRevision => Err(self.future_error(Op::Compact, "", revision).await),
                _ => Err(self.err(Op::Compact, "", e)),
            },
        }
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        check_watch_revision(prefix, from_revision)?;
        let full = self.full(prefix);
        // Same rule as the other backends: the state at `from_revision` must still be
        // readable. (etcd itself would accept `compacted - 1`.)
        let probe = self
            .client
            .kv_client()
            .get(
                full.clone(),
                Some(
                    GetOptions::new()
                        .with_count_only()
                        .with_revision(from_revision.max(1)),
                ),
            )
            .await;
        if let Err(e) = probe {
            match classify(&e) {
                Kind::Compacted => {
                    return Err(self.compacted_error(Op::Watch, prefix, from_revision).await);
                }
                // Watching from the future is allowed: the events come when they happen.
                Kind::FutureRevision => {}
                _ => return Err(self.err(Op::Watch, prefix, e)),
            }
        }
        let mut stream = self
            .client
            .watch_client()
            .watch(
                full,
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(from_revision + 1)
                        .with_prev_key(),
                ),
            )
            .await
            .map_err(|e| self.err(Op::Watch, prefix, e))?;
        let (tx, rx) = mpsc::channel(self.watch_capacity);
        let store_prefix = self.prefix.clone();
        let watched = prefix.to_owned();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = tx.closed() => return,
                    m = stream.message() => m,
                };
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        let _ = tx
                            .send(Err(StoreError::backend(
                                Op::Watch,
                                &watched,
                                "etcd closed the watch stream",
                            )))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(StoreError::backend(Op::Watch, &watched, e)))
                            .await;
                        return;
                    }
                };
                for ev in resp.events() {
                    let item = convert_event(&store_prefix, &watched, ev);
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        return;
                    }
                }
                if resp.canceled() {
                    let err = if resp.compact_revision() > 0 {
                        StoreError::Compacted {
                            op: Op::Watch,
                            key: watched.clone(),
                            requested: from_revision,
                            compacted_revision: resp.compact_revision(),
                        }
                    } else {
                        StoreError::WatchLagged {
                            op: Op::Watch,
                            key: watched.clone(),
                            reason: format!("etcd cancelled the watch: {}", resp.cancel_reason()),
                        }
                    };
                    let _ = tx.send(Err(err)).await;
                    return;
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl.is_zero() {
            return Err(StoreError::InvalidArgument {
                op: Op::GrantLease,
                key: String::new(),
                reason: "the lease TTL must be positive".into(),
            });
        }
        let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let secs = if ttl.subsec_nanos() > 0 {
            secs.saturating_add(1)
        } else {
            secs
        };
        let resp = self
            .client
            .lease_client()
            .grant(secs, None)
            .await
            .map_err(|e| self.err(Op::GrantLease, "", e))?;
        Ok(LeaseId(resp.id()))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.client
            .lease_client()
            .keep_alive(lease.0)
            .await
            .map(drop)
            .map_err(|e| lease_error(Op::KeepAlive, "", lease, e))
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.client
            .lease_client()
            .revoke(lease.0)
            .await
            .map(drop)
            .map_err(|e| lease_error(Op::RevokeLease, "", lease, e))
    }
}

/// Converts an etcd key-value, stripping the store prefix.
/// Keys read per request of a list.
const LIST_CHUNK: i64 = 1000;

/// The end of the key range of everything starting with `prefix` (etcd's `WithPrefix`).
fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    for (i, b) in prefix.iter().enumerate().rev() {
        if *b < 0xFF {
            let mut end = prefix[..=i].to_vec();
            end[i] = b + 1;
            return end;
        }
    }
    // Every byte is 0xFF: the range runs to the end of the key space.
    vec![0]
}

fn convert_kv(prefix: &str, op: Op, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    let raw = kv.key();
    let key = std::str::from_utf8(raw).map_err(|e| StoreError::Corrupt {
        op,
        key: String::from_utf8_lossy(raw).into_owned(),
        reason: format!("key is not UTF-8: {e}"),
    })?;
    let Some(key) = key.strip_prefix(prefix) else {
        return Err(StoreError::Corrupt {
            op,
            key: key.to_owned(),
            reason: format!("key is outside the store prefix {prefix:?}"),
        });
    };
    Ok(KeyValue {
        key: key.to_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
    })
}

/// Converts a watch event, stripping the store prefix.
fn convert_event(prefix: &str, watched: &str, ev: &etcd_client::Event) -> Result<Event> {
    let Some(kv) = ev.kv() else {
        return Err(StoreError::backend(
            Op::Watch,
            watched,
            "etcd sent an event without a key",
        ));
    };
    let kv = convert_kv(prefix, Op::Watch, kv)?;
    let prev_kv = ev
        .prev_kv()
        .map(|p| convert_kv(prefix, Op::Watch, p))
        .transpose()?;
    match ev.event_type() {
        EventType::Put => Ok(Event::Put { kv, prev_kv }),
        EventType::Delete => {
            let Some(prev_kv) = prev_kv else {
                return Err(StoreError::WatchLagged {
                    op: Op::Watch,
                    key: watched.to_owned(),
                    reason: format!(
                        "etcd sent the delete of {:?} without its previous value (compacted meanwhile); re-list",
                        kv.key
                    ),
                });
            };
            Ok(Event::Delete {
                key: kv.key,
                prev_kv,
                revision: kv.mod_revision,
            })
        }
    }
}
