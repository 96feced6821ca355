//! Which fixed-size chunks of a backend were written since the map was made: a bitmap of
//! atomic words, marked by every write before it reaches the store, so a chunk whose write was
//! acknowledged is always marked. Its owner reads it after the export stops (an incremental
//! snapshot reads only the marked chunks).

use std::sync::atomic::{AtomicU64, Ordering};

/// The chunks of a store written since this map was made.
#[derive(Debug)]
pub struct DirtyMap {
    chunk_bytes: u64,
    chunks: u64,
    words: Vec<AtomicU64>,
}

impl DirtyMap {
    /// A clean map of a `size_bytes` store cut into `chunk_bytes` chunks (at least 1 byte).
    pub fn new(size_bytes: u64, chunk_bytes: u64) -> Self {
        let chunk_bytes = chunk_bytes.max(1);
        let chunks = size_bytes.div_ceil(chunk_bytes);
        let words = (0..chunks.div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect();
        DirtyMap {
            chunk_bytes,
            chunks,
            words,
        }
    }

    pub fn chunk_bytes(&self) -> u64 {
        self.chunk_bytes
    }

    /// Marks every chunk that `len` bytes at `offset` touch (those past the end are ignored).
    pub fn mark(&self, offset: u64, len: u64) {
        if len == 0 || self.chunks == 0 {
            return;
        }
        let first = offset / self.chunk_bytes;
        let last = (offset.saturating_add(len) - 1) / self.chunk_bytes;
        for chunk in first..=last.min(self.chunks.saturating_sub(1)) {
            self.words[(chunk / 64) as usize].fetch_or(1 << (chunk % 64), Ordering::Relaxed);
        }
    }

    /// The marked chunks' indices, lowest first.
    pub fn chunks(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for (w, word) in self.words.iter().enumerate() {
            let mut bits = word.load(Ordering::Relaxed);
            while bits != 0 {
                let bit = u64::from(bits.trailing_zeros());
                out.push(w as u64 * 64 + bit);
                bits &= bits - 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_marks_every_chunk_it_touches_and_no_other() {
        let map = DirtyMap::new(10 * 512 * 1024, 512 * 1024);
        assert!(map.chunks().is_empty());
        map.mark(0, 512);
        map.mark(512 * 1024 - 1, 2); // straddles chunks 0 and 1
        map.mark(5 * 512 * 1024, 512 * 1024); // exactly chunk 5
        map.mark(9 * 512 * 1024 + 7, 0); // nothing written
        assert_eq!(map.chunks(), [0, 1, 5]);
    }

    #[test]
    fn chunks_beyond_one_word_and_past_the_end() {
        let map = DirtyMap::new(200 * 4096, 4096);
        map.mark(63 * 4096, 2 * 4096);
        map.mark(199 * 4096, 4096);
        map.mark(250 * 4096, 4096); // past the end of the store
        map.mark(u64::MAX - 10, 100); // an offset that would overflow
        assert_eq!(map.chunks(), [63, 64, 199]);
    }
}
