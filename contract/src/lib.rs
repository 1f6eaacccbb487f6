//! The contract between the `pretrain` runtime and whoever supervises it (`pretrain launch`, the
//! Kubernetes operator): the whole of what the two halves share, in one place, tested once.
//!
//! - [`env`]: the names of the environment variables a supervisor sets and a worker reads;
//! - [`exit`]: exit codes, which of them a supervisor may retry, and their reasons;
//! - [`termination`]: the worker status file and the termination message (JSON);
//! - [`progress`]: the training progress node 0's launcher serves to the operator (JSON);
//! - [`config`]: reading a training config as the runtime does (YAML, `base_config` parents,
//!   both `--key value` and `--key=value` overrides) and its parallel layout, which the operator
//!   checks against the number of pods before it creates any.
//!
//! ARCHITECTURE.md ("Launch contract") documents every item; this crate holds no tensors and no
//! Kubernetes types.

pub mod config;
pub mod env;
pub mod exit;
pub mod progress;
pub mod termination;
