//! What the proxy's sync loop says about its syncs, turned into [`Health`] reports.
//!
//! `podnet_proxy::run` retries a refused sync by itself and returns only when its watches
//! end, so its result alone never shows a proxy whose every sync fails (a table of that name
//! owned by someone else, a kernel without a needed nf_tables feature). Its sync loop does
//! say so, in its log events: an ERROR event for each failed sync (with the `error` field),
//! an INFO "full sync … done" for each full sync that worked — and after a failure the next
//! sync is always a full one. The agent runs the proxy's future with the [`Dispatch`] made
//! here: every event is passed on to the subscriber that was in place (so the log is
//! unchanged) and those two kinds are also reported to the node's health.
//!
//! This reads the proxy's log events, which is a coupling by convention: the lab tests
//! (`lab_health`) fail if the proxy stops emitting them. A sync-result callback in
//! `podnet_proxy::ProxyConfig` would be the sturdier interface.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Level, Metadata, Subscriber};
use tracing_core::span::Current;

use crate::node::health::{Health, Part};

/// The target of the proxy's sync loop events.
pub const SYNC_TARGET: &str = "podnet_proxy::runner";
/// How the proxy's message for a successful full sync starts.
pub const FULL_SYNC_DONE: &str = "full sync of the service rules done";

/// A dispatcher that forwards everything to the current default one and reports the
/// proxy's sync results to `health`.
pub fn observer(health: Health) -> Dispatch {
    let inner = tracing::dispatcher::get_default(Dispatch::clone);
    Dispatch::new(SyncObserver { inner, health })
}

struct SyncObserver {
    inner: Dispatch,
    health: Health,
}

/// Whether an event's callsite is one of the two the observer reads.
fn wanted(meta: &Metadata<'_>) -> bool {
    meta.is_event()
        && meta.target() == SYNC_TARGET
        && matches!(*meta.level(), Level::ERROR | Level::INFO)
}

/// The fields the observer reads.
#[derive(Default)]
struct Fields {
    message: String,
    error: Option<String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "error" => self.error = Some(format!("{value:?}")),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "error" => self.error = Some(value.to_string()),
            _ => {}
        }
    }
}

/// What an event of the sync loop says: a failed sync (its error), a successful full sync,
/// or nothing about syncs.
fn classify(level: Level, fields: &Fields) -> Option<Result<(), String>> {
    if level == Level::ERROR {
        let error = fields
            .error
            .clone()
            .unwrap_or_else(|| fields.message.clone());
        return Some(Err(format!("syncing the service rules failed: {error}")));
    }
    (level == Level::INFO && fields.message.starts_with(FULL_SYNC_DONE)).then_some(Ok(()))
}

impl Subscriber for SyncObserver {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        let inner = self.inner.register_callsite(meta);
        if wanted(meta) && !inner.is_always() {
            // Asked each time: `enabled` says yes for us, the inner subscriber's filter
            // decides whether it is also logged.
            return Interest::sometimes();
        }
        inner
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        wanted(meta) || self.inner.enabled(meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        // What this one needs; the inner subscriber's own hint counts as well, as it is
        // registered too.
        Some(LevelFilter::INFO)
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.inner.new_span(span)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        self.inner.record(span, values)
    }

    fn record_follows_from(&self, span: &Id, follows: &Id) {
        self.inner.record_follows_from(span, follows)
    }

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        if wanted(meta) {
            let mut fields = Fields::default();
            event.record(&mut fields);
            if let Some(outcome) = classify(*meta.level(), &fields) {
                self.health.report(Part::ServiceProxy, outcome);
            }
            if !self.inner.enabled(meta) {
                return;
            }
        }
        self.inner.event(event)
    }

    fn enter(&self, span: &Id) {
        self.inner.enter(span)
    }

    fn exit(&self, span: &Id) {
        self.inner.exit(span)
    }

    fn clone_span(&self, id: &Id) -> Id {
        self.inner.clone_span(id)
    }

    fn try_close(&self, id: Id) -> bool {
        self.inner.try_close(id)
    }

    fn current_span(&self) -> Current {
        self.inner.current_span()
    }
}

#[cfg(test)]
mod tests {
    use tracing::instrument::WithSubscriber as _;

    use super::*;
    use crate::node::health::{FAILURES_BEFORE_UNAVAILABLE, NetworkHealth, PartHealth};

    #[test]
    fn events_are_classified() {
        let failed = Fields {
            message: "syncing service rules failed; a full sync follows".into(),
            error: Some("Operation not permitted".into()),
        };
        assert_eq!(
            classify(Level::ERROR, &failed),
            Some(Err(
                "syncing the service rules failed: Operation not permitted".into()
            ))
        );
        let done = Fields {
            message: format!("{FULL_SYNC_DONE} in 3 ms"),
            error: None,
        };
        assert_eq!(classify(Level::INFO, &done), Some(Ok(())));
        let other = Fields {
            message: "listed Services and EndpointSlices; syncing the rules".into(),
            error: None,
        };
        assert_eq!(classify(Level::INFO, &other), None);
        assert_eq!(classify(Level::WARN, &failed), None);
    }

    /// The proxy's own events, from inside a future run with the observer, reach the health
    /// state; events of other targets do not.
    #[tokio::test]
    async fn the_sync_loops_events_reach_the_health() {
        let (health, rx) = Health::channel(NetworkHealth::new(true));
        let observer = observer(health);
        async {
            tracing::info!(target: "podnet_proxy::runner", changed = 1, "{FULL_SYNC_DONE}");
        }
        .with_subscriber(observer.clone())
        .await;
        assert_eq!(rx.borrow().proxy, PartHealth::Healthy);
        async {
            tracing::error!(target: "somewhere_else", error = "x", "not the proxy");
            for _ in 0..FAILURES_BEFORE_UNAVAILABLE {
                let e = std::io::Error::from_raw_os_error(1);
                tracing::error!(target: "podnet_proxy::runner", error = %e, "syncing service rules failed; a full sync follows");
            }
        }
        .with_subscriber(observer)
        .await;
        let h = rx.borrow().clone();
        let c = h.condition();
        assert!(h.is_failing(Part::ServiceProxy), "{h:?}");
        let c = c.unwrap_or_else(|| panic!("{h:?}"));
        assert_eq!(c.reason, "ServiceProxyFailing");
        assert!(c.message.contains("Operation not permitted"), "{c:?}");
    }
}
