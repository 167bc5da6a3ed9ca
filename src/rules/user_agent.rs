//! User-Agent rules: a deny list of patterns, allow exceptions, and the empty
//! User-Agent, as nginx's `map $http_user_agent $bad_agent` pattern.

use super::DropReason;
use super::patterns::{Matcher, compile_matcher};
use crate::error::BuildError;
use crate::parse::headers::HeaderScan;

/// Patterns are matched on the raw header bytes, so a User-Agent that is not
/// UTF-8 is still judged instead of slipping through a failed conversion.
#[derive(Debug)]
pub(crate) struct UserAgentRules {
    deny: Option<Matcher>,
    allow: Option<Matcher>,
    drop_empty: bool,
}

impl UserAgentRules {
    pub(crate) fn new(
        deny: &[String],
        allow: &[String],
        drop_empty: bool,
    ) -> Result<Self, BuildError> {
        Ok(Self {
            deny: compile_matcher("deny_user_agent", deny)?,
            allow: compile_matcher("allow_user_agent", allow)?,
            drop_empty,
        })
    }

    pub(crate) fn is_active(&self) -> bool {
        self.deny.is_some() || self.drop_empty
    }

    /// With several User-Agent headers, each is judged: one denied value
    /// drops the request, and the request only counts as empty when every
    /// value is.
    #[cfg(test)]
    pub(crate) fn check(&self, headers: &http::HeaderMap) -> Result<(), DropReason> {
        self.check_scanned(&HeaderScan::new(headers, None))
    }

    /// [`UserAgentRules::check`] with the `User-Agent` lines from a scan.
    pub(crate) fn check_scanned(&self, scan: &HeaderScan<'_>) -> Result<(), DropReason> {
        if !self.is_active() {
            return Ok(());
        }
        let mut any_value = false;
        for value in scan.user_agents() {
            let bytes = value.as_bytes().trim_ascii();
            if bytes.is_empty() {
                continue;
            }
            any_value = true;
            if self.is_denied(bytes) {
                return Err(DropReason::UserAgentDenied);
            }
        }
        if self.drop_empty && !any_value {
            return Err(DropReason::UserAgentEmpty);
        }
        Ok(())
    }

    fn is_denied(&self, ua: &[u8]) -> bool {
        let Some(deny) = &self.deny else {
            return false;
        };
        deny.is_match(ua) && !self.allow.as_ref().is_some_and(|a| a.is_match(ua))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::USER_AGENT;
    use http::{HeaderMap, HeaderValue};

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn map_rules() -> UserAgentRules {
        UserAgentRules::new(
            &strings(&["masscan", "zgrab", "python"]),
            &strings(&["python-requests"]),
            true,
        )
        .unwrap()
    }

    fn with_ua(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(USER_AGENT, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn deny_is_case_insensitive_and_allow_wins() {
        let r = map_rules();
        assert_eq!(
            r.check(&with_ua(&[b"masscan/1.3"])),
            Err(DropReason::UserAgentDenied)
        );
        assert_eq!(
            r.check(&with_ua(&[b"Mozilla ZGrab/0.x"])),
            Err(DropReason::UserAgentDenied)
        );
        assert_eq!(
            r.check(&with_ua(&[b"Python-urllib/3.11"])),
            Err(DropReason::UserAgentDenied)
        );
        assert_eq!(r.check(&with_ua(&[b"python-requests/2.31"])), Ok(()));
        assert_eq!(r.check(&with_ua(&[b"curl/8.5"])), Ok(()));
    }

    #[test]
    fn empty_and_missing() {
        let r = map_rules();
        assert_eq!(r.check(&with_ua(&[])), Err(DropReason::UserAgentEmpty));
        assert_eq!(r.check(&with_ua(&[b""])), Err(DropReason::UserAgentEmpty));
        assert_eq!(r.check(&with_ua(&[b"  "])), Err(DropReason::UserAgentEmpty));
        let lenient = UserAgentRules::new(&strings(&["masscan"]), &[], false).unwrap();
        assert_eq!(lenient.check(&with_ua(&[])), Ok(()));
    }

    #[test]
    fn every_value_and_raw_bytes_are_judged() {
        let r = map_rules();
        assert_eq!(
            r.check(&with_ua(&[b"curl/8", b"masscan"])),
            Err(DropReason::UserAgentDenied)
        );
        assert_eq!(
            r.check(&with_ua(&[b"\xffmasscan\xfe"])),
            Err(DropReason::UserAgentDenied)
        );
        assert_eq!(r.check(&with_ua(&[b"", b"curl/8"])), Ok(()));
    }

    #[test]
    fn case_sensitivity_can_be_restored_inline_for_one_pattern() {
        let r = UserAgentRules::new(&strings(&["(?-i)BadBot", "evil"]), &[], false).unwrap();
        assert_eq!(
            r.check(&with_ua(&[b"BadBot"])),
            Err(DropReason::UserAgentDenied)
        );
        assert_eq!(r.check(&with_ua(&[b"badbot"])), Ok(()));
        assert_eq!(
            r.check(&with_ua(&[b"EVIL"])),
            Err(DropReason::UserAgentDenied)
        );
    }

    #[test]
    fn a_pattern_cannot_escape_its_group() {
        // Compiled alone, `a)|(?:b` is unbalanced, so it never reaches the join
        // where it would close its own group and open another.
        let err = UserAgentRules::new(&strings(&["a)|(?:b"]), &[], false).unwrap_err();
        assert!(err.to_string().contains("\"a)|(?:b\""), "{err}");
    }

    #[test]
    fn bad_pattern_is_named() {
        let err = UserAgentRules::new(&strings(&["ok", "(unclosed"]), &[], false).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"(unclosed\""), "{msg}");
        assert!(msg.starts_with("deny_user_agent"), "{msg}");
    }
}
