//! Byte-pair merging of one pre-tokenized word, with the same result as `tokenizers`'
//! `Word::merge_all`: repeatedly merge the adjacent pair with the lowest merge rank, the
//! leftmost one among equal ranks.
//!
//! `tokenizers` keeps a priority queue ordered by (rank, position) and skips stale entries.
//! Positions are those of the left symbol in the original byte sequence and never move, so
//! popping the minimum (rank, position) is exactly "lowest rank, leftmost"; a stale entry can
//! never pass its validity check because a changed pair always spells a longer string and so
//! names a different token. Short words (nearly all of them) therefore use a plain array scan,
//! which is faster; long ones use the same queue algorithm to stay O(n log n).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Words longer than this many bytes use the priority-queue algorithm.
const LONG_WORD: usize = 96;

/// FxHash (the hash used inside rustc): a multiply and a rotate per word of input. The maps
/// here are keyed by token ids and word bytes from the corpus; SipHash, std's default, costs
/// several times more and its flooding resistance buys nothing for an offline batch tool.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// A `HashMap` with [`FxHasher`].
pub(crate) type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The BPE model reduced to what encoding byte-level words needs.
pub(crate) struct Merges {
    /// The id of each single byte's token.
    pub(crate) byte_ids: [u32; 256],
    /// `(left << 32) | right` → `(rank, merged id)`.
    pub(crate) pairs: FxHashMap<u64, (u32, u32)>,
    /// For `ignore_merges`: every vocabulary entry that is a byte string, by its bytes.
    pub(crate) whole_words: Option<FxHashMap<Box<[u8]>, u32>>,
}

/// Reusable buffers for [`Merges::encode_word`].
#[derive(Default)]
pub(crate) struct Scratch {
    symbols: Vec<u32>,
    ranks: Vec<(u32, u32)>,
    links: Vec<(usize, usize, u32)>,
    queue: BinaryHeap<Reverse<(u32, usize, u32)>>,
}

const NONE: (u32, u32) = (u32::MAX, u32::MAX);

impl Merges {
    #[inline]
    fn pair(&self, left: u32, right: u32) -> (u32, u32) {
        self.pairs
            .get(&((u64::from(left) << 32) | u64::from(right)))
            .copied()
            .unwrap_or(NONE)
    }

    /// Appends the token ids of one pre-tokenized word (its UTF-8 bytes) to `out`.
    pub(crate) fn encode_word(&self, word: &[u8], out: &mut Vec<u32>, scratch: &mut Scratch) {
        if let Some(whole) = &self.whole_words {
            if let Some(&id) = whole.get(word) {
                out.push(id);
                return;
            }
        }
        match word.len() {
            0 => {}
            1 => out.push(self.byte_ids[usize::from(word[0])]),
            n if n <= LONG_WORD => self.merge_short(word, out, scratch),
            _ => self.merge_long(word, out, scratch),
        }
    }

    /// The array algorithm: `ranks[i]` is the merge of `symbols[i]` and `symbols[i + 1]`.
    fn merge_short(&self, word: &[u8], out: &mut Vec<u32>, s: &mut Scratch) {
        let (symbols, ranks) = (&mut s.symbols, &mut s.ranks);
        symbols.clear();
        symbols.extend(word.iter().map(|&b| self.byte_ids[usize::from(b)]));
        ranks.clear();
        ranks.extend(symbols.windows(2).map(|w| self.pair(w[0], w[1])));
        loop {
            // The leftmost pair with the lowest rank; `<` keeps the first of equal ranks.
            let mut best = 0;
            for (i, r) in ranks.iter().enumerate().skip(1) {
                if r.0 < ranks[best].0 {
                    best = i;
                }
            }
            let Some(&(rank, merged)) = ranks.get(best) else {
                break;
            };
            if rank == u32::MAX {
                break;
            }
            symbols[best] = merged;
            symbols.remove(best + 1);
            ranks.remove(best);
            if best < ranks.len() {
                ranks[best] = self.pair(symbols[best], symbols[best + 1]);
            }
            if best > 0 {
                ranks[best - 1] = self.pair(symbols[best - 1], symbols[best]);
            }
        }
        out.extend_from_slice(symbols);
    }

    /// The priority-queue algorithm of `tokenizers`' `Word::merge_all`, on a doubly linked
    /// list of symbols (`links[i] = (prev, next, id)`, `usize::MAX` for none, id `u32::MAX`
    /// for a symbol merged into its left neighbour).
    fn merge_long(&self, word: &[u8], out: &mut Vec<u32>, s: &mut Scratch) {
        const END: usize = usize::MAX;
        let n = word.len();
        let (links, queue) = (&mut s.links, &mut s.queue);
        links.clear();
        links.extend(word.iter().enumerate().map(|(i, &b)| {
            let prev = if i == 0 { END } else { i - 1 };
            let next = if i + 1 == n { END } else { i + 1 };
            (prev, next, self.byte_ids[usize::from(b)])
        }));
        queue.clear();
        for i in 0..n - 1 {
            let (rank, merged) = self.pair(links[i].2, links[i + 1].2);
            if rank != u32::MAX {
                queue.push(Reverse((rank, i, merged)));
            }
        }
        while let Some(Reverse((_, pos, merged))) = queue.pop() {
            let (prev, next, id) = links[pos];
            if id == u32::MAX || next == END {
                continue;
            }
            // A stale entry: the pair at `pos` changed since it was queued.
            if self.pair(id, links[next].2).1 != merged {
                continue;
            }
            let after = links[next].1;
            links[pos] = (prev, after, merged);
            links[next].2 = u32::MAX;
            if after != END {
                links[after].0 = pos;
            }
            if prev != END {
                let (rank, m) = self.pair(links[prev].2, merged);
                if rank != u32::MAX {
                    queue.push(Reverse((rank, prev, m)));
                }
            }
            if after != END {
                let (rank, m) = self.pair(merged, links[after].2);
                if rank != u32::MAX {
                    queue.push(Reverse((rank, pos, m)));
                }
            }
        }
        let mut i = 0;
        while i != END {
            out.push(links[i].2);
            i = links[i].1;
        }
    }
}
