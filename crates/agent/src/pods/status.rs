//! The pod's status as kubelet reports it: phase, conditions, addresses and
//! one status per container, computed from what the runtime sees.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::state::Terminated;

/// `Always`, `OnFailure` or `Never` (the API's default is `Always`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn of(pod: &Pod) -> RestartPolicy {
        match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that ended with `code` is started again. Init
    /// containers are restarted on failure unless the policy is `Never`.
    pub fn restarts(self, init: bool, code: i32) -> bool {
        match self {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => code != 0,
            RestartPolicy::Always => !init || code != 0,
        }
    }
}

/// What the status needs to know of one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub init: bool,
    /// Host pid and start time while running.
    pub running: Option<(i32, String)>,
    pub terminated: Option<Terminated>,
    pub last_terminated: Option<Terminated>,
    pub waiting: Option<(String, Option<String>)>,
    pub restart_count: u32,
    pub started: bool,
    pub ready: bool,
}

impl ContainerView {
    fn succeeded(&self) -> bool {
        self.terminated.as_ref().is_some_and(|t| t.exit_code == 0)
    }
}

pub const PENDING: &str = "Pending";
pub const RUNNING: &str = "Running";
pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";

pub fn is_terminal(phase: &str) -> bool {
    phase == SUCCEEDED || phase == FAILED
}

/// The phase of the pod from its containers, as kubelet's `getPhase`.
pub fn phase(policy: RestartPolicy, containers: &[ContainerView]) -> &'static str {
    for c in containers.iter().filter(|c| c.init) {
        if c.succeeded() {
            continue;
        }
        if c.terminated.is_some() {
            // Failed and not restarted (policy Never).
            return FAILED;
        }
        return PENDING;
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in containers.iter().filter(|c| !c.init) {
        if c.running.is_some() {
            running += 1;
        } else if let Some(t) = &c.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if c.last_terminated.is_some() {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        return PENDING;
    }
    if running > 0 {
        return RUNNING;
    }
    if stopped > 0 {
        return match policy {
            RestartPolicy::Always => RUNNING,
            RestartPolicy::OnFailure if stopped == succeeded => SUCCEEDED,
            RestartPolicy::OnFailure => RUNNING,
            RestartPolicy::Never if stopped == succeeded => SUCCEEDED,
            RestartPolicy::Never => FAILED,
        };
    }
    PENDING
}

/// Everything the pod status is computed from.
pub struct StatusInput<'a> {
    pub pod: &'a Pod,
    pub policy: RestartPolicy,
    pub containers: &'a [ContainerView],
    /// The sandbox runs and its network is set up.
    pub sandbox_ready: bool,
    pub pod_ip: Option<String>,
    pub host_ip: Option<String>,
    pub start_time: String,
    pub now: String,
}

fn terminated_json(t: &Terminated) -> Value {
    let mut v = json!({
        "exitCode": t.exit_code,
        "reason": t.reason,
        "finishedAt": t.finished_at,
    });
    if let Some(m) = &t.message {
        v["message"] = json!(m);
    }
    if let Some(s) = &t.started_at {
        v["startedAt"] = json!(s);
    }
    if let Some(id) = &t.container_id {
        v["containerID"] = json!(id);
    }
    v
}

fn container_json(c: &ContainerView, init_pending: bool) -> Value {
    let state = if let Some((_, started_at)) = &c.running {
        json!({"running": {"startedAt": started_at}})
    } else if let Some(t) = &c.terminated {
        json!({"terminated": terminated_json(t)})
    } else if let Some((reason, message)) = &c.waiting {
        let mut w = json!({"reason": reason});
        if let Some(m) = message {
            w["message"] = json!(m);
        }
        json!({"waiting": w})
    } else if init_pending && !c.init {
        json!({"waiting": {"reason": "PodInitializing"}})
    } else {
        json!({"waiting": {"reason": "ContainerCreating"}})
    };
    let last = match &c.last_terminated {
        Some(t) => json!({"terminated": terminated_json(t)}),
        None => json!({}),
    };
    let mut v = json!({
        "name": c.name,
        "image": c.image,
        "imageID": "",
        "ready": c.ready,
        "started": c.started,
        "restartCount": c.restart_count,
        "state": state,
        "lastState": last,
    });
    let id = match (&c.running, &c.terminated) {
        (Some((pid, _)), _) => Some(format!("podnet://{pid}")),
        (None, Some(t)) => t.container_id.clone(),
        _ => None,
    };
    if let Some(id) = id {
        v["containerID"] = json!(id);
    }
    v
}

/// One condition, keeping `lastTransitionTime` from the current status when
/// the condition's status did not change.
fn condition(
    current: &Value,
    now: &str,
    kind: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> Value {
    let status = if ok { "True" } else { "False" };
    let since = current
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .filter(|c| c["status"] == status)
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .unwrap_or(now);
    let mut v = json!({"type": kind, "status": status, "lastTransitionTime": since});
    if let Some(r) = reason {
        v["reason"] = json!(r);
    }
    if let Some(m) = message {
        v["message"] = json!(m);
    }
    v
}

/// The pod's status; `current` is the status the API holds now.
pub fn build(input: &StatusInput, current: &Value) -> Value {
    let phase = phase(input.policy, input.containers);
    let terminal = is_terminal(phase);
    let init: Vec<&ContainerView> = input.containers.iter().filter(|c| c.init).collect();
    let regular: Vec<&ContainerView> = input.containers.iter().filter(|c| !c.init).collect();
    let incomplete: Vec<&str> = init
        .iter()
        .filter(|c| !c.succeeded())
        .map(|c| c.name.as_str())
        .collect();
    let initialized = incomplete.is_empty();
    let unready: Vec<&str> = regular
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let containers_ready = unready.is_empty() && !terminal;
    let gates_ok = input
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .into_iter()
        .flatten()
        .all(|g| {
            current
                .get("conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == g.condition_type.as_str()))
                .is_some_and(|c| c["status"] == "True")
        });
    let now = input.now.as_str();
    let (ready_reason, ready_message) = if terminal {
        (Some("PodCompleted"), None)
    } else if !unready.is_empty() {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    } else if !gates_ok {
        (
            Some("ReadinessGatesNotReady"),
            Some("the status of pod readiness gates is not true".to_string()),
        )
    } else {
        (None, None)
    };
    let conditions = vec![
        condition(
            current,
            now,
            "PodReadyToStartContainers",
            input.sandbox_ready,
            None,
            None,
        ),
        if initialized {
            condition(current, now, "Initialized", true, None, None)
        } else {
            condition(
                current,
                now,
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    incomplete.join(" ")
                )),
            )
        },
        condition(
            current,
            now,
            "Ready",
            containers_ready && gates_ok,
            ready_reason,
            ready_message.clone(),
        ),
        condition(
            current,
            now,
            "ContainersReady",
            containers_ready,
            if terminal {
                Some("PodCompleted")
            } else if unready.is_empty() {
                None
            } else {
                Some("ContainersNotReady")
            },
            if unready.is_empty() || terminal {
                None
            } else {
                ready_message
            },
        ),
        condition(current, now, "PodScheduled", true, None, None),
    ];
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "startTime": input.start_time,
        "containerStatuses": regular.iter().map(|c| container_json(c, !initialized)).collect::<Vec<_>>(),
    });
    if !init.is_empty() {
        status["initContainerStatuses"] = init
            .iter()
            .map(|c| container_json(c, false))
            .collect::<Vec<_>>()
            .into();
    }
    if let Some(ip) = &input.host_ip {
        status["hostIP"] = json!(ip);
        status["hostIPs"] = json!([{"ip": ip}]);
    }
    if let Some(ip) = &input.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    status
}

/// Whether `desired` says something `current` does not (only the fields the
/// runtime sets are compared).
pub fn differs(desired: &Value, current: &Value) -> bool {
    match desired.as_object() {
        Some(fields) => fields.iter().any(|(k, v)| current.get(k) != Some(v)),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str) -> ContainerView {
        ContainerView {
            name: name.into(),
            image: "busybox".into(),
            init: false,
            running: None,
            terminated: None,
            last_terminated: None,
            waiting: None,
            restart_count: 0,
            started: false,
            ready: false,
        }
    }

    fn ended(code: i32) -> Terminated {
        Terminated {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: None,
            finished_at: "2026-01-01T00:00:00Z".into(),
            container_id: None,
        }
    }

    #[test]
    fn phases_follow_kubelet() {
        use RestartPolicy::*;
        let mut a = view("a");
        assert_eq!(phase(Always, &[a.clone()]), PENDING);
        a.running = Some((1, "t".into()));
        assert_eq!(phase(Always, &[a.clone()]), RUNNING);
        a.running = None;
        a.last_terminated = Some(ended(1));
        a.waiting = Some(("CrashLoopBackOff".into(), None));
        assert_eq!(phase(Always, &[a.clone()]), RUNNING);
        let mut done = view("b");
        done.terminated = Some(ended(0));
        assert_eq!(phase(Never, &[done.clone()]), SUCCEEDED);
        assert_eq!(phase(OnFailure, &[done.clone()]), SUCCEEDED);
        let mut failed = view("c");
        failed.terminated = Some(ended(2));
        assert_eq!(phase(Never, &[done.clone(), failed.clone()]), FAILED);
        let mut init = view("i");
        init.init = true;
        assert_eq!(phase(Never, &[init.clone(), view("x")]), PENDING);
        init.terminated = Some(ended(1));
        assert_eq!(phase(Never, &[init.clone(), view("x")]), FAILED);
        init.terminated = Some(ended(0));
        assert_eq!(phase(Never, &[init, done]), SUCCEEDED);
    }

    #[test]
    fn restart_rules() {
        use RestartPolicy::*;
        assert!(Always.restarts(false, 0));
        assert!(!Always.restarts(true, 0));
        assert!(Always.restarts(true, 1));
        assert!(OnFailure.restarts(false, 1));
        assert!(!OnFailure.restarts(false, 0));
        assert!(!Never.restarts(false, 1));
    }

    #[test]
    fn conditions_keep_their_transition_time() {
        let pod = Pod::default();
        let mut a = view("a");
        a.running = Some((7, "2026-01-01T00:00:00Z".into()));
        a.started = true;
        let views = [a.clone()];
        let input = StatusInput {
            pod: &pod,
            policy: RestartPolicy::Always,
            containers: &views,
            sandbox_ready: true,
            pod_ip: Some("10.244.1.2".into()),
            host_ip: Some("192.0.2.1".into()),
            start_time: "2026-01-01T00:00:00Z".into(),
            now: "2026-01-01T00:00:05Z".into(),
        };
        let first = build(&input, &Value::Null);
        assert_eq!(first["phase"], "Running");
        assert_eq!(first["podIP"], "10.244.1.2");
        assert_eq!(first["containerStatuses"][0]["containerID"], "podnet://7");
        let ready = first["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["message"], "containers with unready status: [a]");
        let later = StatusInput {
            now: "2026-01-01T00:00:09Z".into(),
            ..input
        };
        let second = build(&later, &first);
        assert!(!differs(&second, &first));
        a.ready = true;
        let views = [a];
        let third = build(
            &StatusInput {
                containers: &views,
                ..later
            },
            &first,
        );
        assert!(differs(&third, &first));
        let ready = third["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        assert_eq!(ready["lastTransitionTime"], "2026-01-01T00:00:09Z");
    }
}
