//! Compiling a list of deny (or allow) patterns into one matcher.

use memchr::memmem::Finder;
use regex::bytes::{Regex, RegexBuilder};

use crate::error::BuildError;
use crate::parse::ascii::{fold, lowercase_into, splat, word_at, zero_bytes};

/// A compiled pattern list. Lists of plain ASCII words (`masscan`, `zgrab`,
/// `python-requests`), the usual deny lists, need no regex engine: a search
/// for the words themselves costs a fraction of a regex search on every
/// request.
#[derive(Debug)]
pub(crate) enum Matcher {
    /// A few words: the rare-byte scan for short values, the substring
    /// search for long ones, where its SIMD steps of 32 bytes win.
    Few(FewWords, Words),
    Literals(Words),
    Regex(Regex),
}

impl Matcher {
    pub(crate) fn is_match(&self, haystack: &[u8]) -> bool {
        match self {
            Self::Few(scan, _) if haystack.len() <= FewWords::LONGEST => scan.is_match(haystack),
            Self::Few(_, words) => words.is_match(haystack),
            Self::Literals(words) => words.is_match(haystack),
            Self::Regex(regex) => regex.is_match(haystack),
        }
    }
}

/// What browsers send, to rank bytes by how often a User-Agent holds them.
const TYPICAL_AGENTS: &str = "\
    Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
    Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0 \
    Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) \
    Version/18.1 Safari/605.1.15 \
    Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0 \
    Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 \
    (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1 \
    Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) \
    Chrome/131.0.0.0 Mobile Safari/537.36";

/// A few plain words, each found by its rarest byte. The value is read
/// eight bytes at a time with the case bit set in each byte (so a letter
/// of either case compares equal), and each word's rarest byte in what
/// browsers send is looked for in all eight at once; only where one turns
/// up is the word compared. On a short value, such as the User-Agent of a
/// script or a scanner, that is one pass of a few instructions per eight
/// bytes with no copy, where the substring search pays a setup per word;
/// on a browser's long one the search's 32-byte steps win, so
/// [`Matcher::Few`] scans only values up to [`FewWords::LONGEST`] bytes.
#[derive(Debug)]
pub(crate) struct FewWords {
    /// Each word's rarest byte, case-folded, in every byte of a `u64`.
    probes: Probes,
    /// Each word in lowercase, with the offset of its rarest byte.
    words: Vec<(Box<[u8]>, usize)>,
}

/// One to four distinct probes, so the scan is unrolled for its count.
#[derive(Debug)]
enum Probes {
    One([u64; 1]),
    Two([u64; 2]),
    Three([u64; 3]),
    Four([u64; 4]),
}

impl FewWords {
    const MAX: usize = 4;
    /// Up to this length the scan costs less than the substring search
    /// (the measurement is in the performance report, `benches/README.md`).
    const LONGEST: usize = 64;

    fn new(patterns: &[String]) -> Option<Self> {
        if patterns.len() > Self::MAX {
            return None;
        }
        let mut seen = [0usize; 256];
        for b in TYPICAL_AGENTS.bytes() {
            seen[usize::from(b | 0x20)] += 1;
        }
        let words: Vec<(Box<[u8]>, usize)> = patterns
            .iter()
            .map(|p| {
                let word: Box<[u8]> = p.to_ascii_lowercase().into_bytes().into();
                let rarest = (0..word.len())
                    .min_by_key(|&i| seen[usize::from(word[i] | 0x20)])
                    .unwrap_or(0);
                (word, rarest)
            })
            .collect();
        let mut probes: Vec<u64> = Vec::new();
        for (word, at) in &words {
            let probe = fold(splat(word[*at]));
            if !probes.contains(&probe) {
                probes.push(probe);
            }
        }
        let probes = match probes[..] {
            [a] => Probes::One([a]),
            [a, b] => Probes::Two([a, b]),
            [a, b, c] => Probes::Three([a, b, c]),
            [a, b, c, d] => Probes::Four([a, b, c, d]),
            _ => return None,
        };
        Some(Self { probes, words })
    }

    fn is_match(&self, haystack: &[u8]) -> bool {
        match &self.probes {
            Probes::One(p) => self.scan(p, haystack),
            Probes::Two(p) => self.scan(p, haystack),
            Probes::Three(p) => self.scan(p, haystack),
            Probes::Four(p) => self.scan(p, haystack),
        }
    }

    fn scan<const N: usize>(&self, probes: &[u64; N], haystack: &[u8]) -> bool {
        let flags_of = |eight: u64| {
            let eight = fold(eight);
            probes
                .iter()
                .fold(0, |flags, probe| flags | zero_bytes(eight ^ probe))
        };
        let mut chunks = haystack.chunks_exact(8);
        let mut at = 0;
        for chunk in &mut chunks {
            let flags = flags_of(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
            if flags != 0 && self.any_at(haystack, at, flags) {
                return true;
            }
            at += 8;
        }
        let rest = chunks.remainder();
        !rest.is_empty() && {
            let flags = flags_of(word_at(rest, 0));
            flags != 0 && self.any_at(haystack, at, flags)
        }
    }

    /// Whether a word is where one of `flags` (of the eight bytes from `at`)
    /// may have found its rare byte.
    #[cold]
    fn any_at(&self, haystack: &[u8], at: usize, mut flags: u64) -> bool {
        while flags != 0 {
            let found = at + flags.trailing_zeros() as usize / 8;
            if self.is_around(haystack, found) {
                return true;
            }
            flags &= flags - 1;
        }
        false
    }

    /// Whether a word whose rare byte may be at `found` is there: only the
    /// words whose rare byte it is are compared, a byte at a time, since a
    /// candidate usually differs in its first byte or two.
    fn is_around(&self, haystack: &[u8], found: usize) -> bool {
        let Some(&byte) = haystack.get(found) else {
            return false;
        };
        self.words.iter().any(|(word, rare)| {
            word[*rare] | 0x20 == byte | 0x20
                && found
                    .checked_sub(*rare)
                    .and_then(|start| haystack.get(start..start + word.len()))
                    .is_some_and(|candidate| {
                        candidate
                            .iter()
                            .zip(word.iter())
                            .all(|(c, w)| c.to_ascii_lowercase() == *w)
                    })
        })
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

/// [`compile`], as a [`Matcher`]: plain ASCII words become a search for
/// the words (by their rarest byte when there are few), anything else one
/// regex.
pub(crate) fn compile_matcher(
    rule: &'static str,
    patterns: &[String],
) -> Result<Option<Matcher>, BuildError> {
    let Some(regex) = compile(rule, patterns)? else {
        return Ok(None);
    };
    if !patterns.iter().all(|p| is_plain_word(p)) {
        return Ok(Some(Matcher::Regex(regex)));
    }
    Ok(Some(match FewWords::new(patterns) {
        Some(few) => Matcher::Few(few, Words::new(patterns, regex)),
        None => Matcher::Literals(Words::new(patterns, regex)),
    }))
}

fn build(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern).case_insensitive(true).build()
}

/// Whether `pattern` compiles, as [`compile`] will compile it; the error
/// names the pattern and the call that gave it.
pub(crate) fn check(rule: &'static str, pattern: &str) -> Result<(), BuildError> {
    build(pattern)
        .map(drop)
        .map_err(|source| BuildError::Regex {
            rule,
            pattern: pattern.to_owned(),
            source,
        })
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
    for p in patterns {
        check(rule, p)?;
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

    /// What a list of plain words means: some word occurs in the value,
    /// ASCII case aside.
    fn naive(words: &[&str], value: &[u8]) -> bool {
        let value = value.to_ascii_lowercase();
        words.iter().any(|w| {
            let w = w.to_ascii_lowercase();
            value.windows(w.len()).any(|window| window == w.as_bytes())
        })
    }

    #[test]
    fn plain_words_skip_the_regex_engine_and_match_the_same() {
        let few = ["masscan", "zgrab", "python-requests", "Go-http-client/1"];
        let many = [&few[..], &["nikto", "sqlmap"]].concat();
        let few_words = matcher(&few);
        assert!(matches!(few_words, Matcher::Few(..)));
        let many_words = matcher(&many);
        assert!(matches!(many_words, Matcher::Literals(_)));
        for (agent, want) in [
            ("MassCan/1.3", true),
            ("x zgrab/0.x", true),
            ("Python-Requests/2.31", true),
            ("go-http-client/1.1", true),
            ("curl/8.5.0", false),
            ("", false),
            ("Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0", false),
        ] {
            assert_eq!(few_words.is_match(agent.as_bytes()), want, "{agent}");
            assert_eq!(many_words.is_match(agent.as_bytes()), want, "{agent}");
        }
        assert!(many_words.is_match(b"Nikto/2.5"));
        // Either side of the length where the few words hand over to the
        // substring search.
        for len in [
            FewWords::LONGEST - 1,
            FewWords::LONGEST,
            FewWords::LONGEST + 1,
        ] {
            let agent = format!("{}zgrab", "y".repeat(len - 5));
            assert!(few_words.is_match(agent.as_bytes()), "{len}");
            assert!(!few_words.is_match("y".repeat(len).as_bytes()), "{len}");
        }
        // Long values: the scan has no limit, and past its stack buffer the
        // substring search hands over to the regex of the same words.
        let long = format!("{}MASSCAN", "x".repeat(4 * Words::BUFFER));
        assert!(few_words.is_match(long.as_bytes()));
        assert!(many_words.is_match(long.as_bytes()));
        let benign = "y".repeat(4 * Words::BUFFER);
        assert!(!few_words.is_match(benign.as_bytes()));
        assert!(!many_words.is_match(benign.as_bytes()));
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

    /// The rare-byte scan agrees with the plain search on every short
    /// value over bytes that share a case-folded form (`@` and `` ` ``,
    /// `b` and `B`), at every offset across its eight-byte steps, with
    /// words whose rare byte is first, last, in the middle, or shared.
    #[test]
    fn the_rare_byte_scan_agrees_with_a_plain_search_everywhere() {
        for words in [
            &["ab", "b@", "a", "ba@b"][..],
            &["ab@"],
            &["@"],
            &["aab", "bba"],
        ] {
            let Matcher::Few(scan, _) = matcher(words) else {
                panic!("{words:?} are a few plain words");
            };
            let mut found = 0;
            for value in crate::parse::every_string(b"aAbB@`", 6) {
                for pad in [0, 3, 6, 7, 9] {
                    let padded = [&b"xxxxxxxxx"[..pad], &value].concat();
                    let want = naive(words, &padded);
                    found += usize::from(want);
                    assert_eq!(scan.is_match(&padded), want, "{words:?} in {padded:?}");
                }
            }
            assert!(found > 1_000, "{words:?}: {found}");
        }
    }
}
