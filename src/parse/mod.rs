//! The parsers: what a request says about its host and its client, read
//! from bytes without allocating. Nothing here judges anything; the rules
//! and the audit output build on it.

pub(crate) mod addr;
pub(crate) mod forwarded;
pub(crate) mod headers;
pub(crate) mod host;

/// `from` in ASCII lowercase, into `to` of the same length: eight bytes at
/// a time, since every allowed request pays for it.
pub(crate) fn lowercase_into(from: &[u8], to: &mut [u8]) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES * 0x80;
    let mut from_chunks = from.chunks_exact(8);
    let mut to_chunks = to.chunks_exact_mut(8);
    for (f, t) in (&mut from_chunks).zip(&mut to_chunks) {
        let x = u64::from_le_bytes(f.try_into().expect("chunks of eight"));
        let low7 = x & !HIGH;
        // The high bit of each byte: set when the byte's low seven bits are
        // at least `A`, and when they are past `Z`.
        let from_a = low7 + ONES * u64::from(0x80 - b'A');
        let past_z = low7 + ONES * u64::from(0x80 - b'Z' - 1);
        // Only bytes below 0x80 are ASCII letters.
        let upper = (from_a ^ past_z) & !x & HIGH;
        t.copy_from_slice(&(x | (upper >> 2)).to_le_bytes());
    }
    for (f, t) in from_chunks
        .remainder()
        .iter()
        .zip(to_chunks.into_remainder())
    {
        *t = f.to_ascii_lowercase();
    }
}

/// Every string of up to `max_len` bytes drawn from `alphabet`, shortest
/// first: the inputs a fast parser is checked against its reference on.
#[cfg(test)]
pub(crate) fn every_string(alphabet: &[u8], max_len: usize) -> Vec<Vec<u8>> {
    let mut all = vec![Vec::new()];
    let mut level = 0..1;
    for _ in 0..max_len {
        let start = all.len();
        for i in level {
            for &b in alphabet {
                let mut longer = all[i].clone();
                longer.push(b);
                all.push(longer);
            }
        }
        level = start..all.len();
    }
    all
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_string_counts_right() {
        let all = super::every_string(b"ab", 3);
        assert_eq!(all.len(), 1 + 2 + 4 + 8);
        assert!(all.contains(&b"bab".to_vec()));
    }

    #[test]
    fn lowercase_into_agrees_with_std_on_every_byte_and_length() {
        let every_byte: Vec<u8> = (0..=255).collect();
        for start in 0..9 {
            let from = &every_byte[start..];
            let mut to = vec![0; from.len()];
            super::lowercase_into(from, &mut to);
            assert_eq!(to, from.to_ascii_lowercase());
        }
    }
}
