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

    /// Matches the path three ways: as sent; with every `%` escape decoded,
    /// so `/%2eenv` cannot hide `/.env`; and normalised as RFC 3986 says a
    /// server may (see [`normalise`]), so `//wp-login.php`,
    /// `/x/../wp-login.php`, `/%77p-login.php` and `/wp-login.php;x=1`
    /// cannot hide `/wp-login.php` from an anchored pattern. A path that
    /// needs neither costs one match. The query string is not judged.
    pub(crate) fn check(&self, uri: &Uri) -> Result<(), DropReason> {
        let Some(deny) = &self.deny else {
            return Ok(());
        };
        let raw = uri.path().as_bytes();
        if deny.is_match(raw) {
            return Err(DropReason::Path);
        }
        let escaped = raw.contains(&b'%');
        if !escaped && !needs_normalising(raw) {
            return Ok(());
        }
        let mut stack = [0u8; STACK_PATH];
        let mut heap = Vec::new();
        let buf: &mut [u8] = if raw.len() < STACK_PATH {
            &mut stack[..=raw.len()]
        } else {
            heap.resize(raw.len() + 1, 0);
            &mut heap
        };
        if escaped {
            let len = percent_decode(raw, buf);
            if deny.is_match(&buf[..len]) {
                return Err(DropReason::Path);
            }
        }
        let len = normalise(raw, buf);
        if deny.is_match(&buf[..len]) {
            Err(DropReason::Path)
        } else {
            Ok(())
        }
    }
}

/// Whether normalising could change `path`: an escape, a `;` parameter, an
/// empty segment or a dot segment.
fn needs_normalising(path: &[u8]) -> bool {
    path.contains(&b';') || path.windows(2).any(|w| w == b"//" || w == b"/.")
}

/// Writes `path` into `out` (at least one byte longer than `path`) as a
/// server that normalises would see it, and returns its length:
///
/// - `%XX` escapes of unreserved characters (letters, digits, `-._~`) are
///   decoded, so `%2e` is a dot and `%77` a `w` (RFC 3986 §6.2.2.2); other
///   escapes, such as `%2f`, stay as they are;
/// - `;parameters` are cut from each segment, as servers that read them do;
/// - empty segments merge, so `//` is `/`;
/// - `.` and `..` segments are removed (RFC 3986 §5.2.4), never climbing
///   above the root.
fn normalise(path: &[u8], out: &mut [u8]) -> usize {
    let Some(rest) = path.strip_prefix(b"/") else {
        out[..path.len()].copy_from_slice(path);
        return path.len();
    };
    out[0] = b'/';
    let mut len = 1;
    let mut segments = rest.split(|&b| b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        // Decode into place after the current end, then judge the result.
        let start = len;
        let mut i = 0;
        while i < segment.len() && segment[i] != b';' {
            let byte = match segment[i..] {
                [b'%', h, l, ..] => unreserved(h, l),
                _ => None,
            };
            match byte {
                Some(b) => {
                    out[len] = b;
                    i += 3;
                }
                None => {
                    out[len] = segment[i];
                    i += 1;
                }
            }
            len += 1;
        }
        match &out[start..len] {
            b"" | b"." => len = start,
            b".." => {
                // Back to just after the previous segment's slash.
                len = start;
                if len > 1 {
                    len -= 1;
                    while out[len - 1] != b'/' {
                        len -= 1;
                    }
                }
            }
            _ => {
                if !last {
                    out[len] = b'/';
                    len += 1;
                }
            }
        }
    }
    len
}

/// The character `%hl` stands for, if it is unreserved.
fn unreserved(h: u8, l: u8) -> Option<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let byte = hex(h)? << 4 | hex(l)?;
    (byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')).then_some(byte)
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

    fn normalised(path: &str) -> String {
        let mut out = vec![0; path.len() + 1];
        let len = normalise(path.as_bytes(), &mut out);
        String::from_utf8(out[..len].to_vec()).unwrap()
    }

    #[test]
    fn paths_normalise_as_rfc_3986_says() {
        for (path, want) in [
            ("/", "/"),
            ("/wp-login.php", "/wp-login.php"),
            ("//wp-login.php", "/wp-login.php"),
            ("/./wp-login.php", "/wp-login.php"),
            ("/x/../wp-login.php", "/wp-login.php"),
            ("/x/y/../../wp-login.php", "/wp-login.php"),
            ("/../../wp-login.php", "/wp-login.php"),
            ("/%2e/wp-login.php", "/wp-login.php"),
            ("/%2E%2e/wp-login.php", "/wp-login.php"),
            ("/%77p%2Dlogin.php", "/wp-login.php"),
            ("/wp-login.php;jsessionid=1", "/wp-login.php"),
            ("/a;x/b;y=1/c", "/a/b/c"),
            ("/a%2fb", "/a%2fb"),
            ("/a/", "/a/"),
            ("/a/.", "/a/"),
            ("/a/b/..", "/a/"),
            ("/%zz/%2", "/%zz/%2"),
        ] {
            assert_eq!(normalised(path), want, "{path}");
        }
    }

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
