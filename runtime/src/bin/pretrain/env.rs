//! The process environment: the only place `pretrain` reads it, once, at start, into [`Env`]
//! (the variable names are the contract crate's; ARCHITECTURE.md, "Launch contract").

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use pretrain::dist::auth::Token;
use pretrain::train::Placement;
use pretrain_contract::env as names;

/// Every variable `pretrain` reads, as found at start (set and non-empty).
pub struct Env {
    vars: HashMap<&'static str, String>,
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
    pub why: String,
}

/// What a training worker learns from its environment.
pub struct Worker {
    /// Its place in the job.
    pub placement: Placement,
    /// `PRETRAIN_RESUME=true`: resume from the newest complete checkpoint if there is one.
    pub resume: bool,
    /// `PRETRAIN_CHECKPOINT_DIR`: the checkpoint directory, in place of the config's.
    pub checkpoint_dir: Option<PathBuf>,
    /// `PRETRAIN_STATUS_FILE`: where to leave the exit status for the launcher.
    pub status_file: Option<PathBuf>,
    /// `PRETRAIN_HEARTBEAT_FILE`: where to write the heartbeat for the launcher.
    pub heartbeat_file: Option<PathBuf>,
    /// `PRETRAIN_COMM_TIMEOUT` (default 600 s): every collective wait.
    pub comm_timeout: Duration,
    /// `PRETRAIN_STOP_DEADLINE` (default 300 s): from a stop signal to a forced exit.
    pub stop_deadline: Duration,
    /// `PRETRAIN_PEAK_FLOPS`: peak FLOP/s per device for MFU.
    pub peak_flops: Option<f64>,
    /// `LOCAL_WORLD_SIZE` (1 when unset): the processes sharing this machine's memory.
    pub local_world_size: usize,
}

const READ: [&str; 24] = [
    names::RANK,
    names::WORLD_SIZE,
    names::LOCAL_RANK,
    names::LOCAL_WORLD_SIZE,
    names::NODE_RANK,
    names::MASTER_ADDR,
    names::MASTER_PORT,
    names::JOB_ID,
    names::STORE_TOKEN,
    names::STORE_TOKEN_FILE,
    names::MASTER_BIND,
    names::PROGRESS_PORT,
    names::MAX_RESTARTS,
    names::LOG_KEEP,
    names::ATTEMPT,
    names::RESTART,
    names::RESUME,
    names::CHECKPOINT_DIR,
    names::STATUS_FILE,
    names::HEARTBEAT_FILE,
    names::CLUSTER_TIMEOUT,
    names::STORE_HOSTED,
    names::TERMINATION_LOG,
    names::LOG_DIR,
];

const TUNING: [&str; 6] = [
    names::COMM_TIMEOUT,
    names::HEARTBEAT_TIMEOUT,
    names::HANG_TIMEOUT,
    names::STOP_DEADLINE,
    names::PEAK_FLOPS,
    names::RAYON_NUM_THREADS,
];

impl Env {
    /// Reads the environment (once, in `main`).
    pub fn capture() -> Env {
        let vars = READ
            .iter()
            .chain(&TUNING)
            .filter_map(|&name| match std::env::var(name) {
                Ok(v) if !v.is_empty() => Some((name, v)),
                _ => None,
            })
            .collect();
        Env { vars }
    }

    /// The value of `name`, if set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// `name` parsed, or `default` when unset.
    pub fn parse<T: std::str::FromStr>(
        &self,
        name: &'static str,
        default: T,
    ) -> Result<T, EnvError> {
        Ok(self.parse_opt(name)?.unwrap_or(default))
    }

    /// `name` parsed, or `None` when unset.
    pub fn parse_opt<T: std::str::FromStr>(
        &self,
        name: &'static str,
    ) -> Result<Option<T>, EnvError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| EnvError {
                name,
                value: v.into(),
                why: "not a valid value".into(),
            }),
        }
    }

    /// `flag` if given, else `name` parsed, else `default` (the launcher's options).
    pub fn or<T: std::str::FromStr>(
        &self,
        flag: Option<T>,
        name: &'static str,
        default: T,
    ) -> Result<T, EnvError> {
        match flag {
            Some(v) => Ok(v),
            None => self.parse(name, default),
        }
    }

    /// A positive number of seconds, or `default` when unset.
    fn seconds(
        &self,
        name: &'static str,
        default: f64,
        zero_ok: bool,
    ) -> Result<Duration, EnvError> {
        let secs = self.parse(name, default)?;
        if !secs.is_finite() || secs < 0.0 || (secs == 0.0 && !zero_ok) {
            return Err(EnvError {
                name,
                value: secs.to_string(),
                why: "must be a positive number of seconds".into(),
            });
        }
        Ok(Duration::from_secs_f64(secs))
    }

    /// The job's store token: `PRETRAIN_STORE_TOKEN`, else the file `PRETRAIN_STORE_TOKEN_FILE`
    /// names, else `None`.
    pub fn token(&self) -> Result<Option<Token>, EnvError> {
        if let Some(text) = self.get(names::STORE_TOKEN) {
            return Token::new(text, names::STORE_TOKEN)
                .map(Some)
                .map_err(|e| EnvError {
                    name: names::STORE_TOKEN,
                    value: "<secret>".into(),
                    why: e.to_string(),
                });
        }
        let Some(path) = self.get(names::STORE_TOKEN_FILE) else {
            return Ok(None);
        };
        Token::from_file(std::path::Path::new(path))
            .map(Some)
            .map_err(|e| EnvError {
                name: names::STORE_TOKEN_FILE,
                value: path.into(),
                why: e.to_string(),
            })
    }

    /// `PRETRAIN_MASTER_BIND`, if set.
    pub fn master_bind(&self) -> Option<String> {
        self.get(names::MASTER_BIND).map(String::from)
    }

    /// `PRETRAIN_COMM_TIMEOUT` (default 600 s).
    pub fn comm_timeout(&self) -> Result<Duration, EnvError> {
        self.seconds(names::COMM_TIMEOUT, 600.0, false)
    }

    /// Whether `RAYON_NUM_THREADS` is set (the launcher then leaves it to the workers).
    pub fn has_thread_count(&self) -> bool {
        self.get(names::RAYON_NUM_THREADS).is_some()
    }

    /// The training worker's settings.
    pub fn worker(&self) -> Result<Worker, EnvError> {
        let rank = self.parse(names::RANK, 0usize)?;
        let world_size = self.parse(names::WORLD_SIZE, 1usize)?;
        if world_size == 0 || rank >= world_size {
            return Err(EnvError {
                name: names::RANK,
                value: rank.to_string(),
                why: "must be below WORLD_SIZE (start workers with `pretrain launch`)".into(),
            });
        }
        let cluster_timeout = self.parse(names::CLUSTER_TIMEOUT, 300.0f64)?;
        let placement = Placement {
            rank,
            world_size,
            local_rank: self.parse(names::LOCAL_RANK, 0usize)?,
            master_addr: self.get(names::MASTER_ADDR).unwrap_or("127.0.0.1").into(),
            master_port: self.parse(names::MASTER_PORT, 8118u16)?,
            job_id: self.get(names::JOB_ID).unwrap_or("pretrain").into(),
            attempt: self.parse(names::ATTEMPT, 1u32)?,
            restart: self.parse(names::RESTART, 0u32)?,
            cluster_timeout: Duration::from_secs_f64(cluster_timeout.max(0.1)),
            hosts_store: rank == 0 && self.get(names::STORE_HOSTED) != Some("1"),
            master_bind: self.master_bind(),
            token: if world_size > 1 { self.token()? } else { None },
        };
        Ok(Worker {
            placement,
            resume: self
                .get(names::RESUME)
                .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1"),
            checkpoint_dir: self.get(names::CHECKPOINT_DIR).map(PathBuf::from),
            status_file: self.get(names::STATUS_FILE).map(PathBuf::from),
            heartbeat_file: self.get(names::HEARTBEAT_FILE).map(PathBuf::from),
            comm_timeout: self.comm_timeout()?,
            stop_deadline: self.seconds(names::STOP_DEADLINE, 300.0, true)?,
            local_world_size: self.parse(names::LOCAL_WORLD_SIZE, 1usize)?.max(1),
            peak_flops: self.parse_opt(names::PEAK_FLOPS)?,
        })
    }
}
