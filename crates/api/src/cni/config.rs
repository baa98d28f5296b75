//! The network configuration: the reference `bridge` plugin's fields with `host-local`'s IPAM
//! section, validated and resolved into an address [`Pool`].

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::result::{Dns, Route};
use super::{CniError, version};
use crate::net;
use crate::subnet_env::SubnetEnv;

/// The plugin's `type` (and the IPAM's).
pub const PLUGIN_TYPE: &str = "podnet-cni";
/// The bridge used when the config names none.
pub const DEFAULT_BRIDGE: &str = "cni0";
/// Where allocations are recorded when `ipam.dataDir` is not set.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/podnet/cni/networks";
/// Where the node's lease is read when `ipam.subnetFile` is not set.
pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";

/// One plugin's network configuration (what the plugin reads on stdin).
/// Unknown fields are ignored: runtimes add their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    /// Bridge device name (default `cni0`).
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// Give the bridge the gateway address.
    #[serde(default)]
    pub is_gateway: bool,
    /// Make the gateway the container's default route (implies `isGateway`).
    #[serde(default)]
    pub is_default_gateway: bool,
    /// Replace a bridge address that differs from the gateway instead of failing.
    #[serde(default)]
    pub force_address: bool,
    /// Masquerade traffic leaving the subnet. `None` when not set in the config; see
    /// [`NetConf::resolve`] for the effective value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_masq: Option<bool>,
    #[serde(default)]
    pub hairpin_mode: bool,
    #[serde(default)]
    pub promisc_mode: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub ipam: IpamConf,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    /// GC only: the attachments the runtime still knows; everything else may be released.
    #[serde(
        rename = "cni.dev/valid-attachments",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// A (container, interface) pair, as in GC's `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

/// The `ipam` section, field-compatible with `host-local`, plus `subnetFile`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub ipam_type: String,
    /// Range sets; podnet uses the first IPv4 range.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<Vec<RangeConf>>,
    /// Shorthand for a single range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// flannel-style `subnet.env` giving the node's subnet when no subnet is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_file: Option<String>,
}

/// One `host-local` range.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeConf {
    pub subnet: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// A configured route (`ipam.routes[]`) as text.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RouteConf {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// The addresses the IPAM may hand out: `[range_start, range_end]` within `subnet`, never the
/// network, broadcast or gateway address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pool {
    /// The subnet, host bits cleared.
    pub subnet: Ipv4Net,
    pub range_start: Ipv4Addr,
    pub range_end: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

/// Everything the plugin needs from the config, with defaults and `subnet.env` applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub pool: Pool,
    /// MTU for the bridge and veths: the config's, else `FLANNEL_MTU`, else `None`
    /// (leave the kernel default).
    pub mtu: Option<u32>,
    /// Whether the plugin installs masquerading: the config's `ipMasq`, else the opposite of
    /// `FLANNEL_IPMASQ` (the node already does it), else false.
    pub ip_masq: bool,
    /// Routes for the container: the IPv4 `ipam.routes`, a route to `FLANNEL_NETWORK`, and the
    /// default route via the gateway when `isDefaultGateway`.
    pub routes: Vec<Route>,
}

fn default_bridge() -> String {
    DEFAULT_BRIDGE.to_string()
}

fn invalid(msg: String) -> CniError {
    CniError::invalid_config(msg)
}

fn parse_cidr(field: &str, text: &str) -> Result<IpNet, CniError> {
    text.parse().map_err(|_| {
        invalid(format!(
            "{field} {text:?} is not a valid CIDR (expected e.g. \"10.244.1.0/24\")"
        ))
    })
}

fn parse_ip(field: &str, text: &str) -> Result<IpAddr, CniError> {
    text.parse().map_err(|_| {
        invalid(format!(
            "{field} {text:?} is not a valid IP address (expected e.g. \"10.244.1.1\")"
        ))
    })
}

fn parse_ipv4(field: &str, text: &str) -> Result<Ipv4Addr, CniError> {
    match parse_ip(field, text)? {
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(_) => Err(invalid(format!(
            "{field} {text:?} is IPv6 but its subnet is IPv4: use an IPv4 address"
        ))),
    }
}

/// Checks the spec's network-name rule; the name also names the IPAM's directory.
fn validate_name(name: &str) -> Result<(), CniError> {
    if super::env::is_cni_identifier(name) {
        Ok(())
    } else if name.is_empty() {
        Err(invalid(
            "the network configuration has no \"name\": give the network a name, e.g. \"podnet\""
                .into(),
        ))
    } else {
        Err(invalid(format!(
            "network name {name:?} is invalid: it must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
        )))
    }
}

impl Pool {
    /// Builds and checks a pool. `subnet` may carry host bits (they are cleared). Defaults:
    /// range start = first host, range end = last host, gateway = first host.
    pub fn new(
        subnet: Ipv4Net,
        range_start: Option<Ipv4Addr>,
        range_end: Option<Ipv4Addr>,
        gateway: Option<Ipv4Addr>,
    ) -> Result<Pool, CniError> {
        let subnet = subnet.trunc();
        if subnet.prefix_len() > 30 {
            return Err(invalid(format!(
                "subnet {subnet} is too small for pods: use a /30 or larger (e.g. a /24)"
            )));
        }
        let first = net::nth_host(&subnet, 1).unwrap_or(subnet.network());
        let last = Ipv4Addr::from(u32::from(subnet.broadcast()) - 1);
        let usable = |what: &str, ip: Ipv4Addr| -> Result<Ipv4Addr, CniError> {
            if !subnet.contains(&ip) {
                Err(invalid(format!(
                    "{what} {ip} is outside the subnet {subnet}"
                )))
            } else if ip == subnet.network() || ip == subnet.broadcast() {
                Err(invalid(format!(
                    "{what} {ip} is the network or broadcast address of {subnet}: use an address between {first} and {last}"
                )))
            } else {
                Ok(ip)
            }
        };
        let range_start = usable("rangeStart", range_start.unwrap_or(first))?;
        let range_end = usable("rangeEnd", range_end.unwrap_or(last))?;
        let gateway = usable("gateway", gateway.unwrap_or(first))?;
        if range_start > range_end {
            return Err(invalid(format!(
                "rangeStart {range_start} is after rangeEnd {range_end}: swap them"
            )));
        }
        let pool = Pool {
            subnet,
            range_start,
            range_end,
            gateway,
        };
        if pool.capacity() == 0 {
            return Err(invalid(format!(
                "the range {range_start}-{range_end} holds only the gateway {gateway}: widen the range"
            )));
        }
        Ok(pool)
    }

    /// True when the IPAM may hand out `ip`.
    pub fn is_allocatable(&self, ip: Ipv4Addr) -> bool {
        ip >= self.range_start
            && ip <= self.range_end
            && ip != self.gateway
            && ip != self.subnet.network()
            && ip != self.subnet.broadcast()
    }

    /// How many addresses the IPAM may hand out.
    pub fn capacity(&self) -> u32 {
        if self.range_start > self.range_end {
            return 0;
        }
        let span = u64::from(u32::from(self.range_end) - u32::from(self.range_start)) + 1;
        let mut reserved = vec![self.gateway, self.subnet.network(), self.subnet.broadcast()];
        reserved.sort();
        reserved.dedup();
        let excluded = reserved
            .iter()
            .filter(|ip| (self.range_start..=self.range_end).contains(*ip))
            .count() as u64;
        u32::try_from(span - excluded).unwrap_or(u32::MAX)
    }

    /// `ip` with the subnet's prefix length (the address to put on the interface).
    pub fn address(&self, ip: Ipv4Addr) -> Ipv4Net {
        Ipv4Net::new(ip, self.subnet.prefix_len()).unwrap_or(self.subnet)
    }
}

impl IpamConf {
    fn check_type(&self) -> Result<(), CniError> {
        match self.ipam_type.as_str() {
            "" | PLUGIN_TYPE | "host-local" => Ok(()),
            other => Err(invalid(format!(
                "ipam.type {other:?} is not supported: podnet-cni has a built-in IPAM, set ipam.type to \"{PLUGIN_TYPE}\""
            ))),
        }
    }

    /// The pool given by the config itself (`subnet` shorthand first, then the first IPv4
    /// range), or `None` when the config gives no subnet (then `subnet.env` must).
    pub fn configured_pool(&self) -> Result<Option<Pool>, CniError> {
        if let Some(subnet) = &self.subnet {
            let p = range_pool(
                "ipam.subnet",
                subnet,
                self.range_start.as_deref(),
                self.range_end.as_deref(),
                self.gateway.as_deref(),
            )?;
            return match p {
                Some(p) => Ok(Some(p)),
                None => Err(ipv4_only("ipam.subnet")),
            };
        }
        if self.ranges.is_empty() {
            return Ok(None);
        }
        let mut found = None;
        for (i, set) in self.ranges.iter().enumerate() {
            for (j, r) in set.iter().enumerate() {
                let field = format!("ipam.ranges[{i}][{j}]");
                let pool = range_pool(
                    &format!("{field}.subnet"),
                    &r.subnet,
                    r.range_start.as_deref(),
                    r.range_end.as_deref(),
                    r.gateway.as_deref(),
                )?;
                if let Some(p) = pool {
                    if j > 0 {
                        return Err(CniError::unsupported_field(format!(
                            "ipam.ranges[{i}] has more than one IPv4 range: podnet-cni uses one range per network for now; use a single larger subnet"
                        )));
                    }
                    if found.is_none() {
                        found = Some(p);
                    }
                }
            }
        }
        match found {
            Some(p) => Ok(Some(p)),
            None => Err(ipv4_only("ipam.ranges")),
        }
    }

    /// True when the config gives no subnet, so the plugin must read [`Self::subnet_file`].
    pub fn needs_subnet_env(&self) -> bool {
        self.subnet.is_none() && self.ranges.is_empty()
    }

    /// The allocation directory root (`dataDir`, default [`DEFAULT_DATA_DIR`]).
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(self.data_dir.as_deref().unwrap_or(DEFAULT_DATA_DIR))
    }

    /// The `subnet.env` path (`subnetFile`, default [`DEFAULT_SUBNET_FILE`]).
    pub fn subnet_file(&self) -> PathBuf {
        PathBuf::from(self.subnet_file.as_deref().unwrap_or(DEFAULT_SUBNET_FILE))
    }

    /// The configured IPv4 routes (IPv6 routes are skipped: podnet is IPv4 only for now).
    pub fn routes(&self) -> Result<Vec<Route>, CniError> {
        let mut out = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            let dst = match parse_cidr(&format!("ipam.routes[{i}].dst"), &r.dst)? {
                IpNet::V4(n) => n,
                IpNet::V6(_) => continue,
            };
            let gw = match &r.gw {
                Some(g) if !g.is_empty() => Some(parse_ipv4(&format!("ipam.routes[{i}].gw"), g)?),
                _ => None,
            };
            out.push(Route {
                dst: dst.trunc(),
                gw,
            });
        }
        Ok(out)
    }

    fn validate(&self) -> Result<(), CniError> {
        self.check_type()?;
        self.configured_pool()?;
        self.routes()?;
        for (field, v) in [
            ("ipam.dataDir", &self.data_dir),
            ("ipam.subnetFile", &self.subnet_file),
        ] {
            if let Some(p) = v.as_ref().filter(|p| !p.starts_with('/')) {
                return Err(invalid(format!("{field} {p:?} must be an absolute path")));
            }
        }
        Ok(())
    }
}

fn ipv4_only(field: &str) -> CniError {
    invalid(format!(
        "{field} gives only IPv6 subnets: podnet is IPv4 only for now; add an IPv4 subnet"
    ))
}

/// A pool from one range's text, `None` for an IPv6 range.
fn range_pool(
    field: &str,
    subnet: &str,
    start: Option<&str>,
    end: Option<&str>,
    gateway: Option<&str>,
) -> Result<Option<Pool>, CniError> {
    let base = field.strip_suffix(".subnet").unwrap_or("ipam");
    let net = match parse_cidr(field, subnet)? {
        IpNet::V6(_) => return Ok(None),
        IpNet::V4(n) => n,
    };
    if net.addr() != net.network() {
        return Err(invalid(format!(
            "{field} {subnet:?} has host bits set: write the network address, {}",
            net.trunc()
        )));
    }
    let opt = |name: &str, v: Option<&str>| -> Result<Option<Ipv4Addr>, CniError> {
        match v {
            Some(t) if !t.is_empty() => Ok(Some(parse_ipv4(&format!("{base}.{name}"), t)?)),
            _ => Ok(None),
        }
    };
    let start = opt("rangeStart", start)?;
    let end = opt("rangeEnd", end)?;
    let gw = opt("gateway", gateway)?;
    Pool::new(net, start, end, gw)
        .map(Some)
        .map_err(|e| invalid(format!("{base}: {}", e.msg)))
}

/// Decodes a config document and checks it is an object with a supported `cniVersion`:
/// bad JSON → code 6, unsupported or missing version → code 1.
fn decode_versioned(bytes: &[u8], what: &str) -> Result<Value, CniError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| CniError::decode(format!("the {what} is not valid JSON: {e}")))?;
    check_versioned_object(&v, what)?;
    Ok(v)
}

fn check_versioned_object(v: &Value, what: &str) -> Result<(), CniError> {
    let Value::Object(obj) = v else {
        return Err(CniError::decode(format!(
            "the {what} must be a JSON object"
        )));
    };
    version::check(obj.get("cniVersion").and_then(Value::as_str)).map(|_| ())
}

impl NetConf {
    /// Parses and validates a plugin's stdin: bad JSON → code 6, unsupported or missing
    /// `cniVersion` → code 1, wrong field types or invalid values → code 7.
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        Self::from_value(decode_versioned(bytes, "network configuration")?)
    }

    /// [`NetConf::parse`] from an already decoded value.
    pub fn from_value(v: Value) -> Result<NetConf, CniError> {
        check_versioned_object(&v, "network configuration")?;
        let mut conf: NetConf = serde_json::from_value(v)
            .map_err(|e| invalid(format!("invalid network configuration: {e}")))?;
        conf.validate()?;
        if conf.is_default_gateway {
            conf.is_gateway = true;
        }
        Ok(conf)
    }

    fn validate(&self) -> Result<(), CniError> {
        validate_name(&self.name)?;
        super::env::validate_ifname(&self.bridge).map_err(|_| {
            invalid(format!(
                "bridge {:?} is not a valid interface name: use at most 15 characters without '/', ':' or spaces, e.g. \"cni0\"",
                self.bridge
            ))
        })?;
        if let Some(mtu) = self.mtu.filter(|m| !(68..=65535).contains(m)) {
            return Err(invalid(format!("mtu {mtu} is outside 68..=65535")));
        }
        self.ipam.validate()
    }

    /// The pool to allocate from: the config's subnet, else `FLANNEL_SUBNET` from `env`.
    pub fn pool(&self, env: Option<&SubnetEnv>) -> Result<Pool, CniError> {
        if let Some(p) = self.ipam.configured_pool()? {
            return Ok(p);
        }
        let file = self.ipam.subnet_file();
        let Some(env) = env else {
            return Err(invalid(format!(
                "no subnet configured: set ipam.subnet or ipam.ranges, or run the podnet agent so that it writes {}",
                file.display()
            )));
        };
        let (Some(subnet), Some(gateway)) = (env.pod_subnet(), env.gateway()) else {
            return Err(invalid(format!(
                "no subnet configured and {} has no FLANNEL_SUBNET: set ipam.subnet, or check that the node agent has a subnet lease",
                file.display()
            )));
        };
        Pool::new(subnet, None, None, Some(gateway))
            .map_err(|e| invalid(format!("FLANNEL_SUBNET in {}: {}", file.display(), e.msg)))
    }

    /// Resolves the pool, MTU, masquerading and routes (see [`Resolved`]).
    pub fn resolve(&self, env: Option<&SubnetEnv>) -> Result<Resolved, CniError> {
        let pool = self.pool(env)?;
        let mtu = self.mtu.or(env.and_then(|e| e.mtu));
        let ip_masq = match (self.ip_masq, env.and_then(|e| e.ipmasq)) {
            (Some(m), _) => m,
            (None, Some(node_masq)) => !node_masq,
            (None, None) => false,
        };
        let mut routes = self.ipam.routes()?;
        if let Some(network) = env.and_then(|e| e.network) {
            let r = Route {
                dst: network.trunc(),
                gw: None,
            };
            if !routes.iter().any(|x| x.dst == r.dst) {
                routes.push(r);
            }
        }
        if self.is_default_gateway {
            let default: Ipv4Net = Ipv4Net::default();
            routes.retain(|r| r.dst != default);
            routes.push(Route {
                dst: default,
                gw: Some(pool.gateway),
            });
        }
        Ok(Resolved {
            pool,
            mtu,
            ip_masq,
            routes,
        })
    }

    /// The `prevResult`, parsed (CHECK, or ADD in a chain).
    pub fn prev_result(&self) -> Result<Option<super::CniResult>, CniError> {
        self.prev_result
            .as_ref()
            .map(super::CniResult::from_value)
            .transpose()
    }

    /// GC's valid attachments as (container ID, ifname) pairs; `None` when the runtime sent
    /// none.
    pub fn valid_attachment_pairs(&self) -> Option<Vec<(String, String)>> {
        self.valid_attachments.as_ref().map(|v| {
            v.iter()
                .map(|a| (a.container_id.clone(), a.ifname.clone()))
                .collect()
        })
    }
}

/// A network configuration list (`.conflist`), as a runtime reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConfList {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub disable_check: bool,
    #[serde(rename = "disableGC", default)]
    pub disable_gc: bool,
    /// Each plugin's own config object, as written in the list.
    #[serde(default)]
    pub plugins: Vec<Value>,
}

impl NetConfList {
    /// Parses and checks a conflist: JSON (6), version (1), name and plugins (7).
    pub fn parse(bytes: &[u8]) -> Result<NetConfList, CniError> {
        let v = decode_versioned(bytes, "network configuration list")?;
        let list: NetConfList = serde_json::from_value(v)
            .map_err(|e| invalid(format!("invalid network configuration list: {e}")))?;
        validate_name(&list.name)?;
        if list.plugins.is_empty() {
            return Err(invalid(format!(
                "network configuration list {:?} has no plugins: add at least one to \"plugins\"",
                list.name
            )));
        }
        for (i, p) in list.plugins.iter().enumerate() {
            match p.get("type").and_then(Value::as_str) {
                Some(t) if !t.is_empty() => {}
                _ => {
                    return Err(invalid(format!(
                        "plugins[{i}] of {:?} has no \"type\": name the plugin binary, e.g. \"{PLUGIN_TYPE}\"",
                        list.name
                    )));
                }
            }
        }
        Ok(list)
    }

    /// The `type` of plugin `i`.
    pub fn plugin_type(&self, i: usize) -> Option<&str> {
        self.plugins
            .get(i)
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
    }

    /// The config a runtime feeds plugin `i` on stdin: the plugin's object with the list's
    /// `name` and `cniVersion` copied in and `prevResult` set when given.
    pub fn plugin_config(
        &self,
        i: usize,
        prev_result: Option<&Value>,
    ) -> Result<Vec<u8>, CniError> {
        let plugin = self.plugins.get(i).ok_or_else(|| {
            CniError::internal(format!(
                "plugin index {i} is out of range: {:?} has {} plugins",
                self.name,
                self.plugins.len()
            ))
        })?;
        let mut obj: Map<String, Value> = match plugin {
            Value::Object(o) => o.clone(),
            _ => {
                return Err(invalid(format!(
                    "plugins[{i}] of {:?} is not an object",
                    self.name
                )));
            }
        };
        obj.insert("name".into(), Value::String(self.name.clone()));
        obj.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        match prev_result {
            Some(p) => {
                obj.insert("prevResult".into(), p.clone());
            }
            None => {
                obj.remove("prevResult");
            }
        }
        serde_json::to_vec(&Value::Object(obj))
            .map_err(|e| CniError::internal(format!("cannot encode plugin config: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> Result<NetConf, CniError> {
        NetConf::parse(v.to_string().as_bytes())
    }

    fn base() -> Value {
        json!({
            "cniVersion": "1.1.0",
            "name": "podnet",
            "type": "podnet-cni",
            "ipam": {"type": "podnet-cni", "subnet": "10.244.1.0/24"}
        })
    }

    fn with(mut v: Value, path: &[&str], val: Value) -> Value {
        let mut cur = &mut v;
        for p in &path[..path.len() - 1] {
            cur = &mut cur[*p];
        }
        cur[path[path.len() - 1]] = val;
        v
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults() {
        let c = parse(base()).unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(!c.is_gateway && !c.is_default_gateway && !c.hairpin_mode);
        assert_eq!(c.ip_masq, None);
        assert_eq!(c.mtu, None);
        assert_eq!(
            c.ipam.data_dir(),
            PathBuf::from("/var/lib/podnet/cni/networks")
        );
        assert_eq!(
            c.ipam.subnet_file(),
            PathBuf::from("/run/flannel/subnet.env")
        );
        let p = c.pool(None).unwrap();
        assert_eq!(p.subnet, "10.244.1.0/24".parse::<Ipv4Net>().unwrap());
        assert_eq!(p.range_start, ip("10.244.1.1"));
        assert_eq!(p.range_end, ip("10.244.1.254"));
        assert_eq!(p.gateway, ip("10.244.1.1"));
        assert_eq!(p.capacity(), 253);
        assert!(!p.is_allocatable(ip("10.244.1.1")));
        assert!(p.is_allocatable(ip("10.244.1.2")));
        assert_eq!(p.address(ip("10.244.1.9")).to_string(), "10.244.1.9/24");
    }

    #[test]
    fn all_bridge_fields_and_unknown_ignored() {
        let c = parse(json!({
            "cniVersion": "0.4.0", "name": "n1", "type": "podnet-cni", "bridge": "br-pod",
            "isDefaultGateway": true, "forceAddress": true, "ipMasq": true, "hairpinMode": true,
            "promiscMode": true, "mtu": 1450, "vlan": 0, "someRuntimeThing": {"x": 1},
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
            "runtimeConfig": {"portMappings": []}, "args": {"cni": {}},
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24",
                "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.20", "gateway": "10.0.0.254"}]],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.0.0.254"},
                           {"dst": "::/0"}],
                "dataDir": "/tmp/x"}
        }))
        .unwrap();
        assert!(c.is_gateway, "isDefaultGateway implies isGateway");
        assert!(c.force_address && c.hairpin_mode && c.promisc_mode);
        assert_eq!(c.ip_masq, Some(true));
        assert_eq!(c.mtu, Some(1450));
        assert_eq!(c.bridge, "br-pod");
        assert_eq!(c.dns.nameservers, vec!["10.96.0.10"]);
        assert!(c.runtime_config.is_some() && c.args.is_some());
        let p = c.pool(None).unwrap();
        assert_eq!(
            (p.range_start, p.range_end, p.gateway),
            (ip("10.0.0.10"), ip("10.0.0.20"), ip("10.0.0.254"))
        );
        assert_eq!(p.capacity(), 11);
        let routes = c.ipam.routes().unwrap();
        assert_eq!(routes.len(), 2, "IPv6 route skipped");
        assert_eq!(routes[1].gw, Some(ip("10.0.0.254")));
        let r = c.resolve(None).unwrap();
        assert!(r.ip_masq);
        // isDefaultGateway replaces the configured default route with one via the gateway
        assert_eq!(r.routes.last().unwrap().gw, Some(ip("10.0.0.254")));
        assert_eq!(
            r.routes.iter().filter(|r| r.dst.prefix_len() == 0).count(),
            1
        );
    }

    #[test]
    fn error_codes() {
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code, 6);
        assert_eq!(NetConf::parse(b"[1]").unwrap_err().code, 6);
        let e = parse(with(base(), &["cniVersion"], json!("0.3.1"))).unwrap_err();
        assert_eq!(e.code, 1);
        let mut v = base();
        v.as_object_mut().unwrap().remove("cniVersion");
        assert_eq!(parse(v).unwrap_err().code, 1);
        let e = parse(with(base(), &["isGateway"], json!("yes"))).unwrap_err();
        assert_eq!(e.code, 7);
        let e = parse(with(base(), &["name"], json!(""))).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("name"));
        assert_eq!(
            parse(with(base(), &["name"], json!("../etc")))
                .unwrap_err()
                .code,
            7
        );
        assert_eq!(
            parse(with(base(), &["bridge"], json!("a-very-long-bridge-name")))
                .unwrap_err()
                .code,
            7
        );
        assert_eq!(
            parse(with(base(), &["mtu"], json!(10))).unwrap_err().code,
            7
        );
    }

    #[test]
    fn semantic_errors_say_what_to_fix() {
        let cases: &[(&[&str], Value, &str)] = &[
            (
                &["ipam", "subnet"],
                json!("10.244.1.0/33"),
                "not a valid CIDR",
            ),
            (&["ipam", "subnet"], json!("10.244.1.5/24"), "host bits"),
            (&["ipam", "subnet"], json!("10.0.0.0/31"), "too small"),
            (
                &["ipam", "rangeStart"],
                json!("10.244.2.1"),
                "outside the subnet",
            ),
            (&["ipam", "rangeEnd"], json!("10.244.1.255"), "broadcast"),
            (
                &["ipam", "gateway"],
                json!("10.9.9.9"),
                "outside the subnet",
            ),
            (&["ipam", "gateway"], json!("nope"), "not a valid IP"),
            (&["ipam", "rangeStart"], json!("fd00::1"), "IPv6"),
            (&["ipam", "type"], json!("dhcp"), "ipam.type"),
            (&["ipam", "dataDir"], json!("relative/dir"), "absolute"),
        ];
        for (path, val, want) in cases {
            let e = parse(with(base(), path, val.clone())).unwrap_err();
            assert_eq!(e.code, 7, "{path:?}={val}: {e}");
            assert!(e.msg.contains(want), "{path:?}={val}: {}", e.msg);
        }
        let v = with(
            base(),
            &["ipam"],
            json!({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.3"}),
        );
        assert!(parse(v).unwrap_err().msg.contains("after rangeEnd"));
        let v = with(
            base(),
            &["ipam"],
            json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.300"}]]}),
        );
        let e = parse(v).unwrap_err();
        assert!(e.msg.contains("ipam.ranges[0][0].rangeStart"), "{}", e.msg);
        let v = with(base(), &["ipam"], json!({"routes": [{"dst": "10.0.0.0"}]}));
        assert!(parse(v).unwrap_err().msg.contains("ipam.routes[0].dst"));
    }

    #[test]
    fn ipv6_ranges() {
        let v = with(
            base(),
            &["ipam"],
            json!({"ranges": [[{"subnet": "fd00::/64"}]]}),
        );
        let e = parse(v).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("IPv4 only for now"));
        // dual stack: the IPv4 range is used
        let v = with(
            base(),
            &["ipam"],
            json!({"ranges": [[{"subnet": "fd00::/64"}], [{"subnet": "10.1.0.0/16"}]]}),
        );
        let p = parse(v).unwrap().pool(None).unwrap();
        assert_eq!(p.subnet.to_string(), "10.1.0.0/16");
        let v = with(
            base(),
            &["ipam"],
            json!({"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "10.2.0.0/24"}]]}),
        );
        assert_eq!(parse(v).unwrap_err().code, 2);
    }

    #[test]
    fn pool_from_subnet_env() {
        let v = with(base(), &["ipam"], json!({"type": "podnet-cni"}));
        let c = parse(v).unwrap();
        assert!(c.ipam.needs_subnet_env());
        let e = c.pool(None).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("/run/flannel/subnet.env"), "{}", e.msg);
        let env = SubnetEnv::parse(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        )
        .unwrap();
        let r = c.resolve(Some(&env)).unwrap();
        assert_eq!(r.pool.subnet.to_string(), "10.244.1.0/24");
        assert_eq!(r.pool.gateway, ip("10.244.1.1"));
        assert_eq!(r.pool.range_start, ip("10.244.1.1"));
        assert_eq!(r.pool.range_end, ip("10.244.1.254"));
        assert_eq!(r.mtu, Some(1450));
        assert!(!r.ip_masq, "the node masquerades, so the plugin does not");
        assert_eq!(
            r.routes,
            vec![Route {
                dst: "10.244.0.0/16".parse().unwrap(),
                gw: None
            }]
        );
        // explicit config wins over the env
        let c2 = parse(with(
            with(base(), &["mtu"], json!(1400)),
            &["ipMasq"],
            json!(true),
        ))
        .unwrap();
        let r2 = c2.resolve(Some(&env)).unwrap();
        assert_eq!(r2.mtu, Some(1400));
        assert!(r2.ip_masq);
        assert_eq!(r2.pool.subnet.to_string(), "10.244.1.0/24");
        // FLANNEL_IPMASQ=false: the plugin masquerades
        let env2 = SubnetEnv {
            ipmasq: Some(false),
            ..env.clone()
        };
        assert!(c.resolve(Some(&env2)).unwrap().ip_masq);
        // no FLANNEL_SUBNET
        let e = c.pool(Some(&SubnetEnv::default())).unwrap_err();
        assert!(e.msg.contains("FLANNEL_SUBNET"));
    }

    #[test]
    fn prev_result_and_gc_attachments() {
        let v = with(
            with(
                base(),
                &["prevResult"],
                json!({"cniVersion": "1.1.0", "ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 0}]}),
            ),
            &["cni.dev/valid-attachments"],
            json!([{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "net1"}]),
        );
        let c = parse(v).unwrap();
        let prev = c.prev_result().unwrap().unwrap();
        assert_eq!(prev.ips[0].address.to_string(), "10.244.1.5/24");
        assert_eq!(
            c.valid_attachment_pairs().unwrap(),
            vec![
                ("c1".to_string(), "eth0".to_string()),
                ("c2".to_string(), "net1".to_string())
            ]
        );
        assert_eq!(parse(base()).unwrap().valid_attachment_pairs(), None);
    }

    #[test]
    fn pool_new_edges() {
        let n: Ipv4Net = "10.0.0.0/30".parse().unwrap();
        let p = Pool::new(n, None, None, None).unwrap();
        assert_eq!(
            (p.range_start, p.range_end, p.gateway),
            (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.1"))
        );
        assert_eq!(p.capacity(), 1);
        let e = Pool::new(n, Some(ip("10.0.0.1")), Some(ip("10.0.0.1")), None).unwrap_err();
        assert!(e.msg.contains("only the gateway"));
        let p = Pool::new("10.0.0.0/29".parse().unwrap(), None, None, None).unwrap();
        assert_eq!(p.capacity(), 5);
        let odd = Pool {
            range_start: ip("10.0.0.6"),
            range_end: ip("10.0.0.2"),
            ..p
        };
        assert_eq!(odd.capacity(), 0);
    }

    /// The "mynet" bridge + host-local example from the CNI README, with the types renamed.
    #[test]
    fn reference_conflist() {
        let text = r#"{
            "cniVersion": "1.0.0",
            "name": "mynet",
            "plugins": [
                {
                    "type": "podnet-cni",
                    "bridge": "cni0",
                    "isGateway": true,
                    "ipMasq": true,
                    "ipam": {
                        "type": "podnet-cni",
                        "subnet": "10.22.0.0/16",
                        "routes": [
                            { "dst": "0.0.0.0/0" }
                        ]
                    }
                }
            ]
        }"#;
        let list = NetConfList::parse(text.as_bytes()).unwrap();
        assert_eq!(list.name, "mynet");
        assert!(!list.disable_check && !list.disable_gc);
        assert_eq!(list.plugin_type(0), Some("podnet-cni"));
        let bytes = list.plugin_config(0, None).unwrap();
        let c = NetConf::parse(&bytes).unwrap();
        assert_eq!(c.name, "mynet");
        assert_eq!(c.cni_version, "1.0.0");
        assert!(c.is_gateway && !c.is_default_gateway);
        assert_eq!(c.ip_masq, Some(true));
        let r = c.resolve(None).unwrap();
        assert_eq!(r.pool.subnet.to_string(), "10.22.0.0/16");
        assert_eq!(r.pool.gateway, ip("10.22.0.1"));
        assert_eq!(r.pool.range_end, ip("10.22.255.254"));
        assert_eq!(
            r.routes,
            vec![Route {
                dst: Ipv4Net::default(),
                gw: None
            }]
        );

        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.22.0.2/16"}]});
        let c = NetConf::parse(&list.plugin_config(0, Some(&prev)).unwrap()).unwrap();
        assert_eq!(c.prev_result, Some(prev));
        assert_eq!(list.plugin_config(1, None).unwrap_err().code, 100);
    }

    #[test]
    fn conflist_errors() {
        assert_eq!(NetConfList::parse(b"nope").unwrap_err().code, 6);
        let e =
            NetConfList::parse(br#"{"cniVersion":"9.9.9","name":"n","plugins":[{"type":"x"}]}"#)
                .unwrap_err();
        assert_eq!(e.code, 1);
        let e =
            NetConfList::parse(br#"{"cniVersion":"1.1.0","name":"n","plugins":[]}"#).unwrap_err();
        assert_eq!(e.code, 7);
        let e =
            NetConfList::parse(br#"{"cniVersion":"1.1.0","name":"n","plugins":[{"bridge":"x"}]}"#)
                .unwrap_err();
        assert!(e.msg.contains("plugins[0]"));
        let l = NetConfList::parse(
            br#"{"cniVersion":"1.1.0","name":"n","disableCheck":true,"disableGC":true,"plugins":[{"type":"x","name":"other","cniVersion":"0.4.0"}]}"#,
        )
        .unwrap();
        assert!(l.disable_check && l.disable_gc);
        let v: Value = serde_json::from_slice(&l.plugin_config(0, None).unwrap()).unwrap();
        assert_eq!(v, json!({"type":"x","name":"n","cniVersion":"1.1.0"}));
    }
}
