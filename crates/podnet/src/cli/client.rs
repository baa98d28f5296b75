//! Talking to the API server: which kubeconfig, and JSON requests whose failures come back
//! as the server's `Status` (kubectl's "Error from server (Reason): …").

use std::path::{Path, PathBuf};

use http::{Method, Request, header};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::Status;
use serde_json::Value;

use super::resources::Resource;
use super::{CliError, GlobalArgs};

/// The media types `kubectl get` asks for: a server-side Table, else plain JSON.
const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

/// Where the kubeconfig comes from, in kubectl's order plus the lab's: `--kubeconfig`,
/// `$KUBECONFIG` (a `:`-separated list, merged), the current lab's
/// `/var/lib/podnet/<lab>/kubeconfig`, then `~/.kube/config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeconfigSource {
    Flag(PathBuf),
    Env(Vec<PathBuf>),
    Lab { lab: String, path: PathBuf },
    Home(PathBuf),
}

impl KubeconfigSource {
    pub fn paths(&self) -> Vec<PathBuf> {
        match self {
            KubeconfigSource::Flag(p) | KubeconfigSource::Home(p) => vec![p.clone()],
            KubeconfigSource::Lab { path, .. } => vec![path.clone()],
            KubeconfigSource::Env(ps) => ps.clone(),
        }
    }
}

/// The lab's kubeconfig: `/var/lib/podnet/<lab>/kubeconfig`.
pub fn lab_kubeconfig(lab: &str) -> PathBuf {
    Path::new("/var/lib/podnet").join(lab).join("kubeconfig")
}

/// The lab a kubeconfig belongs to, when it is a lab's (`/var/lib/podnet/<lab>/kubeconfig`).
pub fn lab_of_kubeconfig(path: &Path) -> Option<String> {
    let rest = path.strip_prefix("/var/lib/podnet").ok()?;
    let mut parts = rest.components();
    let lab = parts.next()?.as_os_str().to_str()?.to_owned();
    (parts.next()?.as_os_str() == "kubeconfig" && parts.next().is_none()).then_some(lab)
}

/// Picks the kubeconfig. `env_kubeconfig` is `$KUBECONFIG`, `home` is `$HOME`; `exists`
/// tells whether a file is there (a parameter, for tests).
pub fn choose_kubeconfig(
    flag: Option<&Path>,
    env_kubeconfig: Option<&str>,
    lab: &str,
    home: Option<&Path>,
    exists: impl Fn(&Path) -> bool,
) -> Option<KubeconfigSource> {
    if let Some(p) = flag {
        return Some(KubeconfigSource::Flag(p.to_path_buf()));
    }
    if let Some(list) = env_kubeconfig {
        let paths: Vec<PathBuf> = list
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        if !paths.is_empty() {
            return Some(KubeconfigSource::Env(paths));
        }
    }
    let lab_path = lab_kubeconfig(lab);
    if exists(&lab_path) {
        return Some(KubeconfigSource::Lab {
            lab: lab.to_owned(),
            path: lab_path,
        });
    }
    let home_path = home?.join(".kube").join("config");
    exists(&home_path).then_some(KubeconfigSource::Home(home_path))
}

/// A connection to the API server.
pub struct Client {
    kube: kube::Client,
    /// The namespace commands use without `-n`: the context's, else `default`.
    pub default_namespace: String,
    /// `host:port` of the server, for connection errors.
    server: String,
    /// The kubeconfig used; its lab, if it is a lab's.
    pub source: KubeconfigSource,
}

impl Client {
    /// Connects as the global flags say.
    pub async fn connect(global: &GlobalArgs) -> Result<Client, CliError> {
        let env = std::env::var("KUBECONFIG").ok();
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let source = choose_kubeconfig(
            global.kubeconfig.as_deref(),
            env.as_deref(),
            &global.lab_name(),
            home.as_deref(),
            Path::exists,
        )
        .ok_or_else(|| {
            CliError::other(format!(
                "no cluster to talk to: give --kubeconfig PATH, set KUBECONFIG, start a lab \
                 (podnet lab up; its kubeconfig would be {}) or create ~/.kube/config",
                lab_kubeconfig(&global.lab_name()).display()
            ))
        })?;
        let mut merged: Option<Kubeconfig> = None;
        for path in source.paths() {
            let kc = match Kubeconfig::read_from(&path) {
                Ok(kc) => kc,
                // kubectl skips missing files of $KUBECONFIG; an explicit path must exist.
                Err(_) if matches!(source, KubeconfigSource::Env(_)) && !path.exists() => continue,
                Err(e) => {
                    return Err(CliError::other(format!(
                        "reading the kubeconfig {}: {}",
                        path.display(),
                        error_chain(&e)
                    )));
                }
            };
            merged = Some(match merged {
                None => kc,
                Some(m) => m.merge(kc).map_err(|e| {
                    CliError::other(format!("merging the kubeconfig {}: {e}", path.display()))
                })?,
            });
        }
        let kubeconfig = merged
            .ok_or_else(|| CliError::other("none of the files in KUBECONFIG exists".to_owned()))?;
        let options = KubeConfigOptions {
            context: global.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| {
                CliError::other(format!(
                    "the kubeconfig {} cannot be used: {}",
                    source
                        .paths()
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":"),
                    error_chain(&e)
                ))
            })?;
        let server = config
            .cluster_url
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| config.cluster_url.to_string());
        let default_namespace = config.default_namespace.clone();
        let kube = kube::Client::try_from(config).map_err(|e| {
            CliError::other(format!(
                "setting up the client for {server}: {}",
                error_chain(&e)
            ))
        })?;
        Ok(Client {
            kube,
            default_namespace,
            server,
            source,
        })
    }

    /// The kube-rs client underneath, for watches (`podnet ui`).
    pub fn kube(&self) -> kube::Client {
        self.kube.clone()
    }

    /// The lab of the kubeconfig in use, if it is a lab's.
    pub fn lab(&self) -> Option<String> {
        match &self.source {
            KubeconfigSource::Lab { lab, .. } => Some(lab.clone()),
            other => other.paths().first().and_then(|p| lab_of_kubeconfig(p)),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Value, CliError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::ACCEPT, accept);
        let bytes = match body {
            Some((content_type, bytes)) => {
                builder = builder.header(header::CONTENT_TYPE, content_type);
                bytes
            }
            None => Vec::new(),
        };
        let request = builder
            .body(bytes)
            .map_err(|e| CliError::other(format!("building the request for {path}: {e}")))?;
        let text = self
            .kube
            .request_text(request)
            .await
            .map_err(|e| self.convert(e))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| CliError::other(format!("the server's answer to {path} is not JSON: {e}")))
    }

    fn convert(&self, e: kube::Error) -> CliError {
        match e {
            kube::Error::Api(status) => CliError::api(*status),
            other => {
                let text = error_chain(&other);
                if text.contains("Connection refused") || text.contains("connection refused") {
                    CliError::standard(format!(
                        "The connection to the server {} was refused - did you specify the right host or port?",
                        self.server
                    ))
                } else {
                    CliError::standard(format!("Unable to connect to the server: {text}"))
                }
            }
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send(Method::GET, path, "application/json", None).await
    }

    /// GET asking for a server-side Table.
    pub async fn get_table(&self, path: &str) -> Result<Value, CliError> {
        self.send(Method::GET, path, TABLE_ACCEPT, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| CliError::other(format!("encoding the request: {e}")))?;
        self.send(
            Method::POST,
            path,
            "application/json",
            Some(("application/json", bytes)),
        )
        .await
    }

    pub async fn patch(
        &self,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> Result<Value, CliError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| CliError::other(format!("encoding the patch: {e}")))?;
        self.send(
            Method::PATCH,
            path,
            "application/json",
            Some((content_type, bytes)),
        )
        .await
    }

    pub async fn delete(&self, path: &str, options: &Value) -> Result<Value, CliError> {
        let bytes = serde_json::to_vec(options)
            .map_err(|e| CliError::other(format!("encoding the delete options: {e}")))?;
        self.send(
            Method::DELETE,
            path,
            "application/json",
            Some(("application/json", bytes)),
        )
        .await
    }
}

/// The path of a collection (`name` `None`) or an object; `namespace` is ignored for
/// cluster-scoped resources and `None` lists across all namespaces.
pub fn resource_path(
    res: &Resource,
    namespace: Option<&str>,
    name: Option<&str>,
    query: &[(&str, &str)],
) -> String {
    let mut path = res.group_version_path();
    if res.namespaced
        && let Some(ns) = namespace
    {
        path.push_str("/namespaces/");
        path.push_str(&encode_segment(ns));
    }
    path.push('/');
    path.push_str(&res.plural);
    if let Some(name) = name {
        path.push('/');
        path.push_str(&encode_segment(name));
    }
    let query: Vec<&(&str, &str)> = query.iter().filter(|(_, v)| !v.is_empty()).collect();
    if !query.is_empty() {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in query {
            ser.append_pair(k, v);
        }
        path.push('?');
        path.push_str(&ser.finish());
    }
    path
}

/// Percent-encodes what a path segment may not hold as is.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An error and its sources, `: `-joined.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Whether a failure is the server's NotFound.
pub fn is_not_found(e: &CliError) -> bool {
    status_of(e).is_some_and(|s| s.code == 404 || s.reason == "NotFound")
}

pub fn status_of(e: &CliError) -> Option<&Status> {
    match e {
        CliError::Api { status, .. } => Some(status),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_order() {
        let none = |_: &Path| false;
        let all = |_: &Path| true;
        let home = Path::new("/home/u");
        assert_eq!(
            choose_kubeconfig(Some(Path::new("/k")), Some("/e"), "podnet", Some(home), all),
            Some(KubeconfigSource::Flag("/k".into()))
        );
        assert_eq!(
            choose_kubeconfig(None, Some("/a:/b"), "podnet", Some(home), all),
            Some(KubeconfigSource::Env(vec!["/a".into(), "/b".into()]))
        );
        assert_eq!(
            choose_kubeconfig(None, Some(""), "lab2", Some(home), all),
            Some(KubeconfigSource::Lab {
                lab: "lab2".into(),
                path: "/var/lib/podnet/lab2/kubeconfig".into()
            })
        );
        let only_home = |p: &Path| p == Path::new("/home/u/.kube/config");
        assert_eq!(
            choose_kubeconfig(None, None, "podnet", Some(home), only_home),
            Some(KubeconfigSource::Home("/home/u/.kube/config".into()))
        );
        assert_eq!(
            choose_kubeconfig(None, None, "podnet", Some(home), none),
            None
        );
    }

    #[test]
    fn lab_from_kubeconfig_path() {
        assert_eq!(
            lab_of_kubeconfig(Path::new("/var/lib/podnet/demo/kubeconfig")),
            Some("demo".into())
        );
        assert_eq!(lab_of_kubeconfig(Path::new("/tmp/kubeconfig")), None);
        assert_eq!(
            lab_of_kubeconfig(Path::new("/var/lib/podnet/demo/x/kubeconfig")),
            None
        );
    }

    #[test]
    fn paths() {
        let pods = Resource::from_kind(&podnet_api::k8s::kinds::POD);
        assert_eq!(
            resource_path(&pods, Some("shop"), Some("web-0"), &[]),
            "/api/v1/namespaces/shop/pods/web-0"
        );
        assert_eq!(
            resource_path(&pods, None, None, &[("labelSelector", "app in (a,b)")]),
            "/api/v1/pods?labelSelector=app+in+%28a%2Cb%29"
        );
        let nodes = Resource::from_kind(&podnet_api::k8s::kinds::NODE);
        assert_eq!(
            resource_path(&nodes, Some("shop"), Some("n1"), &[("fieldSelector", "")]),
            "/api/v1/nodes/n1"
        );
    }
}
