//! Watching the Kubernetes API as podnet's parts do. [`backed_off`] spaces a failing
//! watch's retries by a back-off that only a listing (or a change seen) resets. [`Trouble`]
//! says a lasting failure once and clearly: a cluster older than Kubernetes 1.21 serves no
//! `discovery.k8s.io/v1` EndpointSlices, and an identity without the right RBAC rule may
//! not list them, so the watch fails on every retry with the same 404 or 403. The part says
//! what is missing and what provides it the first time, keeps quiet while it stays so, and
//! says when it is over.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::watcher::{self, Event};

/// The first pause after a failed watch, doubled after each failure in a row.
const BACKOFF_FIRST: Duration = Duration::from_millis(800);
/// The longest pause.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why a watch cannot work until someone changes the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// 404: the server does not serve the resource.
    NotServed,
    /// 403: this identity may not list or watch it.
    Forbidden,
}

/// A watched resource, as messages name it.
#[derive(Debug, Clone, Copy)]
pub struct Watched {
    /// `endpointslices.discovery.k8s.io` style.
    pub resource: &'static str,
    /// `discovery.k8s.io/v1` style.
    pub group_version: &'static str,
    /// The Kubernetes release that serves it.
    pub since: &'static str,
    /// What the part does without it, for the message (`Services get their rules without
    /// endpoints until it does`).
    pub meanwhile: &'static str,
}

impl Watched {
    /// The same resource, with what this part does without it.
    pub const fn meanwhile(self, meanwhile: &'static str) -> Watched {
        Watched { meanwhile, ..self }
    }
}

pub const ENDPOINT_SLICES: Watched = Watched {
    resource: "endpointslices.discovery.k8s.io",
    group_version: "discovery.k8s.io/v1",
    since: "1.21",
    meanwhile: "nothing that needs them works until it does",
};

pub const SERVICES: Watched = Watched {
    resource: "services",
    group_version: "v1",
    since: "1.0",
    meanwhile: "nothing that needs them works until it does",
};

/// The lasting trouble a watch error shows, if it is one (a 404 or 403 from the server).
pub fn missing(e: &watcher::Error) -> Option<Missing> {
    let code = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code,
        watcher::Error::WatchError(s) => s.code,
        _ => return None,
    };
    match code {
        404 => Some(Missing::NotServed),
        403 => Some(Missing::Forbidden),
        _ => None,
    }
}

/// What to tell the operator about `missing` for `w`.
pub fn explain(w: &Watched, missing: Missing) -> String {
    match missing {
        Missing::NotServed => format!(
            "the apiserver does not serve {} (Kubernetes {} and later do; on an older cluster, upgrade it or turn the API on with kube-apiserver's --runtime-config {}=true): {}; retrying with back-off",
            w.resource, w.since, w.group_version, w.meanwhile
        ),
        Missing::Forbidden => format!(
            "this agent's identity may not list and watch {} (403): grant it RBAC verbs get, list and watch on {} cluster-wide (for Services and EndpointSlices kube's ClusterRole system:node-proxier does); {}; retrying with back-off",
            w.resource, w.resource, w.meanwhile
        ),
    }
}

/// Says a lasting trouble once per spell, and its end.
#[derive(Debug, Default)]
pub struct Trouble {
    said: Option<Missing>,
}

impl Trouble {
    /// A watch error of `w`. Returns whether it is a lasting trouble (logged the first time,
    /// at debug level while it lasts); other errors are logged as warnings.
    pub fn failed(&mut self, w: &Watched, e: &watcher::Error) -> Option<Missing> {
        let Some(m) = missing(e) else {
            tracing::warn!(error = %e, "watching {} failed; retrying with back-off", w.resource);
            return None;
        };
        if self.said == Some(m) {
            tracing::debug!(error = %e, "watching {} still fails", w.resource);
        } else {
            tracing::error!("{}", explain(w, m));
            self.said = Some(m);
        }
        Some(m)
    }

    /// The watch listed its objects: a trouble said before is over.
    pub fn listed(&mut self, w: &Watched) {
        if self.said.take().is_some() {
            tracing::info!("watching {} works again", w.resource);
        }
    }
}

type WatchStream<K> = Pin<Box<dyn Stream<Item = Result<Event<K>, watcher::Error>> + Send>>;

/// `watch` with its retries spaced: after a failure the next attempt waits 0.8 s, doubling
/// up to 30 s (plus up to as much again, so many agents do not retry in step), and the
/// pause starts over only once the watch has listed or seen a change. kube's
/// `default_backoff` starts over at the `Init` event that opens every attempt to list, so a
/// watch whose list fails every time was retried about once a second.
pub fn backed_off<K: Send + 'static>(
    watch: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send {
    let start: (WatchStream<K>, Duration, Option<Duration>) =
        (Box::pin(watch), BACKOFF_FIRST, None);
    futures::stream::unfold(start, |(mut watch, delay, pause)| async move {
        if let Some(p) = pause {
            tokio::time::sleep(p).await;
        }
        let item = watch.next().await?;
        let (delay, pause) = match &item {
            Err(_) => ((delay * 2).min(BACKOFF_MAX), Some(delay + jitter(delay))),
            Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_)) => (BACKOFF_FIRST, None),
            Ok(_) => (delay, None),
        };
        Some((item, (watch, delay, pause)))
    })
}

/// Up to `d` more, from the clock's nanoseconds (no need for a random generator here).
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Box<kube::core::Status> {
        Box::new(kube::core::Status {
            code,
            ..Default::default()
        })
    }

    #[test]
    fn a_404_or_403_is_lasting_and_said_with_what_provides_it() {
        let not_found = watcher::Error::InitialListFailed(kube::Error::Api(status(404)));
        let forbidden = watcher::Error::WatchStartFailed(kube::Error::Api(status(403)));
        let flaky = watcher::Error::InitialListFailed(kube::Error::Api(status(503)));
        assert_eq!(missing(&not_found), Some(Missing::NotServed));
        assert_eq!(missing(&forbidden), Some(Missing::Forbidden));
        assert_eq!(missing(&flaky), None);
        let text = explain(&ENDPOINT_SLICES, Missing::NotServed);
        assert!(
            text.contains(
                "does not serve endpointslices.discovery.k8s.io (Kubernetes 1.21 and later do"
            ),
            "{text}"
        );
        let text = explain(&ENDPOINT_SLICES, Missing::Forbidden);
        assert!(
            text.contains("RBAC verbs get, list and watch on endpointslices.discovery.k8s.io"),
            "{text}"
        );
        assert!(text.contains("system:node-proxier"), "{text}");
        let proxy = ENDPOINT_SLICES.meanwhile("Services get their rules without endpoints");
        assert!(explain(&proxy, Missing::NotServed).contains("upgrade it or turn the API on with kube-apiserver's --runtime-config discovery.k8s.io/v1=true): Services get their rules without endpoints; retrying"));
        let mut t = Trouble::default();
        assert_eq!(
            t.failed(&ENDPOINT_SLICES, &not_found),
            Some(Missing::NotServed)
        );
        assert_eq!(t.said, Some(Missing::NotServed));
        t.listed(&ENDPOINT_SLICES);
        assert_eq!(t.said, None);
    }
}
