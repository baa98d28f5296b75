//! The field errors of a CRD's schema validation, worded as apiextensions-apiserver words them
//! (kube-openapi's messages, converted into `field.Error`s), and the matchers of the CRD's
//! `pattern`s (podnet has no regex engine; each pattern is simple enough to match by hand).

use super::FieldError;
use crate::k8s::validation::FieldErrorKind;

/// `metav1.Condition`'s `reason` pattern.
pub const REASON_PATTERN: &str = "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$";
/// `metav1.Condition`'s `type` pattern.
pub const TYPE_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$";

/// The errors found so far.
#[derive(Debug, Default)]
pub struct Errors {
    pub list: Vec<FieldError>,
}

impl Errors {
    /// `required`: `PATH: Required value`.
    pub fn required(&mut self, path: &str) {
        self.list.push(FieldError::required(path, ""));
    }

    /// `enum`: `Unsupported value: "X": supported values: …`.
    pub fn enumeration(&mut self, path: &str, value: &str, allowed: &[&str]) {
        if !allowed.contains(&value) {
            self.list
                .push(FieldError::not_supported(path, value, allowed));
        }
    }

    /// `minimum` and `maximum` (inclusive).
    pub fn range(&mut self, path: &str, value: i64, min: i64, max: i64) {
        if value < min {
            self.list.push(FieldError::invalid(
                path,
                &value,
                format!("{path} in body should be greater than or equal to {min}"),
            ));
        } else if value > max {
            self.list.push(FieldError::invalid(
                path,
                &value,
                format!("{path} in body should be less than or equal to {max}"),
            ));
        }
    }

    /// `minItems` (`Invalid value: N: … should have at least M items`) and `maxItems`
    /// (`Too many: N: must have at most M items`). The items are checked either way.
    pub fn items(&mut self, path: &str, len: usize, min: Option<usize>, max: Option<usize>) {
        if let Some(min) = min
            && len < min
        {
            self.list.push(FieldError::invalid(
                path,
                &len,
                format!("{path} in body should have at least {min} items"),
            ));
        }
        if let Some(max) = max
            && len > max
        {
            self.list.push(FieldError::too_many(path, len, max));
        }
    }

    /// `minProperties` and `maxProperties`; false when the count is wrong, as kube-openapi
    /// then checks nothing else of the object.
    pub fn properties(&mut self, path: &str, count: usize, min: usize, max: Option<usize>) -> bool {
        if count < min {
            self.list.push(FieldError::invalid(
                path,
                &count,
                format!("{path} in body should have at least {min} properties"),
            ));
            return false;
        }
        if let Some(max) = max
            && count > max
        {
            self.list.push(FieldError::too_many(path, count, max));
            return false;
        }
        true
    }

    /// `maxLength` (in characters): `Too long: may not be more than N bytes`.
    pub fn max_length(&mut self, path: &str, value: &str, max: usize) {
        if value.chars().count() > max {
            self.list.push(FieldError::too_long(path, max));
        }
    }

    /// `minLength`.
    pub fn min_length(&mut self, path: &str, value: &str, min: usize) {
        if value.chars().count() < min {
            self.list.push(FieldError::invalid(
                path,
                value,
                format!("{path} in body should be at least {min} chars long"),
            ));
        }
    }

    /// `pattern`, which the caller found not to match.
    pub fn pattern(&mut self, path: &str, value: &str, pattern: &str) {
        self.list.push(FieldError::invalid(
            path,
            value,
            format!("{path} in body should match '{pattern}'"),
        ));
    }
}

/// Whether kube-apiserver would skip the CEL rules: a `Required`, `Unsupported`, `Too long` or
/// `Too many` error (`hasBlockingErr`).
pub fn has_blocking(errs: &[FieldError]) -> bool {
    errs.iter().any(|e| {
        matches!(
            e.kind,
            FieldErrorKind::Required
                | FieldErrorKind::NotSupported
                | FieldErrorKind::TooLong
                | FieldErrorKind::TooMany
        )
    })
}

/// The error kube-apiserver adds when it skips the CEL rules (a nil path and value).
pub fn rules_not_checked() -> FieldError {
    FieldError::invalid(
        "<nil>",
        "null",
        "some validation rules were not checked because the object was invalid; correct the \
         existing errors to complete validation",
    )
}

/// A failed CEL rule on a value of OpenAPI type `ty` (`object`, `string`).
pub fn rule_failed(path: &str, ty: &str, message: &str) -> FieldError {
    FieldError::invalid(path, ty, message)
}

/// The indices of the items equal to an earlier one.
pub fn repeated<T: PartialEq>(items: &[T]) -> Vec<usize> {
    (0..items.len())
        .filter(|&i| items[..i].contains(&items[i]))
        .collect()
}

/// The `domainNames` pattern: an optional `*.`, then two or more labels joined by dots, with
/// an optional trailing dot. A label starts with a character of `[a-zA-z0-9]` (sic: the range
/// `A-z` also takes `[\]^_` and the backtick), has `[-a-zA-Z0-9_]` inside and ends
/// alphanumeric.
pub fn is_domain_name(s: &str) -> bool {
    let s = s.strip_prefix("*.").unwrap_or(s);
    let s = s.strip_suffix('.').unwrap_or(s);
    let labels: Vec<&str> = s.split('.').collect();
    labels.len() >= 2 && labels.iter().all(|l| is_domain_label(l))
}

fn is_domain_label(label: &str) -> bool {
    let b = label.as_bytes();
    let first_ok =
        |c: u8| c.is_ascii_digit() || c.is_ascii_lowercase() || (b'A'..=b'z').contains(&c);
    match b {
        [] => false,
        [only] => first_ok(*only),
        [first, middle @ .., last] => {
            first_ok(*first)
                && middle
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
                && last.is_ascii_alphanumeric()
        }
    }
}

/// [`REASON_PATTERN`].
pub fn is_condition_reason(s: &str) -> bool {
    let b = s.as_bytes();
    match b {
        [] => false,
        [only] => only.is_ascii_alphabetic(),
        [first, middle @ .., last] => {
            first.is_ascii_alphabetic()
                && middle
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b',' | b':'))
                && (last.is_ascii_alphanumeric() || *last == b'_')
        }
    }
}

/// [`TYPE_PATTERN`]: an optional DNS-subdomain prefix and `/`, then a qualified name part.
pub fn is_condition_type(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let prefix_ok = prefix.is_none_or(|p| p.split('.').all(is_lower_label));
    let b = name.as_bytes();
    let name_ok = match b {
        [] => false,
        [only] => only.is_ascii_alphanumeric(),
        [first, middle @ .., last] => {
            first.is_ascii_alphanumeric()
                && middle
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
                && last.is_ascii_alphanumeric()
        }
    };
    prefix_ok && name_ok
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn is_lower_label(l: &str) -> bool {
    let b = l.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match b {
        [] => false,
        [first, ..] if !alnum(first) => false,
        [.., last] if !alnum(last) => false,
        _ => b.iter().all(|c| alnum(c) || *c == b'-'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        for ok in [
            "kubernetes.io",
            "*.kubernetes.io",
            "a.b.",
            "x_y.io",
            "A.io",
            "[.io",
            "1.2",
        ] {
            assert!(is_domain_name(ok), "{ok}");
        }
        for bad in [
            "kubernetes",
            "*.io",
            "-a.io",
            "a-.io",
            "a..io",
            "*a.io",
            "a.*.io",
            "",
        ] {
            assert!(!is_domain_name(bad), "{bad}");
        }
        for ok in ["Ready", "A", "a_b:c,d", "Done_"] {
            assert!(is_condition_reason(ok), "{ok}");
        }
        for bad in ["", "1a", "a:", "a b"] {
            assert!(!is_condition_reason(bad), "{bad}");
        }
        for ok in ["Ready", "example.com/Ready", "a", "a.b-c_d"] {
            assert!(is_condition_type(ok), "{ok}");
        }
        for bad in ["", "Ex.com/Ready", "a/", "/a", "-a", "a/b/c"] {
            assert!(!is_condition_type(bad), "{bad}");
        }
        assert_eq!(repeated(&["a", "b", "a", "a"]), [2, 3]);
    }
}
