//! Watch streams: newline-delimited `{"type": ..., "object": ...}` events, with initial
//! events, selectors, bookmarks, a timeout, and a 410 `ERROR` event when the requested
//! `resourceVersion` was compacted away.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use podnet_api::k8s::kinds::ResourceKind;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::list::Selectors;
use super::query::Query;
use crate::error::{ApiError, ApiResult};
use crate::registry::{self, EventType, Registry, WatchEvent};

/// How a watch renders objects.
pub type Render = std::sync::Arc<dyn Fn(&Value) -> Value + Send + Sync>;

/// The parameters of one watch.
pub struct WatchRequest {
    pub kind: &'static ResourceKind,
    pub namespace: Option<String>,
    pub selectors: Selectors,
    /// Revision to start after, or `None` for "current state first".
    pub from: Option<i64>,
    pub send_initial_events: bool,
    pub bookmarks: bool,
    pub timeout: Duration,
    pub bookmark_interval: Duration,
}

impl WatchRequest {
    pub fn parse(
        kind: &'static ResourceKind,
        namespace: Option<&str>,
        q: &Query,
        bookmark_interval: Duration,
    ) -> ApiResult<Self> {
        let from = match q.get("resourceVersion") {
            None | Some("0") => None,
            Some(rv) => Some(registry::parse_resource_version(rv)?),
        };
        let send_initial_events = q.flag("sendInitialEvents");
        let timeout = q
            .int("timeoutSeconds")?
            .filter(|t| *t > 0)
            .map(|t| Duration::from_secs(t as u64))
            // kube-apiserver picks a random timeout of 30-60 minutes; a fixed hour is enough.
            .unwrap_or(Duration::from_secs(3600));
        Ok(WatchRequest {
            kind,
            namespace: namespace.map(str::to_owned),
            selectors: Selectors::parse(kind, q)?,
            from,
            send_initial_events,
            bookmarks: q.flag("allowWatchBookmarks"),
            timeout,
            bookmark_interval,
        })
    }
}

/// Starts a watch; the returned receiver yields the response body's chunks.
pub async fn start(
    registry: Registry,
    req: WatchRequest,
    render: Render,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> ApiResult<mpsc::Receiver<Result<Bytes, Infallible>>> {
    let (tx, rx) = mpsc::channel(256);
    let ns = req.namespace.as_deref();
    let (initial, from) = match req.from {
        Some(from) if !req.send_initial_events => (Vec::new(), from),
        _ => {
            let listed = registry.list(req.kind, ns, None).await?;
            let items = listed
                .items
                .into_iter()
                .filter(|o| req.selectors.matches(o))
                .collect::<Vec<_>>();
            (items, listed.revision)
        }
    };
    let events = match registry.watch(req.kind, ns, from).await {
        Ok(events) => events,
        Err(e) if e.code == 410 => {
            // As kube-apiserver: the watch opens and says why it ends.
            let _ = tx.try_send(Ok(line(&error_event(&e))));
            return Ok(rx);
        }
        Err(e) => return Err(e),
    };
    tokio::spawn(pump(
        req,
        initial,
        from,
        Box::pin(events),
        render,
        tx,
        shutdown,
    ));
    Ok(rx)
}

async fn pump(
    req: WatchRequest,
    initial: Vec<Value>,
    from: i64,
    mut events: std::pin::Pin<Box<dyn futures::Stream<Item = ApiResult<WatchEvent>> + Send>>,
    render: Render,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    for obj in &initial {
        if send(&tx, "ADDED", &render(obj)).await.is_err() {
            return;
        }
    }
    let mut last_revision = from;
    if req.send_initial_events
        && req.bookmarks
        && send_bookmark(&tx, req.kind, last_revision, true)
            .await
            .is_err()
    {
        return;
    }
    let deadline = tokio::time::sleep(req.timeout);
    tokio::pin!(deadline);
    let stopped = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stopped);
    let mut bookmark = tokio::time::interval(req.bookmark_interval);
    bookmark.tick().await;
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            _ = tx.closed() => return,
            _ = &mut stopped => return,
            _ = bookmark.tick(), if req.bookmarks => {
                if send_bookmark(&tx, req.kind, last_revision, false).await.is_err() {
                    return;
                }
            }
            item = events.next() => {
                let event = match item {
                    None => return,
                    Some(Err(e)) => {
                        let _ = tx.send(Ok(line(&error_event(&e)))).await;
                        return;
                    }
                    Some(Ok(event)) => event,
                };
                last_revision = event.revision;
                if let Some((kind, obj)) = filter(&req.selectors, &event)
                    && send(&tx, kind, &render(obj)).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

/// What a client with these selectors sees of a change: an object entering the selection
/// is ADDED, one leaving it is DELETED.
fn filter<'a>(selectors: &Selectors, event: &'a WatchEvent) -> Option<(&'static str, &'a Value)> {
    let now = selectors.matches(&event.object);
    let before = event
        .previous
        .as_ref()
        .is_some_and(|p| selectors.matches(p));
    match event.kind {
        EventType::Added => now.then_some(("ADDED", &event.object)),
        EventType::Deleted => before.then_some(("DELETED", &event.object)),
        EventType::Modified => match (before, now) {
            (true, true) => Some(("MODIFIED", &event.object)),
            (false, true) => Some(("ADDED", &event.object)),
            (true, false) => Some(("DELETED", &event.object)),
            (false, false) => None,
        },
    }
}

async fn send(
    tx: &mpsc::Sender<Result<Bytes, Infallible>>,
    kind: &str,
    obj: &Value,
) -> Result<(), ()> {
    tx.send(Ok(line(&json!({"type": kind, "object": obj}))))
        .await
        .map_err(|_| ())
}

async fn send_bookmark(
    tx: &mpsc::Sender<Result<Bytes, Infallible>>,
    kind: &ResourceKind,
    revision: i64,
    initial_events_end: bool,
) -> Result<(), ()> {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let obj = json!({"kind": kind.kind, "apiVersion": kind.api_version(), "metadata": metadata});
    send(tx, "BOOKMARK", &obj).await
}

fn error_event(e: &ApiError) -> Value {
    json!({"type": "ERROR", "object": e.to_status()})
}

fn line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::LabelSelector;

    fn event(kind: EventType, before: Option<&str>, now: &str) -> WatchEvent {
        let obj = |app: &str| json!({"metadata": {"name": "p", "labels": {"app": app}}});
        WatchEvent {
            kind,
            object: obj(now),
            previous: before.map(obj),
            revision: 7,
        }
    }

    #[test]
    fn selection_changes_become_added_and_deleted() {
        let s = Selectors {
            labels: LabelSelector::parse("app=web").unwrap(),
            ..Default::default()
        };
        let kind_of = |e: &WatchEvent| filter(&s, e).map(|(k, _)| k);
        assert_eq!(
            kind_of(&event(EventType::Added, None, "web")),
            Some("ADDED")
        );
        assert_eq!(kind_of(&event(EventType::Added, None, "db")), None);
        assert_eq!(
            kind_of(&event(EventType::Modified, Some("db"), "web")),
            Some("ADDED")
        );
        assert_eq!(
            kind_of(&event(EventType::Modified, Some("web"), "db")),
            Some("DELETED")
        );
        assert_eq!(
            kind_of(&event(EventType::Modified, Some("web"), "web")),
            Some("MODIFIED")
        );
        assert_eq!(
            kind_of(&event(EventType::Deleted, Some("web"), "web")),
            Some("DELETED")
        );
    }
}
