//! The Service environment variables kubelet gives every container (`enableServiceLinks`,
//! kubelet's `getServiceEnvVarMap` and `envvars.FromServices`): for each Service of the
//! pod's namespace with a cluster IP, and always for `kubernetes` in `default`,
//! `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT` (the first port), `<NAME>_SERVICE_PORT_<PORT
//! NAME>` and Docker's link variables `<NAME>_PORT`, `<NAME>_PORT_<N>_<PROTO>{,_PROTO,_PORT,_ADDR}`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};

/// kubelet's master services: their variables are set even with enableServiceLinks off.
const MASTER_SERVICES: [&str; 1] = ["kubernetes"];

fn env_name(s: &str) -> String {
    s.replace('-', "_").to_ascii_uppercase()
}

fn ip_set(svc: &Service) -> Option<&str> {
    svc.spec
        .as_ref()?
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

/// The variables one Service gives, in kubelet's order.
pub fn from_service(svc: &Service) -> Vec<(String, String)> {
    let (Some(ip), Some(name)) = (ip_set(svc), svc.metadata.name.as_deref()) else {
        return Vec::new();
    };
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let Some(first) = ports.first() else {
        return Vec::new();
    };
    let prefix = env_name(name);
    let mut out = vec![
        (format!("{prefix}_SERVICE_HOST"), ip.to_string()),
        (format!("{prefix}_SERVICE_PORT"), first.port.to_string()),
    ];
    for p in &ports {
        if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((
                format!("{prefix}_SERVICE_PORT_{}", env_name(pn)),
                p.port.to_string(),
            ));
        }
    }
    let host_port = |port: i32| match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(_)) => format!("[{ip}]:{port}"),
        _ => format!("{ip}:{port}"),
    };
    for (i, p) in ports.iter().enumerate() {
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        let lower = proto.to_ascii_lowercase();
        let url = format!("{lower}://{}", host_port(p.port));
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_ascii_uppercase());
        out.push((pp.clone(), url));
        out.push((format!("{pp}_PROTO"), lower));
        out.push((format!("{pp}_PORT"), p.port.to_string()));
        out.push((format!("{pp}_ADDR"), ip.to_string()));
    }
    out
}

/// The variables a pod's containers get, from every Service known (sorted by name).
pub fn for_pod<'a>(
    pod: &Pod,
    services: impl IntoIterator<Item = &'a Service>,
) -> Vec<(String, String)> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut chosen: BTreeMap<String, &Service> = BTreeMap::new();
    for svc in services {
        if ip_set(svc).is_none() {
            continue;
        }
        let (Some(name), Some(svc_ns)) = (
            svc.metadata.name.as_deref(),
            svc.metadata.namespace.as_deref(),
        ) else {
            continue;
        };
        if svc_ns == "default" && MASTER_SERVICES.contains(&name) {
            chosen.entry(name.to_string()).or_insert(svc);
        } else if svc_ns == ns && links {
            chosen.insert(name.to_string(), svc);
        }
    }
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for svc in chosen.values() {
        vars.extend(from_service(svc));
    }
    vars.into_iter().collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"clusterIP": ip, "ports": ports}
        }))
        .unwrap()
    }

    #[test]
    fn as_kubelet_sets_them() {
        let v = from_service(&svc(
            "shop",
            "my-web",
            "10.96.3.4",
            serde_json::json!([
            {"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]),
        ));
        let got: Vec<String> = v.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            got,
            [
                "MY_WEB_SERVICE_HOST=10.96.3.4",
                "MY_WEB_SERVICE_PORT=80",
                "MY_WEB_SERVICE_PORT_HTTP=80",
                "MY_WEB_SERVICE_PORT_DNS=53",
                "MY_WEB_PORT=tcp://10.96.3.4:80",
                "MY_WEB_PORT_80_TCP=tcp://10.96.3.4:80",
                "MY_WEB_PORT_80_TCP_PROTO=tcp",
                "MY_WEB_PORT_80_TCP_PORT=80",
                "MY_WEB_PORT_80_TCP_ADDR=10.96.3.4",
                "MY_WEB_PORT_53_UDP=udp://10.96.3.4:53",
                "MY_WEB_PORT_53_UDP_PROTO=udp",
                "MY_WEB_PORT_53_UDP_PORT=53",
                "MY_WEB_PORT_53_UDP_ADDR=10.96.3.4",
            ]
        );
    }

    #[test]
    fn which_services() {
        let all = [
            svc(
                "default",
                "kubernetes",
                "10.96.0.1",
                serde_json::json!([{"name": "https", "port": 443}]),
            ),
            svc(
                "shop",
                "web",
                "10.96.0.5",
                serde_json::json!([{"port": 80}]),
            ),
            svc(
                "shop",
                "headless",
                "None",
                serde_json::json!([{"port": 80}]),
            ),
            svc(
                "other",
                "db",
                "10.96.0.6",
                serde_json::json!([{"port": 5432}]),
            ),
        ];
        let pod = |links: bool| -> Pod {
            serde_json::from_value(
                serde_json::json!({"metadata": {"namespace": "shop", "name": "p"},
                "spec": {"containers": [], "enableServiceLinks": links}}),
            )
            .unwrap()
        };
        let names = |v: Vec<(String, String)>| {
            v.into_iter()
                .map(|(k, _)| k)
                .filter(|k| k.ends_with("_SERVICE_HOST"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(for_pod(&pod(true), &all)),
            ["KUBERNETES_SERVICE_HOST", "WEB_SERVICE_HOST"]
        );
        assert_eq!(
            names(for_pod(&pod(false), &all)),
            ["KUBERNETES_SERVICE_HOST"]
        );
    }
}
