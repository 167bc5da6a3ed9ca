//! Compiling a list of deny (or allow) patterns into one regex.

use regex::bytes::{Regex, RegexBuilder};

use crate::error::BuildError;

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
