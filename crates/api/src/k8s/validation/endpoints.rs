//! Endpoints (`SetDefaults_Endpoints`, `ValidateEndpoints`) and discovery.k8s.io/v1
//! EndpointSlices (`SetDefaults_EndpointPort`, `ValidateEndpointSlice`).

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::{Value, json};

use super::FieldError;
use super::meta::{self, MetaRules};
use super::names::{
    NameRule, dns1123_label_errors, dns1123_subdomain_errors, inclusive_range_error, invalid_each,
    parse_ip_sloppy, port_num_errors, validate_dns1123_label, validate_ip, validate_labels,
    validate_non_special_ip, validate_qualified_name,
};
use super::pod::protocol_errors;
use super::util::{arr, child, default_to, get, index, items_mut, opt_i, opt_s, s};

const ENDPOINTS_META: MetaRules = MetaRules {
    name: NameRule::Dns1123Subdomain,
    namespaced: true,
    core: true,
};

const SLICE_META: MetaRules = MetaRules {
    name: NameRule::Dns1123Subdomain,
    namespaced: true,
    core: false,
};

const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
const MAX_ENDPOINTS: usize = 1000;
const MAX_ADDRESSES: usize = 100;
const MAX_PORTS: usize = 20000;
const MAX_TOPOLOGY_LABELS: usize = 16;

// ---------------------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------------------

pub fn apply_endpoints_defaults(ep: &mut Value) {
    for subset in items_mut(ep, "subsets") {
        for port in items_mut(subset, "ports") {
            default_to(port, "protocol", json!("TCP"));
        }
    }
}

pub fn validate_endpoints(ep: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate(ep, ENDPOINTS_META);
    for (n, subset) in arr(ep, "subsets").iter().enumerate() {
        let sp = index("subsets", n);
        let (ready, not_ready) = (arr(subset, "addresses"), arr(subset, "notReadyAddresses"));
        if ready.is_empty() && not_ready.is_empty() {
            errs.push(FieldError::required(
                &sp,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for (key, list) in [("addresses", ready), ("notReadyAddresses", not_ready)] {
            for (a, address) in list.iter().enumerate() {
                errs.extend(validate_endpoint_address(
                    address,
                    &index(&child(&sp, key), a),
                ));
            }
        }
        let ports = arr(subset, "ports");
        for (p, port) in ports.iter().enumerate() {
            errs.extend(validate_endpoint_port(
                port,
                ports.len() > 1,
                &index(&child(&sp, "ports"), p),
            ));
        }
    }
    errs
}

fn validate_endpoint_address(address: &Value, p: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ip = s(address, "ip");
    let ip_path = child(p, "ip");
    let ip_errs = validate_ip(ip, &ip_path);
    if ip_errs.is_empty() {
        errs.extend(validate_non_special_ip(ip, &ip_path));
    } else {
        errs.extend(ip_errs);
    }
    let hostname = s(address, "hostname");
    if !hostname.is_empty() {
        errs.extend(validate_dns1123_label(hostname, &child(p, "hostname")));
    }
    if let Some(node) = opt_s(address, "nodeName") {
        errs.extend(invalid_each(
            &child(p, "nodeName"),
            node,
            dns1123_subdomain_errors(node),
        ));
    }
    errs
}

fn validate_endpoint_port(port: &Value, require_name: bool, p: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = s(port, "name");
    if require_name && name.is_empty() {
        errs.push(FieldError::required(child(p, "name"), ""));
    } else if !name.is_empty() {
        errs.extend(validate_dns1123_label(name, &child(p, "name")));
    }
    let number = opt_i(port, "port").unwrap_or(0);
    for msg in port_num_errors(number) {
        errs.push(FieldError::invalid(child(p, "port"), &number, msg));
    }
    errs.extend(protocol_errors(s(port, "protocol"), &child(p, "protocol")));
    if let Some(app) = opt_s(port, "appProtocol") {
        errs.extend(validate_qualified_name(app, &child(p, "appProtocol")));
    }
    errs
}

// ---------------------------------------------------------------------------------------
// EndpointSlices
// ---------------------------------------------------------------------------------------

pub fn apply_slice_defaults(slice: &mut Value) {
    for port in items_mut(slice, "ports") {
        default_to(port, "protocol", json!("TCP"));
        if get(port, "name").is_none() {
            port["name"] = json!("");
        }
    }
}

pub fn validate_slice(slice: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate(slice, SLICE_META);
    let address_type = s(slice, "addressType");
    if address_type.is_empty() {
        errs.push(FieldError::required("addressType", ""));
    } else if !ADDRESS_TYPES.contains(&address_type) {
        errs.push(FieldError::not_supported(
            "addressType",
            address_type,
            ADDRESS_TYPES,
        ));
    }
    errs.extend(validate_slice_endpoints(
        arr(slice, "endpoints"),
        address_type,
    ));
    errs.extend(validate_slice_ports(arr(slice, "ports")));
    errs
}

fn validate_slice_endpoints(endpoints: &[Value], address_type: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if endpoints.len() > MAX_ENDPOINTS {
        errs.push(FieldError::too_many(
            "endpoints",
            endpoints.len(),
            MAX_ENDPOINTS,
        ));
        return errs;
    }
    for (n, endpoint) in endpoints.iter().enumerate() {
        let ep = index("endpoints", n);
        let addresses_path = child(&ep, "addresses");
        let addresses = arr(endpoint, "addresses");
        if addresses.is_empty() {
            errs.push(FieldError::required(
                &addresses_path,
                "must contain at least 1 address",
            ));
        } else if addresses.len() > MAX_ADDRESSES {
            errs.push(FieldError::too_many(
                &addresses_path,
                addresses.len(),
                MAX_ADDRESSES,
            ));
        }
        for (a, address) in addresses.iter().enumerate() {
            let address = address.as_str().unwrap_or("");
            let ap = index(&addresses_path, a);
            match address_type {
                "IPv4" | "IPv6" => {
                    let v4 = address_type == "IPv4";
                    let ok = match parse_ip_sloppy(address) {
                        Some(IpAddr::V4(_)) => v4,
                        Some(IpAddr::V6(v6)) => !v4 && v6.to_ipv4_mapped().is_none(),
                        None => false,
                    };
                    if ok {
                        errs.extend(validate_non_special_ip(address, &ap));
                    } else {
                        let msg = if v4 {
                            "must be a valid IPv4 address"
                        } else {
                            "must be a valid IPv6 address"
                        };
                        errs.push(FieldError::invalid(&ap, address, msg));
                    }
                }
                "FQDN" => errs.extend(validate_fqdn(address, &ap)),
                _ => {}
            }
        }
        if let Some(node) = opt_s(endpoint, "nodeName") {
            errs.extend(invalid_each(
                &child(&ep, "nodeName"),
                node,
                dns1123_subdomain_errors(node),
            ));
        }
        if let Some(topology) = get(endpoint, "deprecatedTopology") {
            let tp = child(&ep, "deprecatedTopology");
            let count = topology.as_object().map_or(0, |m| m.len());
            if count > MAX_TOPOLOGY_LABELS {
                errs.push(FieldError::too_many(&tp, count, MAX_TOPOLOGY_LABELS));
            }
            errs.extend(validate_labels(topology, &tp));
        }
        if let Some(hostname) = opt_s(endpoint, "hostname") {
            errs.extend(validate_dns1123_label(hostname, &child(&ep, "hostname")));
        }
    }
    errs
}

/// `IsFullyQualifiedDomainName`.
fn validate_fqdn(name: &str, p: &str) -> Vec<FieldError> {
    if name.is_empty() {
        return vec![FieldError::required(p, "")];
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let msgs = dns1123_subdomain_errors(name);
    if !msgs.is_empty() {
        return vec![FieldError::invalid(p, name, msgs.join(","))];
    }
    if name.split('.').count() < 2 {
        return vec![FieldError::invalid(
            p,
            name,
            "should be a domain with at least two segments separated by dots",
        )];
    }
    for label in name.split('.') {
        let msgs = dns1123_label_errors(label);
        if !msgs.is_empty() {
            return vec![FieldError::invalid(p, label, msgs.join(","))];
        }
    }
    Vec::new()
}

fn validate_slice_ports(ports: &[Value]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if ports.len() > MAX_PORTS {
        errs.push(FieldError::too_many("ports", ports.len(), MAX_PORTS));
        return errs;
    }
    let mut names: HashSet<&str> = HashSet::new();
    for (n, port) in ports.iter().enumerate() {
        let pp = index("ports", n);
        let name = s(port, "name");
        if !name.is_empty() {
            errs.extend(validate_dns1123_label(name, &child(&pp, "name")));
        }
        if !names.insert(name) {
            errs.push(FieldError::duplicate(child(&pp, "name"), name));
        }
        if let Some(number) = opt_i(port, "port")
            && !(0..=65535).contains(&number)
        {
            errs.push(FieldError::invalid(
                child(&pp, "port"),
                &number,
                inclusive_range_error(0, 65535),
            ));
        }
        match opt_s(port, "protocol") {
            None => errs.push(FieldError::required(child(&pp, "protocol"), "")),
            Some(protocol) => errs.extend(protocol_errors(protocol, &child(&pp, "protocol"))),
        }
        if let Some(app) = opt_s(port, "appProtocol") {
            errs.extend(validate_qualified_name(app, &child(&pp, "appProtocol")));
        }
    }
    errs
}

/// `ValidateEndpointSliceUpdate`: the address type is fixed.
pub fn validate_slice_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let (n, o) = (s(new, "addressType"), s(old, "addressType"));
    if n == o {
        Vec::new()
    } else {
        vec![meta::immutable("addressType", n)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(subsets: Value) -> Value {
        let mut e = json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "web", "namespace": "default"}, "subsets": subsets});
        apply_endpoints_defaults(&mut e);
        e
    }

    fn slice(address_type: &str, endpoints: Value, ports: Value) -> Value {
        let mut e = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abc12", "namespace": "default"},
            "addressType": address_type, "endpoints": endpoints, "ports": ports});
        apply_slice_defaults(&mut e);
        e
    }

    fn errors(errs: Vec<FieldError>) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn endpoints_defaults_and_validation() {
        let ok = endpoints(
            json!([{"addresses": [{"ip": "10.244.1.5", "nodeName": "node-1", "hostname": "web-0"}],
            "notReadyAddresses": [{"ip": "fd00::5"}],
            "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}]),
        );
        assert_eq!(ok["subsets"][0]["ports"][0]["protocol"], "TCP");
        assert!(
            validate_endpoints(&ok).is_empty(),
            "{:?}",
            errors(validate_endpoints(&ok))
        );
        let empty = endpoints(json!([]));
        assert!(validate_endpoints(&empty).is_empty());

        let bad = endpoints(json!([
            {"ports": [{"port": 80}]},
            {"addresses": [{"ip": "10.0.0"}, {"ip": "127.0.0.1", "hostname": "A", "nodeName": "N"}],
             "ports": [{"port": 0, "name": "a"}, {"port": 70000, "protocol": "ABC"}]}
        ]));
        let errs = errors(validate_endpoints(&bad));
        assert_eq!(
            errs[0],
            "subsets[0]: Required value: must specify `addresses` or `notReadyAddresses`"
        );
        assert_eq!(
            errs[1],
            "subsets[1].addresses[0].ip: Invalid value: \"10.0.0\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
        );
        assert_eq!(
            errs[2],
            "subsets[1].addresses[1].ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)"
        );
        assert!(errs[3].starts_with(
            "subsets[1].addresses[1].hostname: Invalid value: \"A\": a lowercase RFC 1123 label"
        ));
        assert!(errs[4].starts_with(
            "subsets[1].addresses[1].nodeName: Invalid value: \"N\": a lowercase RFC 1123 subdomain"
        ));
        assert_eq!(
            errs[5],
            "subsets[1].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        );
        assert_eq!(errs[6], "subsets[1].ports[1].name: Required value");
        assert_eq!(
            errs[7],
            "subsets[1].ports[1].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        assert_eq!(
            errs[8],
            "subsets[1].ports[1].protocol: Unsupported value: \"ABC\": supported values: \"SCTP\", \"TCP\", \"UDP\""
        );
        assert_eq!(errs.len(), 9, "{errs:?}");
    }

    #[test]
    fn slice_defaults_and_validation() {
        let ok = slice(
            "IPv4",
            json!([{"addresses": ["10.244.1.5"], "conditions": {"ready": true}, "nodeName": "node-1",
                "hostname": "web-0", "zone": "a"}]),
            json!([{"port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "any", "port": null}]),
        );
        assert_eq!(
            ok["ports"][0],
            json!({"port": 80, "name": "", "protocol": "TCP"})
        );
        assert!(
            validate_slice(&ok).is_empty(),
            "{:?}",
            errors(validate_slice(&ok))
        );

        let bad = slice(
            "IPv4",
            json!([{"addresses": []}, {"addresses": ["fd00::1", "0.0.0.0", "x"], "hostname": "a.b"}]),
            json!([{"port": 80}, {"port": 81}, {"name": "Bad", "port": 70000, "protocol": "ABC"}]),
        );
        assert_eq!(
            errors(validate_slice(&bad)),
            vec![
                "endpoints[0].addresses: Required value: must contain at least 1 address",
                "endpoints[1].addresses[0]: Invalid value: \"fd00::1\": must be a valid IPv4 address",
                "endpoints[1].addresses[1]: Invalid value: \"0.0.0.0\": may not be unspecified (0.0.0.0)",
                "endpoints[1].addresses[2]: Invalid value: \"x\": must be a valid IPv4 address",
                "endpoints[1].hostname: Invalid value: \"a.b\": must not contain dots",
                "ports[1].name: Duplicate value: \"\"",
                "ports[2].name: Invalid value: \"Bad\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                "ports[2].port: Invalid value: 70000: must be between 0 and 65535, inclusive",
                "ports[2].protocol: Unsupported value: \"ABC\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            ]
        );
        let mut no_protocol = slice(
            "IPv6",
            json!([{"addresses": ["fd00::1", "10.0.0.1"]}]),
            json!([{"port": 1}]),
        );
        no_protocol["ports"][0]["protocol"] = Value::Null;
        assert_eq!(
            errors(validate_slice(&no_protocol)),
            vec![
                "endpoints[0].addresses[1]: Invalid value: \"10.0.0.1\": must be a valid IPv6 address",
                "ports[0].protocol: Required value",
            ]
        );
        let mut missing = slice("", json!([]), json!([]));
        assert_eq!(
            errors(validate_slice(&missing)),
            vec!["addressType: Required value"]
        );
        missing["addressType"] = json!("IPv5");
        assert_eq!(
            errors(validate_slice(&missing)),
            vec![
                "addressType: Unsupported value: \"IPv5\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""
            ]
        );
        let many: Vec<String> = (0..101)
            .map(|n| format!("10.0.{}.{}", n / 250, n % 250 + 1))
            .collect();
        let too_many = slice("IPv4", json!([{"addresses": many}]), json!([]));
        assert_eq!(
            errors(validate_slice(&too_many)),
            vec!["endpoints[0].addresses: Too many: 101: must have at most 100 items"]
        );
    }

    #[test]
    fn fqdn_slices() {
        let s = slice(
            "FQDN",
            json!([{"addresses": ["db.example.com.", "localhost", "Bad.example", ""]}]),
            json!([]),
        );
        let errs = errors(validate_slice(&s));
        assert_eq!(
            errs[0],
            "endpoints[0].addresses[1]: Invalid value: \"localhost\": should be a domain with at least two segments separated by dots"
        );
        assert!(errs[1].starts_with("endpoints[0].addresses[2]: Invalid value: \"Bad.example\": a lowercase RFC 1123 subdomain"));
        assert_eq!(errs[2], "endpoints[0].addresses[3]: Required value");
        assert_eq!(errs.len(), 3);
    }

    #[test]
    fn slice_updates() {
        let old = slice("IPv4", json!([]), json!([]));
        assert!(validate_slice_update(&old, &old).is_empty());
        let new = slice("IPv6", json!([]), json!([]));
        assert_eq!(
            errors(validate_slice_update(&new, &old)),
            vec!["addressType: Invalid value: \"IPv6\": field is immutable"]
        );
    }
}
