//! The operator's small HTTP endpoint: `/metrics`, `/healthz` (the process serves) and
//! `/readyz` (the controller is running or waiting as a standby). HTTP/1.0-style, one request
//! per connection, which is all probes and Prometheus need.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::crd::Phase;
use crate::metrics::Metrics;

/// Shared state the endpoint reports.
pub struct State {
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Set once the process is initialised (client connected, leader election running).
    pub ready: AtomicBool,
    /// Returns the phase of every job the controller knows.
    pub jobs: Box<dyn Fn() -> Vec<Phase> + Send + Sync>,
}

/// Maps a request path to (status line, content type, body).
pub fn respond(state: &State, path: &str) -> (&'static str, &'static str, String) {
    match path {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4",
            state.metrics.render(&(state.jobs)()),
        ),
        "/healthz" | "/health" => ("200 OK", "text/plain", "ok\n".into()),
        "/readyz" if state.ready.load(Ordering::Relaxed) => ("200 OK", "text/plain", "ok\n".into()),
        "/readyz" => ("503 Service Unavailable", "text/plain", "starting\n".into()),
        _ => ("404 Not Found", "text/plain", "not found\n".into()),
    }
}

/// Serves until the listener fails; each connection gets 5 seconds.
pub async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let work = async {
                // Read the request head (it may arrive in several segments); 8 KiB at most.
                let mut buf = Vec::with_capacity(1024);
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    let n = sock.read(&mut chunk).await.ok()?;
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let req = String::from_utf8_lossy(&buf);
                let path = req.split_whitespace().nth(1).unwrap_or("/");
                let path = path.split('?').next().unwrap_or(path);
                let (status, ctype, body) = respond(&state, path);
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                sock.write_all(head.as_bytes()).await.ok()?;
                sock.write_all(body.as_bytes()).await.ok()?;
                sock.shutdown().await.ok()
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), work).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let state = State {
            metrics: Arc::default(),
            ready: AtomicBool::new(false),
            jobs: Box::new(|| vec![Phase::Running]),
        };
        assert_eq!(respond(&state, "/healthz").0, "200 OK");
        assert_eq!(respond(&state, "/readyz").0, "503 Service Unavailable");
        state.ready.store(true, Ordering::Relaxed);
        assert_eq!(respond(&state, "/readyz").0, "200 OK");
        assert!(respond(&state, "/metrics")
            .2
            .contains("pretrain_jobs{phase=\"Running\"} 1"));
        assert_eq!(respond(&state, "/nope").0, "404 Not Found");
    }
}
