//! TLS and the bearer token, for an apiserver reachable off loopback (or told to use them):
//! when TLS is on, the certificate it serves (a CA and a serving certificate generated under
//! `DATA_DIR/pki` at first start and reused after, or files given), the token every API request
//! must carry (generated into `DATA_DIR/token`, or a file given), and a listener that does the
//! handshakes for `axum::serve`.

use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::Datelike;
use rand::TryRngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// When the apiserver serves TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// TLS and a bearer token iff the bind address is not loopback; plain HTTP without
    /// authentication on loopback.
    #[default]
    Auto,
    /// TLS and a bearer token on every address, loopback included.
    Always,
}

/// Whether a server bound to `bind` serves TLS (with a bearer token) in `mode`. Plain HTTP
/// without authentication is only ever chosen for a loopback address; an IPv4-mapped IPv6
/// loopback address (`::ffff:127.0.0.1`) counts as not loopback, as does the wildcard.
pub fn tls_enabled(bind: IpAddr, mode: TlsMode) -> bool {
    mode == TlsMode::Always || !bind.is_loopback()
}

/// TLS settings; the default generates everything under the data directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    pub mode: TlsMode,
    /// The serving certificate (PEM, the leaf first, then any intermediates); with
    /// `key_file`. Without them a CA and a certificate it signs are generated under
    /// `DATA_DIR/pki`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The CA (PEM) that clients should trust for `cert_file`, written into the kubeconfig;
    /// without it the kubeconfig names no CA and clients use their system roots.
    pub ca_file: Option<PathBuf>,
    /// A file holding the bearer token; without it one is generated into `DATA_DIR/token`.
    pub token_file: Option<PathBuf>,
    /// More names (DNS names or IP addresses) for the generated serving certificate, for
    /// the addresses clients use to reach this server.
    pub extra_sans: Vec<String>,
}

impl TlsConfig {
    /// Checks that the options fit together, given whether TLS is on.
    pub fn validate(&self, tls_on: bool) -> Result<(), String> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("--tls-cert-file and --tls-key-file go together: give both, or neither to have a certificate generated under the data directory".into());
        }
        if self.ca_file.is_some() && self.cert_file.is_none() {
            return Err("--tls-ca-file names the CA of --tls-cert-file: give --tls-cert-file and --tls-key-file too (a generated certificate's CA goes into the kubeconfig by itself)".into());
        }
        if !self.extra_sans.is_empty() && self.cert_file.is_some() {
            return Err("--tls-san only applies to a generated certificate: drop it, or put the names into the certificate given with --tls-cert-file".into());
        }
        if !tls_on {
            let given = [
                (self.cert_file.is_some(), "--tls-cert-file"),
                (self.key_file.is_some(), "--tls-key-file"),
                (self.ca_file.is_some(), "--tls-ca-file"),
                (self.token_file.is_some(), "--token-file"),
                (!self.extra_sans.is_empty(), "--tls-san"),
            ];
            if let Some((_, flag)) = given.iter().find(|(set, _)| *set) {
                return Err(format!(
                    "{flag} is set but TLS is off (plain HTTP is served on a loopback --bind): add --tls to serve TLS with a bearer token there, or drop {flag}"
                ));
            }
        }
        for san in &self.extra_sans {
            San::parse(san)?;
        }
        Ok(())
    }
}

/// A name the serving certificate is valid for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    Ip(IpAddr),
    Dns(String),
}

impl San {
    /// An IP address, or a DNS name (no wildcards).
    pub fn parse(s: &str) -> Result<San, String> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(San::Ip(ip));
        }
        match ServerName::try_from(s) {
            Ok(ServerName::DnsName(_)) => Ok(San::Dns(s.to_ascii_lowercase())),
            _ => Err(format!(
                "--tls-san {s:?}: not an IP address or a DNS name (wildcards are not supported)"
            )),
        }
    }

    fn server_name(&self) -> Option<ServerName<'static>> {
        match self {
            San::Ip(ip) => Some(ServerName::IpAddress((*ip).into())),
            San::Dns(name) => ServerName::try_from(name.clone()).ok(),
        }
    }

    fn to_rcgen(&self) -> Result<SanType, TlsError> {
        Ok(match self {
            San::Ip(ip) => SanType::IpAddress(*ip),
            San::Dns(name) => SanType::DnsName(name.as_str().try_into().map_err(|e| {
                TlsError::Invalid(format!(
                    "{name:?} cannot be put into a certificate: {e}; drop that --tls-san"
                ))
            })?),
        })
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Ip(ip) => write!(f, "{ip}"),
            San::Dns(name) => f.write_str(name),
        }
    }
}

/// The names a generated serving certificate carries: the bind address (unless it is the
/// wildcard), loopback, this host's name, the in-cluster names and ClusterIP of the
/// `kubernetes` Service, and the extra names configured.
pub fn serving_names(
    bind: IpAddr,
    kubernetes_service_ip: Option<IpAddr>,
    hostname: Option<&str>,
    extra: &[String],
) -> Result<Vec<San>, String> {
    let mut names = Vec::new();
    if !bind.is_unspecified() {
        names.push(San::Ip(bind));
    }
    names.push(San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    names.push(San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    names.push(San::Dns("localhost".into()));
    if let Some(host) = hostname.and_then(|h| San::parse(h).ok()) {
        names.push(host);
    }
    for name in [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ] {
        names.push(San::Dns(name.into()));
    }
    if let Some(ip) = kubernetes_service_ip {
        names.push(San::Ip(ip));
    }
    for s in extra {
        names.push(San::parse(s)?);
    }
    let mut unique: Vec<San> = Vec::with_capacity(names.len());
    for n in names {
        if !unique.contains(&n) {
            unique.push(n);
        }
    }
    Ok(unique)
}

/// This machine's host name, if it has a usable one.
pub fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TlsError + 'a {
    move |source| TlsError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What a TLS-serving apiserver uses.
pub struct TlsSetup {
    pub server_config: Arc<rustls::ServerConfig>,
    /// The CA (PEM) clients should trust, for the kubeconfig; `None` when a given
    /// certificate came without `--tls-ca-file` (clients then use their system roots).
    pub ca_pem: Option<String>,
    /// The bearer token every API request must carry.
    pub token: String,
    /// The serving certificate's file.
    pub cert_file: PathBuf,
}

/// The generated files under `DATA_DIR/pki`.
pub struct PkiPaths {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl PkiPaths {
    pub fn new(data_dir: &Path) -> Self {
        let pki = data_dir.join("pki");
        PkiPaths {
            ca_cert: pki.join("ca.crt"),
            ca_key: pki.join("ca.key"),
            cert: pki.join("apiserver.crt"),
            key: pki.join("apiserver.key"),
        }
    }

    fn dir(&self) -> &Path {
        self.ca_cert.parent().unwrap_or(Path::new("."))
    }
}

/// The file the generated token is kept in.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("token")
}

/// Loads or generates the certificate and token, and builds the rustls configuration.
/// `names` are the names a generated serving certificate must carry (see [`serving_names`]).
pub fn prepare(config: &TlsConfig, data_dir: &Path, names: &[San]) -> Result<TlsSetup, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (chain, key, ca_pem, cert_file) = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key = read_key(key)?;
            let ca_pem = match &config.ca_file {
                Some(ca) => {
                    let text = std::fs::read_to_string(ca).map_err(io_err("reading", ca))?;
                    read_certs_from(&text, ca)?;
                    Some(text)
                }
                None => None,
            };
            (chain, key, ca_pem, cert.clone())
        }
        _ => {
            let paths = PkiPaths::new(data_dir);
            let generated = generated_identity(&paths, names, &provider)?;
            (
                generated.chain,
                generated.key,
                Some(generated.ca_pem),
                paths.cert,
            )
        }
    };
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(format!("configuring TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            TlsError::Invalid(format!(
                "the certificate {} cannot be served with its key: {e} (do the certificate and key files belong together?)",
                cert_file.display()
            ))
        })?;
    // axum serves HTTP/1.1 only; clients offering h2 fall back to it.
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let token = match &config.token_file {
        Some(path) => read_token(path, "--token-file")?,
        None => generated_token(&token_path(data_dir))?,
    };
    Ok(TlsSetup {
        server_config: Arc::new(server_config),
        ca_pem,
        token,
        cert_file,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = std::fs::read_to_string(path).map_err(io_err("reading", path))?;
    read_certs_from(&text, path)
}

fn read_certs_from(text: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid(format!("{}: not PEM certificates: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{}: holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(io_err("reading", path))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        TlsError::Invalid(format!(
            "{}: no PEM private key (PKCS#8, PKCS#1 or SEC1) found: {e}",
            path.display()
        ))
    })
}

/// A file's text, or `None` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, TlsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", path)(e)),
    }
}

/// Writes a file atomically with the given mode.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let write = || -> io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(io_err("writing", path))
}

/// Makes a generated secret file readable by its owner only, as it was written.
fn keep_private(path: &Path) -> Result<(), TlsError> {
    let mode = std::fs::metadata(path)
        .map_err(io_err("reading", path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "a secret file was readable by others; setting it to 0600");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err("setting the mode 0600 of", path))?;
    }
    Ok(())
}

struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca_pem: String,
}

/// How long before its end a generated serving certificate is replaced at start.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
const CA_DAYS: u64 = 3650;
const SERVING_DAYS: u64 = 365;

/// The generated CA and serving certificate: reused when present and the serving
/// certificate still fits (signed by the CA, valid for every name for another 30 days,
/// matching its key); otherwise a serving certificate is issued anew by the same CA, so
/// kubeconfigs handed out before stay valid.
fn generated_identity(
    paths: &PkiPaths,
    names: &[San],
    provider: &Arc<CryptoProvider>,
) -> Result<Identity, TlsError> {
    let dir = paths.dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("creating", dir))?;
    let ca_cert_pem = read_optional(&paths.ca_cert)?;
    let ca_key_pem = read_optional(&paths.ca_key)?;
    let (ca_pem, ca_key) = match (ca_cert_pem, ca_key_pem) {
        (Some(cert), key) => {
            let key = match key {
                Some(pem) => {
                    keep_private(&paths.ca_key)?;
                    Some(KeyPair::from_pem(&pem).map_err(|e| {
                        TlsError::Invalid(format!(
                            "{}: not a usable private key: {e}; restore it, or remove {} to have a new CA generated (clients then need the new kubeconfig)",
                            paths.ca_key.display(),
                            dir.display()
                        ))
                    })?)
                }
                None => None,
            };
            (cert, key)
        }
        (None, Some(_)) => {
            return Err(TlsError::Invalid(format!(
                "{} exists without {}: restore the CA certificate, or remove {} to have a new CA generated (clients then need the new kubeconfig)",
                paths.ca_key.display(),
                paths.ca_cert.display(),
                dir.display()
            )));
        }
        (None, None) => {
            let key = KeyPair::generate()
                .map_err(|e| TlsError::Invalid(format!("generating the CA key: {e}")))?;
            let cert = ca_params()?
                .self_signed(&key)
                .map_err(|e| TlsError::Invalid(format!("generating the CA certificate: {e}")))?;
            write_file(&paths.ca_key, key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&paths.ca_cert, cert.pem().as_bytes(), 0o644)?;
            tracing::info!(path = %paths.ca_cert.display(), "generated a CA for the apiserver");
            (cert.pem(), Some(key))
        }
    };
    let ca_der = read_certs_from(&ca_pem, &paths.ca_cert)?
        .into_iter()
        .next()
        .ok_or_else(|| TlsError::Invalid(format!("{}: empty", paths.ca_cert.display())))?;
    let verifier = verifier_for(ca_der, provider, &paths.ca_cert)?;

    let existing = match (read_optional(&paths.cert)?, read_optional(&paths.key)?) {
        (Some(cert), Some(key)) => Some((cert, key)),
        _ => None,
    };
    let mut why_new = "there is none yet".to_owned();
    if let Some((cert_pem, key_pem)) = existing {
        match fits(&verifier, provider, &cert_pem, &key_pem, names) {
            Ok((chain, key)) => {
                keep_private(&paths.key)?;
                return Ok(Identity { chain, key, ca_pem });
            }
            Err(why) => why_new = why,
        }
    }
    let Some(ca_key) = ca_key else {
        return Err(TlsError::Invalid(format!(
            "{} must be issued anew ({why_new}) but the CA key {} is missing: restore it, or remove {} to have a new CA generated (clients then need the new kubeconfig)",
            paths.cert.display(),
            paths.ca_key.display(),
            dir.display()
        )));
    };
    let key = KeyPair::generate()
        .map_err(|e| TlsError::Invalid(format!("generating the serving key: {e}")))?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let cert = serving_params(names)?
        .signed_by(&key, &issuer)
        .map_err(|e| TlsError::Invalid(format!("issuing the serving certificate: {e}")))?;
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    let (chain, key) = fits(&verifier, provider, &cert_pem, &key_pem, names).map_err(|why| {
        TlsError::Invalid(format!(
            "a certificate just issued with {} does not verify against {} ({why}): the two do not belong together; remove {} to have new ones generated (clients then need the new kubeconfig)",
            paths.ca_key.display(),
            paths.ca_cert.display(),
            dir.display()
        ))
    })?;
    write_file(&paths.key, key_pem.as_bytes(), 0o600)?;
    write_file(&paths.cert, cert_pem.as_bytes(), 0o644)?;
    tracing::info!(path = %paths.cert.display(), reason = %why_new, names = %names.iter().map(San::to_string).collect::<Vec<_>>().join(","), "issued a serving certificate");
    Ok(Identity { chain, key, ca_pem })
}

fn verifier_for(
    ca: CertificateDer<'static>,
    provider: &Arc<CryptoProvider>,
    path: &Path,
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(|e| {
        TlsError::Invalid(format!(
            "{}: not a usable CA certificate: {e}",
            path.display()
        ))
    })?;
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", path.display())))
}

/// Whether a serving certificate and key can be (re)used: they match, and a client that
/// trusts the CA accepts the certificate for every name, now and 30 days from now.
fn fits(
    verifier: &WebPkiServerVerifier,
    provider: &CryptoProvider,
    cert_pem: &str,
    key_pem: &str,
    names: &[San],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate file is not PEM: {e}"))?;
    let leaf = chain
        .first()
        .ok_or("the certificate file holds no certificate")?
        .clone();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("the key file is not a PEM private key: {e}"))?;
    rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), provider)
        .map_err(|e| format!("the certificate does not match its key: {e}"))?;
    let now = SystemTime::now();
    for (at, when) in [(now, "now"), (now + RENEW_BEFORE, "in 30 days")] {
        let at = UnixTime::since_unix_epoch(
            at.duration_since(SystemTime::UNIX_EPOCH)
                .map_err(|e| format!("the clock is before 1970: {e}"))?,
        );
        for name in names {
            let Some(server_name) = name.server_name() else {
                continue;
            };
            verifier
                .verify_server_cert(&leaf, &[], &server_name, &[], at)
                .map_err(|e| format!("not valid for {name} {when}: {e}"))?;
        }
    }
    Ok((chain, key))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], TlsError> {
    let mut buf = [0u8; N];
    rand::rngs::OsRng.try_fill_bytes(&mut buf).map_err(|e| {
        TlsError::Invalid(format!(
            "reading random bytes from the operating system: {e}"
        ))
    })?;
    Ok(buf)
}

fn serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = random_bytes::<16>()?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Valid from yesterday (some slack for clocks behind) for `days` days.
fn set_validity(params: &mut CertificateParams, days: u64) -> Result<(), TlsError> {
    let today = chrono::Utc::now().date_naive();
    let out_of_range = || TlsError::Invalid("the system clock's date is out of range".into());
    let start = today
        .checked_sub_days(chrono::Days::new(1))
        .ok_or_else(out_of_range)?;
    let end = today
        .checked_add_days(chrono::Days::new(days))
        .ok_or_else(out_of_range)?;
    for d in [start, end] {
        if !(1..=9999).contains(&d.year()) {
            return Err(out_of_range());
        }
    }
    let ymd = |d: chrono::NaiveDate| -> Result<_, TlsError> {
        let month = u8::try_from(d.month()).map_err(|_| out_of_range())?;
        let day = u8::try_from(d.day()).map_err(|_| out_of_range())?;
        Ok(rcgen::date_time_ymd(d.year(), month, day))
    };
    params.not_before = ymd(start)?;
    params.not_after = ymd(end)?;
    Ok(())
}

/// The CA's parameters. Its distinguished name is fixed, so that the issuer of a
/// certificate signed later with the CA key loaded from disk matches the CA certificate.
fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "podnet");
    dn.push(DnType::CommonName, "podnet-ca");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(serial()?);
    set_validity(&mut params, CA_DAYS)?;
    Ok(params)
}

fn serving_params(names: &[San]) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "podnet");
    dn.push(DnType::CommonName, "podnet-apiserver");
    params.distinguished_name = dn;
    params.subject_alt_names = names.iter().map(San::to_rcgen).collect::<Result<_, _>>()?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(serial()?);
    set_validity(&mut params, SERVING_DAYS)?;
    Ok(params)
}

/// The generated token: 32 random bytes in hex, kept in `path` (0600) and reused.
fn generated_token(path: &Path) -> Result<String, TlsError> {
    if read_optional(path)?.is_some() {
        keep_private(path)?;
        return read_token(path, "the generated token file");
    }
    let token: String = random_bytes::<32>()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    write_file(path, format!("{token}\n").as_bytes(), 0o600)?;
    tracing::info!(path = %path.display(), "generated the bearer token");
    Ok(token)
}

fn read_token(path: &Path, what: &str) -> Result<String, TlsError> {
    let text = std::fs::read_to_string(path).map_err(io_err("reading the token file", path))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{what} {} is empty: put a token into it, or remove it to have one generated",
            path.display()
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TlsError::Invalid(format!(
            "{what} {}: the token must be one line of visible ASCII characters (no spaces)",
            path.display()
        )));
    }
    Ok(token.to_owned())
}

/// How long a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait to be accepted.
const MAX_HANDSHAKES: usize = 256;

/// What a plain-HTTP request to the TLS port is answered with (as Go's servers do).
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server: use https://\n";

/// A listener for `axum::serve` that hands over connections whose TLS handshake has
/// completed; handshakes run in tasks of their own, so a slow client holds up no other.
pub struct TlsListener {
    connections: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, connections) = mpsc::channel(64);
        let acceptor = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx));
        Ok(TlsListener {
            connections,
            local,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Closes the listening socket once `axum::serve` stops accepting.
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(conn) => conn,
            // The accepting task ended (it only does when the listener is dropped).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = tokio::select! {
            _ = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let stream = handshake(&acceptor, tcp, peer).await;
            drop(permit);
            if let Some(stream) = stream {
                let _ = tx.send((stream, peer)).await;
            }
        });
    }
}

async fn handshake(
    acceptor: &TlsAcceptor,
    mut tcp: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return None,
    }
    // A TLS connection starts with a handshake record (0x16); "GET /…" is plain HTTP.
    if first[0].is_ascii_uppercase() {
        tracing::debug!(%peer, "plain HTTP request on the TLS port");
        let answer = async {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while request.len() < 16 * 1024 && !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tcp.write_all(PLAIN_HTTP_ANSWER).await;
            let _ = tcp.shutdown().await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), answer).await;
        return None;
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn tls_is_on_off_loopback_or_when_asked() {
        for (bind, mode, on) in [
            ("127.0.0.1", TlsMode::Auto, false),
            ("127.0.0.53", TlsMode::Auto, false),
            ("::1", TlsMode::Auto, false),
            ("127.0.0.1", TlsMode::Always, true),
            ("::1", TlsMode::Always, true),
            ("0.0.0.0", TlsMode::Auto, true),
            ("::", TlsMode::Auto, true),
            ("10.1.2.3", TlsMode::Auto, true),
            ("192.0.2.7", TlsMode::Always, true),
            ("fd00::1", TlsMode::Auto, true),
            ("::ffff:127.0.0.1", TlsMode::Auto, true),
        ] {
            assert_eq!(tls_enabled(ip(bind), mode), on, "{bind} {mode:?}");
        }
    }

    #[test]
    fn options_must_fit_together() {
        let cert_only = TlsConfig {
            cert_file: Some("/x.crt".into()),
            ..TlsConfig::default()
        };
        assert!(
            cert_only
                .validate(true)
                .unwrap_err()
                .contains("go together")
        );
        let token = TlsConfig {
            token_file: Some("/t".into()),
            ..TlsConfig::default()
        };
        assert!(token.validate(true).is_ok());
        let err = token.validate(false).unwrap_err();
        assert!(
            err.contains("--token-file") && err.contains("--tls"),
            "{err}"
        );
        let sans = TlsConfig {
            extra_sans: vec!["api.example.com".into(), "not a name".into()],
            ..TlsConfig::default()
        };
        assert!(sans.validate(true).unwrap_err().contains("not a name"));
        let sans_with_cert = TlsConfig {
            cert_file: Some("/x.crt".into()),
            key_file: Some("/x.key".into()),
            extra_sans: vec!["api.example.com".into()],
            ..TlsConfig::default()
        };
        assert!(sans_with_cert.validate(true).is_err());
        assert!(TlsConfig::default().validate(false).is_ok());
    }

    #[test]
    fn names() {
        let names = serving_names(
            ip("0.0.0.0"),
            Some(ip("10.96.0.1")),
            Some("Node-1"),
            &[
                "api.example.com".into(),
                "127.0.0.1".into(),
                "192.0.2.9".into(),
            ],
        )
        .unwrap();
        assert!(!names.contains(&San::Ip(ip("0.0.0.0"))));
        for want in [
            San::Ip(ip("127.0.0.1")),
            San::Dns("localhost".into()),
            San::Dns("node-1".into()),
            San::Dns("kubernetes.default.svc".into()),
            San::Ip(ip("10.96.0.1")),
            San::Dns("api.example.com".into()),
            San::Ip(ip("192.0.2.9")),
        ] {
            assert!(names.contains(&want), "{want} in {names:?}");
        }
        let loopback = names.iter().filter(|n| **n == San::Ip(ip("127.0.0.1")));
        assert_eq!(loopback.count(), 1);
        let bound = serving_names(ip("10.1.2.3"), None, None, &[]).unwrap();
        assert_eq!(bound[0], San::Ip(ip("10.1.2.3")));
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generated_files_are_reused_and_reissued_by_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let names = serving_names(ip("127.0.0.1"), None, None, &[]).unwrap();
        let config = TlsConfig::default();
        let first = prepare(&config, dir.path(), &names).unwrap();
        let paths = PkiPaths::new(dir.path());
        assert_eq!(mode(&paths.ca_key), 0o600);
        assert_eq!(mode(&paths.key), 0o600);
        assert_eq!(mode(&token_path(dir.path())), 0o600);
        assert_eq!(first.token.len(), 64);
        assert!(first.token.bytes().all(|b| b.is_ascii_hexdigit()));
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let (ca, cert, key) = (read(&paths.ca_cert), read(&paths.cert), read(&paths.key));
        assert_eq!(first.ca_pem.as_deref(), Some(ca.as_str()));

        // The same names: everything reused.
        let again = prepare(&config, dir.path(), &names).unwrap();
        assert_eq!(again.token, first.token);
        assert_eq!(read(&paths.cert), cert);
        assert_eq!(read(&paths.key), key);

        // A new name: a new serving certificate from the same CA, valid for it.
        let more = serving_names(ip("127.0.0.1"), None, None, &["api.example.com".into()]).unwrap();
        let reissued = prepare(&config, dir.path(), &more).unwrap();
        assert_eq!(reissued.ca_pem.as_deref(), Some(ca.as_str()));
        assert_ne!(read(&paths.cert), cert);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca_der = CertificateDer::from_pem_slice(ca.as_bytes()).unwrap();
        let verifier = verifier_for(ca_der, &provider, &paths.ca_cert).unwrap();
        fits(
            &verifier,
            &provider,
            &read(&paths.cert),
            &read(&paths.key),
            &more,
        )
        .unwrap();
        let err = fits(&verifier, &provider, &cert, &key, &more).unwrap_err();
        assert!(err.contains("api.example.com"), "{err}");
        // A certificate with someone else's key is not reused.
        assert!(
            fits(&verifier, &provider, &cert, &read(&paths.key), &names)
                .unwrap_err()
                .contains("key")
        );

        // Without the CA key, a certificate that still fits is used; one that must be
        // reissued is an error that says what to do.
        std::fs::remove_file(&paths.ca_key).unwrap();
        prepare(&config, dir.path(), &more).unwrap();
        let elsewhere = [San::Dns("elsewhere.example.com".into())];
        let err = prepare(&config, dir.path(), &elsewhere).err().unwrap();
        assert!(err.to_string().contains("ca.key"), "{err}");
    }

    #[test]
    fn loose_secret_files_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let names = serving_names(ip("127.0.0.1"), None, None, &[]).unwrap();
        prepare(&TlsConfig::default(), dir.path(), &names).unwrap();
        let token = token_path(dir.path());
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        prepare(&TlsConfig::default(), dir.path(), &names).unwrap();
        assert_eq!(mode(&token), 0o600);
    }

    #[test]
    fn token_files() {
        let dir = tempfile::tempdir().unwrap();
        let names = serving_names(ip("127.0.0.1"), None, None, &[]).unwrap();
        let file = dir.path().join("given-token");
        std::fs::write(&file, "s3cret-Token.1\n").unwrap();
        let config = TlsConfig {
            token_file: Some(file.clone()),
            ..TlsConfig::default()
        };
        let setup = prepare(&config, dir.path(), &names).unwrap();
        assert_eq!(setup.token, "s3cret-Token.1");
        assert!(!token_path(dir.path()).exists());
        std::fs::write(&file, "two words").unwrap();
        let err = prepare(&config, dir.path(), &names).err().unwrap();
        assert!(err.to_string().contains("visible ASCII"), "{err}");
        std::fs::write(&file, "\n").unwrap();
        let err = prepare(&config, dir.path(), &names).err().unwrap();
        assert!(err.to_string().contains("empty"), "{err}");
        let missing = TlsConfig {
            token_file: Some(dir.path().join("nope")),
            ..TlsConfig::default()
        };
        let err = prepare(&missing, dir.path(), &names).err().unwrap();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
