//! flannel's `subnet.env`: the node's lease, as the node agent writes it and the CNI plugin
//! reads it.
//!
//! ```text
//! FLANNEL_NETWORK=10.244.0.0/16
//! FLANNEL_SUBNET=10.244.1.1/24
//! FLANNEL_MTU=1450
//! FLANNEL_IPMASQ=true
//! ```

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// A parsed `subnet.env`. Every field is optional in the file; unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubnetEnv {
    /// `FLANNEL_NETWORK`: the whole cluster range.
    pub network: Option<Ipv4Net>,
    /// `FLANNEL_SUBNET`: this node's subnet, written with the gateway (bridge) address as
    /// the address part, e.g. `10.244.1.1/24`.
    pub subnet: Option<Ipv4Net>,
    /// `FLANNEL_MTU`: the MTU pods should use.
    pub mtu: Option<u32>,
    /// `FLANNEL_IPMASQ`: `true` when the node masquerades pod traffic itself.
    pub ipmasq: Option<bool>,
}

/// A problem in a `subnet.env`, naming the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {msg}")]
pub struct SubnetEnvError {
    pub line: usize,
    pub msg: String,
}

impl SubnetEnv {
    /// Parses the file's text. Blank lines, `#` comments, an `export ` prefix and single or
    /// double quotes around values are tolerated.
    pub fn parse(text: &str) -> Result<Self, SubnetEnvError> {
        let mut env = SubnetEnv::default();
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let err = |msg: String| SubnetEnvError { line: line_no, msg };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line
                .strip_prefix("export ")
                .map(str::trim_start)
                .unwrap_or(line);
            let Some((key, value)) = line.split_once('=') else {
                return Err(err(format!("{line:?} is not KEY=VALUE")));
            };
            let key = key.trim();
            let value = unquote(value.trim());
            match key {
                "FLANNEL_NETWORK" => env.network = Some(parse_net(key, value).map_err(err)?),
                "FLANNEL_SUBNET" => env.subnet = Some(parse_net(key, value).map_err(err)?),
                "FLANNEL_MTU" => {
                    let mtu: u32 = value.parse().map_err(|_| {
                        err(format!("FLANNEL_MTU {value:?} is not a number (e.g. 1450)"))
                    })?;
                    if !(68..=65535).contains(&mtu) {
                        return Err(err(format!("FLANNEL_MTU {mtu} is outside 68..=65535")));
                    }
                    env.mtu = Some(mtu);
                }
                "FLANNEL_IPMASQ" => {
                    env.ipmasq = Some(match value {
                        "true" | "TRUE" | "True" | "1" => true,
                        "false" | "FALSE" | "False" | "0" => false,
                        _ => {
                            return Err(err(format!(
                                "FLANNEL_IPMASQ {value:?} is not true or false"
                            )));
                        }
                    })
                }
                _ => {}
            }
        }
        Ok(env)
    }

    /// The file's text, in flannel's key order; absent fields are left out.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Some(n) = self.network {
            let _ = writeln!(s, "FLANNEL_NETWORK={n}");
        }
        if let Some(n) = self.subnet {
            let _ = writeln!(s, "FLANNEL_SUBNET={n}");
        }
        if let Some(m) = self.mtu {
            let _ = writeln!(s, "FLANNEL_MTU={m}");
        }
        if let Some(b) = self.ipmasq {
            let _ = writeln!(s, "FLANNEL_IPMASQ={b}");
        }
        s
    }

    /// The node's pod subnet with host bits cleared (`10.244.1.1/24` → `10.244.1.0/24`).
    pub fn pod_subnet(&self) -> Option<Ipv4Net> {
        self.subnet.map(|s| s.trunc())
    }

    /// The gateway (bridge) address: the address part of `FLANNEL_SUBNET`, or the first
    /// host when it was written with host bits cleared.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        let s = self.subnet?;
        if s.addr() == s.network() && s.prefix_len() < 31 {
            crate::net::nth_host(&s, 1)
        } else {
            Some(s.addr())
        }
    }
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

fn parse_net(key: &str, value: &str) -> Result<Ipv4Net, String> {
    value
        .parse()
        .map_err(|_| format!("{key} {value:?} is not an IPv4 CIDR (e.g. 10.244.1.1/24)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_flannel_file() {
        let text = "# written by flanneld\n\nFLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\nFLANNEL_IPV6_NETWORK=fd00::/56\n";
        let e = SubnetEnv::parse(text).unwrap();
        assert_eq!(e.network, Some("10.244.0.0/16".parse().unwrap()));
        assert_eq!(e.subnet, Some("10.244.1.1/24".parse().unwrap()));
        assert_eq!(e.pod_subnet(), Some("10.244.1.0/24".parse().unwrap()));
        assert_eq!(e.gateway(), Some(Ipv4Addr::new(10, 244, 1, 1)));
        assert_eq!(e.mtu, Some(1450));
        assert_eq!(e.ipmasq, Some(true));
    }

    #[test]
    fn quotes_export_spaces() {
        let e = SubnetEnv::parse(
            "export FLANNEL_SUBNET=\"10.244.7.0/24\"\n  FLANNEL_MTU = '1400'  \r\nFLANNEL_IPMASQ=false",
        )
        .unwrap();
        assert_eq!(e.gateway(), Some(Ipv4Addr::new(10, 244, 7, 1)));
        assert_eq!(e.mtu, Some(1400));
        assert_eq!(e.ipmasq, Some(false));
        assert_eq!(e.network, None);
    }

    #[test]
    fn errors_name_the_line() {
        let e =
            SubnetEnv::parse("# c\nFLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/33\n")
                .unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.to_string().starts_with("line 3: FLANNEL_SUBNET"), "{e}");
        assert_eq!(SubnetEnv::parse("garbage").unwrap_err().line, 1);
        assert_eq!(SubnetEnv::parse("\nFLANNEL_MTU=big").unwrap_err().line, 2);
        assert_eq!(SubnetEnv::parse("FLANNEL_MTU=10").unwrap_err().line, 1);
        assert_eq!(SubnetEnv::parse("FLANNEL_IPMASQ=yes").unwrap_err().line, 1);
    }

    #[test]
    fn render_roundtrip() {
        let e = SubnetEnv {
            network: Some("10.244.0.0/16".parse().unwrap()),
            subnet: Some("10.244.1.1/24".parse().unwrap()),
            mtu: Some(1450),
            ipmasq: Some(true),
        };
        let text = e.render();
        assert_eq!(
            text,
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
        );
        assert_eq!(SubnetEnv::parse(&text).unwrap(), e);
        assert_eq!(SubnetEnv::default().render(), "");
    }
}
