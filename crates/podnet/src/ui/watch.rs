//! Keeps the hub's topology current: a watch (kube-rs reflector, as the agent's) of Nodes,
//! Pods, Services and EndpointSlices, and a new topology a moment after each burst of
//! changes. A watch, not polling, so that a pod created or deleted is on the page within
//! well under a second and an idle cluster costs nothing.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;

use super::hub::Hub;
use super::topology::{Objects, Topology};
use crate::cli::CliError;
use crate::cli::client::Client;
use crate::cli::trace::list;

/// How long a burst of changes may last before the topology is made anew.
const SETTLE: Duration = Duration::from_millis(50);

/// The objects of the topology, listed once (for `lab graph` and the first picture).
pub async fn list_objects(client: &Client) -> Result<Objects, CliError> {
    use podnet_api::k8s::kinds::{ENDPOINT_SLICE, NODE, POD, SERVICE};
    Ok(Objects {
        nodes: list(client, &NODE).await?,
        pods: list(client, &POD).await?,
        services: list(client, &SERVICE).await?,
        slices: list(client, &ENDPOINT_SLICE).await?,
    })
}

/// The four stores, and whether each has had its first complete list.
struct Stores {
    nodes: Store<Node>,
    pods: Store<Pod>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    ready: [Arc<AtomicBool>; 4],
}

impl Stores {
    fn objects(&self) -> Objects {
        fn owned<K>(s: &Store<K>) -> Vec<K>
        where
            K: kube::Resource + Clone + 'static,
            K::DynamicType: std::hash::Hash + Eq + Clone,
        {
            s.state().iter().map(|o| (**o).clone()).collect()
        }
        Objects {
            nodes: owned(&self.nodes),
            pods: owned(&self.pods),
            services: owned(&self.services),
            slices: owned(&self.slices),
        }
    }

    fn all_ready(&self) -> bool {
        self.ready.iter().all(|r| r.load(Ordering::Relaxed))
    }
}

/// Mirrors `api` into `writer`, waking `changed` on every event; a failing watch is a
/// warning on the page while kube-rs retries it.
async fn reflect<K>(
    api: Api<K>,
    writer: Writer<K>,
    what: &'static str,
    ready: Arc<AtomicBool>,
    changed: Arc<Notify>,
    hub: Arc<Hub>,
) where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Default,
{
    let stream =
        podnet_watch::backed_off(watcher::watcher(api, watcher::Config::default())).reflect(writer);
    let mut stream = pin!(stream);
    let prefix = format!("watching {what}");
    while let Some(event) = stream.next().await {
        match event {
            Ok(e) => {
                if matches!(e, watcher::Event::InitDone) {
                    ready.store(true, Ordering::Relaxed);
                    hub.clear_warnings(&prefix);
                }
                changed.notify_one();
            }
            Err(e) => hub.warn(format!(
                "{prefix}: {e} (retrying; the picture may be stale)"
            )),
        }
    }
}

/// Watches the cluster through `client` and keeps `hub`'s topology current; runs until the
/// process ends.
pub async fn run(client: kube::Client, hub: Arc<Hub>) {
    let changed = Arc::new(Notify::new());
    let ready: [Arc<AtomicBool>; 4] = Default::default();
    let (nodes, nodes_w) = reflector::store();
    let (pods, pods_w) = reflector::store();
    let (services, services_w) = reflector::store();
    let (slices, slices_w) = reflector::store();
    let (c, h, n) = (client.clone(), hub.clone(), changed.clone());
    tokio::spawn(reflect(
        Api::<Node>::all(c),
        nodes_w,
        "Nodes",
        ready[0].clone(),
        n,
        h,
    ));
    let (c, h, n) = (client.clone(), hub.clone(), changed.clone());
    tokio::spawn(reflect(
        Api::<Pod>::all(c),
        pods_w,
        "Pods",
        ready[1].clone(),
        n,
        h,
    ));
    let (c, h, n) = (client.clone(), hub.clone(), changed.clone());
    let services_api = Api::<Service>::all(c);
    tokio::spawn(reflect(
        services_api,
        services_w,
        "Services",
        ready[2].clone(),
        n,
        h,
    ));
    let (h, n) = (hub.clone(), changed.clone());
    let slices_api = Api::<EndpointSlice>::all(client);
    tokio::spawn(reflect(
        slices_api,
        slices_w,
        "EndpointSlices",
        ready[3].clone(),
        n,
        h,
    ));
    let stores = Stores {
        nodes,
        pods,
        services,
        slices,
        ready,
    };
    loop {
        changed.notified().await;
        tokio::time::sleep(SETTLE).await;
        // Until every watch has its first list, the listed topology stands.
        if stores.all_ready() {
            hub.set_topology(Topology::from_objects(&stores.objects()));
        }
    }
}
