//! Deterministic byte patterns for interop checks: the same seed gives the same bytes on the
//! host and inside a QEMU guest, so either side can verify what the other wrote.

/// `len` pseudo-random bytes from `seed` (xorshift64).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}
