//! The launch contract: environment the operator sets on every pod (see ARCHITECTURE.md,
//! "Launch contract"). The runtime's launcher reads these and derives per process
//! `LOCAL_RANK` and `RANK = NODE_RANK * LOCAL_WORLD_SIZE + LOCAL_RANK`.

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector};
use kube::ResourceExt;
use pretrain_contract::env as names;

use super::config_map::{CONFIG_DIR, CONFIG_KEY};
use super::master_addr;
use super::rank_table::{pods_per_super_pod, RANK_TABLE_DIR, RANK_TABLE_KEY};
use super::store_access::{TOKEN_DIR, TOKEN_KEY};
use crate::crd::{AcceleratorType, PretrainJob};

/// Where the runtime writes its termination message (JSON, see [`crate::status`]).
pub const TERMINATION_LOG: &str = "/dev/termination-log";

/// The launcher's per-worker log files: an `emptyDir`, writable whatever user the image runs
/// as and with a read-only root filesystem (the worker output also streams to the pod log).
pub const LOG_DIR: &str = "/var/log/pretrain";

/// What varies per pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodSlot {
    /// Node rank, 0-based; rank 0 hosts the rendezvous.
    pub rank: u32,
    /// Attempt number, 1-based.
    pub attempt: u32,
    /// Whether the runtime should resume from the last committed checkpoint.
    pub resume: bool,
}

fn plain(name: &str, value: impl ToString) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.to_string()),
        value_from: None,
    }
}

fn field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        }),
    }
}

/// Builds the contract environment for one pod, followed by the user's `env` (which may
/// override anything but the contract variables, since later duplicates win in Kubernetes and
/// the user's entries come last by design: an escape hatch, documented as such).
pub fn build(job: &PretrainJob, slot: PodSlot) -> Vec<EnvVar> {
    let spec = &job.spec;
    let mut env = vec![
        plain(names::MASTER_ADDR, master_addr(job)),
        plain(names::MASTER_PORT, spec.master_port),
        plain(names::NNODES, spec.nodes),
        plain(names::NODE_RANK, slot.rank),
        plain(names::LOCAL_WORLD_SIZE, spec.workers_per_node),
        plain(
            names::WORLD_SIZE,
            u64::from(spec.nodes) * u64::from(spec.workers_per_node),
        ),
        plain(names::JOB_ID, job.name_any()),
        plain(names::JOB_UID, job.uid().unwrap_or_default()),
        plain(names::ATTEMPT, slot.attempt),
        plain(names::CONFIG, format!("{CONFIG_DIR}/{CONFIG_KEY}")),
        plain(names::RESUME, slot.resume),
        plain(names::TERMINATION_LOG, TERMINATION_LOG),
        plain(names::LOG_DIR, log_dir(job, slot.attempt)),
        field(names::POD_NAME, "metadata.name"),
        field(names::POD_NAMESPACE, "metadata.namespace"),
        field(names::POD_IP, "status.podIP"),
        // Node 0's store listens on the pod's own address only.
        field(names::MASTER_BIND, "status.podIP"),
        plain(names::STORE_TOKEN_FILE, format!("{TOKEN_DIR}/{TOKEN_KEY}")),
        plain(names::PROGRESS_PORT, progress_port(job)),
        plain(names::MAX_RESTARTS, spec.failure_policy.in_place_restarts),
    ];
    if let Some(secs) = spec.failure_policy.hang_timeout_seconds {
        env.push(plain(names::HANG_TIMEOUT, secs));
    }
    if let Some(ckpt) = &spec.checkpoint {
        env.push(plain(names::CHECKPOINT_DIR, &ckpt.path));
        env.push(plain(names::LOG_KEEP, ckpt.keep_log_attempts.max(1)));
    }
    if spec.accelerator.kind == AcceleratorType::Ascend {
        let resource = resource_name(job).unwrap_or_default();
        // The Volcano Ascend plugin writes the assigned devices into a pod annotation named
        // after the resource; ascend-operator exposes it the same way.
        env.push(field(
            names::ASCEND_VISIBLE_DEVICES,
            &format!("metadata.annotations['{resource}']"),
        ));
        if rank_table_enabled(job) {
            env.push(plain(
                names::RANK_TABLE_FILE,
                format!("{RANK_TABLE_DIR}/{RANK_TABLE_KEY}"),
            ));
        }
        env.push(plain(
            names::HCCL_LOGIC_SUPERPOD_ID,
            logic_super_pod(job, slot.rank),
        ));
    }
    env.extend(spec.env.iter().cloned());
    env
}

/// The logical super pod of the pod of node `rank`: its rank over the pods per
/// `accelerator.superPodBlock` (at least one), 0 without one (ascend-operator's
/// `GetLogicSuperPodId`); the same grouping as the rank table's `super_pod_list`.
fn logic_super_pod(job: &PretrainJob, rank: u32) -> u32 {
    let devices = job.spec.devices_per_pod();
    match job.spec.accelerator.super_pod_block {
        Some(block) if block > 0 && devices > 0 => rank / pods_per_super_pod(block, devices),
        _ => 0,
    }
}

/// The launcher's log directory of `attempt`: on the checkpoint volume when the job has one
/// (`<path>/logs/attempt-<n>`: the logs outlive the pods), else the pod's `emptyDir`.
pub fn log_dir(job: &PretrainJob, attempt: u32) -> String {
    match &job.spec.checkpoint {
        Some(c) => format!("{}/logs/attempt-{attempt}", c.path.trim_end_matches('/')),
        None => LOG_DIR.into(),
    }
}

/// The port on which node 0's launcher serves the job's progress: the master port + 1.
pub fn progress_port(job: &PretrainJob) -> u16 {
    job.spec.master_port.saturating_add(1)
}

/// The extended resource each pod requests, if any.
pub fn resource_name(job: &PretrainJob) -> Option<String> {
    let a = &job.spec.accelerator;
    match a.kind {
        AcceleratorType::Cpu => None,
        AcceleratorType::Ascend => Some(
            a.resource_name
                .clone()
                .unwrap_or_else(|| "huawei.com/Ascend910".into()),
        ),
        AcceleratorType::Nvidia => Some(
            a.resource_name
                .clone()
                .unwrap_or_else(|| "nvidia.com/gpu".into()),
        ),
    }
}

/// Whether the job gets an HCCL rank table (Ascend, unless turned off).
pub fn rank_table_enabled(job: &PretrainJob) -> bool {
    job.spec.accelerator.kind == AcceleratorType::Ascend
        && job.spec.accelerator.rank_table.unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures;

    fn get<'a>(env: &'a [EnvVar], name: &str) -> Option<&'a str> {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
    }

    #[test]
    fn contract_for_rank_one_of_a_resumed_attempt() {
        let env = build(
            &fixtures::cpu_job(),
            PodSlot {
                rank: 1,
                attempt: 2,
                resume: true,
            },
        );
        assert_eq!(get(&env, "MASTER_ADDR"), Some("run1-0.run1.ml.svc"));
        assert_eq!(get(&env, "MASTER_PORT"), Some("29500"));
        assert_eq!(get(&env, "NNODES"), Some("2"));
        assert_eq!(get(&env, "NODE_RANK"), Some("1"));
        assert_eq!(get(&env, "LOCAL_WORLD_SIZE"), Some("4"));
        assert_eq!(get(&env, "WORLD_SIZE"), Some("8"));
        assert_eq!(get(&env, "PRETRAIN_ATTEMPT"), Some("2"));
        assert_eq!(get(&env, "PRETRAIN_RESUME"), Some("true"));
        assert_eq!(
            get(&env, "PRETRAIN_CHECKPOINT_DIR"),
            Some("/checkpoints/run1")
        );
        assert_eq!(
            get(&env, "PRETRAIN_CONFIG"),
            Some("/etc/pretrain/config.yaml")
        );
        assert!(get(&env, "RANK_TABLE_FILE").is_none());
        // Logs per attempt on the checkpoint volume; the launchers' restart budget; progress.
        assert_eq!(
            get(&env, "PRETRAIN_LOG_DIR"),
            Some("/checkpoints/run1/logs/attempt-2")
        );
        assert_eq!(get(&env, "PRETRAIN_LOG_KEEP"), Some("5"));
        assert_eq!(get(&env, "PRETRAIN_MAX_RESTARTS"), Some("3"));
        assert_eq!(get(&env, "PRETRAIN_PROGRESS_PORT"), Some("29501"));
        assert!(get(&env, "PRETRAIN_HANG_TIMEOUT").is_none());
    }

    #[test]
    fn first_attempt_does_not_resume() {
        let env = build(
            &fixtures::cpu_job(),
            PodSlot {
                rank: 0,
                attempt: 1,
                resume: false,
            },
        );
        assert_eq!(get(&env, "PRETRAIN_RESUME"), Some("false"));
    }

    #[test]
    fn ascend_pods_get_their_logical_super_pod() {
        let id = |job: &PretrainJob, rank: u32| {
            let env = build(
                job,
                PodSlot {
                    rank,
                    attempt: 1,
                    resume: false,
                },
            );
            get(&env, "HCCL_LOGIC_SUPERPOD_ID").map(str::to_string)
        };
        let mut job = fixtures::ascend_job();
        assert_eq!(id(&job, 1).as_deref(), Some("0"));
        // 16 NPUs per logical super pod, 8 per pod: two pods each.
        job.spec.accelerator.super_pod_block = Some(16);
        let ids: Vec<_> = (0..5).map(|r| id(&job, r)).collect();
        assert_eq!(ids, ["0", "0", "1", "1", "2"].map(|s| Some(s.to_string())));
        // A block smaller than a pod still holds one pod.
        job.spec.accelerator.super_pod_block = Some(4);
        assert_eq!(id(&job, 3).as_deref(), Some("3"));
        assert_eq!(id(&fixtures::cpu_job(), 1), None);
    }

    #[test]
    fn ascend_gets_rank_table_and_visible_devices() {
        let env = build(
            &fixtures::ascend_job(),
            PodSlot {
                rank: 0,
                attempt: 1,
                resume: false,
            },
        );
        assert_eq!(
            get(&env, "RANK_TABLE_FILE"),
            Some("/user/serverid/devindex/config/hccl.json")
        );
        let dev = env
            .iter()
            .find(|e| e.name == "ASCEND_VISIBLE_DEVICES")
            .expect("set");
        let path = &dev
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .expect("ref");
        assert_eq!(
            path.field_path,
            "metadata.annotations['huawei.com/Ascend910']"
        );
    }
}
