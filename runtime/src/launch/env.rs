//! The launch environment of a worker: the only place the runtime reads the launch contract
//! (ARCHITECTURE.md, "Launch contract").

use std::time::Duration;

/// What a worker learns from its environment.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerEnv {
    /// `RANK` (0 when unset).
    pub rank: usize,
    /// `WORLD_SIZE` (1 when unset).
    pub world_size: usize,
    /// `LOCAL_RANK`.
    pub local_rank: usize,
    /// `MASTER_ADDR` (127.0.0.1 when unset).
    pub master_addr: String,
    /// `MASTER_PORT` (8118 when unset, msrun's default).
    pub master_port: u16,
    /// `PRETRAIN_JOB_ID` (`pretrain` when unset): peers of another job are refused.
    pub job_id: String,
    /// `PRETRAIN_ATTEMPT` (1 when unset), keeps the keys of a restarted gang apart.
    pub attempt: u32,
    /// `PRETRAIN_RESTART` (0 when unset): the launcher's restart count within the attempt.
    pub restart: u32,
    /// `PRETRAIN_RESUME=true`: resume from the newest complete checkpoint if there is one.
    pub resume: bool,
    /// `PRETRAIN_CHECKPOINT_DIR`: the checkpoint directory (marker and `iteration_*`), in place
    /// of the config's.
    pub checkpoint_dir: Option<std::path::PathBuf>,
    /// `PRETRAIN_STATUS_FILE`: where to leave this worker's exit status for the launcher.
    pub status_file: Option<std::path::PathBuf>,
    /// `PRETRAIN_CLUSTER_TIMEOUT` seconds (300 when unset): how long rendezvous may take.
    pub cluster_timeout: Duration,
    /// Whether this worker hosts the store: rank 0 unless `PRETRAIN_STORE_HOSTED=1` says a
    /// launcher already does.
    pub hosts_store: bool,
}

/// A variable that is set but malformed.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?}: {why}")]
pub struct EnvError {
    /// Variable.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong.
    pub why: &'static str,
}

fn var<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, EnvError> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) if v.is_empty() => Ok(default),
        Ok(v) => v.trim().parse().map_err(|_| EnvError {
            name,
            value: v,
            why: "not a valid number",
        }),
    }
}

impl WorkerEnv {
    /// Reads the environment.
    pub fn from_env() -> Result<WorkerEnv, EnvError> {
        let rank = var("RANK", 0usize)?;
        let world_size = var("WORLD_SIZE", 1usize)?;
        if world_size == 0 || rank >= world_size {
            return Err(EnvError {
                name: "RANK",
                value: rank.to_string(),
                why: "must be below WORLD_SIZE (start workers with `pretrain launch`)",
            });
        }
        let secs = var("PRETRAIN_CLUSTER_TIMEOUT", 300.0f64)?;
        Ok(WorkerEnv {
            rank,
            world_size,
            local_rank: var("LOCAL_RANK", 0usize)?,
            master_addr: std::env::var("MASTER_ADDR").unwrap_or_else(|_| "127.0.0.1".into()),
            master_port: var("MASTER_PORT", 8118u16)?,
            job_id: std::env::var("PRETRAIN_JOB_ID").unwrap_or_else(|_| "pretrain".into()),
            attempt: var("PRETRAIN_ATTEMPT", 1u32)?,
            restart: var("PRETRAIN_RESTART", 0u32)?,
            resume: std::env::var("PRETRAIN_RESUME")
                .is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1"),
            checkpoint_dir: std::env::var_os("PRETRAIN_CHECKPOINT_DIR")
                .filter(|v| !v.is_empty())
                .map(Into::into),
            status_file: std::env::var_os("PRETRAIN_STATUS_FILE").map(Into::into),
            cluster_timeout: Duration::from_secs_f64(secs.max(0.1)),
            hosts_store: rank == 0 && std::env::var("PRETRAIN_STORE_HOSTED").as_deref() != Ok("1"),
        })
    }
}
