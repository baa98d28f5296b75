//! The real kubectl against a test's apiserver: its own HOME (no discovery or OpenAPI cache
//! shared between tests), UTC (describe prints local times), and its version, since what
//! kubectl prints is partly its own (Debian 12 ships 1.20; newer ones print more).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::TestServer;

/// Where kubectl is looked for; `PODNET_TEST_KUBECTL` names another (an older one, say).
const PLACES: [&str; 2] = ["/usr/bin/kubectl", "/usr/local/bin/kubectl"];

pub struct Kubectl {
    binary: PathBuf,
    minor: u32,
    kubeconfig: PathBuf,
    home: tempfile::TempDir,
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The kubectl binary the tests run.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PODNET_TEST_KUBECTL") {
        return PathBuf::from(p);
    }
    PLACES
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("kubectl is not installed: install it with `apt-get install -y kubernetes-client`")
}

/// kubectl's minor version (`"minor": "32"`, or `"20+"` in some builds).
fn minor_of(binary: &PathBuf) -> u32 {
    let out = Command::new(binary)
        .args(["version", "--client", "-o", "json"])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{} version -o json: {e}", binary.display()));
    let minor = v["clientVersion"]["minor"].as_str().unwrap_or_default();
    minor
        .trim_end_matches('+')
        .parse()
        .unwrap_or_else(|_| panic!("kubectl's minor version {minor:?}"))
}

impl Kubectl {
    pub fn new(ts: &TestServer) -> Kubectl {
        let binary = binary();
        Kubectl {
            minor: minor_of(&binary),
            binary,
            kubeconfig: ts.server().kubeconfig_path().to_path_buf(),
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// kubectl 1.N's N.
    pub fn minor(&self) -> u32 {
        self.minor
    }

    /// Whether this kubectl is 1.`minor` or later; if not, says on stderr that `what` is
    /// not checked with it.
    pub fn at_least(&self, minor: u32, what: &str) -> bool {
        if self.minor >= minor {
            return true;
        }
        eprintln!(
            "SKIPPED with kubectl 1.{}: {what} (kubectl 1.{minor} and later print it so)",
            self.minor
        );
        false
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path())
            .env("TZ", "UTC")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = self.command(args).spawn().expect("run kubectl");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and requires success; its stdout.
    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert_eq!(
            out.code, 0,
            "kubectl {args:?} failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    /// Writes `text` to a file in kubectl's HOME (so messages name a file, as a user sees
    /// them); its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.home.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }
}
