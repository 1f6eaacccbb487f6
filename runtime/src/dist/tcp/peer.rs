//! One connection to a peer and the framing of messages over it.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use crate::dist::{Error, Result, MAX_FRAME_BYTES};

const _: () = assert!(
    cfg!(target_endian = "little"),
    "the mesh sends f32 values as their in-memory (little-endian) bytes"
);

/// Elements read at a time before being reduced into the destination (256 KiB).
pub(super) const PIECE: usize = 64 << 10;
/// Elements per frame.
pub(super) const FRAME_ELEMS: usize = MAX_FRAME_BYTES / 4;
/// Frame header: group id, sequence number, op code, payload length.
const HEADER_BYTES: usize = 24;
/// Messages up to this size are sent without a helper thread (see [`exchange`]).
const INLINE_SEND_BYTES: usize = 8 << 10;

pub(super) const OP_ALL_REDUCE_SUM: u32 = 1;
pub(super) const OP_ALL_REDUCE_MAX: u32 = 2;
pub(super) const OP_BROADCAST: u32 = 3;
pub(super) const OP_ALL_GATHER: u32 = 4;
pub(super) const OP_REDUCE_SCATTER: u32 = 5;
pub(super) const OP_SEND: u32 = 6;
pub(super) const OP_BARRIER: u32 = 7;

fn op_name(op: u32) -> &'static str {
    match op {
        OP_ALL_REDUCE_SUM => "all_reduce_sum",
        OP_ALL_REDUCE_MAX => "all_reduce_max",
        OP_BROADCAST => "broadcast",
        OP_ALL_GATHER => "all_gather",
        OP_REDUCE_SCATTER => "reduce_scatter_sum",
        OP_SEND => "send",
        OP_BARRIER => "barrier",
        _ => "unknown op",
    }
}

pub(super) fn as_bytes(x: &[f32]) -> &[u8] {
    // SAFETY: the pointer and byte length cover exactly `x`; u8 has alignment 1 and every
    // byte of an f32 is initialised; the borrow keeps `x` alive and shared.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u8>(), std::mem::size_of_val(x)) }
}

pub(super) fn as_bytes_mut(x: &mut [f32]) -> &mut [u8] {
    // SAFETY: as in `as_bytes`, and every bit pattern is a valid f32, so any bytes written
    // through the returned slice leave `x` valid; the borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(x)) }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The identity of one message: which group, which op of it, which kind of op.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Tag {
    pub(super) group: u64,
    pub(super) seq: u64,
    pub(super) op: u32,
}

impl Tag {
    fn describe(self, len: usize) -> String {
        format!(
            "{} #{} of group {:016x} ({len} bytes)",
            op_name(self.op),
            self.seq,
            self.group
        )
    }
}

/// One connection to a peer: reader and writer halves behind their own locks, so a send and
/// a receive can run at once.
pub(super) struct Peer {
    pub(super) rank: usize,
    reader: Mutex<TcpStream>,
    writer: Mutex<TcpStream>,
    control: TcpStream,
    broken: OnceLock<String>,
    timeout: Duration,
}

impl Peer {
    pub(super) fn new(rank: usize, stream: TcpStream, timeout: Duration) -> Result<Peer> {
        let io_err = |source| Error::Io {
            what: format!("configuring the connection to rank {rank}"),
            source,
        };
        stream.set_nodelay(true).map_err(io_err)?;
        stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
        stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
        Ok(Peer {
            rank,
            reader: Mutex::new(stream.try_clone().map_err(io_err)?),
            writer: Mutex::new(stream.try_clone().map_err(io_err)?),
            control: stream,
            broken: OnceLock::new(),
            timeout,
        })
    }

    pub(super) fn check(&self) -> Result<()> {
        match self.broken.get() {
            Some(why) => Err(Error::PeerLost {
                rank: self.rank,
                detail: format!("the connection was shut down after an earlier error: {why}"),
            }),
            None => Ok(()),
        }
    }

    /// Marks the connection unusable and shuts it down, unblocking any send or receive on it.
    pub(super) fn abort(&self, why: &str) {
        if self.broken.set(why.to_string()).is_ok() {
            let _ = self.control.shutdown(Shutdown::Both);
        }
    }

    fn err(&self, e: io::Error, sending: bool) -> Error {
        use io::ErrorKind as K;
        if let Err(e) = self.check() {
            return e;
        }
        let rank = self.rank;
        match e.kind() {
            K::WouldBlock | K::TimedOut => Error::Timeout {
                what: if sending {
                    format!("rank {rank} to take data")
                } else {
                    format!("data from rank {rank}")
                },
                secs: self.timeout.as_secs_f64(),
            },
            K::UnexpectedEof
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::NotConnected
            | K::WriteZero => Error::PeerLost {
                rank,
                detail: format!("its connection closed ({e}): the process exited or was killed"),
            },
            _ => Error::Io {
                what: if sending {
                    format!("sending to rank {rank}")
                } else {
                    format!("receiving from rank {rank}")
                },
                source: e,
            },
        }
    }

    /// Sends `data` as one message (one empty frame when `data` is empty).
    pub(super) fn send(&self, tag: Tag, data: &[u8]) -> Result<()> {
        let mut w = lock(&self.writer);
        let mut frames = data.chunks(MAX_FRAME_BYTES);
        let first = frames.next().unwrap_or(&[]);
        for payload in std::iter::once(first).chain(frames) {
            write_frame(&mut w, tag, payload).map_err(|e| self.err(e, true))?;
        }
        Ok(())
    }

    /// Reads and checks the header of the next frame, which must carry `len` bytes of `tag`.
    fn read_header(&self, r: &mut TcpStream, tag: Tag, len: usize) -> Result<()> {
        let mut h = [0u8; HEADER_BYTES];
        r.read_exact(&mut h).map_err(|e| self.err(e, false))?;
        let field = |at: usize, width: usize| {
            let mut b = [0u8; 8];
            b[..width].copy_from_slice(&h[at..at + width]);
            u64::from_le_bytes(b)
        };
        let got = Tag {
            group: field(0, 8),
            seq: field(8, 8),
            op: field(16, 4) as u32,
        };
        let got_len = field(20, 4) as usize;
        if got != tag || got_len != len {
            return Err(Error::Mismatch(format!(
                "rank {} sent {}, but this rank expects {}",
                self.rank,
                got.describe(got_len),
                tag.describe(len)
            )));
        }
        Ok(())
    }

    /// Receives one message of exactly `dst.len()` bytes into `dst`.
    pub(super) fn recv_into(&self, tag: Tag, dst: &mut [u8]) -> Result<()> {
        let mut r = lock(&self.reader);
        if dst.is_empty() {
            return self.read_header(&mut r, tag, 0);
        }
        for frame in dst.chunks_mut(MAX_FRAME_BYTES) {
            self.read_header(&mut r, tag, frame.len())?;
            r.read_exact(frame).map_err(|e| self.err(e, false))?;
        }
        Ok(())
    }

    /// Receives one message of `n` values, handing it to `take(offset, values)` piece by piece
    /// through `scratch` (at least `PIECE` long).
    pub(super) fn recv_with(
        &self,
        tag: Tag,
        n: usize,
        scratch: &mut [f32],
        mut take: impl FnMut(usize, &[f32]),
    ) -> Result<()> {
        let mut r = lock(&self.reader);
        if n == 0 {
            return self.read_header(&mut r, tag, 0);
        }
        let mut done = 0;
        while done < n {
            let frame_end = n.min(done + FRAME_ELEMS);
            self.read_header(&mut r, tag, (frame_end - done) * 4)?;
            while done < frame_end {
                let piece = &mut scratch[..(frame_end - done).min(PIECE)];
                r.read_exact(as_bytes_mut(piece))
                    .map_err(|e| self.err(e, false))?;
                take(done, piece);
                done += piece.len();
            }
        }
        Ok(())
    }
}

/// Writes one frame (header and payload) with vectored writes.
fn write_frame(w: &mut TcpStream, tag: Tag, payload: &[u8]) -> io::Result<()> {
    let mut head = [0u8; HEADER_BYTES];
    head[..8].copy_from_slice(&tag.group.to_le_bytes());
    head[8..16].copy_from_slice(&tag.seq.to_le_bytes());
    head[16..20].copy_from_slice(&tag.op.to_le_bytes());
    head[20..].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut bufs = [IoSlice::new(&head), IoSlice::new(payload)];
    let mut bufs = &mut bufs[..];
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends `data` to `next` on a scoped thread while `recv` runs on this one, so that two ranks
/// sending to each other cannot deadlock on full socket buffers. Small messages are sent
/// first on this thread: they fit the socket buffers, and around a ring a rank is never more
/// than a few messages ahead of the next one.
pub(super) fn exchange(
    next: &Peer,
    tag: Tag,
    data: &[u8],
    recv: impl FnOnce() -> Result<()>,
) -> Result<()> {
    if data.len() <= INLINE_SEND_BYTES {
        next.send(tag, data)?;
        return recv();
    }
    std::thread::scope(|s| {
        let sender = std::thread::Builder::new()
            .name("mesh-send".into())
            .spawn_scoped(s, || next.send(tag, data))
            .map_err(|source| Error::Io {
                what: "starting a send thread".into(),
                source,
            })?;
        let received = recv();
        if let Err(e) = &received {
            next.abort(&e.to_string());
        }
        let sent = sender.join().unwrap_or_else(|_| {
            Err(Error::Io {
                what: format!("sending to rank {}", next.rank),
                source: io::Error::other("the send thread panicked"),
            })
        });
        received.and(sent)
    })
}
