//! A full mesh of TCP connections between the ranks and ring collectives over it.
//!
//! [`Mesh::connect`] finds the peers through the store and opens one connection per pair of
//! ranks; [`Mesh::group`] makes the [`Communicator`] of any ordered subset of ranks. Groups
//! share the mesh's connections, so two ranks must use the groups they share in the same
//! order, and one connection must not be used by two threads at once.
//!
//! Every message is a sequence of frames: a 24-byte header (group id, per-op sequence number,
//! op code, payload length; little-endian) and at most [`MAX_FRAME_BYTES`] of payload. The
//! receiver knows what it expects and checks every header, so ranks that call collectives in
//! different orders or with different sizes get [`Error::Mismatch`], never mixed-up data.
//! After any error during a transfer the group's connections are shut down, so the other
//! members see [`Error::PeerLost`] at once instead of waiting for the timeout.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::auth::{self, Nonce, Token, PROOF_BYTES};
use super::store::{deadline_after, left, StoreClient};
use super::{comm_timeout, Error, Result, PROTOCOL_VERSION};
#[cfg(doc)]
use super::{Communicator, MAX_FRAME_BYTES};

mod group;
mod peer;

pub use group::TcpGroup;
use peer::Peer;

const MAGIC: &[u8; 13] = b"PRETRAIN-MESH";
const MAX_JOB_BYTES: usize = 4096;
/// Role labels of the two proofs of a mesh handshake.
const CONNECT_ROLE: &str = "pretrain-mesh-connect";
const ACCEPT_ROLE: &str = "pretrain-mesh-accept";
/// Time a connection to a rank's mesh port has for its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one rank tells another when they connect: then each proves the job's token with an
/// HMAC over both hellos ([`auth`]); neither the token nor the job id is sent.
struct Hello {
    version: u32,
    rank: usize,
    world: usize,
    nonce: Nonce,
}

impl Hello {
    /// This rank's hello, with a fresh nonce.
    fn new(rank: usize, world: usize) -> Result<Hello> {
        let nonce = auth::nonce().map_err(|e| Error::Io {
            what: "drawing a handshake nonce".into(),
            source: io::Error::other(e),
        })?;
        Ok(Hello {
            version: PROTOCOL_VERSION,
            rank,
            world,
            nonce,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        for v in [self.version, self.rank as u32, self.world as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.nonce);
        b
    }

    /// Reads a hello; `Ok(None)` when the other side is not a pretrain mesh peer. With another
    /// protocol version only the version is read (the rest may be laid out differently).
    fn read(s: &mut TcpStream) -> io::Result<Option<Hello>> {
        let mut magic = [0u8; MAGIC.len()];
        s.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Ok(None);
        }
        let mut word = || -> io::Result<u32> {
            let mut b = [0u8; 4];
            s.read_exact(&mut b)?;
            Ok(u32::from_le_bytes(b))
        };
        let version = word()?;
        let mut hello = Hello {
            version,
            rank: 0,
            world: 0,
            nonce: [0; PROOF_BYTES],
        };
        if version != PROTOCOL_VERSION {
            return Ok(Some(hello));
        }
        hello.rank = word()? as usize;
        hello.world = word()? as usize;
        s.read_exact(&mut hello.nonce)?;
        Ok(Some(hello))
    }

    /// Checks that `got` (from `who`) speaks the same protocol as `self`.
    fn check_version(&self, got: &Hello, who: &str) -> Result<()> {
        if got.version != self.version {
            return Err(Error::Handshake(format!(
                "{who} speaks mesh protocol version {}, rank {} speaks {}; run the same \
                 pretrain version on every node",
                got.version, self.rank, self.version
            )));
        }
        Ok(())
    }

    /// Checks that `got` (from `who`, which proved the token) has the same world as `self`.
    fn check_world(&self, got: &Hello, who: &str) -> Result<()> {
        if got.world != self.world {
            return Err(Error::Handshake(format!(
                "{who} has world size {}, rank {} has world size {}; every rank must be \
                 started with the same world size",
                got.world, self.rank, self.world
            )));
        }
        Ok(())
    }
}

/// The job's token and id, which every mesh handshake proves.
struct Secret<'a> {
    token: &'a Token,
    job: &'a str,
}

impl Secret<'_> {
    /// The proof of `role` over the connecting and accepting hellos.
    fn proof(&self, role: &str, connect: &Hello, accept: &Hello) -> Nonce {
        let parts: [&[u8]; 2] = [&connect.encode(), &accept.encode()];
        auth::proof(self.token, role, PROTOCOL_VERSION, self.job, &parts)
    }

    fn verify(&self, role: &str, connect: &Hello, accept: &Hello, got: &[u8]) -> bool {
        let parts: [&[u8]; 2] = [&connect.encode(), &accept.encode()];
        auth::verify(self.token, role, PROTOCOL_VERSION, self.job, &parts, got)
    }
}

fn handshake_io(rank: usize, secs: f64) -> impl Fn(io::Error) -> Error {
    move |e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout {
            what: format!("the mesh handshake of rank {rank}"),
            secs,
        },
        _ => Error::PeerLost {
            rank,
            detail: format!("its connection closed during the mesh handshake ({e})"),
        },
    }
}

/// Connections to every other rank of the job.
pub struct Mesh {
    rank: usize,
    world: usize,
    peers: Vec<Option<Arc<Peer>>>,
}

impl Mesh {
    /// Connects rank `rank` of `world` to every other rank; every rank calls this with the
    /// same `prefix` (fresh for each mesh made through one store), `job_id` and `token`.
    ///
    /// Listens on an ephemeral port of [`StoreClient::local_ip`], publishes `"ip:port"` under
    /// `"<prefix>/addr/<rank>"`, connects to every lower rank and accepts every higher one (one
    /// connection per pair), with a handshake that checks protocol version, rank and world size
    /// and in which both sides prove the job's token ([`Error::Handshake`] on a mismatch; a
    /// connection to the port that cannot prove it is dropped). Every wait is bounded by
    /// `timeout`; collectives then wait at most [`comm_timeout`].
    pub fn connect(
        store: &mut StoreClient,
        prefix: &str,
        job_id: &str,
        token: &Token,
        rank: usize,
        world: usize,
        timeout: Duration,
    ) -> Result<Mesh> {
        if rank >= world || world > u32::MAX as usize {
            return Err(Error::Mismatch(format!(
                "rank {rank} is not in a world of {world}"
            )));
        }
        if job_id.len() > MAX_JOB_BYTES {
            return Err(Error::Handshake(format!(
                "job id longer than {MAX_JOB_BYTES} bytes"
            )));
        }
        let mut peers = vec![None; world];
        if world == 1 {
            return Ok(Mesh { rank, world, peers });
        }
        let comm = comm_timeout().max(Duration::from_millis(1));
        let (deadline, secs) = (deadline_after(timeout), timeout.as_secs_f64());
        let ip = store.local_ip();
        let bind_err = |source| Error::Bind {
            addr: format!("{ip}:0"),
            source,
        };
        let listener = TcpListener::bind((ip, 0)).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        store.set(
            &format!("{prefix}/addr/{rank}"),
            addr.to_string().as_bytes(),
        )?;
        let secret = Secret { token, job: job_id };
        for (q, slot) in peers.iter_mut().enumerate().take(rank) {
            let key = format!("{prefix}/addr/{q}");
            let value = store.get(&key, left(deadline))?;
            let peer_addr: SocketAddr = std::str::from_utf8(&value)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| Error::Handshake(format!("store key '{key}' is not an address")))?;
            let s = connect_to(&secret, rank, world, q, peer_addr, deadline, secs)?;
            *slot = Some(Arc::new(Peer::new(q, s, comm)?));
        }
        accept_peers(
            &listener, &secret, rank, world, &mut peers, deadline, secs, comm,
        )?;
        tracing::debug!(rank, world, %addr, "mesh connected");
        Ok(Mesh { rank, world, peers })
    }

    /// This process's global rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks in the job.
    pub fn world(&self) -> usize {
        self.world
    }

    /// The communicator of the ordered global ranks `ranks` (member `i` is global rank
    /// `ranks[i]`). Every member must create it with the same list; [`Error::Mismatch`] when
    /// the list is empty, has duplicates or out-of-range ranks, or lacks this rank.
    pub fn group(&self, ranks: &[usize]) -> Result<TcpGroup> {
        let mut seen = vec![false; self.world];
        for &g in ranks {
            match seen.get_mut(g) {
                Some(s) if !*s => *s = true,
                _ => {
                    return Err(Error::Mismatch(format!(
                        "group {ranks:?}: rank {g} is repeated or not in a world of {}",
                        self.world
                    )))
                }
            }
        }
        let pos = ranks.iter().position(|&g| g == self.rank).ok_or_else(|| {
            Error::Mismatch(format!(
                "group {ranks:?} does not contain rank {}",
                self.rank
            ))
        })?;
        Ok(TcpGroup::new(ranks, pos, &self.peers))
    }
}

/// Connects to rank `q` at `addr` and does the connecting side of the handshake.
fn connect_to(
    secret: &Secret,
    rank: usize,
    world: usize,
    q: usize,
    addr: SocketAddr,
    deadline: Instant,
    secs: f64,
) -> Result<TcpStream> {
    let mut s = loop {
        let wait = left(deadline).max(Duration::from_millis(1));
        match TcpStream::connect_timeout(&addr, wait) {
            Ok(s) => break s,
            Err(e) if left(deadline).is_zero() => {
                return Err(Error::Timeout {
                    what: format!("a connection to rank {q} at {addr} ({e})"),
                    secs,
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let wait = Some(left(deadline).max(Duration::from_millis(1)));
    let on_io = handshake_io(q, secs);
    s.set_read_timeout(wait)
        .and_then(|()| s.set_write_timeout(wait))
        .map_err(&on_io)?;
    let me = Hello::new(rank, world)?;
    s.write_all(&me.encode()).map_err(&on_io)?;
    let who = format!("rank {q} at {addr}");
    let got = Hello::read(&mut s)
        .map_err(&on_io)?
        .ok_or_else(|| Error::Handshake(format!("{who} is not a pretrain mesh peer")))?;
    me.check_version(&got, &who)?;
    let mut proof = [0u8; PROOF_BYTES];
    s.read_exact(&mut proof).map_err(&on_io)?;
    if !secret.verify(ACCEPT_ROLE, &me, &got, &proof) {
        return Err(Error::Handshake(format!(
            "{who} cannot prove it holds this job's token for job '{}': the store holds \
             another job's addresses (use a fresh master port per job), or the ranks were \
             given different tokens",
            secret.job
        )));
    }
    me.check_world(&got, &who)?;
    if got.rank != q {
        return Err(Error::Handshake(format!(
            "the address published for rank {q} ({addr}) answered as rank {}",
            got.rank
        )));
    }
    s.write_all(&secret.proof(CONNECT_ROLE, &me, &got))
        .map_err(&on_io)?;
    Ok(s)
}

/// The accepting side of one handshake: the peer's hello once it proved the token, `Ok(None)`
/// for a connection that is not a peer of this job (dropped with a warning).
fn accept_one(
    s: &mut TcpStream,
    from: SocketAddr,
    secret: &Secret,
    me: &Hello,
    deadline: Instant,
) -> Result<Option<Hello>> {
    let wait = Some(left(deadline).clamp(Duration::from_millis(1), HANDSHAKE_TIMEOUT));
    let got = s
        .set_nonblocking(false)
        .and_then(|()| s.set_read_timeout(wait))
        .and_then(|()| s.set_write_timeout(wait))
        .and_then(|()| Hello::read(s));
    let got = match got {
        Ok(Some(got)) => got,
        Ok(None) => {
            tracing::warn!(%from, "dropped a connection that is not a pretrain mesh peer");
            return Ok(None);
        }
        Err(e) => {
            tracing::warn!(%from, "dropped a mesh connection during its handshake: {e}");
            return Ok(None);
        }
    };
    let who = format!("rank {} at {from}", got.rank);
    if got.version != me.version {
        let _ = s.write_all(&me.encode());
        me.check_version(&got, &who)?;
    }
    let mut proof = [0u8; PROOF_BYTES];
    let answered = s
        .write_all(&[me.encode(), secret.proof(ACCEPT_ROLE, &got, me).to_vec()].concat())
        .and_then(|()| s.read_exact(&mut proof));
    if let Err(e) = answered {
        tracing::warn!(%from, "dropped a mesh connection during its handshake: {e}");
        return Ok(None);
    }
    if !secret.verify(CONNECT_ROLE, &got, me, &proof) {
        tracing::warn!(%from, "dropped a mesh connection that cannot prove the job's token");
        return Ok(None);
    }
    me.check_world(&got, &who)?;
    Ok(Some(got))
}

/// Accepts and checks a connection from every rank above `rank`.
#[allow(clippy::too_many_arguments)]
fn accept_peers(
    listener: &TcpListener,
    secret: &Secret,
    rank: usize,
    world: usize,
    peers: &mut [Option<Arc<Peer>>],
    deadline: Instant,
    secs: f64,
    comm: Duration,
) -> Result<()> {
    let io_err = |source| Error::Io {
        what: "accepting mesh connections".into(),
        source,
    };
    listener.set_nonblocking(true).map_err(io_err)?;
    let missing = |peers: &[Option<Arc<Peer>>]| -> Vec<usize> {
        (rank + 1..world).filter(|&q| peers[q].is_none()).collect()
    };
    loop {
        let waiting = missing(peers);
        if waiting.is_empty() {
            return Ok(());
        }
        let (mut s, from) = match listener.accept() {
            Ok(conn) => conn,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                if left(deadline).is_zero() {
                    return Err(Error::Timeout {
                        what: format!("mesh connections from ranks {waiting:?}"),
                        secs,
                    });
                }
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(e) => return Err(io_err(e)),
        };
        let me = Hello::new(rank, world)?;
        let Some(got) = accept_one(&mut s, from, secret, &me, deadline)? else {
            continue;
        };
        if !waiting.contains(&got.rank) {
            return Err(Error::Handshake(format!(
                "rank {rank} got a mesh connection from rank {} at {from}, expected one of \
                 ranks {waiting:?}",
                got.rank
            )));
        }
        peers[got.rank] = Some(Arc::new(Peer::new(got.rank, s, comm)?));
    }
}

#[cfg(test)]
mod tests;
