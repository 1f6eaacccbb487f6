//! Rendezvous and collectives between worker processes.
//!
//! - [`store`]: a TCP key-value store hosted by the node-rank-0 launcher (or rank 0 when no
//!   launcher runs) at `MASTER_ADDR:MASTER_PORT`: `set`/`get`/`wait`/`add` with timeouts and
//!   bounded resources, behind a versioned challenge-response on the job's secret token
//!   ([`auth`]), so that only the job's own processes get in.
//! - [`tcp`]: a full mesh of TCP connections between the ranks, found through the store, and
//!   [`TcpGroup`](tcp::TcpGroup): the [`Communicator`] of any ordered subset of ranks (the
//!   world, a data-, tensor- or pipeline-parallel group) with ring collectives over it.
//!
//! Every wait has a timeout; a peer that dies shows up as [`Error::PeerLost`] at once (its
//! socket closes), not as a hang.

pub mod auth;
pub mod store;
pub mod tcp;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Protocol version of the store and mesh handshakes; peers with another version are refused.
/// Version 2: challenge-response on the job's token ([`auth`]).
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest payload of one frame; longer messages are split.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// A rendezvous or collective failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing arrived within the timeout.
    #[error("timed out after {secs:.0}s waiting for {what}; raise the timeout (--cluster-time-out or PRETRAIN_COMM_TIMEOUT) or check that every rank is running")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The timeout.
        secs: f64,
    },
    /// A peer closed its connection or sent garbage: it died or was killed.
    #[error("lost rank {rank}: {detail}")]
    PeerLost {
        /// Global rank of the peer.
        rank: usize,
        /// What happened.
        detail: String,
    },
    /// The other side is not a peer of this job (another job id, another protocol version,
    /// not a pretrain process).
    #[error("{0}")]
    Handshake(String),
    /// The master's port could not be bound.
    #[error("cannot listen on {addr}: {source}; another process holds the port (choose another --master-port) or the address is not local")]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Any other socket error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The store refused a request: one of its limits was reached.
    #[error("{0}")]
    Refused(String),
    /// Ranks called collectives in a different order, or with different sizes.
    #[error("collective mismatch: {0}")]
    Mismatch(String),
}

impl Error {
    /// The process exit code: a peer of another job is a configuration error; lost peers,
    /// timeouts and socket errors may pass on a retry.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Handshake(_) => crate::exit::CONFIG_INVALID,
            _ => crate::exit::RETRYABLE,
        }
    }
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Collectives over an ordered group of ranks. Ranks and roots are positions in the group
/// (0..size), not global ranks. Every call must be made by every member, in the same order,
/// with the same lengths; results are bitwise identical on every member and deterministic
/// across runs (fixed reduction order).
pub trait Communicator: Send {
    /// This process's position in the group.
    fn rank(&self) -> usize;
    /// Members in the group.
    fn size(&self) -> usize;
    /// `buf` ← elementwise sum over members.
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()>;
    /// `buf` ← elementwise maximum over members.
    fn all_reduce_max(&mut self, buf: &mut [f32]) -> Result<()>;
    /// `buf` ← the root's `buf`.
    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<()>;
    /// `out` (size · local.len()) ← every member's `local`, in group order.
    fn all_gather(&mut self, local: &[f32], out: &mut [f32]) -> Result<()>;
    /// `out` (input.len() / size) ← this member's chunk of the elementwise sum of `input`
    /// (chunk r is `input[r·n..(r+1)·n]`); `input.len()` must divide by `size`.
    fn reduce_scatter_sum(&mut self, input: &[f32], out: &mut [f32]) -> Result<()>;
    /// Sends `buf` to member `to` (blocks until handed to the socket).
    fn send(&mut self, buf: &[f32], to: usize) -> Result<()>;
    /// Receives exactly `buf.len()` values from member `from`.
    fn recv(&mut self, buf: &mut [f32], from: usize) -> Result<()>;
    /// Returns once every member has called it.
    fn barrier(&mut self) -> Result<()>;
    /// Sends `send` to member `to` while receiving `recv` from member `from` (the pipeline's
    /// "send forward, receive backward"): both directions proceed together, so two members
    /// exchanging large buffers cannot deadlock on full socket buffers. The default is
    /// sequential and only safe for buffers the transport can hold.
    fn send_recv(&mut self, send: &[f32], to: usize, recv: &mut [f32], from: usize) -> Result<()> {
        self.send(send, to)?;
        self.recv(recv, from)
    }
}

/// [`comm_timeout`] in milliseconds.
static COMM_TIMEOUT_MS: AtomicU64 = AtomicU64::new(600_000);

/// Sets the timeout of every collective and store wait of this process (default 600 s). The
/// binary calls it once at start from `PRETRAIN_COMM_TIMEOUT`; it is process-wide because
/// every socket of the process shares it.
pub fn set_comm_timeout(timeout: Duration) {
    let ms = timeout.as_millis().clamp(1, u64::MAX as u128) as u64;
    COMM_TIMEOUT_MS.store(ms, Ordering::Relaxed);
}

/// Timeout of every collective wait (see [`set_comm_timeout`]).
pub fn comm_timeout() -> Duration {
    Duration::from_millis(COMM_TIMEOUT_MS.load(Ordering::Relaxed))
}

/// The single-process group: every collective is the identity.
pub struct SoloComm;

impl Communicator for SoloComm {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&mut self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_max(&mut self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&mut self, _: &mut [f32], _: usize) -> Result<()> {
        Ok(())
    }
    fn all_gather(&mut self, local: &[f32], out: &mut [f32]) -> Result<()> {
        out.copy_from_slice(local);
        Ok(())
    }
    fn reduce_scatter_sum(&mut self, input: &[f32], out: &mut [f32]) -> Result<()> {
        out.copy_from_slice(input);
        Ok(())
    }
    fn send(&mut self, _: &[f32], to: usize) -> Result<()> {
        Err(Error::Mismatch(format!("send to {to} in a group of one")))
    }
    fn recv(&mut self, _: &mut [f32], from: usize) -> Result<()> {
        Err(Error::Mismatch(format!(
            "recv from {from} in a group of one"
        )))
    }
    fn barrier(&mut self) -> Result<()> {
        Ok(())
    }
}
