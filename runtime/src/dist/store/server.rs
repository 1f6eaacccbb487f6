//! The store server: one thread accepts clients, one small thread per client serves it, all
//! within [`Limits`].

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{
    deadline_after, invalid, left, write_frame, Nonce, Token, CLIENT_ROLE, MAGIC, MAX_KEY_BYTES,
    MAX_VALUE_BYTES, NOT_A_COUNTER, OP_ADD, OP_GET, OP_SET, OP_TRY_GET, OP_WAIT, PROOF_BYTES,
    SERVER_ROLE, ST_MISSING, ST_OK, ST_REFUSED,
};
use crate::dist::{auth, comm_timeout, Error, Result, PROTOCOL_VERSION};

/// What the store allows, so that nothing that reaches its port can exhaust the master.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections (authenticated or not); more are closed at once.
    pub max_connections: usize,
    /// Connections still in their handshake; a new one evicts the oldest (and no connection
    /// is accepted while twice as many are still unauthenticated, evicted ones included).
    pub max_pending: usize,
    /// Keys held.
    pub max_keys: usize,
    /// Bytes of one value.
    pub max_value_bytes: usize,
    /// Bytes of all keys and values together.
    pub max_total_bytes: usize,
    /// Time a new connection has for its whole handshake.
    pub handshake_timeout: Duration,
    /// Time a request has to arrive in full once its first byte has.
    pub frame_timeout: Duration,
    /// Time an authenticated connection may stay silent before it is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            max_pending: 32,
            max_keys: 65_536,
            max_value_bytes: MAX_VALUE_BYTES,
            max_total_bytes: 64 << 20,
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(3600),
        }
    }
}

/// Stack of a connection thread: it only parses frames and touches the map.
const CONN_STACK_BYTES: usize = 256 << 10;

/// The keys and values with their total size.
#[derive(Default)]
struct Data {
    map: HashMap<String, Vec<u8>>,
    bytes: usize,
}

/// The data, a condition variable signalled on every change, and the limits.
struct Shared {
    data: Mutex<Data>,
    changed: Condvar,
    limits: Limits,
    job: String,
    token: Token,
}

/// Open connections, those not yet authenticated (refused and evicted ones included until the
/// accept loop has joined their thread), and those still in their handshake (oldest first).
#[derive(Default)]
struct Conns {
    open: usize,
    unauthenticated: usize,
    pending: VecDeque<(u64, TcpStream)>,
    next_id: u64,
    refused: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The store server: accepts clients on a background thread and serves each connection on
/// its own thread until the client disconnects.
pub struct StoreServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl StoreServer {
    /// Binds `host:port` (port 0 = an ephemeral port) and serves the clients that prove
    /// `token` for job `job_id`, in background threads until dropped, with the default
    /// [`Limits`].
    ///
    /// Fails with [`Error::Bind`] when the address cannot be bound.
    pub fn start(host: &str, port: u16, job_id: &str, token: &Token) -> Result<StoreServer> {
        StoreServer::with_limits(host, port, job_id, token, Limits::default())
    }

    /// [`StoreServer::start`] with other limits.
    pub fn with_limits(
        host: &str,
        port: u16,
        job_id: &str,
        token: &Token,
        limits: Limits,
    ) -> Result<StoreServer> {
        let bind_err = |source| Error::Bind {
            addr: format!("{host}:{port}"),
            source,
        };
        let listener = TcpListener::bind((host, port)).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            data: Mutex::default(),
            changed: Condvar::new(),
            limits,
            job: job_id.to_string(),
            token: token.clone(),
        });
        let flag = Arc::clone(&stop);
        let acceptor = std::thread::Builder::new()
            .name("store-accept".into())
            .spawn(move || accept_loop(listener, shared, flag))
            .map_err(|source| Error::Io {
                what: "starting the store's accept thread".into(),
                source,
            })?;
        tracing::info!(%addr, job = job_id, "store listening");
        Ok(StoreServer {
            addr,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// The bound address (with the actual port when started with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for StoreServer {
    /// Stops accepting new clients; connected clients are still served until they disconnect.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let conns = Arc::new(Mutex::new(Conns::default()));
    let mut threads: Vec<JoinHandle<bool>> = vec![];
    let mut last_note = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        reap(&mut threads, &conns);
        // Refused and evicted handshakes take a moment to end: accept no more until their
        // threads are gone, so that a flood cannot outrun the limit (new connections wait in
        // the kernel's backlog).
        if lock(&conns).unauthenticated >= 2 * shared.limits.max_pending {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        match listener.accept() {
            Ok((stream, peer)) => threads.extend(admit(stream, peer, &shared, &conns)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!("store accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if last_note.elapsed() >= Duration::from_secs(10) {
            last_note = Instant::now();
            let refused = std::mem::take(&mut lock(&conns).refused);
            if refused > 0 {
                tracing::warn!(
                    "the store closed {refused} connection(s) at once in the last 10 s: it \
                     holds {} open connections, its limit",
                    shared.limits.max_connections
                );
            }
        }
    }
}

/// Joins the connection threads that have ended; one that never authenticated stops counting
/// as unauthenticated only now, when its thread is gone.
fn reap(threads: &mut Vec<JoinHandle<bool>>, conns: &Mutex<Conns>) {
    let mut i = 0;
    while i < threads.len() {
        if !threads[i].is_finished() {
            i += 1;
            continue;
        }
        let authenticated = threads.swap_remove(i).join().unwrap_or(false);
        if !authenticated {
            let mut c = lock(conns);
            c.unauthenticated = c.unauthenticated.saturating_sub(1);
        }
    }
}

/// Starts serving a new connection, within the connection limits; its thread returns whether
/// the client authenticated.
fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    conns: &Arc<Mutex<Conns>>,
) -> Option<JoinHandle<bool>> {
    let id = {
        let mut c = lock(conns);
        if c.open >= shared.limits.max_connections {
            c.refused += 1;
            return None; // dropping the stream closes it
        }
        if c.pending.len() >= shared.limits.max_pending {
            if let Some((_, oldest)) = c.pending.pop_front() {
                let _ = oldest.shutdown(Shutdown::Both);
            }
        }
        let Ok(control) = stream.try_clone() else {
            return None;
        };
        let id = c.next_id;
        c.next_id += 1;
        c.pending.push_back((id, control));
        c.open += 1;
        c.unauthenticated += 1;
        id
    };
    let (shared, conns2) = (Arc::clone(shared), Arc::clone(conns));
    let spawned = std::thread::Builder::new()
        .name("store-conn".into())
        .stack_size(CONN_STACK_BYTES)
        .spawn(move || {
            let mut authenticated = false;
            match serve(stream, &shared, || {
                authenticated = true;
                end_handshake(&conns2, id, true);
            }) {
                Ok(()) => tracing::debug!(%peer, "store client disconnected"),
                Err(e) => tracing::debug!(%peer, "store connection dropped: {e}"),
            }
            if !authenticated {
                end_handshake(&conns2, id, false);
            }
            lock(&conns2).open -= 1;
            authenticated
        });
    match spawned {
        Ok(thread) => Some(thread),
        Err(e) => {
            tracing::warn!(%peer, "cannot serve a store client: {e}");
            end_handshake(conns, id, true);
            lock(conns).open -= 1;
            None
        }
    }
}

/// Connection `id` is done with its handshake (passed, refused, failed or evicted); with
/// `counted`, it no longer counts as unauthenticated (else [`reap`] does that once its thread
/// is gone).
fn end_handshake(conns: &Mutex<Conns>, id: u64, counted: bool) {
    let mut c = lock(conns);
    c.pending.retain(|(i, _)| *i != id);
    if counted {
        c.unauthenticated -= 1;
    }
}

/// Reads exactly `buf.len()` bytes before `deadline` (however slowly they trickle in).
fn read_by(s: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let wait = left(deadline);
        if wait.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        s.set_read_timeout(Some(wait))?;
        match s.read(&mut buf[done..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The server's side of the handshake (see the module docs): `Ok(true)` once the client
/// proved the token.
fn handshake(s: &mut TcpStream, shared: &Shared) -> io::Result<bool> {
    let deadline = deadline_after(shared.limits.handshake_timeout);
    s.set_write_timeout(Some(shared.limits.handshake_timeout))?;
    let mut hello = [0u8; MAGIC.len() + 4 + PROOF_BYTES];
    read_by(s, &mut hello[..MAGIC.len() + 4], deadline)?;
    if &hello[..MAGIC.len()] != MAGIC {
        return Err(invalid("not a pretrain store client"));
    }
    let version = u32::from_le_bytes(hello[MAGIC.len()..][..4].try_into().unwrap_or_default());
    let mut answer = [&MAGIC[..], &PROTOCOL_VERSION.to_le_bytes()].concat();
    if version != PROTOCOL_VERSION {
        s.write_all(&answer)?;
        return Err(invalid(format!("a client speaking version {version}")));
    }
    read_by(s, &mut hello[MAGIC.len() + 4..], deadline)?;
    let theirs = &hello[MAGIC.len() + 4..];
    let ours: Nonce = auth::nonce().map_err(io::Error::other)?;
    let parts: [&[u8]; 2] = [theirs, &ours];
    let (job, token) = (&shared.job, &shared.token);
    answer.extend_from_slice(&ours);
    answer.extend_from_slice(&auth::proof(token, SERVER_ROLE, version, job, &parts));
    s.write_all(&answer)?;
    let mut proof = [0u8; PROOF_BYTES];
    read_by(s, &mut proof, deadline)?;
    let accepted = auth::verify(token, CLIENT_ROLE, version, job, &parts, &proof);
    s.write_all(&[if accepted { ST_OK } else { ST_REFUSED }])?;
    Ok(accepted)
}

/// Serves one client connection: handshake, then requests until it disconnects or stays
/// silent for the idle timeout. `authenticated` is called once the client has proved the token.
fn serve(mut s: TcpStream, shared: &Shared, authenticated: impl FnOnce()) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_nodelay(true)?;
    if !handshake(&mut s, shared)? {
        return Err(invalid(
            "refused a client that could not prove the job's token",
        ));
    }
    authenticated();
    let limits = &shared.limits;
    let max_body = limits
        .max_value_bytes
        .saturating_add(2 * MAX_KEY_BYTES + 64);
    s.set_write_timeout(Some(comm_timeout().max(Duration::from_millis(1))))?;
    loop {
        let mut head = [0u8; 4];
        match read_by(&mut s, &mut head[..1], deadline_after(limits.idle_timeout)) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            r => r?,
        }
        let frame_deadline = deadline_after(limits.frame_timeout);
        read_by(&mut s, &mut head[1..], frame_deadline)?;
        let len = u32::from_le_bytes(head) as usize;
        if len > max_body {
            return Err(invalid(format!("frame of {len} bytes exceeds {max_body}")));
        }
        let mut body = vec![0u8; len];
        read_by(&mut s, &mut body, frame_deadline)?;
        let reply = handle(shared, &body).ok_or_else(|| invalid("malformed request"))?;
        write_frame(&mut s, &reply)?;
    }
}

/// A reader over a request body; every accessor returns `None` past the end.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn key(&mut self) -> Option<&'a str> {
        let b = self.bytes()?;
        if b.len() > MAX_KEY_BYTES {
            return None;
        }
        std::str::from_utf8(b).ok()
    }
    fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

fn refused(msg: &[u8]) -> Vec<u8> {
    [&[ST_REFUSED][..], msg].concat()
}

/// Answers one request, or `None` when it is malformed.
fn handle(shared: &Shared, body: &[u8]) -> Option<Vec<u8>> {
    let mut f = Fields(body);
    let op = f.take(1)?[0];
    let reply = match op {
        OP_SET => {
            let key = f.key()?;
            let value = f.bytes()?;
            f.end()?;
            let mut data = lock(&shared.data);
            match data.put(key, value.to_vec(), &shared.limits) {
                Ok(()) => {
                    drop(data);
                    shared.changed.notify_all();
                    vec![ST_OK]
                }
                Err(why) => refused(why.as_bytes()),
            }
        }
        OP_GET | OP_TRY_GET => {
            let key = f.key()?;
            let wait = if op == OP_GET {
                Duration::from_millis(f.u64()?)
            } else {
                Duration::ZERO
            };
            f.end()?;
            let (data, missing) = wait_keys(shared, &[key], wait);
            match data.map.get(key) {
                Some(v) if missing.is_none() => [&[ST_OK][..], v].concat(),
                _ => vec![ST_MISSING],
            }
        }
        OP_ADD => {
            let key = f.key()?;
            let delta = i64::from_le_bytes(f.array()?);
            f.end()?;
            add(shared, key, delta)
        }
        OP_WAIT => {
            let count = f.u32()? as usize;
            let mut keys = Vec::new();
            for _ in 0..count {
                keys.push(f.key()?);
            }
            let wait = Duration::from_millis(f.u64()?);
            f.end()?;
            match wait_keys(shared, &keys, wait).1 {
                None => vec![ST_OK],
                Some(i) => [&[ST_MISSING][..], keys[i].as_bytes()].concat(),
            }
        }
        _ => return None,
    };
    Some(reply)
}

/// `OP_ADD`: the counter under `key` plus `delta`.
fn add(shared: &Shared, key: &str, delta: i64) -> Vec<u8> {
    let mut data = lock(&shared.data);
    let current = match data.map.get(key) {
        None => Some(0),
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|t| t.parse::<i64>().ok()),
    };
    match current.map(|c| c.checked_add(delta)) {
        Some(Some(new)) => match data.put(key, new.to_string().into_bytes(), &shared.limits) {
            Ok(()) => {
                drop(data);
                shared.changed.notify_all();
                [&[ST_OK][..], &new.to_le_bytes()].concat()
            }
            Err(why) => refused(why.as_bytes()),
        },
        Some(None) => refused(b"the counter would overflow"),
        None => refused(NOT_A_COUNTER),
    }
}

impl Data {
    /// Stores `value` under `key` unless that breaks a limit (the reason).
    fn put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        limits: &Limits,
    ) -> std::result::Result<(), String> {
        if value.len() > limits.max_value_bytes {
            return Err(format!(
                "a value of {} bytes exceeds the store's limit of {} bytes",
                value.len(),
                limits.max_value_bytes
            ));
        }
        let old = self.map.get(key).map(|v| key.len() + v.len());
        if old.is_none() && self.map.len() >= limits.max_keys {
            return Err(format!(
                "the store holds {} keys, its limit",
                limits.max_keys
            ));
        }
        let bytes = self.bytes - old.unwrap_or(0) + key.len() + value.len();
        if bytes > limits.max_total_bytes {
            return Err(format!(
                "the store would hold {bytes} bytes, more than its limit of {} bytes",
                limits.max_total_bytes
            ));
        }
        self.bytes = bytes;
        self.map.insert(key.to_string(), value);
        Ok(())
    }
}

/// Waits until every key exists or `timeout` passes; returns the locked data and the index of
/// the first key still missing.
fn wait_keys<'a>(
    shared: &'a Shared,
    keys: &[&str],
    timeout: Duration,
) -> (MutexGuard<'a, Data>, Option<usize>) {
    let deadline = deadline_after(timeout);
    let mut data = lock(&shared.data);
    loop {
        let Some(i) = keys.iter().position(|k| !data.map.contains_key(*k)) else {
            return (data, None);
        };
        let wait = left(deadline);
        if wait.is_zero() {
            return (data, Some(i));
        }
        data = match shared.changed.wait_timeout(data, wait) {
            Ok((data, _)) => data,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}
