//! The pod runtime's records on disk: one JSON file per pod,
//! `<state_dir>/pods/<uid>.json`, written atomically (a temporary file
//! renamed into place) whenever the pod's sandbox or processes change, so an
//! agent restarted after a crash adopts what still runs. Beside it,
//! `<state_dir>/pods/<uid>/` holds the exit records the container
//! supervisors write (`<container>-<restartCount>.exit`).

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::PodRuntimeError;

/// What the runtime knows about one pod it runs. Stable layout, read by
/// `podnet exec` and `podnet logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The sandbox's name: its network namespace is `/run/netns/<sandbox_name>`.
    pub sandbox_name: String,
    /// The pod's PID 1 as the host sees it (`podnet sandbox exec --pid`).
    pub sandbox_pid: i32,
    /// The start time of `sandbox_pid` (`/proc/<pid>/stat` field 22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_start_ticks: Option<u64>,
    /// The path given to CNI as `CNI_NETNS`.
    pub netns: PathBuf,
    /// The pod's address, once CNI ADD succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// The CNI ADD result, passed to DEL as `prevResult`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_result: Option<Value>,
    #[serde(default)]
    pub containers: Vec<ContainerState>,
}

/// One container of a pod: its current process (if running) and its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerState {
    pub name: String,
    /// An init container (run to completion before the others).
    #[serde(default)]
    pub init: bool,
    /// The host pid of the container's process (its `podnet sandbox exec`
    /// supervisor, whose child is the program), while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The start time of `pid` (`/proc/<pid>/stat` field 22), telling it
    /// apart from a later process that got the same pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
    /// How many times the container was restarted; also the number of the
    /// current attempt's log file.
    #[serde(default)]
    pub restart_count: u32,
    /// Whether the container was ever started (attempt 0 included).
    #[serde(default)]
    pub ever_started: bool,
    /// When the running process started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// The current (or last) attempt's log file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<PathBuf>,
    /// Where the supervisor of the running process records its exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_file: Option<PathBuf>,
    /// The previous attempt's end (`lastState.terminated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_terminated: Option<Terminated>,
    /// The end of a container that will not be restarted (`state.terminated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated: Option<Terminated>,
    /// The current back-off delay, in milliseconds.
    #[serde(default)]
    pub backoff_ms: u64,
}

/// How a container attempt ended, as `containerStatuses[].state.terminated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    pub finished_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

/// `<state_dir>/pods`.
pub fn pods_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("pods")
}

/// `<state_dir>/pods/<uid>.json`.
pub fn state_file(state_dir: &Path, uid: &str) -> PathBuf {
    pods_dir(state_dir).join(format!("{uid}.json"))
}

/// `<state_dir>/pods/<uid>/`: the pod's exit records.
pub fn pod_dir(state_dir: &Path, uid: &str) -> PathBuf {
    pods_dir(state_dir).join(uid)
}

/// Reads one pod's record; `Ok(None)` when there is none.
pub fn read(state_dir: &Path, uid: &str) -> Result<Option<PodState>, PodRuntimeError> {
    let path = state_file(state_dir, uid);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| PodRuntimeError::State {
                path,
                why: format!("not a pod record ({e})"),
            }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PodRuntimeError::State {
            path,
            why: e.to_string(),
        }),
    }
}

/// Writes a pod's record atomically.
pub fn write(state_dir: &Path, state: &PodState) -> Result<(), PodRuntimeError> {
    let path = state_file(state_dir, &state.uid);
    let err = |why: String| PodRuntimeError::State {
        path: path.clone(),
        why,
    };
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| err(format!("encode: {e}")))?;
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, bytes).map_err(|e| err(format!("write {}: {e}", tmp.display())))?;
    fs::rename(&tmp, &path).map_err(|e| err(format!("rename {} into place: {e}", tmp.display())))
}

/// Removes a pod's record and exit records. Succeeds when already gone.
pub fn remove(state_dir: &Path, uid: &str) -> Result<(), PodRuntimeError> {
    let path = state_file(state_dir, uid);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            return Err(PodRuntimeError::State {
                path,
                why: format!("remove: {e}"),
            });
        }
    }
    let dir = pod_dir(state_dir, uid);
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PodRuntimeError::State {
            path: dir,
            why: format!("remove: {e}"),
        }),
    }
}

/// Every readable record under `<state_dir>/pods`. An unreadable record is
/// renamed to `<name>.bad` (kept for inspection) and reported in the log.
pub fn load_all(state_dir: &Path) -> Result<Vec<PodState>, PodRuntimeError> {
    let dir = pods_dir(state_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(PodRuntimeError::State {
                path: dir,
                why: format!("list: {e}"),
            });
        }
    };
    let mut out = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let parsed = fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<PodState>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(state) => out.push(state),
            Err(why) => {
                tracing::warn!(path = %path.display(), %why, "unreadable pod record, set aside as .bad");
                let _ = fs::rename(&path, path.with_extension("bad"));
            }
        }
    }
    out.sort_by(|a, b| a.uid.cmp(&b.uid));
    Ok(out)
}

/// The start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`) and whether it is a zombie; `None` when there is no
/// such process.
pub fn proc_start(pid: i32) -> Option<(u64, bool)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: the
    // fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let ticks = fields.nth(18)?.parse().ok()?;
    Some((ticks, matches!(state, "Z" | "X")))
}

/// Whether `pid` is still the process that started at `ticks`, and running.
pub fn proc_alive(pid: i32, ticks: u64) -> bool {
    matches!(proc_start(pid), Some((t, false)) if t == ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_is_written_atomically() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(pods_dir(dir.path())).unwrap();
        let state = PodState {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u-1".into(),
            sandbox_name: "n1-pod-u-1".into(),
            sandbox_pid: 42,
            sandbox_start_ticks: Some(5),
            netns: "/run/netns/n1-pod-u-1".into(),
            pod_ip: Some("10.244.1.2".into()),
            cni_result: Some(serde_json::json!({"ips": []})),
            containers: vec![ContainerState {
                name: "c".into(),
                init: false,
                pid: Some(43),
                start_ticks: Some(7),
                restart_count: 1,
                ever_started: true,
                started_at: Some("2026-01-01T00:00:00Z".into()),
                log_path: Some("/x/1.log".into()),
                exit_file: None,
                last_terminated: None,
                terminated: None,
                backoff_ms: 10,
            }],
        };
        write(dir.path(), &state).unwrap();
        assert_eq!(read(dir.path(), "u-1").unwrap(), Some(state.clone()));
        assert_eq!(load_all(dir.path()).unwrap(), vec![state]);
        let text = fs::read_to_string(state_file(dir.path(), "u-1")).unwrap();
        assert!(text.contains("\"sandbox_pid\": 42"), "{text}");
        fs::write(pods_dir(dir.path()).join("junk.json"), "{").unwrap();
        assert_eq!(load_all(dir.path()).unwrap().len(), 1);
        assert!(pods_dir(dir.path()).join("junk.bad").exists());
        remove(dir.path(), "u-1").unwrap();
        remove(dir.path(), "u-1").unwrap();
        assert_eq!(read(dir.path(), "u-1").unwrap(), None);
    }

    #[test]
    fn own_process_start_time() {
        let me = std::process::id() as i32;
        let (ticks, zombie) = proc_start(me).unwrap();
        assert!(!zombie);
        assert!(proc_alive(me, ticks));
        assert!(!proc_alive(me, ticks + 1));
        assert!(proc_start(i32::MAX).is_none());
    }
}
