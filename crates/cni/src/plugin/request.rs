//! What the runtime asks for one attachment besides the network's config: a static
//! address and a MAC, from the places host-local and the reference bridge plugin read them:
//!
//! - `CNI_ARGS` `IP=` (one address or several, comma-separated, each with or without a
//!   prefix length) and `MAC=`, as `podman run --ip/--mac-address` with the CNI backend
//!   passes them;
//! - the config's `args.cni.ips` / `args.cni.mac` (the CNI conventions' `args`);
//! - `runtimeConfig.ips` / `runtimeConfig.mac`, which libcni fills in when the conflist
//!   declares the `ips` / `mac` capabilities.
//!
//! Every source is honoured or refused with an error naming it; none is ignored. Sources
//! that agree are fine; two different addresses (or MACs) are refused, since podnet gives
//! one IPv4 address per attachment.

use std::net::{IpAddr, Ipv4Addr};

use podnet_api::cni::{CniEnv, CniError, NetConf};
use podnet_kernel::link::{format_mac, parse_mac};
use serde_json::Value;

/// The attachment's requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requested {
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<[u8; 6]>,
}

/// One source's error: code 4 for `CNI_ARGS` (an environment variable), 7 for the config.
fn refuse(source: &str, msg: String) -> CniError {
    if source.starts_with("CNI_ARGS") {
        CniError::invalid_env(format!("{source}: {msg}"))
    } else {
        CniError::invalid_config(format!("{source}: {msg}"))
    }
}

/// Reads the requests of `env` and `conf`.
pub fn requested(env: &CniEnv, conf: &NetConf) -> Result<Requested, CniError> {
    let mut ips: Vec<(String, Ipv4Addr)> = Vec::new();
    let mut macs: Vec<(String, [u8; 6])> = Vec::new();
    let mut add_ip = |source: &str, text: &str| -> Result<(), CniError> {
        if let Some(ip) = parse_ip(source, text)? {
            ips.push((source.to_string(), ip));
        }
        Ok(())
    };
    if let Some(list) = env.arg("IP") {
        for item in list.split(',') {
            add_ip("CNI_ARGS IP", item)?;
        }
    }
    let cni_args = conf.args.as_ref().and_then(|a| a.get("cni"));
    for (source, value) in [
        ("args.cni.ips", cni_args.and_then(|c| c.get("ips"))),
        (
            "runtimeConfig.ips",
            conf.runtime_config.as_ref().and_then(|r| r.get("ips")),
        ),
    ] {
        for text in string_list(source, value)? {
            add_ip(source, &text)?;
        }
    }
    let mut add_mac = |source: &str, text: &str| -> Result<(), CniError> {
        if let Some(mac) = parse_unicast_mac(source, text)? {
            macs.push((source.to_string(), mac));
        }
        Ok(())
    };
    if let Some(text) = env.arg("MAC") {
        add_mac("CNI_ARGS MAC", text)?;
    }
    for (source, value) in [
        ("args.cni.mac", cni_args.and_then(|c| c.get("mac"))),
        (
            "runtimeConfig.mac",
            conf.runtime_config.as_ref().and_then(|r| r.get("mac")),
        ),
    ] {
        match value {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) => add_mac(source, text)?,
            Some(other) => {
                return Err(refuse(
                    source,
                    format!(
                        "{other} is not a MAC address string (expected e.g. \"0a:58:0a:f4:01:05\")"
                    ),
                ));
            }
        }
    }
    Ok(Requested {
        ip: one("IP address", &ips, |ip| ip.to_string())?,
        mac: one("MAC address", &macs, format_mac)?,
    })
}

/// The single value the sources agree on; an error naming them when they do not.
fn one<T: Copy + PartialEq>(
    what: &str,
    found: &[(String, T)],
    show: impl Fn(&T) -> String,
) -> Result<Option<T>, CniError> {
    let Some((first_source, first)) = found.first() else {
        return Ok(None);
    };
    match found.iter().find(|(_, v)| v != first) {
        None => Ok(Some(*first)),
        Some((source, other)) => Err(CniError::invalid_config(format!(
            "more than one {what} requested ({} from {first_source}, {} from {source}): \
             podnet-cni gives an attachment one IPv4 address and one MAC; ask for one",
            show(first),
            show(other)
        ))),
    }
}

/// A list of strings (`None`/`null`: empty).
fn string_list(source: &str, value: Option<&Value>) -> Result<Vec<String>, CniError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    refuse(
                        source,
                        format!("{v} is not an address string (expected e.g. \"10.244.1.5/24\")"),
                    )
                })
            })
            .collect(),
        Some(other) => Err(refuse(
            source,
            format!("{other} is not a list of addresses (expected e.g. [\"10.244.1.5/24\"])"),
        )),
    }
}

/// An address with or without a prefix length; `None` for an empty item.
fn parse_ip(source: &str, text: &str) -> Result<Option<Ipv4Addr>, CniError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let parsed = if text.contains('/') {
        text.parse::<ipnet::IpNet>().map(|n| n.addr()).ok()
    } else {
        text.parse::<IpAddr>().ok()
    };
    let Some(ip) = parsed else {
        return Err(refuse(
            source,
            format!(
                "{text:?} is not an IP address (expected e.g. \"10.244.1.5\" or \"10.244.1.5/24\")"
            ),
        ));
    };
    match ip {
        IpAddr::V4(v4) => Ok(Some(v4)),
        IpAddr::V6(_) => Err(refuse(
            source,
            format!("{text} is IPv6: podnet is IPv4 only for now; ask for an IPv4 address"),
        )),
    }
}

/// A unicast MAC (`aa:bb:cc:dd:ee:ff`, any case); `None` for an empty value.
fn parse_unicast_mac(source: &str, text: &str) -> Result<Option<[u8; 6]>, CniError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let mac = parse_mac(text).filter(|_| text.len() == 17).ok_or_else(|| {
        refuse(
            source,
            format!("{text:?} is not a MAC address (expected six hex bytes, e.g. \"0a:58:0a:f4:01:05\")"),
        )
    })?;
    if mac[0] & 1 == 1 {
        return Err(refuse(
            source,
            format!(
                "{text} is a multicast address: an interface needs a unicast MAC (even first byte)"
            ),
        ));
    }
    if mac == [0; 6] {
        return Err(refuse(
            source,
            format!("{text} is all zeros: give the interface a real MAC"),
        ));
    }
    Ok(Some(mac))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn env(args: &str) -> CniEnv {
        CniEnv::from_getter(|k| match k {
            "CNI_COMMAND" => Some("ADD".into()),
            "CNI_CONTAINERID" => Some("c1".into()),
            "CNI_NETNS" => Some("/run/netns/x".into()),
            "CNI_IFNAME" => Some("eth0".into()),
            "CNI_ARGS" => Some(args.into()),
            _ => None,
        })
        .unwrap()
    }

    fn conf(extra: Value) -> NetConf {
        let mut v = json!({
            "cniVersion": "1.0.0", "name": "n", "type": "podnet-cni",
            "ipam": {"subnet": "10.244.1.0/24"}
        });
        if let (Value::Object(b), Value::Object(e)) = (&mut v, extra) {
            b.extend(e);
        }
        NetConf::from_value(v).unwrap()
    }

    fn ip(s: &str) -> Option<Ipv4Addr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn nothing_requested() {
        let r = requested(&env("IgnoreUnknown=1;K8S_POD_NAME=web"), &conf(json!({}))).unwrap();
        assert_eq!(r, Requested::default());
        let r = requested(&env("IP=;MAC="), &conf(json!({}))).unwrap();
        assert_eq!(r, Requested::default());
    }

    #[test]
    fn every_source_is_read() {
        let r = requested(
            &env("IgnoreUnknown=1;IP=10.244.1.77;MAC=0A:58:0a:f4:01:4d"),
            &conf(json!({})),
        )
        .unwrap();
        assert_eq!(r.ip, ip("10.244.1.77"));
        assert_eq!(r.mac, Some([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x4d]));
        let r = requested(
            &env(""),
            &conf(json!({"runtimeConfig": {"ips": ["10.244.1.9/24"], "mac": "02:00:00:00:00:09"}})),
        )
        .unwrap();
        assert_eq!(r.ip, ip("10.244.1.9"));
        assert_eq!(r.mac, Some([2, 0, 0, 0, 0, 9]));
        let r = requested(
            &env(""),
            &conf(json!({"args": {"cni": {"ips": ["10.244.1.10"], "mac": "02:00:00:00:00:0a"}}})),
        )
        .unwrap();
        assert_eq!(r.ip, ip("10.244.1.10"));
        // Sources that agree are one request.
        let r = requested(
            &env("IP=10.244.1.11/24"),
            &conf(json!({"runtimeConfig": {"ips": ["10.244.1.11/24"]}})),
        )
        .unwrap();
        assert_eq!(r.ip, ip("10.244.1.11"));
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        let cases: &[(&str, Value, u32, &str)] = &[
            ("IP=10.244.1.300", json!({}), 4, "CNI_ARGS IP"),
            ("IP=fd00::5", json!({}), 4, "IPv6"),
            ("IP=10.244.1.5,10.244.1.6", json!({}), 7, "more than one IP"),
            (
                "IP=10.244.1.5",
                json!({"runtimeConfig": {"ips": ["10.244.1.6/24"]}}),
                7,
                "runtimeConfig.ips",
            ),
            ("MAC=zz:00:00:00:00:01", json!({}), 4, "CNI_ARGS MAC"),
            ("MAC=02:00:00:00:01", json!({}), 4, "not a MAC"),
            ("MAC=01:00:5e:00:00:01", json!({}), 4, "multicast"),
            ("MAC=00:00:00:00:00:00", json!({}), 4, "all zeros"),
            (
                "",
                json!({"runtimeConfig": {"ips": "10.244.1.5"}}),
                7,
                "runtimeConfig.ips",
            ),
            (
                "",
                json!({"runtimeConfig": {"mac": 5}}),
                7,
                "runtimeConfig.mac",
            ),
            (
                "MAC=02:00:00:00:00:01",
                json!({"runtimeConfig": {"mac": "02:00:00:00:00:02"}}),
                7,
                "more than one MAC",
            ),
        ];
        for (args, extra, code, want) in cases {
            let e = requested(&env(args), &conf(extra.clone())).unwrap_err();
            assert_eq!(e.code, *code, "{args} {extra}: {e:?}");
            assert!(e.msg.contains(want), "{args} {extra}: {}", e.msg);
        }
    }
}
