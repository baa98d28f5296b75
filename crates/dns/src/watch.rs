//! The index fed by watches of Namespaces, Services, EndpointSlices and Pods (kube-rs
//! watchers, as the agent's proxy and policy engines use): each event changes the index
//! at once, so an answer follows the cluster within the watch's latency; a relist
//! replaces what the kind had. The zone answers once every watch has listed (SERVFAIL
//! before, so no resolver caches a premature NXDOMAIN).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use crate::handler::Shared;
use crate::index::Index;

/// One event of one of the watches.
enum Change {
    Namespace(Box<Event<Namespace>>),
    Service(Box<Event<Service>>),
    Slice(Box<Event<EndpointSlice>>),
    Pod(Box<Event<Pod>>),
    Failed(&'static str, String),
}

/// What a watch collects during a relist.
#[derive(Default)]
struct Relist {
    namespaces: Option<Vec<Namespace>>,
    services: Option<Vec<Service>>,
    slices: Option<Vec<EndpointSlice>>,
    pods: Option<Vec<Pod>>,
}

/// Applies one event; returns which watch finished a list (0..4).
fn apply(idx: &mut Index, relist: &mut Relist, change: Change) -> Option<usize> {
    macro_rules! kind {
        ($ev:expr, $buf:expr, $apply:ident, $delete:ident, $replace:ident, $n:expr) => {
            match $ev {
                Event::Init => {
                    $buf = Some(Vec::new());
                    None
                }
                Event::InitApply(o) => {
                    if let Some(b) = &mut $buf {
                        b.push(o);
                    }
                    None
                }
                Event::InitDone => {
                    let all = $buf.take().unwrap_or_default();
                    idx.$replace(&all);
                    Some($n)
                }
                Event::Apply(o) => {
                    idx.$apply(&o);
                    None
                }
                Event::Delete(o) => {
                    idx.$delete(&o);
                    None
                }
            }
        };
    }
    match change {
        Change::Namespace(ev) => kind!(
            *ev,
            relist.namespaces,
            apply_namespace,
            delete_namespace,
            replace_namespaces,
            0
        ),
        Change::Service(ev) => kind!(
            *ev,
            relist.services,
            apply_service,
            delete_service,
            replace_services,
            1
        ),
        Change::Slice(ev) => kind!(
            *ev,
            relist.slices,
            apply_slice,
            delete_slice,
            replace_slices,
            2
        ),
        Change::Pod(ev) => kind!(*ev, relist.pods, apply_pod, delete_pod, replace_pods, 3),
        Change::Failed(what, error) => {
            tracing::warn!(watch = what, error = %error, "watch failed (retrying)");
            None
        }
    }
}

/// Keeps `shared`'s index in step with the cluster until `stop` turns true. Pods are
/// watched only when `watch_pods` (verified pod records need them).
pub async fn run(
    client: kube::Client,
    shared: Arc<Shared>,
    watch_pods: bool,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = watcher::Config::default;
    let ns = podnet_watch::backed_off(watcher::watcher(
        Api::<Namespace>::all(client.clone()),
        cfg(),
    ))
    .map(|e| {
        e.map_or_else(
            |e| Change::Failed("Namespaces", e.to_string()),
            |e| Change::Namespace(Box::new(e)),
        )
    })
    .boxed();
    let svc =
        podnet_watch::backed_off(watcher::watcher(Api::<Service>::all(client.clone()), cfg()))
            .map(|e| {
                e.map_or_else(
                    |e| Change::Failed("Services", e.to_string()),
                    |e| Change::Service(Box::new(e)),
                )
            })
            .boxed();
    let eps = podnet_watch::backed_off(watcher::watcher(
        Api::<EndpointSlice>::all(client.clone()),
        cfg(),
    ))
    .map(|e| {
        e.map_or_else(
            |e| Change::Failed("EndpointSlices", e.to_string()),
            |e| Change::Slice(Box::new(e)),
        )
    })
    .boxed();
    let mut streams = vec![ns, svc, eps];
    let mut listed = [false, false, false, !watch_pods];
    if watch_pods {
        streams.push(
            podnet_watch::backed_off(watcher::watcher(Api::<Pod>::all(client), cfg()))
                .map(|e| {
                    e.map_or_else(
                        |e| Change::Failed("Pods", e.to_string()),
                        |e| Change::Pod(Box::new(e)),
                    )
                })
                .boxed(),
        );
    }
    let mut all = futures::stream::select_all(streams);
    let mut relist = Relist::default();
    loop {
        let change = tokio::select! {
            c = all.next() => c,
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    return;
                }
                continue;
            }
        };
        let Some(change) = change else {
            return;
        };
        // Events that arrived meanwhile are applied under the same lock.
        let mut batch = vec![change];
        while let Some(Some(c)) = all.now_or_never_ready() {
            batch.push(c);
            if batch.len() >= 1024 {
                break;
            }
        }
        let done: Vec<usize> = shared.update(|idx| {
            batch
                .into_iter()
                .filter_map(|c| apply(idx, &mut relist, c))
                .collect()
        });
        for i in done {
            listed[i] = true;
        }
        if !shared.synced() && listed.iter().all(|l| *l) {
            let (n, s, e, p) = shared.read().counts();
            tracing::info!(
                namespaces = n,
                services = s,
                endpoints = e,
                pods = p,
                "synced with the API: answering the cluster zone"
            );
            shared.set_synced(true);
        }
    }
}

/// `now_or_never` for a stream's next item, without giving up the stream.
trait NowOrNever: futures::Stream + Unpin {
    fn now_or_never_ready(&mut self) -> Option<Option<Self::Item>> {
        futures::FutureExt::now_or_never(self.next())
    }
}
impl<S: futures::Stream + Unpin> NowOrNever for S {}
