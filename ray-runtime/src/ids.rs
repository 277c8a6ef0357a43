//! Request and job ids: a prefix and 16 hex chars, unique per process and hard to guess.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Generates ids such as `req_3f9a1c2b7d4e5f60`.
#[derive(Debug)]
pub struct IdSource {
    counter: AtomicU64,
    key: u64,
}

impl Default for IdSource {
    fn default() -> IdSource {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        // RandomState is seeded from the OS, so two processes never share a sequence.
        let key = std::collections::hash_map::RandomState::new().hash_one(nanos);
        IdSource {
            counter: AtomicU64::new(nanos),
            key,
        }
    }
}

impl IdSource {
    /// The next id with `prefix` (`req_` or `job_`).
    pub fn next(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(prefix.len() + 16);
        id.push_str(prefix);
        push_hex16(&mut id, splitmix64(n ^ self.key));
        id
    }
}

/// Appends `value` as 16 lower-case hex digits (what `{:016x}` writes, without the
/// formatter: this runs for every request).
pub(crate) fn push_hex16(out: &mut String, value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(char::from(DIGITS[((value >> (shift * 4)) & 0xf) as usize]));
    }
}

/// SplitMix64: a bijection on u64, so distinct counters give distinct ids.
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a, 64 bits, of `parts`, each followed by a 0xff separator: stable across builds and
/// platforms, unlike the standard hasher, and cheap on short inputs.
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(std::iter::once(&0xff)) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digits_match_the_formatter() {
        for value in [0, 1, 0xabc, u64::MAX, 0x0123_4567_89ab_cdef, splitmix64(7)] {
            let mut out = String::new();
            push_hex16(&mut out, value);
            assert_eq!(out, format!("{value:016x}"));
        }
    }

    #[test]
    fn ids_are_unique_and_well_formed() {
        let ids = IdSource::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = ids.next("req_");
            assert_eq!(id.len(), 20);
            assert!(id[4..].bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(seen.insert(id));
        }
    }
}
