//! The rendezvous store under attack from its network while a 2-worker job trains: junk,
//! oversized length prefixes, peers of another protocol version, peers without the token or
//! with a wrong proof trying to write `launch/0/failed`, and floods of half-open connections.
//! The job must end as an undisturbed run does, bit for bit, and the launcher's threads and
//! memory stay within the store's limits.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::launch::{
    byte_dataset, free_port, launch_cmd, losses, opts, run_ok, train_args, wait_exit,
    wait_for_steps,
};

const MAGIC: &[u8] = b"PRETRAIN-STORE";
const VERSION: u32 = 2;

/// `(threads, resident KiB)` of process `pid`.
fn usage(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some((field("Threads:")?, field("VmRSS:")?))
}

/// One round of every kind of abuse but the flood; each connection ends when the store
/// closes it (or after 300 ms).
fn abuse_once(port: u16) {
    let mut set_failed = vec![1u8];
    let key = b"launch/0/failed";
    set_failed.extend_from_slice(&(key.len() as u32).to_le_bytes());
    set_failed.extend_from_slice(key);
    set_failed.extend_from_slice(&3u32.to_le_bytes());
    set_failed.extend_from_slice(b"0 2");
    let mut frame = (set_failed.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&set_failed);
    let hello = [MAGIC, &VERSION.to_le_bytes(), &[9u8; 32]].concat();
    let sends: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0xff; 4096],
        [MAGIC, &u32::MAX.to_le_bytes()].concat(),
        [MAGIC, &1u32.to_le_bytes(), &5u32.to_le_bytes(), b"job-x"].concat(),
        // A wrong proof, then the SET that stopped jobs before the store had a token.
        [&hello[..], &[0u8; 32], &frame].concat(),
        // No proof at all, straight to a huge frame.
        [&hello[..], &u32::MAX.to_le_bytes()].concat(),
    ];
    for bytes in sends {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
        let _ = s.write_all(&bytes);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        assert!(
            sink.len() <= MAGIC.len() + 4 + 64 + 1,
            "the store answered an unauthenticated peer with {} bytes",
            sink.len()
        );
    }
}

#[test]
fn a_store_under_attack_leaves_the_job_undisturbed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = byte_dataset(dir.path(), 20);
    let extra = ["--parallel_config.data_parallel=2"];
    let calm = dir.path().join("calm");
    run_ok(launch_cmd(
        &opts(2, 2, 0, free_port(), &calm.join("log")),
        &train_args(&data, &calm, 4000, &extra),
    ));

    let out = dir.path().join("attacked");
    let port = free_port();
    let mut launcher = launch_cmd(
        &opts(2, 2, 0, port, &out.join("log")),
        &train_args(&data, &out, 4000, &extra),
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("launcher");
    let pid = launcher.id();
    wait_for_steps(&out, 5);
    let (threads0, rss0) = usage(pid).expect("launcher is running");
    let (mut peak_threads, mut peak_rss) = (threads0, rss0);
    let mut flood: Vec<TcpStream> = Vec::new();
    let t0 = Instant::now();
    let mut rounds = 0;
    while launcher.try_wait().expect("wait").is_none() && t0.elapsed() < Duration::from_secs(20) {
        abuse_once(port);
        // Half-open connections: up to 400 held at once, never saying a word.
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        while flood.len() < 400 {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(s) => flood.push(s),
                Err(_) => break,
            }
        }
        if let Some((t, r)) = usage(pid) {
            peak_threads = peak_threads.max(t);
            peak_rss = peak_rss.max(r);
        }
        // Fewer when the store stopped accepting (its bound, or the job just ended).
        flood.drain(..flood.len().min(100));
        rounds += 1;
    }
    drop(flood);
    let code = wait_exit(&mut launcher, Duration::from_secs(300));
    assert_eq!(code, 0, "the attacked job must finish");
    eprintln!(
        "{rounds} rounds; launcher threads {threads0} -> {peak_threads}, resident \
         {rss0} -> {peak_rss} KiB"
    );
    assert!(
        rounds >= 3,
        "only {rounds} rounds of abuse ran while the job trained"
    );
    // The store's limits: at most 32 connections in their handshake and as many more being
    // torn down after eviction, each thread small.
    assert!(
        peak_threads <= threads0 + 2 * 32 + 4,
        "threads grew from {threads0} to {peak_threads}"
    );
    assert!(
        peak_rss <= rss0 + 64 * 1024,
        "resident memory grew from {rss0} KiB to {peak_rss} KiB"
    );
    let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(losses(&out)), bits(losses(&calm)), "losses differ");
}
