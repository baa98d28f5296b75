//! Where a node's pod runtime keeps its files, for `podnet exec` and `podnet logs` (which
//! work on the machine that runs the pod, as kubelet's exec and logs do). One place to
//! change should the runtime's layout move.
//!
//! - state: `<state_dir>/pods/<uid>.json`, a JSON record with at least `sandbox_pid` and
//!   `containers[]` (`name`, `restart_count`, `log_path`);
//! - logs: `<log_dir>/<namespace>_<pod>_<uid>/<container>/<restartCount>.log`.
//!
//! A lab node `<node>` of lab `<lab>` has `state_dir = /run/podnet/<lab>/nodes/<node>` and
//! `log_dir = /var/lib/podnet/<lab>/nodes/<node>/logs`; an agent started without a lab uses
//! its defaults, `/run/podnet/agent/<node>` and `/var/lib/podnet/agent/<node>/logs`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A node's runtime directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDirs {
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
}

impl NodeDirs {
    /// A lab node's directories.
    pub fn lab(lab: &str, node: &str) -> NodeDirs {
        NodeDirs {
            state_dir: Path::new("/run/podnet").join(lab).join("nodes").join(node),
            log_dir: Path::new("/var/lib/podnet")
                .join(lab)
                .join("nodes")
                .join(node)
                .join("logs"),
        }
    }

    /// The directories of an agent run with its default flags (the agent's
    /// `default_state_dir` and `default_log_dir`).
    pub fn agent_default(node: &str) -> NodeDirs {
        NodeDirs {
            state_dir: Path::new("/run/podnet/agent").join(node),
            log_dir: Path::new("/var/lib/podnet/agent").join(node).join("logs"),
        }
    }

    /// The pod's runtime record.
    pub fn pod_state_file(&self, uid: &str) -> PathBuf {
        self.state_dir.join("pods").join(format!("{uid}.json"))
    }

    /// The directory of one container's log files.
    pub fn container_log_dir(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        container: &str,
    ) -> PathBuf {
        self.log_dir
            .join(format!("{namespace}_{pod}_{uid}"))
            .join(container)
    }
}

/// The log file of attempt `restart_count` in a container's log directory.
pub fn log_file(container_log_dir: &Path, restart_count: u32) -> PathBuf {
    container_log_dir.join(format!("{restart_count}.log"))
}

/// The places a pod on `node` may have its files, most likely first: the lab's (when a lab
/// is known), then an agent's defaults.
pub fn candidates(lab: Option<&str>, node: &str) -> Vec<NodeDirs> {
    let mut out = Vec::new();
    if let Some(lab) = lab {
        out.push(NodeDirs::lab(lab, node));
    }
    out.push(NodeDirs::agent_default(node));
    out
}

/// What `exec` and `logs` read of the runtime's record (other fields are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct PodRecord {
    pub sandbox_pid: i32,
    #[serde(default)]
    pub containers: Vec<ContainerRecord>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    #[serde(default)]
    pub restart_count: u32,
    #[serde(default)]
    pub pid: Option<i32>,
    #[serde(default)]
    pub log_path: Option<PathBuf>,
}

/// A pod's record found on this machine, with the directories it was found in.
#[derive(Debug, Clone)]
pub struct Found {
    pub dirs: NodeDirs,
    pub record: PodRecord,
}

/// Why a pod's files are not usable here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotHere {
    /// No record in any of the places looked at.
    Missing { looked: Vec<PathBuf> },
    /// A record that cannot be read.
    Unreadable { path: PathBuf, why: String },
}

/// Finds the record of pod `uid` among `candidates`.
pub fn find_pod(candidates: &[NodeDirs], uid: &str) -> Result<Found, NotHere> {
    let mut looked = Vec::new();
    for dirs in candidates {
        let path = dirs.pod_state_file(uid);
        match std::fs::read(&path) {
            Ok(bytes) => {
                return serde_json::from_slice::<PodRecord>(&bytes)
                    .map(|record| Found {
                        dirs: dirs.clone(),
                        record,
                    })
                    .map_err(|e| NotHere::Unreadable {
                        path,
                        why: format!("not a pod record: {e}"),
                    });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => looked.push(path),
            Err(e) => {
                return Err(NotHere::Unreadable {
                    path,
                    why: e.to_string(),
                });
            }
        }
    }
    Err(NotHere::Missing { looked })
}

/// The message for a pod whose files are not on this machine.
pub fn not_here_message(verb: &str, pod: &str, node: &str, why: &NotHere) -> String {
    match why {
        NotHere::Missing { looked } => format!(
            "pod \"{pod}\" runs on node \"{node}\", but its runtime files are not on this machine \
             (looked for {}): podnet {verb} works on the machine that runs the pod, such as the \
             host of a podnet lab (give the lab with --lab or PODNET_LAB)",
            looked
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" and ")
        ),
        NotHere::Unreadable { path, why } => format!(
            "pod \"{pod}\": cannot read its runtime record {}: {why}",
            path.display()
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lab_layout() {
        let d = NodeDirs::lab("demo", "demo-node1");
        assert_eq!(
            d.pod_state_file("u-1"),
            Path::new("/run/podnet/demo/nodes/demo-node1/pods/u-1.json")
        );
        let logs = d.container_log_dir("shop", "web-0", "u-1", "main");
        assert_eq!(
            logs,
            Path::new("/var/lib/podnet/demo/nodes/demo-node1/logs/shop_web-0_u-1/main")
        );
        assert_eq!(log_file(&logs, 2), logs.join("2.log"));
    }

    #[test]
    fn candidates_lab_first_then_agent_defaults() {
        let c = candidates(Some("demo"), "n1");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0], NodeDirs::lab("demo", "n1"));
        assert_eq!(c[1].state_dir, Path::new("/run/podnet/agent/n1"));
        assert_eq!(candidates(None, "n1").len(), 1);
    }

    #[test]
    fn finds_records_and_says_where_it_looked() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = NodeDirs {
            state_dir: tmp.path().join("state"),
            log_dir: tmp.path().join("logs"),
        };
        let other = NodeDirs {
            state_dir: tmp.path().join("other"),
            log_dir: tmp.path().join("other-logs"),
        };
        let err = find_pod(&[other.clone(), dirs.clone()], "u1").unwrap_err();
        assert_eq!(
            err,
            NotHere::Missing {
                looked: vec![other.pod_state_file("u1"), dirs.pod_state_file("u1")]
            }
        );
        let msg = not_here_message("exec", "web-0", "n1", &err);
        assert!(msg.contains("runs on node \"n1\""), "{msg}");
        assert!(
            msg.contains(&dirs.pod_state_file("u1").display().to_string()),
            "{msg}"
        );

        std::fs::create_dir_all(dirs.state_dir.join("pods")).unwrap();
        std::fs::write(
            dirs.pod_state_file("u1"),
            r#"{"namespace":"a","name":"b","uid":"u1","sandbox_pid":42,"sandbox_name":"x","netns":"/x",
                "containers":[{"name":"main","restart_count":1,"log_path":"/l/1.log"}]}"#,
        )
        .unwrap();
        let found = find_pod(&[other, dirs.clone()], "u1").unwrap();
        assert_eq!(found.dirs, dirs);
        assert_eq!(found.record.sandbox_pid, 42);
        assert_eq!(found.record.containers[0].restart_count, 1);

        std::fs::write(dirs.pod_state_file("u2"), "nope").unwrap();
        assert!(matches!(
            find_pod(&[dirs], "u2"),
            Err(NotHere::Unreadable { .. })
        ));
    }
}
