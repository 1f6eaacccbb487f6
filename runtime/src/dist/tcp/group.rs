//! [`TcpGroup`]: ring collectives over the mesh's connections.

use std::ops::Range;
use std::sync::Arc;

use super::peer::{
    as_bytes, as_bytes_mut, exchange, Peer, Tag, OP_ALL_GATHER, OP_ALL_REDUCE_MAX,
    OP_ALL_REDUCE_SUM, OP_BARRIER, OP_BROADCAST, OP_REDUCE_SCATTER, OP_SEND, PIECE,
};
use crate::dist::{Communicator, Error, Result};

/// Elements per all-reduce bucket (16 MiB of f32).
pub(super) const BUCKET: usize = 4 << 20;

/// Chunk `i` of `n` near-equal chunks of `0..len`.
fn chunk(len: usize, n: usize, i: usize) -> Range<usize> {
    i * len / n..(i + 1) * len / n
}

/// The disjoint ranges `src` (shared) and `dst` (exclusive) of `buf`; `src_first` says which
/// comes first.
fn split_pair(
    buf: &mut [f32],
    src: Range<usize>,
    dst: Range<usize>,
    src_first: bool,
) -> (&[f32], &mut [f32]) {
    if src_first {
        let (lo, hi) = buf.split_at_mut(dst.start);
        (&lo[src], &mut hi[..dst.len()])
    } else {
        let (lo, hi) = buf.split_at_mut(src.start);
        (&hi[..src.len()], &mut lo[dst])
    }
}

fn add(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
}

/// Elementwise maximum; a NaN on either side wins.
fn max(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        if *s > *d || s.is_nan() {
            *d = *s;
        }
    }
}

/// Ring all-reduce of one bucket: reduce-scatter (member `r` ends with the reduced chunk
/// `r + 1`, summed in ring order starting at its owner), then all-gather.
#[allow(clippy::too_many_arguments)]
fn ring_all_reduce(
    b: &mut [f32],
    r: usize,
    n: usize,
    next: &Peer,
    prev: &Peer,
    tag: Tag,
    scratch: &mut [f32],
    reduce: fn(&mut [f32], &[f32]),
) -> Result<()> {
    let len = b.len();
    for s in 0..n - 1 {
        let (sc, rc) = ((r + n - s) % n, (r + 2 * n - s - 1) % n);
        let (src, dst) = split_pair(b, chunk(len, n, sc), chunk(len, n, rc), sc < rc);
        exchange(next, tag, as_bytes(src), || {
            prev.recv_with(tag, dst.len(), scratch, |at, got| {
                reduce(&mut dst[at..at + got.len()], got)
            })
        })?;
    }
    for s in 0..n - 1 {
        let (sc, rc) = ((r + 1 + n - s) % n, (r + n - s) % n);
        let (src, dst) = split_pair(b, chunk(len, n, sc), chunk(len, n, rc), sc < rc);
        exchange(next, tag, as_bytes(src), || {
            prev.recv_into(tag, as_bytes_mut(dst))
        })?;
    }
    Ok(())
}

/// The [`Communicator`] of an ordered subset of the mesh's ranks, over the mesh's connections.
pub struct TcpGroup {
    ranks: Vec<usize>,
    pos: usize,
    /// By member position; `None` at this rank's own position.
    peers: Vec<Option<Arc<Peer>>>,
    id: u64,
    seq: u64,
    /// Point-to-point messages sent to / received from each member.
    sent: Vec<u64>,
    received: Vec<u64>,
    scratch: Vec<f32>,
}

impl TcpGroup {
    /// The group of the global ranks `ranks` (validated by the caller), this rank being
    /// member `pos`, over the mesh's connections `mesh` (by global rank).
    pub(super) fn new(ranks: &[usize], pos: usize, mesh: &[Option<Arc<Peer>>]) -> TcpGroup {
        // FNV-1a over the member list.
        let mut id = 0xcbf2_9ce4_8422_2325_u64;
        for b in ranks.iter().flat_map(|&g| (g as u64).to_le_bytes()) {
            id = (id ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        TcpGroup {
            ranks: ranks.to_vec(),
            pos,
            peers: ranks
                .iter()
                .map(|&g| mesh.get(g).cloned().flatten())
                .collect(),
            id,
            seq: 0,
            sent: vec![0; ranks.len()],
            received: vec![0; ranks.len()],
            scratch: Vec::new(),
        }
    }

    /// Global ranks of the members, in group order.
    pub fn ranks(&self) -> &[usize] {
        &self.ranks
    }

    fn peer(&self, pos: usize) -> Result<&Arc<Peer>> {
        let peer = self
            .peers
            .get(pos)
            .and_then(Option::as_ref)
            .ok_or_else(|| {
                Error::Mismatch(format!(
                    "member {pos} is not another member of group {:?}",
                    self.ranks
                ))
            })?;
        peer.check()?;
        Ok(peer)
    }

    /// The tag of the next collective; fails at once when a member's connection is broken.
    fn begin(&mut self, op: u32) -> Result<Tag> {
        for p in self.peers.iter().flatten() {
            p.check()?;
        }
        self.seq += 1;
        if self.scratch.len() < PIECE {
            self.scratch.resize(PIECE, 0.0);
        }
        Ok(Tag {
            group: self.id,
            seq: self.seq,
            op,
        })
    }

    /// On a failed transfer, shuts the group's connections down (the others then fail fast)
    /// and names the group in mismatch errors.
    fn finish(&self, result: Result<()>) -> Result<()> {
        let Err(e) = result else { return Ok(()) };
        let why = e.to_string();
        for p in self.peers.iter().flatten() {
            p.abort(&why);
        }
        Err(match e {
            Error::Mismatch(m) => Error::Mismatch(format!(
                "{m} (group of global ranks {:?}, this is member {})",
                self.ranks, self.pos
            )),
            e => e,
        })
    }

    fn ring(&self) -> Result<(Arc<Peer>, Arc<Peer>)> {
        let n = self.ranks.len();
        let next = Arc::clone(self.peer((self.pos + 1) % n)?);
        let prev = Arc::clone(self.peer((self.pos + n - 1) % n)?);
        Ok((next, prev))
    }

    fn all_reduce(
        &mut self,
        buf: &mut [f32],
        op: u32,
        reduce: fn(&mut [f32], &[f32]),
    ) -> Result<()> {
        let n = self.ranks.len();
        if n == 1 {
            return Ok(());
        }
        let tag = self.begin(op)?;
        let (next, prev) = self.ring()?;
        let (r, scratch) = (self.pos, &mut self.scratch);
        let mut result = Ok(());
        let mut start = 0;
        // At least one bucket, so that an empty buffer still meets its peers' messages.
        while result.is_ok() && (start < buf.len() || start == 0) {
            let end = buf.len().min(start + BUCKET);
            let b = &mut buf[start..end];
            result = ring_all_reduce(b, r, n, &next, &prev, tag, scratch, reduce);
            start = end.max(1);
        }
        self.finish(result)
    }
}

impl Communicator for TcpGroup {
    fn rank(&self) -> usize {
        self.pos
    }

    fn size(&self) -> usize {
        self.ranks.len()
    }

    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()> {
        self.all_reduce(buf, OP_ALL_REDUCE_SUM, add)
    }

    fn all_reduce_max(&mut self, buf: &mut [f32]) -> Result<()> {
        self.all_reduce(buf, OP_ALL_REDUCE_MAX, max)
    }

    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<()> {
        let n = self.ranks.len();
        if root >= n {
            return Err(Error::Mismatch(format!(
                "broadcast from member {root} of {n}"
            )));
        }
        if n == 1 {
            return Ok(());
        }
        let tag = self.begin(OP_BROADCAST)?;
        let result = if self.pos == root {
            // One peer after another: the sender's link is the bottleneck either way.
            let data = as_bytes(buf);
            self.peers
                .iter()
                .flatten()
                .try_for_each(|peer| peer.send(tag, data))
        } else {
            self.peer(root)
                .and_then(|p| p.recv_into(tag, as_bytes_mut(buf)))
        };
        self.finish(result)
    }

    fn all_gather(&mut self, local: &[f32], out: &mut [f32]) -> Result<()> {
        let (n, m, r) = (self.ranks.len(), local.len(), self.pos);
        if m.checked_mul(n) != Some(out.len()) {
            return Err(Error::Mismatch(format!(
                "all_gather of {m} values from {n} members into {} values",
                out.len()
            )));
        }
        out[r * m..(r + 1) * m].copy_from_slice(local);
        if n == 1 {
            return Ok(());
        }
        let tag = self.begin(OP_ALL_GATHER)?;
        let (next, prev) = self.ring()?;
        let mut result = Ok(());
        for s in 0..n - 1 {
            let (sc, rc) = ((r + n - s) % n, (r + 2 * n - s - 1) % n);
            let (src, dst) = split_pair(out, sc * m..(sc + 1) * m, rc * m..(rc + 1) * m, sc < rc);
            result = exchange(&next, tag, as_bytes(src), || {
                prev.recv_into(tag, as_bytes_mut(dst))
            });
            if result.is_err() {
                break;
            }
        }
        self.finish(result)
    }

    fn reduce_scatter_sum(&mut self, input: &[f32], out: &mut [f32]) -> Result<()> {
        let (n, r) = (self.ranks.len(), self.pos);
        let m = out.len();
        if m.checked_mul(n) != Some(input.len()) {
            return Err(Error::Mismatch(format!(
                "reduce_scatter_sum of {} values over {n} members into {m} values",
                input.len()
            )));
        }
        if n == 1 {
            out.copy_from_slice(input);
            return Ok(());
        }
        let tag = self.begin(OP_REDUCE_SCATTER)?;
        let (next, prev) = self.ring()?;
        // Partial sums alternate between `out` and `temp`; the last step lands in `out`.
        let mut temp = vec![0.0f32; if n > 2 { m.min(BUCKET) } else { 0 }];
        let scratch = &mut self.scratch;
        let mut result = Ok(());
        let mut start = 0;
        while result.is_ok() && (start < m || start == 0) {
            let bl = (m - start).min(BUCKET);
            let out_b = &mut out[start..start + bl];
            let temp_b = &mut temp[..if n > 2 { bl } else { 0 }];
            for s in 0..n - 1 {
                let (sc, rc) = ((r + 2 * n - s - 1) % n, (r + 2 * n - s - 2) % n);
                let to_out = (n - 2 - s) % 2 == 0;
                let own = &input[rc * m + start..][..bl];
                let (src, dst): (&[f32], &mut [f32]) = match (s, to_out) {
                    (0, true) => (&input[sc * m + start..][..bl], &mut *out_b),
                    (0, false) => (&input[sc * m + start..][..bl], &mut *temp_b),
                    (_, true) => (&*temp_b, &mut *out_b),
                    (_, false) => (&*out_b, &mut *temp_b),
                };
                result = exchange(&next, tag, as_bytes(src), || {
                    prev.recv_with(tag, bl, scratch, |at, got| {
                        let dst = &mut dst[at..at + got.len()];
                        for ((d, g), o) in dst.iter_mut().zip(got).zip(&own[at..]) {
                            *d = *g + *o;
                        }
                    })
                });
                if result.is_err() {
                    break;
                }
            }
            start = (start + bl).max(1);
        }
        self.finish(result)
    }

    fn send(&mut self, buf: &[f32], to: usize) -> Result<()> {
        let peer = Arc::clone(self.peer(to)?);
        self.sent[to] += 1;
        let tag = Tag {
            group: self.id,
            seq: self.sent[to],
            op: OP_SEND,
        };
        let result = peer.send(tag, as_bytes(buf));
        self.finish(result)
    }

    fn recv(&mut self, buf: &mut [f32], from: usize) -> Result<()> {
        let peer = Arc::clone(self.peer(from)?);
        self.received[from] += 1;
        let tag = Tag {
            group: self.id,
            seq: self.received[from],
            op: OP_SEND,
        };
        let result = peer.recv_into(tag, as_bytes_mut(buf));
        self.finish(result)
    }

    fn send_recv(&mut self, send: &[f32], to: usize, recv: &mut [f32], from: usize) -> Result<()> {
        let (to_peer, from_peer) = (Arc::clone(self.peer(to)?), Arc::clone(self.peer(from)?));
        self.sent[to] += 1;
        self.received[from] += 1;
        let send_tag = Tag {
            group: self.id,
            seq: self.sent[to],
            op: OP_SEND,
        };
        let recv_tag = Tag {
            seq: self.received[from],
            ..send_tag
        };
        let result = exchange(&to_peer, send_tag, as_bytes(send), || {
            from_peer.recv_into(recv_tag, as_bytes_mut(recv))
        });
        self.finish(result)
    }

    fn barrier(&mut self) -> Result<()> {
        self.all_reduce(&mut [0.0], OP_BARRIER, add)
    }
}
