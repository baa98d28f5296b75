//! `podnet logs POD [CONTAINER] [-c C] [-f] [-p] [--tail N]`: a container's log, read from
//! the node runtime's log files on the machine that runs the pod (see [`super::layout`]):
//! the current attempt's, or with `--previous` the one before. `-f` keeps printing what is
//! appended until the attempt ends, the pod goes away, or the command is interrupted.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::client::{Client, resource_path};
use super::exec::{PodTarget, locate};
use super::layout::{self, Found};
use super::resources::Resource;
use super::{CliError, GlobalArgs, report};

/// How often `-f` looks for new output.
const POLL: Duration = Duration::from_millis(200);
/// How often `-f` checks that the pod and the attempt are still there.
const CHECK_EVERY: u32 = 5;

#[derive(Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The pod (NAME or pod/NAME).
    #[arg(value_name = "POD")]
    pub pod: String,
    /// The container (as -c).
    #[arg(value_name = "CONTAINER")]
    pub container_arg: Option<String>,
    /// The container (default: the pod's default container, else its first).
    #[arg(short = 'c', long, value_name = "CONTAINER")]
    pub container: Option<String>,
    /// Keep printing new output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The previous attempt's log (the container was restarted).
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Only the last N lines (-1: all).
    #[arg(long, value_name = "N", default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,
}

/// The log file of the container's current attempt, or of the previous one.
pub fn log_path(found: &Found, target: &PodTarget, previous: bool) -> Result<PathBuf, CliError> {
    let record = found
        .record
        .containers
        .iter()
        .find(|c| c.name == target.container);
    let restart_count = record.map(|c| c.restart_count).unwrap_or(0);
    let dir = record
        .and_then(|c| c.log_path.as_deref())
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| {
            found.dirs.container_log_dir(
                &target.namespace,
                &target.name,
                &target.uid,
                &target.container,
            )
        });
    if previous {
        if restart_count == 0 {
            return Err(CliError::standard(format!(
                "Error from server (BadRequest): previous terminated container \"{}\" in pod \"{}\" not found",
                target.container, target.name
            )));
        }
        return Ok(layout::log_file(&dir, restart_count - 1));
    }
    Ok(record
        .and_then(|c| c.log_path.clone())
        .unwrap_or_else(|| layout::log_file(&dir, restart_count)))
}

/// The last `n` lines of `text` (all of it for a negative `n`).
pub fn tail(text: &[u8], n: i64) -> &[u8] {
    let Ok(n) = usize::try_from(n) else {
        return text;
    };
    if n == 0 {
        return &[];
    }
    // Skip a final newline, then find the n-th newline from the end.
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return &text[i + 1..];
            }
        }
    }
    text
}

pub async fn run(g: GlobalArgs, args: LogsArgs) -> i32 {
    let asked = args.container.as_deref().or(args.container_arg.as_deref());
    let (client, target, found) = match locate(&g, &args.pod, asked, "logs").await {
        Ok(x) => x,
        Err(e) => return report(&[e]),
    };
    let path = match log_path(&found, &target, args.previous) {
        Ok(p) => p,
        Err(e) => return report(&[e]),
    };
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return report(&[CliError::other(format!(
                "container \"{}\" in pod \"{}\" has no log yet (no {}): it has not started",
                target.container,
                target.name,
                path.display()
            ))]);
        }
        Err(e) => {
            return report(&[CliError::other(format!("reading {}: {e}", path.display()))]);
        }
    };
    let mut text = Vec::new();
    if let Err(e) = file.read_to_end(&mut text) {
        return report(&[CliError::other(format!("reading {}: {e}", path.display()))]);
    }
    let mut out = std::io::stdout();
    if out
        .write_all(tail(&text, args.tail))
        .and_then(|()| out.flush())
        .is_err()
    {
        return 0;
    }
    if !args.follow || args.previous {
        return 0;
    }
    let mut offset = text.len() as u64;
    let attempt = found
        .record
        .containers
        .iter()
        .find(|c| c.name == target.container)
        .map(|c| c.restart_count);
    let mut ticks = 0u32;
    loop {
        tokio::time::sleep(POLL).await;
        match copy_new(&mut file, &mut offset, &mut out) {
            Ok(()) => {}
            Err(_) => return 0,
        }
        ticks += 1;
        if !ticks.is_multiple_of(CHECK_EVERY) {
            continue;
        }
        if !still_running(&client, &target, &found, attempt).await {
            // One last read for what was written before the end.
            let _ = copy_new(&mut file, &mut offset, &mut out);
            return 0;
        }
    }
}

fn copy_new(
    file: &mut std::fs::File,
    offset: &mut u64,
    out: &mut std::io::Stdout,
) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    if len < *offset {
        // Truncated: start over.
        *offset = 0;
    }
    if len == *offset {
        return Ok(());
    }
    file.seek(SeekFrom::Start(*offset))?;
    let mut buf = Vec::new();
    file.take(len - *offset).read_to_end(&mut buf)?;
    *offset += buf.len() as u64;
    out.write_all(&buf)?;
    out.flush()
}

/// Whether the followed attempt goes on: the pod is still there (same uid) and the runtime
/// has not moved on to another attempt or stopped the container.
async fn still_running(
    client: &Client,
    target: &PodTarget,
    found: &Found,
    attempt: Option<u32>,
) -> bool {
    let pods = Resource::from_kind(&podnet_api::k8s::kinds::POD);
    let path = resource_path(&pods, Some(&target.namespace), Some(&target.name), &[]);
    match client.get(&path).await {
        Ok(pod) if pod["metadata"]["uid"] == target.uid.as_str() => {}
        Ok(_) => return false,
        Err(e) if super::client::is_not_found(&e) => return false,
        // The server unreachable for a moment: keep following.
        Err(_) => return true,
    }
    let Ok(now) = layout::find_pod(std::slice::from_ref(&found.dirs), &target.uid) else {
        return false;
    };
    match now
        .record
        .containers
        .iter()
        .find(|c| c.name == target.container)
    {
        Some(c) => Some(c.restart_count) == attempt && c.pid.is_some(),
        None => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cli::layout::{ContainerRecord, NodeDirs, PodRecord};

    fn target() -> PodTarget {
        PodTarget {
            pod: serde_json::Value::Null,
            name: "web-0".into(),
            namespace: "shop".into(),
            uid: "u1".into(),
            container: "main".into(),
        }
    }

    fn found(containers: Vec<ContainerRecord>) -> Found {
        Found {
            dirs: NodeDirs::lab("demo", "n1"),
            record: PodRecord {
                sandbox_pid: 1,
                containers,
            },
        }
    }

    #[test]
    fn current_and_previous_files() {
        let f = found(vec![ContainerRecord {
            name: "main".into(),
            restart_count: 2,
            pid: Some(5),
            log_path: None,
        }]);
        let dir = Path::new("/var/lib/podnet/demo/nodes/n1/logs/shop_web-0_u1/main");
        assert_eq!(log_path(&f, &target(), false).unwrap(), dir.join("2.log"));
        assert_eq!(log_path(&f, &target(), true).unwrap(), dir.join("1.log"));
        // The runtime's own record of the file wins.
        let f = found(vec![ContainerRecord {
            name: "main".into(),
            restart_count: 1,
            pid: None,
            log_path: Some("/elsewhere/main/1.log".into()),
        }]);
        assert_eq!(
            log_path(&f, &target(), false).unwrap(),
            Path::new("/elsewhere/main/1.log")
        );
        assert_eq!(
            log_path(&f, &target(), true).unwrap(),
            Path::new("/elsewhere/main/0.log")
        );
    }

    #[test]
    fn no_previous_attempt() {
        let f = found(vec![]);
        let err = log_path(&f, &target(), true).unwrap_err().to_string();
        assert_eq!(
            err,
            "Error from server (BadRequest): previous terminated container \"main\" in pod \"web-0\" not found"
        );
        assert_eq!(
            log_path(&f, &target(), false).unwrap(),
            Path::new("/var/lib/podnet/demo/nodes/n1/logs/shop_web-0_u1/main/0.log")
        );
    }

    #[test]
    fn tails() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail(b"a\nb\n", -1), b"a\nb\n");
        assert_eq!(tail(b"a\nb\n", 0), b"");
    }
}
