//! The ADD result (and CHECK's prevResult): rendered per spec version, parsed back.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{CniError, version};

/// An interface the plugin created or configured.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    /// MAC address, `aa:bb:cc:dd:ee:ff`; left out of the JSON when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// MTU (spec 1.1.0 and later only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; `None` for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An IP address assigned to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with prefix length, rendered `"10.0.0.5/24"`.
    pub address: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    /// Index into [`CniResult::interfaces`].
    pub interface: Option<usize>,
}

/// A route to add in the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Route {
    pub dst: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<Ipv4Addr>,
}

/// DNS settings (config `dns` and result `dns` share the shape).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A CNI success result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CniResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl CniResult {
    /// An empty result for `cni_version`.
    pub fn new(cni_version: impl Into<String>) -> Self {
        CniResult {
            cni_version: cni_version.into(),
            ..Default::default()
        }
    }

    /// The result as JSON in the format of `self.cni_version`: 0.x adds `"version":"4"` to
    /// each IP and has no interface `mtu`; empty lists are left out and `dns` is always
    /// present (`{}` when empty), as the reference plugins print it.
    pub fn to_value(&self) -> Value {
        let legacy = version::is_legacy(&self.cni_version);
        let mut m = Map::new();
        m.insert("cniVersion".into(), json!(self.cni_version));
        if !self.interfaces.is_empty() {
            let ifs = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut o = Map::new();
                    o.insert("name".into(), json!(i.name));
                    if !i.mac.is_empty() {
                        o.insert("mac".into(), json!(i.mac));
                    }
                    if let (Some(mtu), false) = (i.mtu, legacy || self.cni_version == "1.0.0") {
                        o.insert("mtu".into(), json!(mtu));
                    }
                    if let Some(s) = &i.sandbox {
                        o.insert("sandbox".into(), json!(s));
                    }
                    Value::Object(o)
                })
                .collect();
            m.insert("interfaces".into(), Value::Array(ifs));
        }
        if !self.ips.is_empty() {
            let ips = self
                .ips
                .iter()
                .map(|ip| {
                    let mut o = Map::new();
                    if legacy {
                        o.insert("version".into(), json!("4"));
                    }
                    if let Some(i) = ip.interface {
                        o.insert("interface".into(), json!(i));
                    }
                    o.insert("address".into(), json!(ip.address.to_string()));
                    if let Some(gw) = ip.gateway {
                        o.insert("gateway".into(), json!(gw.to_string()));
                    }
                    Value::Object(o)
                })
                .collect();
            m.insert("ips".into(), Value::Array(ips));
        }
        if !self.routes.is_empty() {
            m.insert("routes".into(), json!(self.routes));
        }
        m.insert("dns".into(), json!(self.dns));
        Value::Object(m)
    }

    /// [`CniResult::to_value`] pretty-printed.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.to_value()).unwrap_or_default()
    }

    /// Parses a result (any supported version's format) from JSON text.
    pub fn from_json(bytes: &[u8]) -> Result<Self, CniError> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| CniError::decode(format!("CNI result is not valid JSON: {e}")))?;
        Self::from_value(&v)
    }

    /// Parses a result from a JSON value (e.g. a config's `prevResult`). IPv6 addresses and
    /// routes are refused: podnet is IPv4 only for now.
    pub fn from_value(v: &Value) -> Result<Self, CniError> {
        let raw: RawResult = serde_json::from_value(v.clone())
            .map_err(|e| CniError::decode(format!("cannot decode CNI result: {e}")))?;
        let mut ips = Vec::with_capacity(raw.ips.len());
        for (i, ip) in raw.ips.into_iter().enumerate() {
            if ip.version.as_deref().is_some_and(|v| v != "4") {
                return Err(CniError::decode(format!(
                    "result ips[{i}] is IPv{}: podnet is IPv4 only for now",
                    ip.version.unwrap_or_default()
                )));
            }
            let address: Ipv4Net = ip.address.parse().map_err(|_| {
                CniError::decode(format!(
                    "result ips[{i}].address {:?} is not an IPv4 address with prefix (e.g. \"10.0.0.5/24\")",
                    ip.address
                ))
            })?;
            let gateway = optional_ipv4(&format!("ips[{i}].gateway"), ip.gateway)?;
            ips.push(IpConfig {
                address,
                gateway,
                interface: ip.interface,
            });
        }
        let mut routes = Vec::with_capacity(raw.routes.len());
        for (i, r) in raw.routes.into_iter().enumerate() {
            let dst = r.dst.parse().map_err(|_| {
                CniError::decode(format!(
                    "result routes[{i}].dst {:?} is not an IPv4 CIDR (e.g. \"0.0.0.0/0\")",
                    r.dst
                ))
            })?;
            let gw = optional_ipv4(&format!("routes[{i}].gw"), r.gw)?;
            routes.push(Route { dst, gw });
        }
        Ok(CniResult {
            cni_version: raw.cni_version,
            interfaces: raw.interfaces,
            ips,
            routes,
            dns: raw.dns.unwrap_or_default(),
        })
    }

    /// The same result for another spec version (the formats differ only in rendering).
    pub fn with_version(mut self, cni_version: impl Into<String>) -> Self {
        self.cni_version = cni_version.into();
        self
    }
}

/// An optional address field of a result; empty text counts as absent.
fn optional_ipv4(field: &str, text: Option<String>) -> Result<Option<Ipv4Addr>, CniError> {
    match text {
        Some(g) if !g.is_empty() => g
            .parse()
            .map(Some)
            .map_err(|_| CniError::decode(format!("result {field} {g:?} is not an IPv4 address"))),
        _ => Ok(None),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawResult {
    #[serde(default)]
    cni_version: String,
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<RawIp>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    dns: Option<Dns>,
}

#[derive(Deserialize)]
struct RawIp {
    #[serde(default)]
    version: Option<String>,
    address: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(version: &str) -> CniResult {
        CniResult {
            cni_version: version.into(),
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: "00:11:22:33:44:55".into(),
                    ..Default::default()
                },
                Interface {
                    name: "veth3243".into(),
                    mac: "55:44:33:22:11:11".into(),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: "99:88:77:66:55:44".into(),
                    mtu: None,
                    sandbox: Some("/var/run/netns/blue".into()),
                },
            ],
            ips: vec![IpConfig {
                address: "10.1.0.5/16".parse().unwrap(),
                gateway: Some("10.1.0.1".parse().unwrap()),
                interface: Some(2),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: None,
            }],
            dns: Dns {
                nameservers: vec!["10.1.0.1".into()],
                ..Default::default()
            },
        }
    }

    /// The example ADD result of the spec (SPEC.md, "Add: example result").
    #[test]
    fn spec_example_1_1_0() {
        let want = json!({
          "cniVersion": "1.1.0",
          "interfaces": [
              {"name": "cni0", "mac": "00:11:22:33:44:55"},
              {"name": "veth3243", "mac": "55:44:33:22:11:11"},
              {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}
          ],
          "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2}],
          "routes": [{"dst": "0.0.0.0/0"}],
          "dns": {"nameservers": ["10.1.0.1"]}
        });
        let r = sample("1.1.0");
        let got: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(got, want);
        assert_eq!(CniResult::from_value(&want).unwrap(), r);
    }

    #[test]
    fn legacy_0_4_0_adds_ip_version() {
        let mut r = sample("0.4.0");
        r.interfaces[2].mtu = Some(1450);
        let v = r.to_value();
        assert_eq!(
            v["ips"][0],
            json!({"version":"4","interface":2,"address":"10.1.0.5/16","gateway":"10.1.0.1"})
        );
        assert!(v["interfaces"][2].get("mtu").is_none());
        let back = CniResult::from_value(&v).unwrap();
        assert_eq!(back.ips, r.ips);
        // 1.0.0: no version field, no mtu; 1.1.0: mtu
        let v = r.clone().with_version("1.0.0").to_value();
        assert!(v["ips"][0].get("version").is_none());
        assert!(v["interfaces"][2].get("mtu").is_none());
        let v = r.with_version("1.1.0").to_value();
        assert_eq!(v["interfaces"][2]["mtu"], json!(1450));
    }

    #[test]
    fn empty_lists_omitted_dns_kept() {
        let r = CniResult::new("1.0.0");
        assert_eq!(r.to_value(), json!({"cniVersion":"1.0.0","dns":{}}));
        let back = CniResult::from_json(r.to_json().as_bytes()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn parse_errors() {
        assert_eq!(CniResult::from_json(b"{").unwrap_err().code, 6);
        let v = json!({"cniVersion":"1.0.0","ips":[{"address":"fd00::5/64"}]});
        let e = CniResult::from_value(&v).unwrap_err();
        assert_eq!(e.code, 6);
        let v = json!({"cniVersion":"0.4.0","ips":[{"version":"6","address":"fd00::5/64"}]});
        assert!(
            CniResult::from_value(&v)
                .unwrap_err()
                .msg
                .contains("IPv4 only")
        );
        let v = json!({"cniVersion":"1.0.0","routes":[{"dst":"nope"}]});
        assert!(
            CniResult::from_value(&v)
                .unwrap_err()
                .msg
                .contains("routes[0].dst")
        );
        // unknown fields from newer versions are ignored
        let v = json!({"cniVersion":"1.1.0","routes":[{"dst":"10.0.0.0/8","mtu":1400,"table":5}],
                       "interfaces":[{"name":"eth0","pciID":"x"}]});
        let r = CniResult::from_value(&v).unwrap();
        assert_eq!(r.routes.len(), 1);
    }
}
