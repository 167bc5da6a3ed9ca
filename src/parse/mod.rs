//! The parsers: what a request says about its host and its client, read
//! from bytes without allocating. Nothing here judges anything; the rules
//! and the audit output build on it.

pub(crate) mod addr;
pub(crate) mod ascii;
pub(crate) mod forwarded;
pub(crate) mod headers;
pub(crate) mod host;
#[cfg(all(
    feature = "proxy-protocol",
    any(feature = "server", feature = "axum", feature = "tonic")
))]
pub(crate) mod proxy_protocol;

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
}
