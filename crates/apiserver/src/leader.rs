//! Leader election for the controllers: when several apiservers share one store (etcd),
//! only one runs the controllers at a time, as kube-controller-manager's leader election
//! does. The leader holds a store key attached to a TTL lease and keeps the lease alive;
//! if it stops (crash, partition), the lease expires, the key goes, and another apiserver
//! takes over.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use podnet_store::{Event, Store, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::controllers::{self, ControllerConfig};
use crate::registry::Registry;

/// The key the leader holds.
pub const LEADER_KEY: &str = "/registry/leases/podnet-controllers";

/// How long a leader that stopped renewing keeps the role.
const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often the leader renews.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// Pause after a store error before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Runs the controllers whenever this apiserver (named `identity`) is the leader, until
/// `shutdown`.
pub fn spawn(
    store: Arc<dyn Store>,
    registry: Registry,
    config: ControllerConfig,
    identity: String,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let lead = lead_while_possible(&store, &registry, &config, &identity, shutdown.clone());
            tokio::select! {
                _ = lead => {}
                _ = stopped(&mut shutdown) => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY_AFTER) => {}
                _ = stopped(&mut shutdown) => return,
            }
        }
    })
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// One term: become leader (waiting while someone else is), run the controllers, and
/// return when leadership is lost or the store fails.
async fn lead_while_possible(
    store: &Arc<dyn Store>,
    registry: &Registry,
    config: &ControllerConfig,
    identity: &str,
    mut shutdown: watch::Receiver<bool>,
) {
    let lease = match acquire(store, identity).await {
        Ok(lease) => lease,
        Err(e) => {
            tracing::warn!(error = %e, "leader election: the store failed; retrying");
            return;
        }
    };
    tracing::info!(%identity, "leader election: this apiserver runs the controllers");
    let (stop_tx, stop_rx) = watch::channel(false);
    // Stops this term's controllers on shutdown, even if this future is dropped first.
    let forward = tokio::spawn(async move {
        stopped(&mut shutdown).await;
        let _ = stop_tx.send(true);
    });
    let tasks = controllers::spawn_all(registry.clone(), config.clone(), stop_rx);
    let mut renew = tokio::time::interval(RENEW_EVERY);
    loop {
        renew.tick().await;
        if let Err(e) = store.keep_alive(lease).await {
            tracing::warn!(error = %e, "leader election: lost the lease; stopping the controllers");
            break;
        }
    }
    forward.abort();
    for t in tasks {
        t.abort();
        let _ = t.await;
    }
}

/// Waits until the leader key is free and takes it; returns the lease it is attached to.
async fn acquire(
    store: &Arc<dyn Store>,
    identity: &str,
) -> Result<podnet_store::LeaseId, StoreError> {
    loop {
        let lease = store.grant_lease(LEASE_TTL).await?;
        match store
            .create(LEADER_KEY, identity.as_bytes().to_vec(), Some(lease))
            .await
        {
            Ok(_) => return Ok(lease),
            Err(StoreError::AlreadyExists { .. }) => {
                let _ = store.revoke_lease(lease).await;
                wait_until_free(store).await?;
            }
            Err(e) => {
                let _ = store.revoke_lease(lease).await;
                return Err(e);
            }
        }
    }
}

/// Returns once the leader key is deleted (its lease expired or was revoked).
async fn wait_until_free(store: &Arc<dyn Store>) -> Result<(), StoreError> {
    let Some(current) = store.get(LEADER_KEY).await? else {
        return Ok(());
    };
    let mut events = store.watch(LEADER_KEY, current.mod_revision).await?;
    while let Some(event) = events.next().await {
        if let Event::Delete { key, .. } = event?
            && key == LEADER_KEY
        {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use podnet_store::MemoryStore;

    async fn holder(store: &Arc<dyn Store>) -> Option<String> {
        store
            .get(LEADER_KEY)
            .await
            .unwrap()
            .map(|kv| String::from_utf8(kv.value).unwrap())
    }

    #[tokio::test]
    async fn one_leader_at_a_time_and_a_successor_when_it_stops() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let registry = Registry::new(store.clone());
        let (stop_a, rx_a) = watch::channel(false);
        let (stop_b, rx_b) = watch::channel(false);
        let a = spawn(
            store.clone(),
            registry.clone(),
            ControllerConfig::default(),
            "a".into(),
            rx_a,
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while holder(&store).await.is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nobody became leader"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(holder(&store).await.as_deref(), Some("a"));
        let b = spawn(
            store.clone(),
            registry,
            ControllerConfig::default(),
            "b".into(),
            rx_b,
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(holder(&store).await.as_deref(), Some("a"), "b must wait");

        // a stops: its lease is revoked by the test (as expiry would), and b takes over.
        stop_a.send(true).unwrap();
        a.await.unwrap();
        let key = store.get(LEADER_KEY).await.unwrap().unwrap();
        store.revoke_lease(key.lease.unwrap()).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while holder(&store).await.as_deref() != Some("b") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "b did not take over"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop_b.send(true).unwrap();
        b.await.unwrap();
    }
}
