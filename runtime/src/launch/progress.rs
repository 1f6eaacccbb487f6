//! The progress endpoint of node 0's launcher: `GET /progress` answers rank 0's latest
//! heartbeat as a `ProgressReport` (JSON, the contract crate's), so that a supervisor (the operator) can show how
//! far training is without any write per step. Read-only, one small request at a time, every
//! read and write bounded by a short timeout; anything but `GET /progress` gets 404.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use pretrain_contract::progress::PATH;

use super::heartbeat;

/// Longest request head read.
const MAX_REQUEST_BYTES: usize = 4096;
/// Time a client has to send its request and take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves the progress of the worker whose heartbeat file is given until dropped.
pub struct ProgressServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ProgressServer {
    /// Binds `host:port` and serves `GET /progress` from the heartbeat at `heartbeat`.
    /// `restarts` is the launchers' count of in-place restarts so far.
    pub fn start(
        host: &str,
        port: u16,
        heartbeat: PathBuf,
        restarts: Arc<AtomicU32>,
    ) -> io::Result<ProgressServer> {
        let listener = TcpListener::bind((host, port))?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let restarts = restarts.load(Ordering::Relaxed);
                            if let Err(e) = answer(s, &heartbeat, restarts) {
                                tracing::debug!("progress request dropped: {e}");
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })?;
        tracing::info!(%addr, "serving training progress at {PATH}");
        Ok(ProgressServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ProgressServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request head and answers it.
fn answer(mut s: TcpStream, heartbeat: &std::path::Path, restarts: u32) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_BYTES {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let wanted = format!("GET {PATH} ");
    let (status, body) = if line.starts_with(wanted.as_bytes()) {
        let mut report = heartbeat::read(heartbeat)
            .map(|h| h.report)
            .unwrap_or_default();
        report.restarts = (restarts > 0).then_some(restarts);
        ("200 OK", serde_json::to_vec(&report).unwrap_or_default())
    } else {
        ("404 Not Found", b"{}".to_vec())
    };
    let mut reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    reply.extend_from_slice(&body);
    s.write_all(&reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::heartbeat::Progress;
    use pretrain_contract::progress::ProgressReport;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .expect("request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("answer");
        out
    }

    #[test]
    fn serves_rank_0_s_heartbeat_as_a_progress_report() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("worker_0.heartbeat");
        let restarts = Arc::new(AtomicU32::new(0));
        let server =
            ProgressServer::start("127.0.0.1", 0, path.clone(), restarts.clone()).expect("starts");
        // Before the first heartbeat: step 0.
        let early = get(server.addr(), "/progress");
        assert!(early.starts_with("HTTP/1.1 200 OK"), "{early}");
        assert!(early.ends_with("{\"step\":0}"), "{early}");
        let p = Progress::default();
        p.plan(10, 64);
        p.step_done(4, 2.0);
        heartbeat::write(&path, &p.heartbeat(7)).expect("write");
        let out = get(server.addr(), "/progress");
        let body = out.split("\r\n\r\n").nth(1).expect("body");
        let r = ProgressReport::parse(body.as_bytes()).expect("a report");
        assert_eq!((r.step, r.total_steps, r.loss), (4, Some(10), Some(2.0)));
        assert_eq!(r.restarts, None);
        restarts.store(2, Ordering::Relaxed);
        let out = get(server.addr(), "/progress");
        assert!(out.ends_with(",\"restarts\":2}"), "{out}");
        assert!(get(server.addr(), "/metrics").starts_with("HTTP/1.1 404"));
        // Junk and silence do not stop it.
        let mut junk = TcpStream::connect(server.addr()).expect("connect");
        junk.write_all(&[0xff; 100]).expect("junk");
        drop(junk);
        let _silent = TcpStream::connect(server.addr()).expect("connect");
        assert!(get(server.addr(), "/progress").contains("\"step\":4"));
    }
}
