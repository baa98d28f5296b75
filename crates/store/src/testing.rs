//! Test support (feature `testing`): starts a private etcd (Debian `etcd-server`,
//! `/usr/bin/etcd`) for one test: loopback-only ports, a temporary data dir, stopped by PID
//! when the guard drops (also when the test panics). Used by this crate's tests and by the
//! apiserver's.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running etcd, killed when dropped.
pub struct EtcdServer {
    child: Child,
    client_url: String,
    dir: tempfile::TempDir,
}

fn etcd_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PODNET_TEST_ETCD") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "PODNET_TEST_ETCD={} does not exist; install etcd with `apt-get install -y etcd-server`",
            p.display()
        );
        return p;
    }
    for p in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "etcd is not installed, so the etcd backend cannot be tested. \
         Install it with `apt-get install -y etcd-server` (Debian), or point \
         PODNET_TEST_ETCD at an etcd binary."
    );
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address").port()
}

impl EtcdServer {
    pub async fn start() -> EtcdServer {
        Self::start_with("http", Vec::new(), etcd_client::ConnectOptions::new).await
    }

    /// Starts etcd with extra arguments (e.g. TLS files); `scheme` is the client URL scheme
    /// and `connect` the client options used to wait for readiness.
    pub async fn start_with(
        scheme: &str,
        extra_args: Vec<String>,
        connect: impl Fn() -> etcd_client::ConnectOptions,
    ) -> EtcdServer {
        let bin = etcd_binary();
        // A port picked here can be taken by someone else before etcd binds it; retry.
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let (client, peer) = (free_port(), free_port());
            let client_url = format!("{scheme}://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log_path = dir.path().join("etcd.log");
            let log = std::fs::File::create(&log_path).expect("create etcd log");
            let mut cmd = Command::new(&bin);
            // If the test process dies without running destructors (SIGKILL, abort), the
            // kernel kills etcd too. The spawning thread is a runtime worker thread, which
            // outlives the guard.
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd
                .arg("--name=podnet-test")
                .arg(format!("--data-dir={}", dir.path().join("data").display()))
                .arg(format!("--listen-client-urls={client_url}"))
                .arg(format!("--advertise-client-urls={client_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=podnet-test={peer_url}"))
                .arg("--initial-cluster-state=new")
                .arg("--log-level=warn")
                .args(&extra_args)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log file"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut server = EtcdServer {
                child,
                client_url,
                dir,
            };
            match server.wait_ready(&connect).await {
                Ok(()) => return server,
                Err(e) => {
                    last_log = format!(
                        "{e}\n--- etcd log ---\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                    // Dropping `server` stops it.
                }
            }
        }
        panic!("etcd did not start: {last_log}");
    }

    async fn wait_ready(
        &mut self,
        connect: &impl Fn() -> etcd_client::ConnectOptions,
    ) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("etcd exited: {status}"));
            }
            let opts = connect()
                .with_connect_timeout(Duration::from_millis(500))
                .with_timeout(Duration::from_secs(2));
            if let Ok(mut c) = etcd_client::Client::connect([&self.client_url], Some(opts)).await
                && c.status().await.is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("etcd not ready within 20s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn client_url(&self) -> String {
        self.client_url.clone()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        // Child::kill signals exactly this PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
