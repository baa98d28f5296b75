//! The health of the node's network parts — overlay, masquerade, service proxy — and the
//! `NetworkUnavailable` condition the Node reports from it.
//!
//! The `Ready` condition says whether the node can start pods (kubelet's meaning: the CNI
//! configuration is there). It says nothing about a service proxy whose every sync is
//! refused or an overlay whose peers cannot be programmed: pods start, and then cannot reach
//! a Service or another node. That is what `NetworkUnavailable` is for (as flannel and
//! cloud route controllers use it, and as Kubernetes' node lifecycle turns it into the
//! `node.kubernetes.io/network-unavailable:NoSchedule` taint).
//!
//! The tasks that program a part report each attempt through a [`Health`]; the node status
//! loop derives the condition ([`NetworkHealth::condition`], pure) and posts it when it
//! changes. A part counts as failing after [`FAILURES_BEFORE_UNAVAILABLE`] attempts in a row
//! failed (one refused sync that the next one repairs does not taint the node), and as
//! healthy again after its first success. While a part has not succeeded yet (the agent
//! is starting), the condition is not known: the Node keeps whatever it carries (nothing on
//! a new Node, the previous agent's verdict after a restart), so an agent restart does not
//! flap it.

use tokio::sync::watch;

/// Failed attempts in a row after which a part makes the node `NetworkUnavailable`.
pub const FAILURES_BEFORE_UNAVAILABLE: u32 = 2;
/// The condition type.
pub const CONDITION: &str = "NetworkUnavailable";
/// Reason of `NetworkUnavailable=False`.
pub const REASON_READY: &str = "PodnetNetworkReady";
/// Message of `NetworkUnavailable=False`.
pub const MESSAGE_READY: &str = "podnet's overlay, masquerade and service proxy are programmed";
/// Longest error kept per part, in characters: a condition message is read in `kubectl
/// describe` and `lab up`; the whole error (a refused nft batch quotes its input) is in the
/// agent's log.
pub const MAX_ERROR: usize = 400;

/// A part of the node network that the agent programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The backend's device, routes and peers (and IPv4 forwarding).
    Overlay,
    /// The masquerade table (or its removal with `--ip-masq=false`).
    Masquerade,
    /// The service proxy's rules.
    ServiceProxy,
    /// The NetworkPolicy rules.
    NetworkPolicy,
}

impl Part {
    /// The condition's reason when this part fails.
    pub fn reason(self) -> &'static str {
        match self {
            Part::Overlay => "OverlayFailing",
            Part::Masquerade => "MasqueradeFailing",
            Part::ServiceProxy => "ServiceProxyFailing",
            Part::NetworkPolicy => "NetworkPolicyFailing",
        }
    }

    /// The part's name in messages.
    pub fn label(self) -> &'static str {
        match self {
            Part::Overlay => "overlay",
            Part::Masquerade => "masquerade",
            Part::ServiceProxy => "service proxy",
            Part::NetworkPolicy => "NetworkPolicy",
        }
    }
}

/// What is known about one part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PartHealth {
    /// Not programmed yet.
    #[default]
    Pending,
    /// The last attempt succeeded.
    Healthy,
    /// The last `consecutive` attempts failed; `error` is the last one's.
    Failing { error: String, consecutive: u32 },
    /// Not run by this agent (`--proxy-mode none`): nothing to fail.
    NotRun,
}

/// The health of every part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkHealth {
    pub overlay: PartHealth,
    pub masquerade: PartHealth,
    pub proxy: PartHealth,
    pub policy: PartHealth,
}

/// The `NetworkUnavailable` condition to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkCondition {
    /// The condition's status: `true` is `True`, the network is unavailable.
    pub unavailable: bool,
    pub reason: String,
    pub message: String,
}

impl NetworkCondition {
    /// `NetworkUnavailable=False`.
    pub fn available() -> NetworkCondition {
        NetworkCondition {
            unavailable: false,
            reason: REASON_READY.to_string(),
            message: MESSAGE_READY.to_string(),
        }
    }
}

impl NetworkHealth {
    /// Everything pending; the proxy not run when `proxy_runs` is false. NetworkPolicy
    /// is not run until [`Self::with_policy`] says it is.
    pub fn new(proxy_runs: bool) -> NetworkHealth {
        NetworkHealth {
            proxy: if proxy_runs {
                PartHealth::Pending
            } else {
                PartHealth::NotRun
            },
            policy: PartHealth::NotRun,
            ..NetworkHealth::default()
        }
    }

    /// The same, with the NetworkPolicy engine run (pending) when `runs`.
    pub fn with_policy(mut self, runs: bool) -> NetworkHealth {
        self.policy = if runs {
            PartHealth::Pending
        } else {
            PartHealth::NotRun
        };
        self
    }

    fn part(&self, part: Part) -> &PartHealth {
        match part {
            Part::Overlay => &self.overlay,
            Part::Masquerade => &self.masquerade,
            Part::ServiceProxy => &self.proxy,
            Part::NetworkPolicy => &self.policy,
        }
    }

    fn part_mut(&mut self, part: Part) -> &mut PartHealth {
        match part {
            Part::Overlay => &mut self.overlay,
            Part::Masquerade => &mut self.masquerade,
            Part::ServiceProxy => &mut self.proxy,
            Part::NetworkPolicy => &mut self.policy,
        }
    }

    /// Notes one attempt of `part`: `Ok` a success, `Err` a failure with its error.
    pub fn record(&mut self, part: Part, outcome: Result<(), String>) {
        let state = self.part_mut(part);
        *state = match outcome {
            Ok(()) => PartHealth::Healthy,
            Err(error) => {
                let before = match state {
                    PartHealth::Failing { consecutive, .. } => *consecutive,
                    _ => 0,
                };
                PartHealth::Failing {
                    error: condense(&error),
                    consecutive: before.saturating_add(1),
                }
            }
        };
    }

    /// Whether `part` has failed often enough to make the node unavailable.
    pub fn is_failing(&self, part: Part) -> bool {
        matches!(self.part(part), PartHealth::Failing { consecutive, .. } if *consecutive >= FAILURES_BEFORE_UNAVAILABLE)
    }

    /// The condition: `True` naming the first failing part (reason) and every failing part's
    /// last error (message); `False` once every part has been programmed; `None` while a
    /// part is still pending, or has failed fewer times than the threshold, and none fails.
    pub fn condition(&self) -> Option<NetworkCondition> {
        let parts = [
            Part::Overlay,
            Part::Masquerade,
            Part::ServiceProxy,
            Part::NetworkPolicy,
        ];
        let failing: Vec<(Part, &str)> = parts
            .iter()
            .filter(|p| self.is_failing(**p))
            .filter_map(|p| match self.part(*p) {
                PartHealth::Failing { error, .. } => Some((*p, error.as_str())),
                _ => None,
            })
            .collect();
        if let Some((first, _)) = failing.first() {
            let message = failing
                .iter()
                .map(|(p, e)| format!("{}: {e}", p.label()))
                .collect::<Vec<_>>()
                .join("; ");
            return Some(NetworkCondition {
                unavailable: true,
                reason: first.reason().to_string(),
                message,
            });
        }
        let settled = parts
            .iter()
            .all(|p| matches!(self.part(*p), PartHealth::Healthy | PartHealth::NotRun));
        settled.then(NetworkCondition::available)
    }
}

/// An error as a condition shows it: its first line, how many more there are, at most
/// [`MAX_ERROR`] characters.
pub fn condense(error: &str) -> String {
    let mut lines = error.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("");
    let more = lines.count();
    let mut out: String = first.chars().take(MAX_ERROR).collect();
    if out.len() < first.len() {
        out.push('…');
    }
    if more > 0 {
        out.push_str(&format!(" (and {more} more lines in the agent's log)"));
    }
    out
}

/// Where the tasks report their attempts: a shared [`NetworkHealth`] the status loop
/// watches. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Health {
    tx: watch::Sender<NetworkHealth>,
}

impl Health {
    /// A health state starting at `initial`, and the receiver the status loop watches.
    pub fn channel(initial: NetworkHealth) -> (Health, watch::Receiver<NetworkHealth>) {
        let (tx, rx) = watch::channel(initial);
        (Health { tx }, rx)
    }

    /// Notes one attempt of `part`, and logs when the part starts or stops making the node
    /// unavailable. Watchers are woken only when something changed.
    pub fn report(&self, part: Part, outcome: Result<(), String>) {
        self.tx.send_if_modified(|health| {
            let before = health.clone();
            health.record(part, outcome);
            let (was, is) = (before.is_failing(part), health.is_failing(part));
            if is && !was {
                if let PartHealth::Failing { error, consecutive } = health.part(part) {
                    tracing::warn!(
                        part = part.label(),
                        attempts = consecutive,
                        error = %error,
                        "the {} keeps failing; the Node reports NetworkUnavailable ({})",
                        part.label(),
                        part.reason()
                    );
                }
            } else if was && !is && *health.part(part) == PartHealth::Healthy {
                tracing::info!(part = part.label(), "the {} works again", part.label());
            }
            *health != before
        });
    }

    /// What is known now.
    pub fn current(&self) -> NetworkHealth {
        self.tx.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> NetworkHealth {
        let mut h = NetworkHealth::new(true);
        for p in [Part::Overlay, Part::Masquerade, Part::ServiceProxy] {
            h.record(p, Ok(()));
        }
        h
    }

    #[test]
    fn unknown_until_every_part_was_programmed() {
        let mut h = NetworkHealth::new(true);
        assert_eq!(h.condition(), None);
        h.record(Part::Overlay, Ok(()));
        h.record(Part::Masquerade, Ok(()));
        assert_eq!(h.condition(), None, "the proxy has not synced yet");
        h.record(Part::ServiceProxy, Ok(()));
        assert_eq!(h.condition(), Some(NetworkCondition::available()));
        let c = NetworkCondition::available();
        assert!(!c.unavailable);
        assert_eq!(c.reason, "PodnetNetworkReady");
    }

    #[test]
    fn long_errors_are_condensed() {
        assert_eq!(condense("EPERM"), "EPERM");
        assert_eq!(
            condense("nft -f -: Error: Operation not permitted\ntable ip x\n   ^^^\n\n"),
            "nft -f -: Error: Operation not permitted (and 2 more lines in the agent's log)"
        );
        let long = "x".repeat(MAX_ERROR + 10);
        assert_eq!(condense(&long).chars().count(), MAX_ERROR + 1);
    }

    #[test]
    fn a_proxy_not_run_is_not_waited_for() {
        let mut h = NetworkHealth::new(false);
        h.record(Part::Overlay, Ok(()));
        h.record(Part::Masquerade, Ok(()));
        assert_eq!(h.condition(), Some(NetworkCondition::available()));
    }

    #[test]
    fn unavailable_after_the_threshold_and_back_after_one_success() {
        let mut h = healthy();
        h.record(Part::ServiceProxy, Err("refused: EPERM".into()));
        // One failure: not yet (and not "available" either: in doubt, the Node keeps what
        // it has).
        assert_eq!(h.condition(), None);
        for _ in 1..FAILURES_BEFORE_UNAVAILABLE {
            h.record(
                Part::ServiceProxy,
                Err("refused: Operation not permitted".into()),
            );
        }
        let c = h.condition().unwrap();
        assert!(c.unavailable);
        assert_eq!(c.reason, "ServiceProxyFailing");
        assert_eq!(c.message, "service proxy: refused: Operation not permitted");
        h.record(Part::ServiceProxy, Ok(()));
        assert_eq!(h.condition(), Some(NetworkCondition::available()));
    }

    #[test]
    fn several_failing_parts_are_all_named_the_first_gives_the_reason() {
        let mut h = healthy();
        for _ in 0..FAILURES_BEFORE_UNAVAILABLE {
            h.record(Part::ServiceProxy, Err("p".into()));
            h.record(Part::Masquerade, Err("m".into()));
        }
        let c = h.condition().unwrap();
        assert_eq!(c.reason, "MasqueradeFailing");
        assert_eq!(c.message, "masquerade: m; service proxy: p");
        // A failing part fails the node even while another is still pending.
        let mut h = NetworkHealth::new(true);
        for _ in 0..FAILURES_BEFORE_UNAVAILABLE {
            h.record(Part::Overlay, Err("no device".into()));
        }
        assert_eq!(h.condition().unwrap().reason, "OverlayFailing");
    }

    #[test]
    fn reports_wake_the_watcher_only_on_change() {
        let (health, mut rx) = Health::channel(NetworkHealth::new(true));
        rx.mark_unchanged();
        health.report(Part::Overlay, Ok(()));
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        health.report(Part::Overlay, Ok(()));
        assert!(!rx.has_changed().unwrap());
        health.report(Part::Overlay, Err("x".into()));
        health.report(Part::Overlay, Err("x".into()));
        assert!(rx.has_changed().unwrap());
        assert!(health.current().is_failing(Part::Overlay));
    }
}
