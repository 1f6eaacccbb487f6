//! The store server: one thread accepts clients, one thread per client serves it.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{
    deadline_after, invalid, left, put_bytes, read_frame, read_short_str, read_u32, write_frame,
    HANDSHAKE_TIMEOUT, MAGIC, MAX_BODY_BYTES, MAX_KEY_BYTES, OP_ADD, OP_GET, OP_SET, OP_TRY_GET,
    OP_WAIT, ST_MISSING, ST_OK, ST_REFUSED,
};
use crate::dist::{comm_timeout, Error, Result, MAX_FRAME_BYTES, PROTOCOL_VERSION};

/// The keys and values, and a condition variable signalled on every change.
#[derive(Default)]
struct Shared {
    map: Mutex<HashMap<String, Vec<u8>>>,
    changed: Condvar,
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
    /// Binds `host:port` (port 0 = an ephemeral port; `"0.0.0.0"` = every interface) and serves
    /// clients of job `job_id` in background threads until dropped.
    ///
    /// Fails with [`Error::Bind`] when the address cannot be bound.
    pub fn start(host: &str, port: u16, job_id: &str) -> Result<StoreServer> {
        let bind_err = |source| Error::Bind {
            addr: format!("{host}:{port}"),
            source,
        };
        let listener = TcpListener::bind((host, port)).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let job = job_id.to_string();
        let flag = Arc::clone(&stop);
        let acceptor = std::thread::Builder::new()
            .name("store-accept".into())
            .spawn(move || accept_loop(listener, job, flag))
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

fn accept_loop(listener: TcpListener, job: String, stop: Arc<AtomicBool>) {
    let shared = Arc::new(Shared::default());
    let job: Arc<str> = job.into();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let (shared, job) = (Arc::clone(&shared), Arc::clone(&job));
                let spawned = std::thread::Builder::new().name("store-conn".into()).spawn(
                    move || match serve(stream, &shared, &job) {
                        Ok(()) => tracing::debug!(%peer, "store client disconnected"),
                        Err(e) => tracing::debug!(%peer, "store connection dropped: {e}"),
                    },
                );
                if let Err(e) = spawned {
                    tracing::warn!(%peer, "cannot serve a store client: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!("store accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Serves one client connection: handshake, then requests until it disconnects.
fn serve(mut s: TcpStream, shared: &Shared, job: &str) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    s.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let mut magic = [0u8; MAGIC.len()];
    s.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(invalid("not a pretrain store client"));
    }
    let version = read_u32(&mut s)?;
    let client_job = if version == PROTOCOL_VERSION {
        read_short_str(&mut s)?
    } else {
        String::new()
    };
    let accepted = version == PROTOCOL_VERSION && client_job == job;
    let mut reply = MAGIC.to_vec();
    reply.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    put_bytes(&mut reply, job.as_bytes());
    reply.push(if accepted { ST_OK } else { ST_REFUSED });
    s.write_all(&reply)?;
    if !accepted {
        return Err(invalid(format!(
            "refused a client of job '{client_job}' speaking version {version}"
        )));
    }
    s.set_read_timeout(None)?;
    s.set_write_timeout(Some(comm_timeout().max(Duration::from_millis(1))))?;
    loop {
        let body = match read_frame(&mut s, MAX_BODY_BYTES) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            r => r?,
        };
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
}

/// Answers one request, or `None` when it is malformed.
fn handle(shared: &Shared, body: &[u8]) -> Option<Vec<u8>> {
    let mut f = Fields(body);
    let op = f.take(1)?[0];
    let reply = match op {
        OP_SET => {
            let key = f.key()?;
            let value = f.bytes()?;
            if !f.0.is_empty() || value.len() > MAX_FRAME_BYTES {
                return None;
            }
            lock(&shared.map).insert(key.to_string(), value.to_vec());
            shared.changed.notify_all();
            vec![ST_OK]
        }
        OP_GET | OP_TRY_GET => {
            let key = f.key()?;
            let wait = if op == OP_GET {
                Duration::from_millis(f.u64()?)
            } else {
                Duration::ZERO
            };
            if !f.0.is_empty() {
                return None;
            }
            let (map, missing) = wait_keys(shared, &[key], wait);
            match map.get(key) {
                Some(v) if missing.is_none() => [&[ST_OK][..], v].concat(),
                _ => vec![ST_MISSING],
            }
        }
        OP_ADD => {
            let key = f.key()?;
            let delta = i64::from_le_bytes(f.array()?);
            if !f.0.is_empty() {
                return None;
            }
            let mut map = lock(&shared.map);
            let current = match map.get(key) {
                None => Some(0),
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok()),
            };
            match current.map(|c| c.checked_add(delta)) {
                Some(Some(new)) => {
                    map.insert(key.to_string(), new.to_string().into_bytes());
                    drop(map);
                    shared.changed.notify_all();
                    [&[ST_OK][..], &new.to_le_bytes()].concat()
                }
                Some(None) => [&[ST_REFUSED][..], b"the counter would overflow"].concat(),
                None => [
                    &[ST_REFUSED][..],
                    b"the key holds a value that is not a counter",
                ]
                .concat(),
            }
        }
        OP_WAIT => {
            let count = f.u32()? as usize;
            let mut keys = Vec::new();
            for _ in 0..count {
                keys.push(f.key()?);
            }
            let wait = Duration::from_millis(f.u64()?);
            if !f.0.is_empty() {
                return None;
            }
            match wait_keys(shared, &keys, wait).1 {
                None => vec![ST_OK],
                Some(i) => [&[ST_MISSING][..], keys[i].as_bytes()].concat(),
            }
        }
        _ => return None,
    };
    Some(reply)
}

/// Waits until every key exists or `timeout` passes; returns the locked map and the index of
/// the first key still missing.
fn wait_keys<'a>(
    shared: &'a Shared,
    keys: &[&str],
    timeout: Duration,
) -> (MutexGuard<'a, HashMap<String, Vec<u8>>>, Option<usize>) {
    let deadline = deadline_after(timeout);
    let mut map = lock(&shared.map);
    loop {
        let Some(i) = keys.iter().position(|k| !map.contains_key(*k)) else {
            return (map, None);
        };
        let wait = left(deadline);
        if wait.is_zero() {
            return (map, Some(i));
        }
        map = match shared.changed.wait_timeout(map, wait) {
            Ok((map, _)) => map,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}
