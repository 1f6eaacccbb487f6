//! `pretrain-operator`: runs `PretrainJob`s on Kubernetes. It owns topology (one pod per node,
//! stable ranks, the rendezvous address, devices) and lifecycle (phases, gang restarts from the
//! last committed checkpoint, budgets); it knows nothing of tensors. The contract with the
//! runtime (env, config file, termination message, exit codes) is in ARCHITECTURE.md.
//!
//! Module map:
//! - [`crd`]: the `PretrainJob` resource (spec and status types, the generated CRD)
//! - [`validate`]: spec checks (no CEL on old API servers, so the reconciler does them)
//! - [`resources`]: pure builders for the Service, ConfigMaps, pods, env and `hccl.json`
//! - [`observe`]: the pod facts the state machine uses, and the termination message
//! - [`status`]: the state machine as a pure function
//! - [`controller`]: the reconcile loop around it (API calls, Events, status by SSA)
//! - [`leader`], [`metrics`], [`http`]: the process around the controller

pub mod controller;
pub mod crd;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod resources;
pub mod status;
pub mod validate;
