//! A TCP key-value store for rendezvous, hosted by the master.
//!
//! Wire protocol (all integers little-endian):
//! - Handshake, a challenge-response on the job's [`Token`] ([`super::auth`]): the client sends
//!   `b"PRETRAIN-STORE"`, `u32` protocol version and its 32-byte nonce; the server answers with
//!   the same magic, its version (and closes here when the versions differ), its nonce and its
//!   proof; the client checks that proof, sends its own, and the server answers one status byte
//!   (0 = accepted) or closes. Neither the token nor the job id is ever sent, and a peer without
//!   the token learns nothing but the protocol version.
//! - Then requests and replies are frames: `u32` body length, body. A request body is an op byte
//!   and its fields (strings and byte strings as `u32` length + bytes); a reply body is a status
//!   byte (0 = ok, 1 = key missing at the deadline, 2 = refused with a message) and its data.
//!
//! The server never trusts its input: oversized or malformed frames drop the connection, and
//! connections, keys, value sizes, total bytes and every wait are bounded ([`Limits`]).
//! Counters ([`StoreClient::add`]) are stored as ASCII decimal, so `get` reads them as text.

use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::auth::{self, Nonce, Token, PROOF_BYTES};
use super::{comm_timeout, Error, Result, PROTOCOL_VERSION};

mod server;
pub use server::{Limits, StoreServer};

const MAGIC: &[u8; 14] = b"PRETRAIN-STORE";
/// Longest key (and job id) in bytes.
const MAX_KEY_BYTES: usize = 4096;
/// Largest value: rendezvous keeps addresses, counters and short reasons.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Longest request body: one value of `MAX_VALUE_BYTES` plus its key and the op fields.
const MAX_BODY_BYTES: usize = MAX_VALUE_BYTES + 2 * MAX_KEY_BYTES;
/// Role labels of the two proofs.
const SERVER_ROLE: &str = "pretrain-store-server";
const CLIENT_ROLE: &str = "pretrain-store-client";
/// Pause between connection attempts to a master that is not up yet.
const RETRY_EVERY: Duration = Duration::from_millis(100);
/// Extra time a client gives the server to answer a waiting request after its deadline.
const REPLY_MARGIN: Duration = Duration::from_secs(5);

const OP_SET: u8 = 1;
const OP_GET: u8 = 2;
const OP_TRY_GET: u8 = 3;
const OP_ADD: u8 = 4;
const OP_WAIT: u8 = 5;
const ST_OK: u8 = 0;
const ST_MISSING: u8 = 1;
const ST_REFUSED: u8 = 2;
/// How the server's refusal of `add` on a non-counter starts.
const NOT_A_COUNTER: &[u8] = b"the key holds a value that is not a counter";

/// `now + timeout`, saturating far in the future instead of overflowing.
/// A wait that says what it waits for every 30 s (a launcher started with the wrong
/// `--node-rank` would otherwise wait its whole timeout in silence).
struct Note {
    start: Instant,
    next: Instant,
    of: Duration,
}

impl Note {
    const EVERY: Duration = Duration::from_secs(30);

    fn new(of: Duration) -> Note {
        let start = Instant::now();
        Note {
            start,
            next: start + Note::EVERY,
            of,
        }
    }

    /// Calls `say(seconds waited, seconds allowed)` when a note is due.
    fn due(&mut self, say: impl FnOnce(f64, f64)) {
        let now = Instant::now();
        if now >= self.next {
            self.next = now + Note::EVERY;
            say((now - self.start).as_secs_f64(), self.of.as_secs_f64());
        }
    }
}

pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(1 << 32)))
        .unwrap_or(now)
}

/// Time left until `deadline` (zero once passed).
pub(crate) fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Writes one frame (`u32` length + body) with a single write call.
fn write_frame(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
    let mut frame = Vec::with_capacity(4 + body.len());
    put_bytes(&mut frame, body);
    w.write_all(&frame)
}

/// Reads one frame body of at most `max` bytes.
fn read_frame(r: &mut impl Read, max: usize) -> io::Result<Vec<u8>> {
    let len = read_u32(r)? as usize;
    if len > max {
        return Err(invalid(format!("frame of {len} bytes exceeds {max}")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

/// A connection to the store. Operations are synchronous; after a transport error the client
/// is unusable (every later call fails), since replies may be out of step.
pub struct StoreClient {
    stream: TcpStream,
    target: String,
    local_ip: IpAddr,
    broken: Option<String>,
}

/// Resolves `host` and connects to its first address that answers.
fn dial(host: &str, port: u16, wait: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address");
    for addr in (host, port).to_socket_addrs()? {
        let wait = wait.clamp(Duration::from_millis(1), Duration::from_secs(2));
        match TcpStream::connect_timeout(&addr, wait) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl StoreClient {
    /// Resolves `host` (DNS name or IP) and connects to the store at `host:port`, retrying
    /// every 100 ms until `timeout` (the master may not be up yet), then proves `token` and
    /// checks the store's proof of it for job `job_id`.
    ///
    /// Errors: [`Error::Timeout`] when no connection succeeded in time; [`Error::Handshake`]
    /// when the server holds another job's token or id, speaks another protocol version or is
    /// not a pretrain store.
    pub fn connect(
        host: &str,
        port: u16,
        job_id: &str,
        token: &Token,
        timeout: Duration,
    ) -> Result<StoreClient> {
        let target = format!("{host}:{port}");
        if job_id.len() > MAX_KEY_BYTES {
            return Err(Error::Handshake(format!(
                "job id of {} bytes is longer than {MAX_KEY_BYTES}",
                job_id.len()
            )));
        }
        let deadline = deadline_after(timeout);
        let mut stream = dial_until(host, port, &target, timeout, deadline)?;
        let io_err = |what: &str| {
            let what = format!("{what} the store at {target}");
            move |source| Error::Io { what, source }
        };
        let wait = left(deadline).max(Duration::from_secs(5));
        stream
            .set_nodelay(true)
            .and_then(|()| stream.set_read_timeout(Some(wait)))
            .and_then(|()| stream.set_write_timeout(Some(wait)))
            .map_err(io_err("configuring the connection to"))?;
        let local_ip = stream
            .local_addr()
            .map_err(io_err("reading the local address of"))?
            .ip();
        client_handshake(&mut stream, &target, job_id, token, wait)?;
        tracing::debug!(%target, %local_ip, "connected to the store");
        Ok(StoreClient {
            stream,
            target,
            local_ip,
            broken: None,
        })
    }

    /// Stores `value` under `key` (replacing any previous value) and wakes its waiters.
    pub fn set(&mut self, key: &str, value: &[u8]) -> Result<()> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(too_long("value", key, value.len(), MAX_VALUE_BYTES));
        }
        let mut req = self.request(OP_SET, key)?;
        put_bytes(&mut req, value);
        let reply = self.call(&req, comm_timeout())?;
        match reply.split_first() {
            Some((&ST_OK, [])) => Ok(()),
            Some((&ST_REFUSED, msg)) => Err(self.refused(key, msg)),
            _ => Err(self.bad_reply()),
        }
    }

    /// The value under `key`, waiting (on the server) until it exists; [`Error::Timeout`]
    /// when it does not within `timeout`.
    pub fn get(&mut self, key: &str, timeout: Duration) -> Result<Vec<u8>> {
        let mut req = self.request(OP_GET, key)?;
        req.extend_from_slice(&millis(timeout).to_le_bytes());
        let reply = self.call(&req, timeout.saturating_add(REPLY_MARGIN))?;
        match reply.split_first() {
            Some((&ST_OK, value)) => Ok(value.to_vec()),
            Some((&ST_MISSING, _)) => Err(Error::Timeout {
                what: format!("key '{key}' in the store at {}", self.target),
                secs: timeout.as_secs_f64(),
            }),
            _ => Err(self.bad_reply()),
        }
    }

    /// The value under `key`, or `None` when it does not exist (no waiting).
    pub fn try_get(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        let req = self.request(OP_TRY_GET, key)?;
        let reply = self.call(&req, comm_timeout())?;
        match reply.split_first() {
            Some((&ST_OK, value)) => Ok(Some(value.to_vec())),
            Some((&ST_MISSING, _)) => Ok(None),
            _ => Err(self.bad_reply()),
        }
    }

    /// Atomically adds `delta` to the counter under `key` (a missing key counts as 0) and
    /// returns the new value. [`Error::Mismatch`] when the key holds something else.
    pub fn add(&mut self, key: &str, delta: i64) -> Result<i64> {
        let mut req = self.request(OP_ADD, key)?;
        req.extend_from_slice(&delta.to_le_bytes());
        let reply = self.call(&req, comm_timeout())?;
        match reply.split_first() {
            Some((&ST_OK, v)) => match <[u8; 8]>::try_from(v) {
                Ok(b) => Ok(i64::from_le_bytes(b)),
                Err(_) => Err(self.bad_reply()),
            },
            Some((&ST_REFUSED, msg)) if msg.starts_with(NOT_A_COUNTER) => Err(Error::Mismatch(
                format!("store key '{key}': {}", String::from_utf8_lossy(msg)),
            )),
            Some((&ST_REFUSED, msg)) => Err(self.refused(key, msg)),
            _ => Err(self.bad_reply()),
        }
    }

    /// Waits until every key in `keys` exists; [`Error::Timeout`] naming a missing key when
    /// they do not within `timeout`.
    pub fn wait(&mut self, keys: &[&str], timeout: Duration) -> Result<()> {
        let mut req = vec![OP_WAIT];
        req.extend_from_slice(&(keys.len() as u32).to_le_bytes());
        for key in keys {
            check_key(key)?;
            put_bytes(&mut req, key.as_bytes());
        }
        if req.len() > MAX_BODY_BYTES - 8 {
            return Err(too_long("key list", "wait", req.len(), MAX_BODY_BYTES - 8));
        }
        req.extend_from_slice(&millis(timeout).to_le_bytes());
        let reply = self.call(&req, timeout.saturating_add(REPLY_MARGIN))?;
        match reply.split_first() {
            Some((&ST_OK, _)) => Ok(()),
            Some((&ST_MISSING, key)) => Err(Error::Timeout {
                what: format!(
                    "key '{}' in the store at {}",
                    String::from_utf8_lossy(key),
                    self.target
                ),
                secs: timeout.as_secs_f64(),
            }),
            _ => Err(self.bad_reply()),
        }
    }

    /// Counter barrier: adds 1 to the counter under `key`, then polls it until it reaches `n`;
    /// [`Error::Timeout`] when it does not within `timeout`. Use a fresh key per barrier.
    pub fn barrier(&mut self, key: &str, n: i64, timeout: Duration) -> Result<()> {
        let deadline = deadline_after(timeout);
        let mut count = self.add(key, 1)?;
        let mut pause = Duration::from_millis(1);
        let mut note = Note::new(timeout);
        while count < n {
            note.due(|waited, of| {
                tracing::info!(
                    "waiting at barrier '{key}' of the store at {}: {count} of {n} arrived \
                     ({waited:.0} s of {of:.0} s)",
                    self.target
                )
            });
            if left(deadline).is_zero() {
                return Err(Error::Timeout {
                    what: format!(
                        "{n} arrivals at barrier '{key}' in the store at {} ({count} arrived)",
                        self.target
                    ),
                    secs: timeout.as_secs_f64(),
                });
            }
            std::thread::sleep(pause.min(left(deadline)));
            pause = (pause * 2).min(Duration::from_millis(20));
            count = self.add(key, 0)?;
        }
        Ok(())
    }

    /// The local IP address of this connection: the address by which the master (and so the
    /// other nodes) can reach this host.
    pub fn local_ip(&self) -> IpAddr {
        self.local_ip
    }

    /// A request body with the op byte and the key.
    fn request(&self, op: u8, key: &str) -> Result<Vec<u8>> {
        check_key(key)?;
        let mut req = vec![op];
        put_bytes(&mut req, key.as_bytes());
        Ok(req)
    }

    /// Sends one request and reads its reply, waiting at most `wait` for it.
    fn call(&mut self, req: &[u8], wait: Duration) -> Result<Vec<u8>> {
        if let Some(why) = &self.broken {
            return Err(Error::PeerLost {
                rank: 0,
                detail: format!(
                    "the connection to the store at {} is unusable after an earlier error ({why})",
                    self.target
                ),
            });
        }
        let stream = &mut self.stream;
        let result = (|| {
            stream.set_write_timeout(Some(comm_timeout().max(Duration::from_millis(1))))?;
            stream.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
            write_frame(stream, req)?;
            read_frame(stream, MAX_BODY_BYTES)
        })();
        result.map_err(|e| {
            let err = self.transport_err(e, wait);
            self.broken = Some(err.to_string());
            err
        })
    }

    fn transport_err(&self, e: io::Error, wait: Duration) -> Error {
        use io::ErrorKind as K;
        match e.kind() {
            K::WouldBlock | K::TimedOut => Error::Timeout {
                what: format!("a reply from the store at {}", self.target),
                secs: wait.as_secs_f64(),
            },
            K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
                Error::PeerLost {
                    rank: 0,
                    detail: format!("the store at {} closed the connection ({e})", self.target),
                }
            }
            K::InvalidData => Error::PeerLost {
                rank: 0,
                detail: format!("the store at {} sent a malformed reply ({e})", self.target),
            },
            _ => Error::Io {
                what: format!("talking to the store at {}", self.target),
                source: e,
            },
        }
    }

    /// The store's refusal of a request on `key` (a limit reached).
    fn refused(&self, key: &str, msg: &[u8]) -> Error {
        let key: String = key.chars().take(64).collect();
        Error::Refused(format!(
            "the store at {} refused key '{key}': {}",
            self.target,
            String::from_utf8_lossy(msg)
        ))
    }

    /// Marks the connection unusable after a reply that does not fit the protocol.
    fn bad_reply(&mut self) -> Error {
        let detail = format!("the store at {} sent a malformed reply", self.target);
        self.broken = Some(detail.clone());
        Error::PeerLost { rank: 0, detail }
    }
}

/// Connects to `host:port`, retrying every 100 ms until `deadline` and saying every 30 s
/// what it waits for.
fn dial_until(
    host: &str,
    port: u16,
    target: &str,
    timeout: Duration,
    deadline: Instant,
) -> Result<TcpStream> {
    let mut note = Note::new(timeout);
    loop {
        match dial(host, port, left(deadline)) {
            Ok(s) => return Ok(s),
            Err(e) if left(deadline).is_zero() => {
                return Err(Error::Timeout {
                    what: format!("the master at {target} (last attempt: {e})"),
                    secs: timeout.as_secs_f64(),
                })
            }
            Err(e) => {
                tracing::debug!("store at {target} not reachable yet: {e}");
                note.due(|waited, of| {
                    tracing::info!(
                        "still waiting for the master's store at {target} ({waited:.0} s of \
                         {of:.0} s): {e}"
                    )
                });
            }
        }
        std::thread::sleep(RETRY_EVERY.min(left(deadline)));
    }
}

/// The client's side of the handshake (see the module docs).
fn client_handshake(
    s: &mut TcpStream,
    target: &str,
    job: &str,
    token: &Token,
    wait: Duration,
) -> Result<()> {
    let ours = auth::nonce().map_err(|e| Error::Io {
        what: "drawing a handshake nonce".into(),
        source: io::Error::other(e),
    })?;
    let fail = |e| handshake_err(target, e, wait);
    s.write_all(&[&MAGIC[..], &PROTOCOL_VERSION.to_le_bytes(), &ours].concat())
        .map_err(fail)?;
    let mut magic = [0u8; MAGIC.len()];
    s.read_exact(&mut magic).map_err(fail)?;
    if &magic != MAGIC {
        return Err(fail(invalid(
            "it answered with something other than a pretrain store handshake",
        )));
    }
    let version = read_u32(s).map_err(fail)?;
    if version != PROTOCOL_VERSION {
        return Err(Error::Handshake(format!(
            "the store at {target} speaks protocol version {version}, this process speaks \
             {PROTOCOL_VERSION}; run the same pretrain version on every node"
        )));
    }
    let mut theirs: Nonce = [0; PROOF_BYTES];
    let mut their_proof = [0u8; PROOF_BYTES];
    s.read_exact(&mut theirs)
        .and_then(|()| s.read_exact(&mut their_proof))
        .map_err(fail)?;
    let parts: [&[u8]; 2] = [&ours, &theirs];
    if !auth::verify(token, SERVER_ROLE, version, job, &parts, &their_proof) {
        return Err(Error::Handshake(format!(
            "the store at {target} cannot prove it holds this job's token for job '{job}': it \
             is another job's store (give each job its own --master-port, or stop the stale \
             job), or the processes were given different tokens (every process of a job needs \
             the same PRETRAIN_STORE_TOKEN or PRETRAIN_STORE_TOKEN_FILE)"
        )));
    }
    let proof = auth::proof(token, CLIENT_ROLE, version, job, &parts);
    s.write_all(&proof).map_err(fail)?;
    let mut status = [0u8; 1];
    s.read_exact(&mut status).map_err(fail)?;
    if status[0] != ST_OK {
        return Err(Error::Handshake(format!(
            "the store at {target} refused this process's proof of the job's token"
        )));
    }
    Ok(())
}

fn handshake_err(target: &str, e: io::Error, wait: Duration) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout {
            what: format!("the handshake reply of the store at {target}"),
            secs: wait.as_secs_f64(),
        },
        _ => Error::Handshake(format!(
            "{target} is not a pretrain store of this version ({e}); check MASTER_ADDR and \
             MASTER_PORT"
        )),
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.len() > MAX_KEY_BYTES {
        return Err(too_long("key", key, key.len(), MAX_KEY_BYTES));
    }
    Ok(())
}

fn too_long(what: &str, key: &str, len: usize, max: usize) -> Error {
    let key: String = key.chars().take(64).collect();
    Error::Io {
        what: format!("store {what} for '{key}'"),
        source: io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{len} bytes exceed the limit of {max}"),
        ),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
