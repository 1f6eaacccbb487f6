//! The `PretrainJob` custom resource (group `pretrain.io`, version `v1alpha1`).
//!
//! The spec says what to run (image, command, config, overrides), on what (nodes, workers per
//! node, accelerator) and how to survive failures (checkpoint volume, failure policy, timeouts).
//! The status is written only by the operator, with server-side apply.
//!
//! Cross-field rules are checked by [`crate::validate`] in the reconciler, not by CEL, because
//! the oldest API server we test against (1.20) has no CEL.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Toleration};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod status;

pub use status::{
    CheckpointRecord, FailureRecord, NodeFailures, Phase, PretrainJobStatus, ProgressStatus,
};

/// The API group of every resource this operator defines.
pub const GROUP: &str = "pretrain.io";

/// A pretraining run: `nodes` pods, each starting `workersPerNode` training processes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "pretrain.io",
    version = "v1alpha1",
    kind = "PretrainJob",
    namespaced,
    status = "PretrainJobStatus",
    shortname = "ptj",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Nodes","type":"integer","jsonPath":".spec.nodes"}"#,
    printcolumn = r#"{"name":"Attempt","type":"integer","jsonPath":".status.attempt","priority":1}"#,
    printcolumn = r#"{"name":"Step","type":"integer","jsonPath":".status.progress.step"}"#,
    printcolumn = r#"{"name":"Total","type":"integer","jsonPath":".status.progress.totalSteps","priority":1}"#,
    printcolumn = r#"{"name":"ETA","type":"string","jsonPath":".status.progress.estimatedCompletionTime"}"#,
    printcolumn = r#"{"name":"Checkpoint","type":"integer","jsonPath":".status.lastCheckpoint.step","priority":1}"#,
    printcolumn = r#"{"name":"Restarts","type":"integer","jsonPath":".status.restarts"}"#,
    printcolumn = r#"{"name":"In-place","type":"integer","jsonPath":".status.inPlaceRestarts","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PretrainJobSpec {
    /// Number of pods (one per node); the pod with node rank 0 is the rendezvous master.
    pub nodes: u32,
    /// Training processes per pod; must equal the accelerator count per node for NVIDIA and
    /// Ascend.
    pub workers_per_node: u32,
    /// Container image holding the `pretrain` binary.
    pub image: String,
    /// Image pull policy (`Always`, `IfNotPresent`, `Never`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Replaces the container command (default `pretrain launch --join -- pretrain train`). The args
    /// `--config <file> <overrides...>` are appended either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The training config: inline YAML or a ConfigMap key, plus dotted overrides.
    pub config: TrainingConfig,
    /// The accelerator each pod requests.
    #[serde(default)]
    pub accelerator: Accelerator,
    /// Where checkpoints live; the runtime resumes from the last committed one after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointSpec>,
    /// Rendezvous port on the master pod.
    #[serde(default = "default_master_port")]
    pub master_port: u16,
    /// Extra environment for the training container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// When and how often to restart the gang.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// Deadlines.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Scheduler, priority, placement and container resources.
    #[serde(default)]
    pub scheduling: Scheduling,
    /// When true, the pods are deleted and the job waits; unsuspending starts the next attempt
    /// resuming from the last checkpoint. Suspension does not count as a restart.
    #[serde(default)]
    pub suspend: bool,
    /// Delete the job (and, through owner references, everything it owns) this long after it
    /// succeeded or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i64>,
    /// Pod template overrides: labels and annotations added to every pod, and JSON merge
    /// patches (RFC 7386) applied to the generated pod spec (`containers` may not be patched;
    /// use `env`, `scheduling.resources`, `command` and `containerSecurityContext`) and to the
    /// training container's security context. The patches override the secure defaults
    /// field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateOverrides>,
}

impl PretrainJobSpec {
    /// Accelerator devices per pod: `accelerator.countPerNode`, else `workersPerNode`.
    pub fn devices_per_pod(&self) -> u32 {
        self.accelerator
            .count_per_node
            .unwrap_or(self.workers_per_node)
    }
}

fn default_master_port() -> u16 {
    29500
}

/// The training config, mounted read-only at `/etc/pretrain/config.yaml`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingConfig {
    /// The config YAML itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    /// A key of a ConfigMap in the job's namespace holding the config YAML; copied into the
    /// ConfigMap the job owns on every reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapKey>,
    /// Dotted overrides, `section.key=value` (passed as `--section.key=value`), or
    /// `--section.key` followed by its value as the next item; the runtime's forms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<String>,
}

/// A key in a ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKey {
    /// ConfigMap name.
    pub name: String,
    /// Key holding the YAML (default `config.yaml`).
    #[serde(default = "default_config_key")]
    pub key: String,
}

fn default_config_key() -> String {
    "config.yaml".into()
}

/// Accelerator family.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AcceleratorType {
    /// Huawei Ascend NPUs (device plugin resource `huawei.com/Ascend910` by default).
    Ascend,
    /// NVIDIA GPUs (`nvidia.com/gpu`).
    #[serde(rename = "NVIDIA")]
    Nvidia,
    /// No accelerator.
    #[default]
    #[serde(rename = "CPU")]
    Cpu,
}

/// The accelerator each pod requests.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accelerator {
    /// `Ascend`, `NVIDIA` or `CPU`.
    #[serde(rename = "type", default)]
    pub kind: AcceleratorType,
    /// Extended resource name (default `huawei.com/Ascend910` or `nvidia.com/gpu`). Ascend's
    /// `huawei.com/npu` (the A5 generation: Atlas 350, 850, 950) selects rank table version 2.0,
    /// whose scale-out network the job label `scaleout-type` (`ROCE` or `UBOE`) may choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    /// Devices per pod (default `workersPerNode`; must equal it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_per_node: Option<u32>,
    /// Ascend only: generate the HCCL rank table (`hccl.json`) ConfigMap (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank_table: Option<bool>,
    /// Ascend A3 super pods only: NPUs per logical super pod (ascend-operator's and Volcano's
    /// `sp-block`, a multiple of the devices per pod). Set, the rank table is version 1.2 (each
    /// device's `super_device_id`, pods grouped in rank order into `super_pod_list`; version
    /// 2.0 for `huawei.com/npu` takes precedence) and the Volcano PodGroup carries the
    /// `sp-block` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub super_pod_block: Option<u32>,
}

/// Checkpoint storage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSpec {
    /// A PersistentVolumeClaim in the job's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_name: Option<String>,
    /// Any other volume source (a core/v1 `Volume` without `name`), e.g. `{"hostPath": ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::any_object")]
    pub volume: Option<serde_json::Value>,
    /// Where the volume is mounted (default `/checkpoints`).
    #[serde(default = "default_checkpoint_mount")]
    pub mount_path: String,
    /// The checkpoint directory, at or under `mountPath` (holds `iteration_<step>/` and the
    /// commit marker `latest_checkpointed_iteration.txt`). Worker logs go to
    /// `<path>/logs/attempt-<n>/worker_<rank>.log`, so they outlive the pods.
    pub path: String,
    /// Attempts whose logs are kept under `<path>/logs` (the newest ones).
    #[serde(default = "default_keep_log_attempts")]
    pub keep_log_attempts: u32,
}

fn default_keep_log_attempts() -> u32 {
    5
}

fn default_checkpoint_mount() -> String {
    "/checkpoints".into()
}

/// Restart rules. A failed pod fails the whole attempt; the gang is deleted and recreated.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// Gang restarts after failures of the job itself allowed before the job fails.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// Gang restarts caused by the infrastructure allowed before the job fails: a node lost, a
    /// pod evicted, preempted or deleted, the runtime stopped by a signal (exit 10, reason
    /// `Stopped`). They count apart from `maxRestarts` and never as attempts without progress.
    #[serde(default = "default_max_infra_restarts")]
    pub max_infra_restarts: u32,
    /// Consecutive restarts without a newer committed checkpoint allowed before the job fails.
    #[serde(default = "default_max_restarts_without_progress")]
    pub max_restarts_without_progress: u32,
    /// Exit codes that fail the job at once (runtime: 2 config invalid, 3 data/checkpoint
    /// invalid, 4 diverged).
    #[serde(default = "default_non_retryable")]
    pub non_retryable_exit_codes: Vec<i32>,
    /// Delay before restart n: `min(initial * 2^(n-1), max)`.
    #[serde(default)]
    pub backoff: Backoff,
    /// A running job whose step has not advanced for this long is hung: the gang restarts with
    /// reason `Hung`, counting as a failure of the job. Set, it is also the launchers' own
    /// `--hang-timeout` (they detect it first); unset, the launchers time hangs from the
    /// measured step time and the operator's backstop is 7200 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hang_timeout_seconds: Option<u32>,
    /// Restarts of a failed worker in place, per attempt, before the gang is recreated: the
    /// launchers of every pod stop their workers and start them again from the newest
    /// checkpoint, with no pod recreated, rescheduled or pulled. A lost pod or node, or this
    /// budget spent, recreates the gang (counted by `maxRestarts`/`maxInfraRestarts`).
    #[serde(default = "default_in_place_restarts")]
    pub in_place_restarts: u32,
}

fn default_in_place_restarts() -> u32 {
    3
}

impl Default for FailurePolicy {
    fn default() -> Self {
        Self {
            max_restarts: default_max_restarts(),
            max_infra_restarts: default_max_infra_restarts(),
            max_restarts_without_progress: default_max_restarts_without_progress(),
            non_retryable_exit_codes: default_non_retryable(),
            backoff: Backoff::default(),
            hang_timeout_seconds: None,
            in_place_restarts: default_in_place_restarts(),
        }
    }
}

fn default_max_restarts() -> u32 {
    10
}
fn default_max_infra_restarts() -> u32 {
    100
}
fn default_max_restarts_without_progress() -> u32 {
    3
}
fn default_non_retryable() -> Vec<i32> {
    use pretrain_contract::exit;
    vec![exit::CONFIG_INVALID, exit::DATA_INVALID, exit::DIVERGED]
}

/// Exponential backoff between attempts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// First delay.
    #[serde(default = "default_backoff_initial")]
    pub initial_seconds: u32,
    /// Upper bound.
    #[serde(default = "default_backoff_max")]
    pub max_seconds: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial_seconds: default_backoff_initial(),
            max_seconds: default_backoff_max(),
        }
    }
}

fn default_backoff_initial() -> u32 {
    10
}
fn default_backoff_max() -> u32 {
    300
}

/// Deadlines; unset means none.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// An attempt whose pods are not all Running this long after creation fails the job
    /// (unschedulable, image pull errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_seconds: Option<u32>,
    /// The whole job, from its first start, across attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<u32>,
    /// A pod terminating this long (lost node) is force-deleted (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_delete_after_seconds: Option<u32>,
}

/// Placement and resources.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scheduling {
    /// e.g. `volcano` for gang scheduling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
    /// All pods of an attempt are placed together or not at all: a Volcano PodGroup
    /// (`scheduling.volcano.sh/v1beta1`, `minMember` = `nodes`) named after the job, which
    /// every pod joins. Default: on with `schedulerName: volcano`; needs Volcano.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gang: Option<bool>,
    /// Volcano queue of the PodGroup (Volcano's default queue when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Node labels the pods require.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Refuse voluntary evictions (`kubectl drain`, autoscaler scale-down) of the running
    /// gang: a PodDisruptionBudget `<job>` with `minAvailable` = `nodes`. Off by default: with
    /// it, a drain of a node waits until the job ends or is suspended (which saves the final
    /// state first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption_budget: Option<bool>,
    /// Container CPU/memory requests and limits; the accelerator resource is added to these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Additions to every pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverrides {
    /// Extra pod labels (operator labels win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// JSON merge patch applied to the generated pod spec, whose defaults include
    /// `securityContext` (`runAsNonRoot: true`, `seccompProfile: RuntimeDefault`, `fsGroup:
    /// 65532`) and `automountServiceAccountToken: false`; `null` removes a default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::any_object")]
    pub spec: Option<serde_json::Value>,
    /// JSON merge patch applied to the training container's `securityContext`, whose defaults
    /// are `allowPrivilegeEscalation: false` and `capabilities.drop: [ALL]`; `null` removes a
    /// default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::any_object")]
    pub container_security_context: Option<serde_json::Value>,
}

/// Schema for pass-through objects: any fields, kept as given.
pub fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn minimal_spec_gets_defaults() {
        let spec: PretrainJobSpec = serde_json::from_value(serde_json::json!({
            "nodes": 2, "workersPerNode": 8, "image": "pretrain:0.1",
            "config": {"inline": "seed: 1\n"}
        }))
        .expect("valid spec");
        assert_eq!(spec.master_port, 29500);
        assert_eq!(spec.failure_policy.non_retryable_exit_codes, vec![2, 3, 4]);
        assert_eq!(spec.accelerator.kind, AcceleratorType::Cpu);
        assert!(!spec.suspend);
    }

    #[test]
    fn accelerator_names_match_the_documented_spelling() {
        let a: Accelerator =
            serde_json::from_value(serde_json::json!({"type": "NVIDIA"})).expect("NVIDIA parses");
        assert_eq!(a.kind, AcceleratorType::Nvidia);
        let a: Accelerator =
            serde_json::from_value(serde_json::json!({"type": "Ascend"})).expect("Ascend parses");
        assert_eq!(a.kind, AcceleratorType::Ascend);
    }

    #[test]
    fn crd_has_short_name_status_and_columns() {
        let crd = serde_json::to_value(PretrainJob::crd()).expect("crd serializes");
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "ptj");
        let v = &crd["spec"]["versions"][0];
        assert!(v["subresources"]["status"].is_object());
        let cols: Vec<_> = v["additionalPrinterColumns"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| c["name"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            cols,
            [
                "Phase",
                "Nodes",
                "Attempt",
                "Step",
                "Total",
                "ETA",
                "Checkpoint",
                "Restarts",
                "In-place",
                "Age"
            ]
        );
        let conds =
            &v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conds["x-kubernetes-list-type"], "map");
    }
}
