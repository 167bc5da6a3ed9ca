//! JA4 patterns: a whole fingerprint, or one with `*` for any of its three
//! parts, as JA4's parts are meant to be matched apart (the same TLS
//! library with another ALPN, say, changes only the first).

use super::ja4::{Ja4, valid_a};
use crate::error::BuildError;

/// One pattern, such as `t13d1516h2_8daaf6152771_e5627efa2ab1` or
/// `t13d1516h2_*_*`; `None` for a `*` part.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ja4Pattern {
    a: Option<[u8; 10]>,
    b: Option<[u8; 12]>,
    c: Option<[u8; 12]>,
}

impl Ja4Pattern {
    fn parse(setting: &'static str, value: &str) -> Result<Self, BuildError> {
        let bad = |reason: &str| BuildError::Setting {
            setting,
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parts = value.trim().split('_');
        let (Some(a), Some(b), Some(c), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(
                "a JA4 fingerprint has three parts joined by `_`, e.g. \
                            t13d1516h2_8daaf6152771_e5627efa2ab1; write `*` for any part",
            ));
        };
        let hash = |part: &str| -> Result<Option<[u8; 12]>, BuildError> {
            if part == "*" {
                return Ok(None);
            }
            let bytes: [u8; 12] = part.as_bytes().try_into().map_err(|_| {
                bad("the second and third parts are 12 lowercase hex digits, or `*`")
            })?;
            if bytes.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
                Ok(Some(bytes))
            } else {
                Err(bad(
                    "the second and third parts are 12 lowercase hex digits, or `*`",
                ))
            }
        };
        let a = if a == "*" {
            None
        } else {
            Some(
                a.as_bytes()
                    .try_into()
                    .ok()
                    .filter(|a: &[u8; 10]| valid_a(a))
                    .ok_or_else(|| {
                        bad("the first part is ten characters such as t13d1516h2, or `*`")
                    })?,
            )
        };
        let pattern = Self {
            a,
            b: hash(b)?,
            c: hash(c)?,
        };
        if pattern
            == (Self {
                a: None,
                b: None,
                c: None,
            })
        {
            return Err(bad("`*_*_*` matches every client"));
        }
        Ok(pattern)
    }

    fn matches(&self, ja4: &Ja4) -> bool {
        let s = ja4.as_str().as_bytes();
        self.a.is_none_or(|a| a == s[..10])
            && self.b.is_none_or(|b| b == s[11..23])
            && self.c.is_none_or(|c| c == s[24..])
    }
}

/// The gate's deny patterns and their allow exceptions.
#[derive(Debug, Default, Clone)]
pub(super) struct FingerprintRules {
    deny: Vec<Ja4Pattern>,
    allow: Vec<Ja4Pattern>,
}

impl FingerprintRules {
    pub(super) fn new(deny: &[String], allow: &[String]) -> Result<Self, BuildError> {
        let parse = |setting, values: &[String]| {
            values
                .iter()
                .map(|v| Ja4Pattern::parse(setting, v))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            deny: parse("deny_tls_fingerprint", deny)?,
            allow: parse("allow_tls_fingerprint", allow)?,
        })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.deny.is_empty()
    }

    /// Whether a client with this fingerprint is dropped.
    pub(super) fn denies(&self, ja4: &Ja4) -> bool {
        self.deny.iter().any(|p| p.matches(ja4)) && !self.allow.iter().any(|p| p.matches(ja4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME: &str = "t13d1516h2_8daaf6152771_e5627efa2ab1";

    fn rules(deny: &[&str], allow: &[&str]) -> FingerprintRules {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        FingerprintRules::new(&own(deny), &own(allow)).unwrap()
    }

    #[test]
    fn whole_and_partial_patterns_with_exceptions() {
        let chrome: Ja4 = CHROME.parse().unwrap();
        let other: Ja4 = "t12i0506h1_000000000000_e5627efa2ab1".parse().unwrap();
        assert!(rules(&[CHROME], &[]).denies(&chrome));
        assert!(!rules(&[CHROME], &[]).denies(&other));
        assert!(rules(&["*_*_e5627efa2ab1"], &[]).denies(&other));
        assert!(rules(&["t12i0506h1_*_*"], &[]).denies(&other));
        assert!(!rules(&["t12i0506h1_*_*"], &[]).denies(&chrome));
        assert!(!rules(&["*_*_e5627efa2ab1"], &["t13d1516h2_*_*"]).denies(&chrome));
        assert!(rules(&["*_*_e5627efa2ab1"], &["t13d1516h2_*_*"]).denies(&other));
        assert!(!rules(&[], &[]).denies(&chrome));
    }

    #[test]
    fn bad_patterns_are_refused_by_value() {
        for bad in [
            "",
            "t13d1516h2",
            "t13d1516h2_8daaf6152771",
            "t13d1516h2_8daaf6152771_e5627efa2ab1_x",
            "t13d1516h2_8DAAF6152771_*",
            "t13d1516h2_8daaf615277_*",
            "z13d1516h2_*_*",
            "*_*_*",
        ] {
            let error = FingerprintRules::new(&[bad.to_owned()], &[]).unwrap_err();
            assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
            assert!(
                error.to_string().starts_with("deny_tls_fingerprint"),
                "{error}"
            );
        }
        let error = FingerprintRules::new(&[], &["nope".to_owned()]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("allow_tls_fingerprint \"nope\"")
        );
    }
}
