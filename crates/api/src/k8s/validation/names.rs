//! Name, label and address rules of `k8s.io/apimachinery/pkg/util/validation`, with its
//! messages. The `*_errors` functions return every message, as Kubernetes' `Is*` functions
//! do; the public `is_*` ones join them.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::Value;

use super::FieldError;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const DNS1035_LABEL_MAX: usize = 63;
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_MAX: usize = 63;
const ENV_VAR_NAME_FMT: &str = "[-._a-zA-Z][-._a-zA-Z0-9]*";
const ENV_VAR_NAME_ERR: &str = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit";
const HTTP_HEADER_NAME_FMT: &str = "[-A-Za-z0-9]+";
const HTTP_HEADER_NAME_ERR: &str =
    "a valid HTTP header must consist of alphanumeric characters or '-'";

/// The total size of a object's annotations (keys and values), 256 KiB.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// `validation.RegexError`.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (n, e) in examples.iter().enumerate() {
        if n > 0 {
            out.push_str(" or ");
        }
        out.push('\'');
        out.push_str(e);
        out.push_str("', ");
    }
    out.push_str("regex used for validation is '");
    out.push_str(fmt);
    out.push_str("')");
    out
}

/// `validation.MaxLenError`.
fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// `validation.InclusiveRangeError`.
pub fn inclusive_range_error(lo: i64, hi: i64) -> String {
    format!("must be between {lo} and {hi}, inclusive")
}

/// The empty-value message, `validation.EmptyError`.
const EMPTY_ERROR: &str = "must be non-empty";

fn is_alnum_lower(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` (or `[a-z]...` with `alpha_first`), whole string.
fn matches_label(s: &str, alpha_first: bool) -> bool {
    let b = s.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    let first_ok = if alpha_first {
        first.is_ascii_lowercase()
    } else {
        is_alnum_lower(first)
    };
    first_ok && is_alnum_lower(last) && b.iter().all(|&c| is_alnum_lower(c) || c == b'-')
}

fn matches_subdomain(s: &str) -> bool {
    s.split('.').all(|part| matches_label(part, false))
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, whole string.
fn matches_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// `IsDNS1123Label`.
pub fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        errs.push(max_len_error(DNS1123_LABEL_MAX));
    }
    if !matches_label(s, false) {
        if matches_subdomain(s) {
            errs.push("must not contain dots".to_owned());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_ERR,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// `IsDNS1123Subdomain`.
pub fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    if !matches_subdomain(s) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// `IsDNS1035Label`.
pub fn dns1035_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1035_LABEL_MAX {
        errs.push(max_len_error(DNS1035_LABEL_MAX));
    }
    if !matches_label(s, true) {
        errs.push(regex_error(
            DNS1035_LABEL_ERR,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// `IsQualifiedName`: an optional DNS subdomain prefix and `/`, then a name of at most 63
/// characters.
pub fn qualified_name_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push(format!("prefix part {EMPTY_ERROR}"));
            } else {
                for msg in dns1123_subdomain_errors(prefix) {
                    errs.push(format!("prefix part {msg}"));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_ERR,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push(format!("name part {EMPTY_ERROR}"));
    } else if name.len() > QUALIFIED_NAME_MAX {
        errs.push(format!("name part {}", max_len_error(QUALIFIED_NAME_MAX)));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `IsValidLabelValue`.
pub fn label_value_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > LABEL_VALUE_MAX {
        errs.push(max_len_error(LABEL_VALUE_MAX));
    }
    if !s.is_empty() && !matches_qualified_name_part(s) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// `IsValidPortName` (an IANA_SVC_NAME).
pub fn port_name_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 15 {
        errs.push(max_len_error(15));
    }
    if s.is_empty() || !s.bytes().all(|c| is_alnum_lower(c) || c == b'-') {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_owned(),
        );
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_owned());
    }
    if s.contains("--") {
        errs.push("must not contain consecutive hyphens".to_owned());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_owned());
    }
    errs
}

/// `IsValidPortNum`.
pub fn port_num_errors(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec![inclusive_range_error(1, 65535)]
    }
}

/// `IsEnvVarName`.
pub fn env_var_name_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let b = s.as_bytes();
    let ok = match b.first() {
        None => false,
        Some(&first) => {
            (first.is_ascii_alphabetic() || matches!(first, b'-' | b'.' | b'_'))
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
        }
    };
    if !ok {
        errs.push(regex_error(
            ENV_VAR_NAME_ERR,
            ENV_VAR_NAME_FMT,
            &["my.env-name", "MY_ENV.NAME", "MyEnvName1"],
        ));
    }
    if s == "." {
        errs.push("must not be '.'".to_owned());
    } else if s == ".." {
        errs.push("must not be '..'".to_owned());
    } else if s.starts_with("..") {
        errs.push("must not start with '..'".to_owned());
    }
    errs
}

/// `IsHTTPHeaderName`.
pub fn http_header_name_errors(s: &str) -> Vec<String> {
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
        Vec::new()
    } else {
        vec![regex_error(
            HTTP_HEADER_NAME_ERR,
            HTTP_HEADER_NAME_FMT,
            &["X-Header-Name"],
        )]
    }
}

fn joined(errs: Vec<String>) -> Result<(), String> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

/// A DNS (RFC 1123) label: at most 63 characters of `[a-z0-9-]`, starting and ending with
/// an alphanumeric character. The error is Kubernetes' message.
pub fn is_dns1123_label(s: &str) -> Result<(), String> {
    joined(dns1123_label_errors(s))
}

/// A DNS (RFC 1123) subdomain: dot-separated labels, at most 253 characters in all.
pub fn is_dns1123_subdomain(s: &str) -> Result<(), String> {
    joined(dns1123_subdomain_errors(s))
}

/// A DNS-1035 label: like an RFC 1123 label, but starting with a letter.
pub fn is_dns1035_label(s: &str) -> Result<(), String> {
    joined(dns1035_label_errors(s))
}

/// A qualified name (label keys, annotation keys, finalizers): an optional DNS subdomain
/// prefix and `/`, then at most 63 characters of `[-A-Za-z0-9_.]`, starting and ending
/// with an alphanumeric character.
pub fn is_qualified_name(s: &str) -> Result<(), String> {
    joined(qualified_name_errors(s))
}

/// A label value: empty, or a qualified name without prefix.
pub fn is_valid_label_value(s: &str) -> Result<(), String> {
    joined(label_value_errors(s))
}

/// A named port (IANA_SVC_NAME): at most 15 characters of `[a-z0-9-]`, at least one
/// letter, no `--`, not starting or ending with `-`.
pub fn is_valid_port_name(s: &str) -> Result<(), String> {
    joined(port_name_errors(s))
}

/// One `Invalid` error per message of `rule(value)`.
pub fn invalid_each(path: &str, value: &str, msgs: Vec<String>) -> Vec<FieldError> {
    msgs.into_iter()
        .map(|m| FieldError::invalid(path, value, m))
        .collect()
}

/// The name rules of object kinds (`ValidateNameFunc`), with `prefix` for a
/// `generateName` (a trailing dash is allowed there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    Dns1123Label,
    Dns1123Subdomain,
    Dns1035Label,
}

impl NameRule {
    pub fn errors(self, name: &str, prefix: bool) -> Vec<String> {
        let masked;
        let name = if prefix {
            masked = mask_trailing_dash(name);
            masked.as_str()
        } else {
            name
        };
        match self {
            NameRule::Dns1123Label => dns1123_label_errors(name),
            NameRule::Dns1123Subdomain => dns1123_subdomain_errors(name),
            NameRule::Dns1035Label => dns1035_label_errors(name),
        }
    }
}

/// `maskTrailingDash`: Kubernetes replaces the last two characters of a prefix ending in
/// `-` with `a` (sic) before checking it.
fn mask_trailing_dash(name: &str) -> String {
    if name.len() > 1 && name.ends_with('-') {
        let cut = name
            .char_indices()
            .rev()
            .nth(1)
            .map(|(n, _)| n)
            .unwrap_or(0);
        format!("{}a", &name[..cut])
    } else {
        name.to_owned()
    }
}

/// Label keys and values (`metav1validation.ValidateLabels`); every error is on `field`
/// itself, as in Kubernetes.
pub fn validate_labels(labels: &Value, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(map) = labels.as_object() else {
        return errs;
    };
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for k in keys {
        errs.extend(invalid_each(field, k, qualified_name_errors(k)));
        let v = map.get(k).and_then(Value::as_str).unwrap_or("");
        errs.extend(invalid_each(field, v, label_value_errors(v)));
    }
    errs
}

/// Annotation keys (qualified names, case-insensitively) and their total size.
pub fn validate_annotations(annotations: &Value, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(map) = annotations.as_object() else {
        return errs;
    };
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    let mut total = 0usize;
    for k in keys {
        errs.extend(invalid_each(
            field,
            k,
            qualified_name_errors(&k.to_lowercase()),
        ));
        total += k.len() + map.get(k).and_then(Value::as_str).map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(field, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

/// `ValidateDNS1123Label` at `path`.
pub fn validate_dns1123_label(value: &str, path: &str) -> Vec<FieldError> {
    invalid_each(path, value, dns1123_label_errors(value))
}

/// `ValidateQualifiedName` at `path`.
pub fn validate_qualified_name(value: &str, path: &str) -> Vec<FieldError> {
    invalid_each(path, value, qualified_name_errors(value))
}

/// `netutils.ParseIPSloppy`: an IP address; IPv4 octets may have leading zeros.
pub fn parse_ip_sloppy(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let mut octets = [0u8; 4];
    let mut n = 0;
    for part in s.split('.') {
        if n == 4 || part.is_empty() || part.len() > 3 || !part.bytes().all(|c| c.is_ascii_digit())
        {
            return None;
        }
        octets[n] = part.parse::<u8>().ok()?;
        n += 1;
    }
    (n == 4).then(|| IpAddr::V4(Ipv4Addr::from(octets)))
}

/// `netutils.ParseCIDRSloppy`: `address/prefix`.
pub fn parse_cidr_sloppy(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip = parse_ip_sloppy(ip)?;
    if len.is_empty() || !len.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let len: u32 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len as u8))
}

/// `IsValidIP` at `path`.
pub fn validate_ip(value: &str, path: &str) -> Vec<FieldError> {
    if parse_ip_sloppy(value).is_some() {
        Vec::new()
    } else {
        vec![FieldError::invalid(
            path,
            value,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        )]
    }
}

/// `IsValidCIDR` at `path`.
pub fn validate_cidr(value: &str, path: &str) -> Vec<FieldError> {
    if parse_cidr_sloppy(value).is_some() {
        Vec::new()
    } else {
        vec![FieldError::invalid(
            path,
            value,
            "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        )]
    }
}

/// `ValidateNonSpecialIP` (named `ValidateEndpointIP` in newer releases): no unspecified,
/// loopback or link-local address. `value` must parse.
pub fn validate_non_special_ip(value: &str, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(ip) = parse_ip_sloppy(value) else {
        errs.push(FieldError::invalid(
            path,
            value,
            "must be a valid IP address",
        ));
        return errs;
    };
    if ip.is_unspecified() {
        errs.push(FieldError::invalid(
            path,
            value,
            format!("may not be unspecified ({value})"),
        ));
    }
    if ip.is_loopback() {
        errs.push(FieldError::invalid(
            path,
            value,
            "may not be in the loopback range (127.0.0.0/8, ::1/128)",
        ));
    }
    let (link_local, link_local_multicast) = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (v4.is_link_local(), o[0] == 224 && o[1] == 0 && o[2] == 0)
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            (seg[0] & 0xffc0 == 0xfe80, seg[0] & 0xff0f == 0xff02)
        }
    };
    if link_local {
        errs.push(FieldError::invalid(
            path,
            value,
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
        ));
    }
    if link_local_multicast {
        errs.push(FieldError::invalid(
            path,
            value,
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ));
    }
    errs
}

/// Whether `s` is an IPv6 address (`netutils.IsIPv6String`).
pub fn is_ipv6(s: &str) -> bool {
    matches!(parse_ip_sloppy(s), Some(IpAddr::V6(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

    #[test]
    fn dns1123_labels() {
        for ok in ["a", "abc", "a-b", "0", "123-abc", &"a".repeat(63)] {
            assert_eq!(is_dns1123_label(ok), Ok(()), "{ok}");
        }
        assert_eq!(is_dns1123_label("My-Name"), Err(LABEL_MSG.to_owned()));
        for bad in ["", "-a", "a-", "a_b", "a b"] {
            assert_eq!(is_dns1123_label(bad), Err(LABEL_MSG.to_owned()), "{bad}");
        }
        assert_eq!(
            is_dns1123_label("a.b"),
            Err("must not contain dots".to_owned())
        );
        assert_eq!(
            dns1123_label_errors(&"a".repeat(64)),
            vec!["must be no more than 63 characters".to_owned()]
        );
        assert_eq!(dns1123_label_errors(&"A".repeat(64)).len(), 2);
    }

    #[test]
    fn dns1123_subdomains() {
        for ok in ["a", "example.com", "a-b.c-d.e", "10.0.0.1"] {
            assert_eq!(is_dns1123_subdomain(ok), Ok(()), "{ok}");
        }
        let msg = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
        for bad in ["", ".a", "a.", "a..b", "A.b", "a_b"] {
            assert_eq!(is_dns1123_subdomain(bad), Err(msg.to_owned()), "{bad}");
        }
        let long = format!("{}.{}", "a".repeat(200), "b".repeat(60));
        assert_eq!(
            is_dns1123_subdomain(&long),
            Err("must be no more than 253 characters".to_owned())
        );
    }

    #[test]
    fn dns1035_labels() {
        assert_eq!(is_dns1035_label("my-svc"), Ok(()));
        let msg = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
        for bad in ["1abc", "", "a-", "a.b", "Abc"] {
            assert_eq!(is_dns1035_label(bad), Err(msg.to_owned()), "{bad}");
        }
    }

    #[test]
    fn qualified_names() {
        for ok in ["app", "A.b_c-d", "example.com/MyName", "k8s.io/x", "a/b"] {
            assert_eq!(is_qualified_name(ok), Ok(()), "{ok}");
        }
        let name_msg = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
        assert_eq!(qualified_name_errors("-x"), vec![name_msg.to_owned()]);
        assert_eq!(
            qualified_name_errors("x/"),
            vec![
                "name part must be non-empty".to_owned(),
                name_msg.to_owned()
            ]
        );
        assert_eq!(
            qualified_name_errors("/x"),
            vec!["prefix part must be non-empty".to_owned()]
        );
        assert!(
            qualified_name_errors("Bad_Prefix/x")[0]
                .starts_with("prefix part a lowercase RFC 1123 subdomain")
        );
        assert_eq!(
            qualified_name_errors(&"a".repeat(64)),
            vec!["name part must be no more than 63 characters".to_owned()]
        );
        let many = qualified_name_errors("a/b/c");
        assert_eq!(many.len(), 1);
        assert!(many[0].starts_with("a qualified name must consist of"));
        assert!(many[0].ends_with(
            "with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ));
    }

    #[test]
    fn label_values() {
        for ok in ["", "v1", "my_value", "A.b-c"] {
            assert_eq!(is_valid_label_value(ok), Ok(()), "{ok}");
        }
        let msg = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
        assert_eq!(is_valid_label_value("-v"), Err(msg.to_owned()));
        assert_eq!(is_valid_label_value("a b"), Err(msg.to_owned()));
        assert_eq!(
            is_valid_label_value(&"v".repeat(64)),
            Err("must be no more than 63 characters".to_owned())
        );
    }

    #[test]
    fn port_names() {
        for ok in ["http", "h2c", "metrics-1", "a23456789012345"] {
            assert_eq!(is_valid_port_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            port_name_errors("a234567890123456"),
            vec!["must be no more than 15 characters".to_owned()]
        );
        assert_eq!(
            port_name_errors("HTTP"),
            vec![
                "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_owned(),
                "must contain at least one letter (a-z)".to_owned()
            ]
        );
        assert_eq!(
            port_name_errors("123"),
            vec!["must contain at least one letter (a-z)".to_owned()]
        );
        assert_eq!(
            port_name_errors("a--b"),
            vec!["must not contain consecutive hyphens".to_owned()]
        );
        assert_eq!(
            port_name_errors("-ab"),
            vec!["must not begin or end with a hyphen".to_owned()]
        );
        assert_eq!(
            port_num_errors(0),
            vec!["must be between 1 and 65535, inclusive".to_owned()]
        );
        assert!(port_num_errors(65535).is_empty());
    }

    #[test]
    fn env_var_names() {
        for ok in ["HOME", "my.env-name", "_x", "-a", "MyEnvName1"] {
            assert!(env_var_name_errors(ok).is_empty(), "{ok}");
        }
        let msg = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')";
        assert_eq!(env_var_name_errors("1A"), vec![msg.to_owned()]);
        assert_eq!(env_var_name_errors("A B"), vec![msg.to_owned()]);
        assert_eq!(env_var_name_errors(""), vec![msg.to_owned()]);
        assert_eq!(env_var_name_errors("."), vec!["must not be '.'".to_owned()]);
        assert_eq!(
            env_var_name_errors(".."),
            vec!["must not be '..'".to_owned()]
        );
        assert_eq!(
            env_var_name_errors("..a"),
            vec!["must not start with '..'".to_owned()]
        );
    }

    #[test]
    fn header_names() {
        assert!(http_header_name_errors("X-Custom-1").is_empty());
        assert_eq!(
            http_header_name_errors("X_Bad"),
            vec!["a valid HTTP header must consist of alphanumeric characters or '-' (e.g. 'X-Header-Name', regex used for validation is '[-A-Za-z0-9]+')".to_owned()]
        );
    }

    #[test]
    fn name_rules_with_prefix() {
        assert!(NameRule::Dns1123Subdomain.errors("web-", true).is_empty());
        assert!(!NameRule::Dns1123Subdomain.errors("web-", false).is_empty());
        assert!(NameRule::Dns1035Label.errors("svc-", true).is_empty());
        assert!(NameRule::Dns1123Label.errors("a", true).is_empty());
        // Kubernetes' mask drops the character before the dash too: "a.-" becomes "aa"
        assert!(NameRule::Dns1123Label.errors("a.-", true).is_empty());
        assert!(!NameRule::Dns1123Label.errors("-", true).is_empty());
    }

    #[test]
    fn labels() {
        assert!(
            validate_labels(
                &json!({"app": "web", "example.com/tier": ""}),
                "metadata.labels"
            )
            .is_empty()
        );
        assert!(validate_labels(&json!(null), "metadata.labels").is_empty());
        let errs = validate_labels(&json!({"bad key": "v", "ok": "-bad"}), "metadata.labels");
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].field, "metadata.labels");
        assert_eq!(errs[0].value.as_deref(), Some("\"bad key\""));
        assert!(errs[0].detail.starts_with("name part must consist of"));
        assert!(errs[1].to_string().starts_with(
            "metadata.labels: Invalid value: \"-bad\": a valid label must be an empty string"
        ));
    }

    #[test]
    fn annotations() {
        assert!(
            validate_annotations(&json!({"Example.com/Note": "x"}), "metadata.annotations")
                .is_empty()
        );
        let errs = validate_annotations(&json!({"a b": "x"}), "metadata.annotations");
        assert_eq!(errs.len(), 1);
        let big = json!({"k": "v".repeat(TOTAL_ANNOTATION_SIZE_LIMIT)});
        let errs = validate_annotations(&big, "metadata.annotations");
        assert_eq!(
            errs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["metadata.annotations: Too long: may not be more than 262144 bytes".to_owned()]
        );
        let just = json!({"k": "v".repeat(TOTAL_ANNOTATION_SIZE_LIMIT - 1)});
        assert!(validate_annotations(&just, "metadata.annotations").is_empty());
    }

    #[test]
    fn addresses() {
        assert!(parse_ip_sloppy("10.0.0.1").is_some());
        assert!(parse_ip_sloppy("010.000.000.001").is_some());
        assert!(parse_ip_sloppy("fd00::1").is_some());
        for bad in [
            "",
            "10.0.0",
            "10.0.0.256",
            "1.2.3.4.5",
            "abc",
            "10.0.0.1/24",
        ] {
            assert!(parse_ip_sloppy(bad).is_none(), "{bad}");
        }
        assert_eq!(parse_cidr_sloppy("10.244.1.0/24").map(|c| c.1), Some(24));
        assert!(parse_cidr_sloppy("fd00::/64").is_some());
        for bad in [
            "10.244.1.0",
            "10.0.0.0/33",
            "10.0.0.0/",
            "x/8",
            "10.0.0.0/+8",
        ] {
            assert!(parse_cidr_sloppy(bad).is_none(), "{bad}");
        }
        assert_eq!(
            validate_ip("x", "spec.clusterIPs[0]")[0].to_string(),
            "spec.clusterIPs[0]: Invalid value: \"x\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
        );
        assert_eq!(
            validate_cidr("10.0.0.0", "spec.podCIDRs[0]")[0].to_string(),
            "spec.podCIDRs[0]: Invalid value: \"10.0.0.0\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
        );
        assert!(validate_non_special_ip("10.1.2.3", "ip").is_empty());
        let special = |ip: &str| validate_non_special_ip(ip, "ip")[0].detail.clone();
        assert_eq!(special("0.0.0.0"), "may not be unspecified (0.0.0.0)");
        assert_eq!(
            special("127.0.0.1"),
            "may not be in the loopback range (127.0.0.0/8, ::1/128)"
        );
        assert_eq!(
            special("::1"),
            "may not be in the loopback range (127.0.0.0/8, ::1/128)"
        );
        assert_eq!(
            special("169.254.1.1"),
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
        );
        assert_eq!(
            special("fe80::1"),
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
        );
        assert_eq!(
            special("224.0.0.5"),
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"
        );
        assert_eq!(
            special("ff02::1"),
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"
        );
        assert!(is_ipv6("fd00::1"));
        assert!(!is_ipv6("10.0.0.1"));
    }
}
