//! Path rules: deny patterns on the request path, such as the probes for
//! `/.env`, `/wp-login.php` and `/.git/` every scanner sends.

use http::Uri;
use regex::bytes::Regex;

use super::DropReason;
use super::patterns::compile;
use crate::error::BuildError;

/// Percent-decoded paths up to this length are decoded on the stack; longer
/// ones (rare, and hostile more often than not) use the heap.
const STACK_PATH: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct PathRules {
    deny: Option<Regex>,
}

impl PathRules {
    pub(crate) fn new(deny: &[String]) -> Result<Self, BuildError> {
        Ok(Self {
            deny: compile("deny_path", deny)?,
        })
    }

    /// Matches the path as sent and, when it holds `%` escapes, as decoded,
    /// so `/%2eenv` cannot hide `/.env`. The query string is not judged.
    pub(crate) fn check(&self, uri: &Uri) -> Result<(), DropReason> {
        let Some(deny) = &self.deny else {
            return Ok(());
        };
        let raw = uri.path().as_bytes();
        if deny.is_match(raw) {
            return Err(DropReason::Path);
        }
        if !raw.contains(&b'%') {
            return Ok(());
        }
        let mut stack = [0u8; STACK_PATH];
        let mut heap = Vec::new();
        let buf: &mut [u8] = if raw.len() <= STACK_PATH {
            &mut stack[..raw.len()]
        } else {
            heap.resize(raw.len(), 0);
            &mut heap
        };
        let len = percent_decode(raw, buf);
        if deny.is_match(&buf[..len]) {
            Err(DropReason::Path)
        } else {
            Ok(())
        }
    }
}

/// Decodes `%XX` escapes into `out` (at least as long as `input`); a `%` not
/// followed by two hex digits is kept as it is. Returns the decoded length.
fn percent_decode(input: &[u8], out: &mut [u8]) -> usize {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let (mut i, mut n) = (0, 0);
    while i < input.len() {
        let decoded = match input[i..] {
            [b'%', h, l, ..] => hex(h).zip(hex(l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match decoded {
            Some(byte) => {
                out[n] = byte;
                i += 3;
            }
            None => {
                out[n] = input[i];
                i += 1;
            }
        }
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> PathRules {
        PathRules::new(&[
            r"/\.env".to_owned(),
            r"^/wp-login\.php".to_owned(),
            r"/\.git/".to_owned(),
            r"(?-i)/ADMIN".to_owned(),
        ])
        .unwrap()
    }

    fn check(path: &str) -> Result<(), DropReason> {
        rules().check(&path.parse().unwrap())
    }

    #[test]
    fn probes_are_denied_in_any_case_and_encoding() {
        for probe in [
            "/.env",
            "/app/.env",
            "/.ENV",
            "/%2eenv",
            "/%2Eenv",
            "/wp-login.php?redirect=1",
            "/.git/config",
            "/%2egit%2fconfig",
            "/ADMIN",
        ] {
            assert_eq!(check(probe), Err(DropReason::Path), "{probe}");
        }
        for fine in [
            "/",
            "/envelope",
            "/blog/wp-login.php",
            "/admin",
            "/%zz",
            "/%",
            "/a?x=/.env",
        ] {
            assert_eq!(check(fine), Ok(()), "{fine}");
        }
    }

    #[test]
    fn long_encoded_paths_are_decoded_too() {
        let long = format!("/{}/%2eenv", "a".repeat(5000));
        assert_eq!(check(&long), Err(DropReason::Path));
    }

    #[test]
    fn bad_patterns_are_named() {
        let err = PathRules::new(&["/ok".into(), "/(bad".into()]).unwrap_err();
        assert!(err.to_string().starts_with("deny_path"), "{err}");
        assert!(err.to_string().contains("\"/(bad\""), "{err}");
    }
}
