//! Starting, watching and stopping the workers of one node, attempt after attempt.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::heartbeat::{self, Watch};
use super::{Error, LaunchOptions};
use crate::dist::store::StoreClient;
use crate::exit;
use pretrain_contract::env;

/// How the workers of this node ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The launcher's exit code: 0, or the failing worker's code (a non-retryable code wins,
    /// then a worker killed by a signal, over the lost-peer failures they cause in others).
    pub code: i32,
    /// Global rank of the failing worker, when known.
    pub rank: Option<usize>,
    /// What happened, in one line.
    pub message: String,
    /// Gang restarts done.
    pub restarts: u32,
}

struct Worker {
    rank: usize,
    child: Child,
    code: Option<i32>,
    termed: bool,
    log: std::path::PathBuf,
    pumps: Vec<JoinHandle<()>>,
    heartbeat: std::path::PathBuf,
    watch: Watch,
}

/// Exit code of a finished child: its code, or 128 + the signal that killed it.
fn code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(exit::RETRYABLE)
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) with the pid of a child we have not reaped yet (its pid cannot have been
    // reused) and a valid signal number; it touches no memory.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// Copies a worker's output, line by line, to its log file (and stdout with `--join`).
fn pump(
    from: impl std::io::Read + Send + 'static,
    log: Arc<Mutex<File>>,
    rank: usize,
    join: bool,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if let Ok(mut f) = log.lock() {
                let _ = writeln!(f, "{line}");
            }
            if join {
                println!("[rank {rank}] {line}");
            }
        }
    })
}

fn spawn(opts: &LaunchOptions, local_rank: usize, restart: u32) -> Result<Worker, Error> {
    let rank = opts.node_rank * opts.local_worker_num + local_rank;
    let log = opts.log_dir.join(format!("worker_{rank}.log"));
    let file = File::options()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|source| Error::Io {
            what: format!("cannot open {}", log.display()),
            source,
        })?;
    let status = opts.log_dir.join(format!("worker_{rank}.status.json"));
    let _ = std::fs::remove_file(&status);
    let beats = opts.log_dir.join(format!("worker_{rank}.heartbeat"));
    let _ = std::fs::remove_file(&beats);
    let mut cmd = Command::new(&opts.command[0]);
    cmd.args(&opts.command[1..])
        .env(env::RANK, rank.to_string())
        .env(env::LOCAL_RANK, local_rank.to_string())
        .env(env::WORLD_SIZE, opts.worker_num.to_string())
        .env(env::LOCAL_WORLD_SIZE, opts.local_worker_num.to_string())
        .env(env::NODE_RANK, opts.node_rank.to_string())
        .env(env::NNODES, opts.nnodes().to_string())
        .env(env::MASTER_ADDR, &opts.master_addr)
        .env(env::MASTER_PORT, opts.master_port.to_string())
        .env(env::JOB_ID, &opts.job_id)
        .env(env::STORE_TOKEN, opts.token.as_text())
        .env(env::RESTART, restart.to_string())
        .env(
            env::CLUSTER_TIMEOUT,
            opts.cluster_timeout.as_secs_f64().to_string(),
        )
        .env(env::STORE_HOSTED, "1")
        .env(env::STATUS_FILE, &status)
        .env(env::HEARTBEAT_FILE, &beats)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if restart > 0 {
        cmd.env(env::RESUME, "true");
    }
    if let Some(threads) = opts.worker_threads {
        cmd.env(env::RAYON_NUM_THREADS, threads.to_string());
    }
    let mut child = cmd.spawn().map_err(|source| Error::Io {
        what: format!("cannot start worker `{}`", opts.command[0]),
        source,
    })?;
    let file = Arc::new(Mutex::new(file));
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(pump(out, file.clone(), rank, opts.join));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(pump(err, file, rank, opts.join));
    }
    tracing::info!(rank, pid = child.id(), log = %log.display(), "worker started");
    Ok(Worker {
        rank,
        child,
        code: None,
        termed: false,
        log,
        pumps,
        heartbeat: beats,
        watch: Watch::new(Instant::now()),
    })
}

/// The first running worker that is hung, with why.
fn find_hung(workers: &mut [Worker], opts: &LaunchOptions) -> Option<(usize, String)> {
    let now = Instant::now();
    workers
        .iter_mut()
        .filter(|w| w.code.is_none())
        .find_map(|w| {
            let beat = heartbeat::read(&w.heartbeat);
            let why = w.watch.check(beat, now, &opts.hang)?;
            tracing::error!(rank = w.rank, "worker hung: {why}; stopping the gang");
            Some((w.rank, why))
        })
}

/// The last `error:` line of a worker's log, for the failure message.
fn last_error(log: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .find(|l| l.starts_with("error:") || l.contains(" ERROR "))
        .map(|l| l.trim().to_string())
}

/// SIGKILL to every running worker (marked, so its exit is not taken for a failure's cause).
fn kill_all(workers: &mut [Worker]) {
    for w in workers.iter_mut().filter(|w| w.code.is_none()) {
        w.termed = true;
        let _ = w.child.kill();
    }
}

/// Stopping since `since`: SIGTERM to the workers not told yet, SIGKILL to all once `grace`
/// has passed (unless `killed` already). Returns whether it killed them.
fn stop_workers(workers: &mut [Worker], since: Instant, killed: bool, grace: Duration) -> bool {
    for w in workers.iter_mut().filter(|w| w.code.is_none() && !w.termed) {
        signal(&w.child, libc::SIGTERM);
        w.termed = true;
    }
    if killed || since.elapsed() <= grace {
        return false;
    }
    tracing::warn!("workers still running {grace:?} after SIGTERM: SIGKILL");
    kill_all(workers);
    true
}

/// Runs one attempt of the local workers to completion.
fn run_once(
    opts: &LaunchOptions,
    store: &mut StoreClient,
    stop: &AtomicBool,
    restart: u32,
) -> Result<Outcome, Error> {
    let failed_key = format!("launch/{restart}/failed");
    let hung_key = format!("launch/{restart}/hung");
    let mut workers = (0..opts.local_worker_num)
        .map(|l| spawn(opts, l, restart))
        .collect::<Result<Vec<_>, _>>()?;
    // (rank, code) of our own workers that failed before we stopped them.
    let mut failures: Vec<(usize, i32)> = Vec::new();
    let mut remote: Option<String> = None;
    let mut stopping_since: Option<Instant> = None;
    let mut killed = false;
    let mut last_poll = Instant::now();
    let mut last_beat_check = Instant::now();
    let mut hung: Option<(usize, String)> = None;
    loop {
        for w in workers.iter_mut().filter(|w| w.code.is_none()) {
            let status = w.child.try_wait().map_err(|source| Error::Io {
                what: format!("waiting for rank {}", w.rank),
                source,
            })?;
            if let Some(status) = status {
                let code = code_of(status);
                w.code = Some(code);
                tracing::info!(rank = w.rank, code, "worker exited");
                if code != 0 && !w.termed {
                    failures.push((w.rank, code));
                    let _ = store.set(&failed_key, format!("{} {code}", w.rank).as_bytes());
                }
            }
        }
        if workers.iter().all(|w| w.code.is_some()) {
            break;
        }
        if failures.is_empty()
            && remote.is_none()
            && last_poll.elapsed() > Duration::from_millis(200)
        {
            last_poll = Instant::now();
            match store.try_get(&failed_key) {
                Ok(Some(v)) => remote = Some(String::from_utf8_lossy(&v).into_owned()),
                Ok(None) => {}
                Err(e) => remote = Some(format!("lost the rendezvous store ({e})")),
            }
        }
        if failures.is_empty()
            && remote.is_none()
            && last_beat_check.elapsed() >= heartbeat::INTERVAL
        {
            last_beat_check = Instant::now();
            if let Some((rank, why)) = find_hung(&mut workers, opts) {
                // Told before the kill: the peers' workers fail when it dies, and their
                // launchers must find the hang, not only their own lost-peer exits.
                let _ = store.set(&hung_key, format!("{rank} {why}").as_bytes());
                let _ = store.set(&failed_key, format!("{rank} {}", exit::HUNG).as_bytes());
                failures.push((rank, exit::HUNG));
                kill_all(&mut workers);
                killed = true;
                hung = Some((rank, why));
            }
        }
        let must_stop = !failures.is_empty() || remote.is_some() || stop.load(Ordering::SeqCst);
        // A hung gang cannot save a final state (that needs the hung rank): kill it now, here
        // and on the nodes that learn of it through the store.
        let remote_hung = remote
            .as_deref()
            .is_some_and(|r| r.ends_with(&format!(" {}", exit::HUNG)));
        if (hung.is_some() || remote_hung) && !killed {
            kill_all(&mut workers);
            killed = true;
        }
        if must_stop {
            let since = *stopping_since.get_or_insert_with(Instant::now);
            killed |= stop_workers(&mut workers, since, killed, opts.grace);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for w in &mut workers {
        for p in w.pumps.drain(..) {
            let _ = p.join();
        }
    }
    let mut outcome = outcome_of(opts, &workers, &failures, remote, restart);
    // A hang anywhere is the cause of the lost-peer failures it leaves behind.
    let hung = hung.or_else(|| {
        let v = store.try_get(&hung_key).ok().flatten()?;
        let v = String::from_utf8_lossy(&v).into_owned();
        let (rank, why) = v.split_once(' ')?;
        Some((rank.parse().ok()?, why.to_string()))
    });
    if let Some((rank, why)) = hung.filter(|_| exit::is_retryable(outcome.code)) {
        outcome.code = exit::HUNG;
        outcome.rank = Some(rank);
        outcome.message = format!("rank {rank} hung: {why}");
    }
    Ok(outcome)
}

/// The attempt's outcome: the cause, not its echoes. A non-retryable code first, then a worker
/// killed by a signal, then the first failure (other workers then usually report a lost peer,
/// 1); else a failure another node recorded in the store (`remote`); else the workers' codes.
fn outcome_of(
    opts: &LaunchOptions,
    workers: &[Worker],
    failures: &[(usize, i32)],
    remote: Option<String>,
    restart: u32,
) -> Outcome {
    let cause = |c: i32| match c {
        c if !exit::is_retryable(c) => 0,
        c if c > 128 => 1,
        _ => 2,
    };
    let chosen = failures
        .iter()
        .enumerate()
        .min_by_key(|(i, (_, c))| (cause(*c), *i))
        .map(|(_, f)| *f);
    match (chosen, remote) {
        (Some((rank, code)), _) => {
            let log = &workers[rank - opts.node_rank * opts.local_worker_num].log;
            let detail = last_error(log).unwrap_or_else(|| format!("see {}", log.display()));
            Outcome {
                code,
                rank: Some(rank),
                message: format!("rank {rank} exited with code {code}: {detail}"),
                restarts: restart,
            }
        }
        (None, Some(r)) => {
            let mut it = r.split_whitespace();
            let rank = it.next().and_then(|s| s.parse().ok());
            let code = it.next().and_then(|s| s.parse().ok());
            match (rank, code) {
                (Some(rank), Some(code)) => Outcome {
                    code,
                    rank: Some(rank),
                    message: match code {
                        exit::HUNG => format!("rank {rank} on another node hung"),
                        _ => format!("rank {rank} on another node exited with code {code}"),
                    },
                    restarts: restart,
                },
                _ => Outcome {
                    code: exit::RETRYABLE,
                    rank: None,
                    message: r,
                    restarts: restart,
                },
            }
        }
        (None, None) => {
            let code = workers
                .iter()
                .filter_map(|w| w.code)
                .find(|&c| c != 0)
                .unwrap_or(0);
            Outcome {
                code,
                rank: None,
                message: match code {
                    0 => "all workers finished".into(),
                    c => format!("workers stopped with code {c}"),
                },
                restarts: restart,
            }
        }
    }
}

/// Attempts until success, a non-retryable failure, a stop request, or the restart budget is
/// spent. All nodes decide alike from the failure recorded in the store, and meet before
/// restarting, so the new gang starts together and resumes from the newest checkpoint.
pub(super) fn run_attempts(
    opts: &LaunchOptions,
    store: &mut StoreClient,
    stop: Arc<AtomicBool>,
    restarts: &AtomicU32,
) -> Result<Outcome, Error> {
    let mut restart = 0u32;
    loop {
        restarts.store(restart, Ordering::Relaxed);
        let outcome = run_once(opts, store, &stop, restart)?;
        let give_up = outcome.code == 0
            || !exit::is_retryable(outcome.code)
            || stop.load(Ordering::SeqCst)
            || restart >= opts.max_restarts;
        if give_up {
            return Ok(outcome);
        }
        tracing::warn!(
            "{}; restarting the workers from the newest checkpoint ({} of {} restarts)",
            outcome.message,
            restart + 1,
            opts.max_restarts
        );
        store.barrier(
            &format!("launch/{restart}/restart"),
            opts.nnodes() as i64,
            opts.cluster_timeout,
        )?;
        restart += 1;
    }
}
