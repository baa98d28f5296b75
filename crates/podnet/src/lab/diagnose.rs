//! What to show when something in a lab does not work: the last warnings and errors of each
//! node's agent log and the Node conditions that are not as they should be. A failing agent
//! says why in its log (`the service proxy failed`, `peer … not set up`) and on its Node
//! (`NetworkUnavailable`); `lab up` and `lab demo` print both instead of only the symptom
//! (a probe that timed out).

use std::fs;
use std::path::Path;

use serde_json::Value;

use super::LabPaths;
use super::api::Api;
use super::state::LabState;

/// Lines of an agent log shown per node.
pub const AGENT_LINES: usize = 10;
/// Longest log line shown, in characters (a refused nft batch can be long).
const MAX_LINE: usize = 400;

/// `text` without ANSI escape sequences (the agents' logs are coloured).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            // Parameters and intermediates, up to the final byte (@ to ~).
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// The level of a log line as `tracing`'s formatter writes it (`<time> <LEVEL> <target>: …`).
fn level(line: &str) -> Option<&str> {
    line.split_whitespace().nth(1)
}

/// The last `n` WARN and ERROR lines of `log` text, without colours, long ones cut.
pub fn warnings(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<String> = text
        .lines()
        .map(strip_ansi)
        .filter(|l| matches!(level(l), Some("WARN" | "ERROR")))
        .collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| match l.char_indices().nth(MAX_LINE) {
            Some((at, _)) => format!("{}…", &l[..at]),
            None => l.clone(),
        })
        .collect()
}

/// The last `n` WARN and ERROR lines of the log file at `path` (none if it cannot be read).
pub fn log_warnings(path: &Path, n: usize) -> Vec<String> {
    warnings(&fs::read_to_string(path).unwrap_or_default(), n)
}

/// A Node's conditions that are not as on a healthy node (`Ready` not `True`, any other
/// condition `True`), as `Type=Status (Reason): message`.
pub fn abnormal_conditions(node: &Value) -> Vec<String> {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            let status = c["status"].as_str().unwrap_or("");
            match c["type"].as_str() {
                Some("Ready") => status != "True",
                _ => status == "True" || status == "Unknown",
            }
        })
        .map(|c| {
            let text = |k: &str| c[k].as_str().unwrap_or("");
            let mut s = format!("{}={}", text("type"), text("status"));
            if !text("reason").is_empty() {
                s.push_str(&format!(" ({})", text("reason")));
            }
            if !text("message").is_empty() {
                s.push_str(&format!(": {}", text("message")));
            }
            s
        })
        .collect()
}

/// The report: per node, the last warnings and errors of its agent's log, then the Node
/// conditions that are off (read through the lab's API when it answers).
pub fn report(paths: &LabPaths) -> String {
    let state = match LabState::load(paths) {
        Ok(Some(state)) => state,
        Ok(None) => return format!("(lab {} has no record to diagnose)\n", paths.name),
        Err(e) => return format!("(cannot read the lab's record: {e:#})\n"),
    };
    let mut out =
        format!("The last warnings and errors of each agent (up to {AGENT_LINES} lines):\n");
    for node in &state.nodes {
        let log = paths.log_of(&format!("agent-{}", node.name));
        let lines = log_warnings(&log, AGENT_LINES);
        if lines.is_empty() {
            out.push_str(&format!("  {} ({}): none\n", node.name, log.display()));
            continue;
        }
        out.push_str(&format!("  {} ({}):\n", node.name, log.display()));
        for line in lines {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out.push_str(&conditions_report(&state));
    out
}

fn conditions_report(state: &LabState) -> String {
    let nodes =
        Api::connect(&state.apiserver.kubeconfig).and_then(|api| api.get_json("/api/v1/nodes"));
    let nodes = match nodes {
        Ok(n) => n,
        Err(e) => return format!("Node conditions: cannot be read ({e:#})\n"),
    };
    let mut out = String::new();
    for node in nodes["items"].as_array().into_iter().flatten() {
        let name = node["metadata"]["name"].as_str().unwrap_or("?");
        for c in abnormal_conditions(node) {
            out.push_str(&format!("  {name}: {c}\n"));
        }
    }
    if out.is_empty() {
        return "Node conditions: every Node is Ready and reports its network available\n".into();
    }
    format!("Node conditions that are off:\n{out}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn warnings_are_the_last_warn_and_error_lines_without_colours() {
        let log = "\u{1b}[2m2026-12-07T12:00:00.1Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mpodnet_agent::agent\u{1b}[0m\u{1b}[2m:\u{1b}[0m podnet agent starting
2026-12-07T12:00:01.1Z  WARN podnet_agent::proxy: the service proxy failed; restarting it error=x
2026-12-07T12:00:02.1Z ERROR podnet_proxy::runner: syncing service rules failed; a full sync follows error=Operation not permitted
a continuation line WARN in the middle
2026-12-07T12:00:03.1Z  INFO podnet_agent::proxy: the service proxy works again
\u{1b}[2m2026-12-07T12:00:04.1Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m podnet_agent::node::network: peer n2 not set up
";
        let got = warnings(log, 10);
        assert_eq!(
            got,
            vec![
                "2026-12-07T12:00:01.1Z  WARN podnet_agent::proxy: the service proxy failed; restarting it error=x",
                "2026-12-07T12:00:02.1Z ERROR podnet_proxy::runner: syncing service rules failed; a full sync follows error=Operation not permitted",
                "2026-12-07T12:00:04.1Z  WARN podnet_agent::node::network: peer n2 not set up",
            ]
        );
        assert_eq!(warnings(log, 1).len(), 1);
        assert!(warnings(log, 1)[0].contains("peer n2"));
        let long = format!("t WARN {}", "x".repeat(1000));
        let cut = &warnings(&long, 1)[0];
        assert_eq!(cut.chars().count(), MAX_LINE + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn abnormal_conditions_name_type_status_reason_and_message() {
        let node = json!({"status": {"conditions": [
            {"type": "NetworkUnavailable", "status": "True", "reason": "ServiceProxyFailing",
             "message": "service proxy: Operation not permitted"},
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": "True", "reason": "KubeletReady"},
        ]}});
        assert_eq!(
            abnormal_conditions(&node),
            vec![
                "NetworkUnavailable=True (ServiceProxyFailing): service proxy: Operation not permitted"
            ]
        );
        let node = json!({"status": {"conditions": [
            {"type": "NetworkUnavailable", "status": "False", "reason": "PodnetNetworkReady"},
            {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "waiting"},
        ]}});
        assert_eq!(
            abnormal_conditions(&node),
            vec!["Ready=False (KubeletNotReady): waiting"]
        );
        assert!(abnormal_conditions(&json!({})).is_empty());
    }
}
