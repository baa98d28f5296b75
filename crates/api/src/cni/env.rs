//! The CNI_* environment variables a runtime passes to a plugin, parsed and validated.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::CniError;

/// The CNI operation requested through `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Command {
    type Err = CniError;
    fn from_str(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            other => {
                return Err(CniError::invalid_env(format!(
                    "CNI_COMMAND {other:?} is not a CNI command: expected one of ADD, DEL, CHECK, GC, STATUS, VERSION"
                )));
            }
        })
    }
}

/// The parsed plugin environment. Fields a command does not need are empty / `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    /// `CNI_CONTAINERID`; empty for GC, STATUS and VERSION.
    pub container_id: String,
    /// `CNI_NETNS`; required for ADD and CHECK, optional for DEL.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`; empty for GC, STATUS and VERSION.
    pub ifname: String,
    /// `CNI_ARGS` as `KEY=VALUE` pairs, in order.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`, split on `:`.
    pub path: Vec<PathBuf>,
}

impl CniEnv {
    /// Reads the environment of this process.
    pub fn from_process_env() -> Result<Self, CniError> {
        Self::from_getter(|k| std::env::var(k).ok())
    }

    /// Parses the environment through `get` (returns a variable's value, `None` when unset),
    /// checking what the command requires per the spec. Errors are code 4 and name the
    /// variable.
    pub fn from_getter<F: Fn(&str) -> Option<String>>(get: F) -> Result<Self, CniError> {
        let command: Command = match get("CNI_COMMAND") {
            Some(c) if !c.is_empty() => c.parse()?,
            _ => {
                return Err(CniError::invalid_env(
                    "CNI_COMMAND is not set: the runtime must set it to ADD, DEL, CHECK, GC, STATUS or VERSION",
                ));
            }
        };
        let per_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let needs_netns = matches!(command, Command::Add | Command::Check);

        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        let mut container_id = String::new();
        let mut ifname = String::new();
        let mut netns = None;
        if per_attachment {
            container_id =
                nonempty("CNI_CONTAINERID").ok_or_else(|| missing("CNI_CONTAINERID", command))?;
            validate_container_id(&container_id)?;
            ifname = nonempty("CNI_IFNAME").ok_or_else(|| missing("CNI_IFNAME", command))?;
            validate_ifname(&ifname)?;
            netns = nonempty("CNI_NETNS").map(PathBuf::from);
            if needs_netns && netns.is_none() {
                return Err(missing("CNI_NETNS", command));
            }
        }
        let args = match nonempty("CNI_ARGS") {
            Some(a) => parse_args(&a)?,
            None => Vec::new(),
        };
        let path = nonempty("CNI_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        Ok(CniEnv {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }

    /// The value of `key` in CNI_ARGS (e.g. `K8S_POD_NAME`).
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn missing(var: &str, command: Command) -> CniError {
    CniError::invalid_env(format!("{var} is required for {command} but is not set"))
}

/// Parses `CNI_ARGS` (`FOO=BAR;ABC=123`).
pub fn parse_args(s: &str) -> Result<Vec<(String, String)>, CniError> {
    let mut out = Vec::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), v.to_string())),
            _ => {
                return Err(CniError::invalid_env(format!(
                    "CNI_ARGS: {pair:?} is not KEY=VALUE (expected e.g. \"K8S_POD_NAME=web;K8S_POD_NAMESPACE=default\")"
                )));
            }
        }
    }
    Ok(out)
}

/// The spec's rule for container IDs and network names: not empty, an ASCII letter or digit
/// first, then letters, digits, `_`, `.` or `-`.
pub fn is_cni_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Checks a container ID per the spec: not empty, starts with an alphanumeric character,
/// then alphanumerics, `_`, `.` or `-`.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    if is_cni_identifier(id) {
        Ok(())
    } else {
        Err(CniError::invalid_env(format!(
            "CNI_CONTAINERID {id:?} is invalid: it must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
        )))
    }
}

/// Checks an interface name as Linux accepts it: non-empty, at most 15 bytes, no `/`, `:`
/// or whitespace, and not `.` or `..`.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let problem = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 15 {
        Some("it is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are not interface names")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("it contains '/', ':' or whitespace")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(CniError::invalid_env(format!(
            "CNI_IFNAME {name:?} is not a valid interface name: {p} (use e.g. \"eth0\")"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<CniEnv, CniError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CniEnv::from_getter(|k| m.get(k).cloned())
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/var/run/netns/blue"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web"),
    ];

    #[test]
    fn add_full() {
        let e = env(ADD).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.container_id, "abc123");
        assert_eq!(e.netns, Some(PathBuf::from("/var/run/netns/blue")));
        assert_eq!(e.ifname, "eth0");
        assert_eq!(
            e.path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        assert_eq!(e.arg("K8S_POD_NAME"), Some("web"));
        assert_eq!(e.arg("nope"), None);
    }

    #[test]
    fn add_and_check_need_netns_del_does_not() {
        for cmd in ["ADD", "CHECK"] {
            let mut v: Vec<_> = ADD
                .iter()
                .copied()
                .filter(|(k, _)| *k != "CNI_NETNS")
                .collect();
            v[0] = ("CNI_COMMAND", cmd);
            let err = env(&v).unwrap_err();
            assert_eq!(err.code, 4);
            assert!(err.msg.contains("CNI_NETNS"), "{}", err.msg);
        }
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(e.command, Command::Del);
        assert_eq!(e.netns, None);
    }

    #[test]
    fn missing_vars_are_named() {
        for var in ["CNI_CONTAINERID", "CNI_IFNAME"] {
            let v: Vec<_> = ADD.iter().copied().filter(|(k, _)| *k != var).collect();
            let err = env(&v).unwrap_err();
            assert_eq!(err.code, 4);
            assert!(err.msg.contains(var), "{}", err.msg);
        }
        let err = env(&[]).unwrap_err();
        assert!(err.msg.contains("CNI_COMMAND"));
        let err = env(&[("CNI_COMMAND", "UP")]).unwrap_err();
        assert_eq!(err.code, 4);
        assert!(err.msg.contains("\"UP\""));
    }

    #[test]
    fn gc_status_version_need_only_command() {
        for (c, want) in [
            ("GC", Command::Gc),
            ("STATUS", Command::Status),
            ("VERSION", Command::Version),
        ] {
            let e = env(&[("CNI_COMMAND", c)]).unwrap();
            assert_eq!(e.command, want);
            assert!(e.container_id.is_empty());
        }
    }

    #[test]
    fn container_ids() {
        for ok in ["a", "abc-DEF_1.2", "0abc", "4f3e0d1b2c"] {
            validate_container_id(ok).unwrap();
        }
        for bad in ["", "-abc", "_a", ".a", "a/b", "a b", "a:b", "é"] {
            let e = validate_container_id(bad).unwrap_err();
            assert_eq!(e.code, 4);
            assert!(e.msg.contains("CNI_CONTAINERID"));
        }
    }

    #[test]
    fn ifnames() {
        for ok in ["eth0", "net1", "a", "123456789012345", "veth.1-x_y"] {
            validate_ifname(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "1234567890123456",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
        ] {
            let e = validate_ifname(bad).unwrap_err();
            assert_eq!(e.code, 4);
            assert!(e.msg.contains("CNI_IFNAME"));
        }
        let mut v: Vec<_> = ADD.to_vec();
        v[3] = ("CNI_IFNAME", "bad/name");
        assert_eq!(env(&v).unwrap_err().code, 4);
    }

    #[test]
    fn args() {
        assert_eq!(
            parse_args("A=1;B=;C=x=y").unwrap(),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "".into()),
                ("C".into(), "x=y".into())
            ]
        );
        assert_eq!(parse_args("A=1;").unwrap().len(), 1);
        assert_eq!(parse_args("novalue").unwrap_err().code, 4);
        assert_eq!(parse_args("=x").unwrap_err().code, 4);
    }
}
