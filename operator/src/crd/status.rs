//! The observed state of a `PretrainJob`, written only by the operator (server-side apply):
//! the lifecycle phase, the attempt and restart counters, conditions, training progress, the
//! last failure and checkpoint, and the nodes this job avoids.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Lifecycle phase.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Not yet reconciled.
    #[default]
    Pending,
    /// The spec failed validation; nothing is created until it is fixed.
    Invalid,
    /// Pods of the current attempt wait for admission by a queue (Kueue's scheduling gate).
    Queued,
    /// Pods of the current attempt exist, not all Running.
    Starting,
    /// All pods of the current attempt are Running.
    Running,
    /// The gang is being deleted (or backing off) before the next attempt.
    Restarting,
    /// Suspended: no pods.
    Suspended,
    /// Every pod exited 0 (terminal).
    Succeeded,
    /// Failed (terminal).
    Failed,
}

impl Phase {
    /// Succeeded and Failed never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }

    /// The name used in status, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Invalid => "Invalid",
            Phase::Queued => "Queued",
            Phase::Starting => "Starting",
            Phase::Running => "Running",
            Phase::Restarting => "Restarting",
            Phase::Suspended => "Suspended",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    /// All phases, for metrics.
    pub const ALL: [Phase; 9] = [
        Phase::Pending,
        Phase::Invalid,
        Phase::Queued,
        Phase::Starting,
        Phase::Running,
        Phase::Restarting,
        Phase::Suspended,
        Phase::Succeeded,
        Phase::Failed,
    ];
}

/// Observed state, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PretrainJobStatus {
    /// The spec generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Lifecycle phase.
    #[serde(default)]
    pub phase: Phase,
    /// `Invalid`, `Queued`, `Running`, `Restarting`, `Suspended`, `Succeeded`, `Failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Current attempt (1-based; pods carry it as a label). 0 before the first start.
    #[serde(default)]
    pub attempt: u32,
    /// Gang restarts so far (suspensions excluded), whatever their cause.
    #[serde(default)]
    pub restarts: u32,
    /// Nodes on which this job's pods failed twice for infrastructure reasons: later attempts'
    /// pods avoid them (node affinity). At most 16, the oldest dropped; cleared on success.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_nodes: Vec<String>,
    /// Infrastructure failures per node (bounded like `excludedNodes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_failures: Vec<NodeFailures>,
    /// Workers restarted in place by the launchers (no pod recreated), over all attempts.
    #[serde(default)]
    pub in_place_restarts: u32,
    /// Of `restarts`, those caused by the infrastructure (see `failurePolicy.maxInfraRestarts`).
    #[serde(default)]
    pub infra_restarts: u32,
    /// Consecutive restarts without a newer committed checkpoint.
    #[serde(default)]
    pub restarts_without_progress: u32,
    /// The failure that ended the latest failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<FailureRecord>,
    /// The newest committed checkpoint the runtime reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<CheckpointRecord>,
    /// How far training is, as node 0's launcher last reported it (read every 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressStatus>,
    /// When the first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the current attempt's pods were created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_start_time: Option<Time>,
    /// Earliest time the next attempt may start (backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
    /// When the job reached Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

/// What ended an attempt.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureRecord {
    /// The attempt that failed.
    pub attempt: u32,
    /// Node rank of the failed pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
    /// Failed pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Node it ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Container exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// CamelCase reason (runtime's, or `PodFailed`, `PodDeleted`, `NodeLost`, ...).
    pub reason: String,
    /// Human-readable detail (the runtime's termination message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The failing worker's log file (on the checkpoint volume, when the job has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// When it was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// Infrastructure failures of the job's pods on one node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeFailures {
    /// Node name.
    pub node: String,
    /// Failures seen there.
    pub failures: u32,
}

/// Training progress (`status.progress`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressStatus {
    /// Last completed optimizer step.
    pub step: u64,
    /// Steps of the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<u64>,
    /// Training tokens per second (rank 0's mean pace in this attempt), rounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<u64>,
    /// Loss of the last step, as text (`"2.4812"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<String>,
    /// Newest checkpoint rank 0 committed in this attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_step: Option<u64>,
    /// When the last step should complete at the measured pace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_completion_time: Option<Time>,
    /// When `step` last advanced (or the attempt started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_time: Option<Time>,
    /// The attempt these figures are of.
    #[serde(default)]
    pub attempt: u32,
    /// In-place restarts the launchers reported in that attempt.
    #[serde(default)]
    pub in_place_restarts: u32,
}

/// A committed checkpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointRecord {
    /// Training step.
    pub step: u64,
    /// `<dir>/iteration_<step:08>`, when the runtime reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}
