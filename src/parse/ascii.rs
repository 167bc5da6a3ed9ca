//! ASCII eight bytes at a time, in plain `u64` arithmetic: every allowed
//! request compares its Host with the served names and searches its
//! User-Agent, and a byte loop costs several instructions a byte where
//! these cost about one. Portable and safe, so no SIMD intrinsics and no
//! `unsafe`.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = ONES * 0x80;

/// The eight bytes of `bytes` from `at`, little-endian, with zeros past
/// its end.
pub(crate) fn word_at(bytes: &[u8], at: usize) -> u64 {
    let load = |eight: &[u8]| u64::from_le_bytes(eight.try_into().expect("eight bytes"));
    if let Some(word) = bytes.get(at..at + 8) {
        return load(word);
    }
    let tail = bytes.len().saturating_sub(at);
    if tail == 0 {
        return 0;
    }
    if let Some(start) = bytes.len().checked_sub(8) {
        // The last eight bytes, shifted down past those before `at`: no
        // copy of a variable length.
        return load(&bytes[start..]) >> (8 * (8 - tail));
    }
    bytes[at..]
        .iter()
        .rev()
        .fold(0, |word, &b| (word << 8) | u64::from(b))
}

/// `word` with each ASCII capital turned to its small letter.
pub(crate) fn lowercase(word: u64) -> u64 {
    let low7 = word & !HIGH;
    // The high bit of each byte: set when the byte's low seven bits are
    // at least `A`, and when they are past `Z`.
    let from_a = low7 + ONES * u64::from(0x80 - b'A');
    let past_z = low7 + ONES * u64::from(0x80 - b'Z' - 1);
    // Only bytes below 0x80 are ASCII letters.
    let upper = (from_a ^ past_z) & !word & HIGH;
    word | (upper >> 2)
}

/// `from` in ASCII lowercase, into `to` of the same length.
pub(crate) fn lowercase_into(from: &[u8], to: &mut [u8]) {
    let mut from_words = from.chunks_exact(8);
    let mut to_words = to.chunks_exact_mut(8);
    for (f, t) in (&mut from_words).zip(&mut to_words) {
        t.copy_from_slice(&lowercase(word_at(f, 0)).to_le_bytes());
    }
    for (f, t) in from_words.remainder().iter().zip(to_words.into_remainder()) {
        *t = f.to_ascii_lowercase();
    }
}

/// `word` with the bit that tells an ASCII letter's cases apart set in
/// every byte. Other bytes may collide too (`@` with `` ` ``), so it only
/// serves to find candidates, which a real comparison then confirms.
pub(crate) fn fold(word: u64) -> u64 {
    word | splat(0x20)
}

/// The high bit of every zero byte of `word`. A byte just above a zero byte
/// may be flagged too (the borrow runs into it), but a zero byte is never
/// missed, so the result names candidates, not matches.
pub(crate) fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(ONES) & !word & HIGH
}

/// `byte` in each of the eight bytes of a word.
pub(crate) const fn splat(byte: u8) -> u64 {
    ONES * byte as u64
}

/// Whether `value` in ASCII lowercase is `lower`, which is lowercase
/// already.
pub(crate) fn eq_lowercase(lower: &[u8], value: &[u8]) -> bool {
    let len = value.len();
    if lower.len() != len {
        return false;
    }
    // What clients send is lowercase already (browsers lowercase the
    // Host), and one byte compare settles it.
    if value == lower {
        return true;
    }
    let Some(last) = len.checked_sub(8) else {
        return value
            .iter()
            .zip(lower)
            .all(|(v, l)| v.to_ascii_lowercase() == *l);
    };
    let load = |bytes: &[u8], at: usize| word_at(bytes, at);
    // Whole words, then the last eight bytes, which may overlap the word
    // before: no partial word to pad.
    (0..last)
        .step_by(8)
        .all(|at| lowercase(load(value, at)) == load(lower, at))
        && lowercase(load(value, last)) == load(lower, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercase_agrees_with_std_on_every_byte() {
        let every_byte: Vec<u8> = (0..=255).collect();
        for at in 0..every_byte.len() {
            let want = word_at(&every_byte.to_ascii_lowercase(), at);
            assert_eq!(lowercase(word_at(&every_byte, at)), want, "at {at}");
        }
    }

    #[test]
    fn lowercase_into_agrees_with_std_on_every_byte_and_length() {
        let every_byte: Vec<u8> = (0..=255).collect();
        for start in 0..9 {
            let from = &every_byte[start..];
            let mut to = vec![0; from.len()];
            lowercase_into(from, &mut to);
            assert_eq!(to, from.to_ascii_lowercase());
        }
    }

    #[test]
    fn word_at_pads_with_zeros() {
        assert_eq!(word_at(b"abc", 0), u64::from_le_bytes(*b"abc\0\0\0\0\0"));
        assert_eq!(word_at(b"abc", 3), 0);
        assert_eq!(word_at(b"abcdefghij", 2), u64::from_le_bytes(*b"cdefghij"));
        assert_eq!(
            word_at(b"abcdefghij", 8),
            u64::from_le_bytes(*b"ij\0\0\0\0\0\0")
        );
        assert_eq!(
            word_at(b"abcdefghij", 9),
            u64::from_le_bytes(*b"j\0\0\0\0\0\0\0")
        );
        assert_eq!(word_at(b"abcdefghij", 10), 0);
        assert_eq!(word_at(b"abcdefghij", 11), 0);
        assert_eq!(word_at(b"abcdefg", 1), u64::from_le_bytes(*b"bcdefg\0\0"));
    }

    #[test]
    fn zero_bytes_never_misses_a_zero() {
        for case in crate::parse::every_string(&[0, 1, 0x80, 0xff], 8) {
            let flagged = zero_bytes(word_at(&case, 0));
            for (i, &b) in case.iter().enumerate() {
                if b == 0 {
                    assert_ne!(flagged & (0x80 << (8 * i)), 0, "{case:?}");
                }
            }
            if case.len() == 8 && !case.contains(&0) {
                assert_eq!(flagged, 0, "{case:?}");
            }
        }
    }

    #[test]
    fn eq_lowercase_agrees_with_std() {
        let lower = b"www.example-1.com";
        for value in [
            &b"WWW.Example-1.COM"[..],
            b"www.example-1.com",
            b"www.example-1.co",
            b"www.example-1.comm",
            b"www.exampl\xc5-1.com",
            b"www.example_1.com",
            b"",
        ] {
            assert_eq!(
                eq_lowercase(lower, value),
                value.eq_ignore_ascii_case(lower),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
        assert!(eq_lowercase(b"", b""));
    }
}
