//! Compiling a list of deny (or allow) patterns into one matcher.

use memchr::memmem::Finder;
use regex::bytes::{Regex, RegexBuilder};

use crate::error::BuildError;
use crate::parse::ascii::lowercase_into;

/// A compiled pattern list. Lists of plain ASCII words (`masscan`, `zgrab`,
/// `python-requests`), the usual deny lists, need no regex engine: a
/// lowercase copy of the value searched for each word costs a fraction of a
/// regex search on every request.
#[derive(Debug)]
pub(crate) enum Matcher {
    Literals(Words),
    Regex(Regex),
}

impl Matcher {
    pub(crate) fn is_match(&self, haystack: &[u8]) -> bool {
        match self {
            Self::Literals(words) => words.is_match(haystack),
            Self::Regex(regex) => regex.is_match(haystack),
        }
    }
}

/// Plain words, lowercased. A haystack that fits the stack buffer is
/// lowercased into it and searched for each word with SIMD substring
/// search; a longer one goes to the regex of the same words.
#[derive(Debug)]
pub(crate) struct Words {
    lowercase: Vec<Finder<'static>>,
    regex: Regex,
}

impl Words {
    /// Longer than any User-Agent a browser sends.
    const BUFFER: usize = 256;

    fn new(patterns: &[String], regex: Regex) -> Self {
        Self {
            lowercase: patterns
                .iter()
                .map(|w| Finder::new(w.to_ascii_lowercase().as_bytes()).into_owned())
                .collect(),
            regex,
        }
    }

    fn is_match(&self, haystack: &[u8]) -> bool {
        let mut buffer = [0u8; Self::BUFFER];
        let Some(lower) = buffer.get_mut(..haystack.len()) else {
            return self.regex.is_match(haystack);
        };
        lowercase_into(haystack, lower);
        let lower = &*lower;
        self.lowercase.iter().any(|w| w.find(lower).is_some())
    }
}

/// A pattern that matches only its own text, case aside: ASCII letters,
/// digits and punctuation that is never regex syntax.
fn is_plain_word(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_/;:=,@%!'\"<> ".contains(&b))
}

/// [`compile`], as a [`Matcher`]: plain ASCII words become substring
/// searches, anything else one regex.
pub(crate) fn compile_matcher(
    rule: &'static str,
    patterns: &[String],
) -> Result<Option<Matcher>, BuildError> {
    let Some(regex) = compile(rule, patterns)? else {
        return Ok(None);
    };
    Ok(Some(if patterns.iter().all(|p| is_plain_word(p)) {
        Matcher::Literals(Words::new(patterns, regex))
    } else {
        Matcher::Regex(regex)
    }))
}

/// Compiles each pattern alone first so that an error names the one at fault,
/// then all of them as one alternation: a request costs a single pass, and
/// the regex engine turns literal alternatives into one fast prefilter.
/// Each pattern keeps its own group, so inline flags such as `(?-i)` stay
/// local to it. Matching is case-insensitive unless a pattern says otherwise,
/// like nginx's `~*`.
pub(crate) fn compile(
    rule: &'static str,
    patterns: &[String],
) -> Result<Option<Regex>, BuildError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let build = |pattern: &str| RegexBuilder::new(pattern).case_insensitive(true).build();
    for p in patterns {
        build(p).map_err(|source| BuildError::Regex {
            rule,
            pattern: p.clone(),
            source,
        })?;
    }
    let joined = patterns
        .iter()
        .map(|p| format!("(?:{p})"))
        .collect::<Vec<_>>()
        .join("|");
    build(&joined)
        .map(Some)
        .map_err(|source| BuildError::Regex {
            rule,
            pattern: joined,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(patterns: &[&str]) -> Matcher {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        compile_matcher("deny_user_agent", &patterns)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn plain_words_skip_the_regex_engine_and_match_the_same() {
        let words = matcher(&["masscan", "zgrab", "python-requests", "Go-http-client/1"]);
        assert!(matches!(words, Matcher::Literals(_)));
        for (agent, want) in [
            ("MassCan/1.3", true),
            ("x zgrab/0.x", true),
            ("Python-Requests/2.31", true),
            ("go-http-client/1.1", true),
            ("curl/8.5.0", false),
            ("", false),
        ] {
            assert_eq!(words.is_match(agent.as_bytes()), want, "{agent}");
        }
        // Past the stack buffer, the regex of the same words answers.
        let long = format!("{}MASSCAN", "x".repeat(Words::BUFFER));
        assert!(words.is_match(long.as_bytes()));
        assert!(!words.is_match("y".repeat(2 * Words::BUFFER).as_bytes()));
        for regexy in [
            &["^curl"][..],
            &["a.b"],
            &["bot|crawler"],
            &["(?-i)Exact"],
            &["ünï"],
        ] {
            assert!(
                matches!(matcher(regexy), Matcher::Regex(_)),
                "{regexy:?} is not a plain word"
            );
        }
        assert!(!matcher(&["(?-i)Exact"]).is_match(b"exact"));
    }
}
