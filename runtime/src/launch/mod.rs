//! `pretrain launch`: starts the workers of one node, like `msrun` or `torchrun`.
//!
//! The node-rank-0 launcher hosts the rendezvous store at `MASTER_ADDR:MASTER_PORT`; every
//! launcher connects to it (so a master that never comes up, or a store of another job, is an
//! error within `--cluster-time-out`), waits for the other nodes, then starts
//! `--local-worker-num` workers with `RANK = NODE_RANK × LOCAL_WORLD_SIZE + LOCAL_RANK` and the
//! rest of the launch contract in their environment, each logging to
//! `<log_dir>/worker_<rank>.log`. When a worker fails, the launcher tells the other nodes
//! through the store, stops its workers (SIGTERM, then SIGKILL after a grace period), and
//! either restarts the gang from the newest checkpoint (`--max-restarts`) or exits with the
//! failing worker's code (ARCHITECTURE.md, "Exit codes"). A worker whose heartbeat stops
//! (`--heartbeat-timeout`) or whose training makes no progress (`--hang-timeout`) is killed and
//! counts as such a failure, with code 11 and reason `Hung`.

pub mod heartbeat;
pub mod progress;
mod supervise;
pub mod termination;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::Arc;
use std::time::Duration;

use crate::dist::auth::Token;
use crate::dist::store::{StoreClient, StoreServer};
use crate::exit;

pub use supervise::Outcome;

/// Launcher options (msrun's names).
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// Workers over all nodes.
    pub worker_num: usize,
    /// Workers on this node.
    pub local_worker_num: usize,
    /// Address of node 0 (the store).
    pub master_addr: String,
    /// Port of the store.
    pub master_port: u16,
    /// This node's index.
    pub node_rank: usize,
    /// Directory of the per-worker logs.
    pub log_dir: PathBuf,
    /// Also stream every worker's output to this process's stdout.
    pub join: bool,
    /// How long rendezvous may take.
    pub cluster_timeout: Duration,
    /// Job id; launchers and workers of another job are refused.
    pub job_id: String,
    /// The job's secret: every launcher and worker of the job proves it to the store and to
    /// each other; the launcher hands it to its workers.
    pub token: Token,
    /// The address node 0's store binds (default: `master_addr`).
    pub master_bind: Option<String>,
    /// With a `--log-dir` named `attempt-<n>`, node 0 keeps only this many newest `attempt-<k>`
    /// siblings (`None`: all).
    pub log_keep: Option<u32>,
    /// Node 0 serves rank 0's progress at `GET /progress` on this port (same address as the
    /// store).
    pub progress_port: Option<u16>,
    /// Gang restarts allowed after retryable failures.
    pub max_restarts: u32,
    /// Time between SIGTERM and SIGKILL when stopping workers.
    pub grace: Duration,
    /// The worker command: program and arguments.
    pub command: Vec<String>,
    /// `RAYON_NUM_THREADS` for each worker; `None` leaves the inherited environment alone.
    pub worker_threads: Option<usize>,
    /// When a worker counts as hung (no heartbeat, or no progress).
    pub hang: heartbeat::Limits,
}

/// Why a launch could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Inconsistent options.
    #[error("{0}")]
    Invalid(String),
    /// Rendezvous failed.
    #[error(transparent)]
    Dist(#[from] crate::dist::Error),
    /// A worker could not be started or its log written.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl Error {
    /// The launcher's exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Invalid(_) => exit::CONFIG_INVALID,
            Error::Dist(d) => d.exit_code(),
            Error::Io { .. } => exit::RETRYABLE,
        }
    }
}

impl LaunchOptions {
    /// Nodes in the job.
    pub fn nnodes(&self) -> usize {
        self.worker_num / self.local_worker_num
    }

    fn check(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Invalid(m));
        if self.worker_num == 0 || self.local_worker_num == 0 {
            return bad("--worker-num and --local-worker-num must be at least 1".into());
        }
        if !self.worker_num.is_multiple_of(self.local_worker_num) {
            return bad(format!(
                "--worker-num {} is not a multiple of --local-worker-num {}: every node runs \
                 the same number of workers",
                self.worker_num, self.local_worker_num
            ));
        }
        if self.node_rank >= self.nnodes() {
            return bad(format!(
                "--node-rank {} is out of range: {} workers at {} per node make {} nodes \
                 (ranks 0..{})",
                self.node_rank,
                self.worker_num,
                self.local_worker_num,
                self.nnodes(),
                self.nnodes() - 1
            ));
        }
        if self.command.is_empty() {
            return bad(
                "no worker command: use `pretrain launch [options] -- train --config \
                        <file>` or `pretrain launch --config <file>`"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The `k` of a directory named `attempt-<k>`.
fn attempt_of(dir: &std::path::Path) -> Option<u64> {
    dir.file_name()?
        .to_str()?
        .strip_prefix("attempt-")?
        .parse()
        .ok()
}

/// Removes the `attempt-<k>` siblings of `log_dir` (`attempt-<n>`) with `k <= n - keep`, so
/// that the logs of the `keep` newest attempts stay. Failures are logged, not fatal.
fn prune_attempt_logs(log_dir: &std::path::Path, keep: u32) {
    let (Some(n), Some(parent)) = (attempt_of(log_dir), log_dir.parent()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for dir in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
        if attempt_of(&dir).is_some_and(|k| k + u64::from(keep) <= n) && dir.is_dir() {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "removed the logs of an old attempt")
                }
                Err(e) => tracing::warn!(dir = %dir.display(), "cannot remove old logs: {e}"),
            }
        }
    }
}

/// Runs the job's workers on this node until they finish, fail, or `stop` is raised (SIGTERM:
/// forwarded to the workers, which save a final checkpoint and exit 10).
pub fn run(opts: &LaunchOptions, stop: Arc<AtomicBool>) -> Result<Outcome, Error> {
    opts.check()?;
    std::fs::create_dir_all(&opts.log_dir).map_err(|source| Error::Io {
        what: format!("cannot create --log-dir {}", opts.log_dir.display()),
        source,
    })?;
    if let (0, Some(keep)) = (opts.node_rank, opts.log_keep) {
        prune_attempt_logs(&opts.log_dir, keep);
    }
    let server = if opts.node_rank == 0 {
        let bind = opts.master_bind.as_deref().unwrap_or(&opts.master_addr);
        let s = StoreServer::start(bind, opts.master_port, &opts.job_id, &opts.token)?;
        tracing::info!(addr = %s.addr(), "rendezvous store listening");
        Some(s)
    } else {
        None
    };
    // Rank 0 runs on node 0: its launcher serves the job's progress.
    let restarts = Arc::new(AtomicU32::new(0));
    let _progress = match (opts.node_rank, opts.progress_port) {
        (0, Some(port)) => {
            let bind = opts.master_bind.as_deref().unwrap_or(&opts.master_addr);
            let beats = opts.log_dir.join("worker_0.heartbeat");
            progress::ProgressServer::start(bind, port, beats, Arc::clone(&restarts))
                .map_err(|e| tracing::warn!("no progress endpoint on {bind}:{port}: {e}"))
                .ok()
        }
        _ => None,
    };
    let mut store = StoreClient::connect(
        &opts.master_addr,
        opts.master_port,
        &opts.job_id,
        &opts.token,
        opts.cluster_timeout,
    )?;
    let nnodes = opts.nnodes() as i64;
    tracing::info!(
        node_rank = opts.node_rank,
        "waiting for {nnodes} node(s) at {}:{}",
        opts.master_addr,
        opts.master_port
    );
    store.barrier("launch/nodes", nnodes, opts.cluster_timeout)?;
    let outcome = supervise::run_attempts(opts, &mut store, stop, &restarts)?;
    // Node 0 keeps the store up until every launcher has seen the outcome.
    let _ = store.barrier("launch/exit", nnodes, Duration::from_secs(10));
    drop(server);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_newest_attempts_logs_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        for k in 1..=6 {
            std::fs::create_dir_all(dir.path().join(format!("attempt-{k}"))).expect("mkdir");
        }
        std::fs::create_dir_all(dir.path().join("other")).expect("mkdir");
        prune_attempt_logs(&dir.path().join("attempt-6"), 3);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["attempt-4", "attempt-5", "attempt-6", "other"]);
        // A log directory not named attempt-<n> prunes nothing.
        prune_attempt_logs(&dir.path().join("other"), 1);
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 4);
    }
}
