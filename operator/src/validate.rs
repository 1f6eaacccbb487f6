//! Spec validation, done by the reconciler because the oldest supported API server (1.20) has
//! no CEL. Every problem is reported at once, in one message for the `Invalid` condition.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kube::ResourceExt;
use pretrain_contract::config::{self as training, Files, ParallelLayout};

use crate::crd::{AcceleratorType, PretrainJob, PretrainJobSpec};
use crate::resources::config_map::{CONFIG_DIR, CONFIG_KEY};
use crate::resources::env::PodSlot;
use crate::resources::{pod, rank_table};

/// Longest job name: pod names `<job>-<rank>` are also hostnames (63 characters at most).
const MAX_NAME: usize = 52;

/// The training config as the controller found it.
pub enum ConfigSource<'a> {
    /// The YAML text alone.
    Text(&'a str),
    /// The files of the job's ConfigMap by key: the config under `config.yaml`, and the
    /// referenced ConfigMap's other keys.
    Files(&'a BTreeMap<String, String>),
    /// The referenced ConfigMap or key does not exist; the string says which.
    Missing(String),
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The job's ConfigMap as the pods see it: its keys are files in [`CONFIG_DIR`]. Files
/// elsewhere (in the image, on a volume) are not visible to the operator.
struct Mounted<'a>(&'a BTreeMap<String, String>);

impl Files for Mounted<'_> {
    fn read(&self, path: &Path) -> training::Result<(PathBuf, String)> {
        let key = path
            .strip_prefix(CONFIG_DIR)
            .ok()
            .and_then(|k| k.to_str())
            .filter(|k| !k.contains('/'));
        match key.and_then(|k| self.0.get(k)) {
            Some(text) => Ok((path.to_path_buf(), text.clone())),
            None => Err(training::Error::Io {
                path: path.to_path_buf(),
                source: std::io::ErrorKind::NotFound.into(),
            }),
        }
    }
}

/// Checks the parallel layout of the config, read as the runtime reads it (`base_config`
/// parents, both override forms): MindSpore Transformers' `parallel_config`, whose
/// `data_parallel x model_parallel x pipeline_stage` must equal the world size. A parent the
/// operator cannot see (outside the job's ConfigMap) leaves the check to the runtime, which
/// exits 2 at start.
fn check_layout(
    files: &BTreeMap<String, String>,
    args: &[String],
    world: u64,
    errors: &mut Vec<String>,
) {
    let path = Path::new(CONFIG_DIR).join(CONFIG_KEY);
    let tree = match training::load(&path, args, &Mounted(files)) {
        Ok(tree) => tree,
        Err(training::Error::Io { path, .. }) => {
            tracing::info!(
                file = %path.display(),
                "parallel layout not checked: a base_config parent is outside the job's \
                 ConfigMap; the runtime checks it at start"
            );
            return;
        }
        Err(e) => {
            errors.push(format!("the training config: {e}"));
            return;
        }
    };
    let layout = match ParallelLayout::of(&tree) {
        Ok(Some(l)) => l,
        Ok(None) => return, // no parallel_config: the runtime checks WORLD_SIZE at start
        Err(e) => {
            errors.push(format!("the training config: {e}"));
            return;
        }
    };
    let (dp, mp, pp) = (
        layout.data_parallel,
        layout.model_parallel,
        layout.pipeline_stage,
    );
    if layout.world_size() != Some(world) {
        let product = layout
            .world_size()
            .map_or_else(|| "more than 2^64".to_string(), |p| p.to_string());
        errors.push(format!(
            "parallel layout data_parallel {dp} x model_parallel {mp} x pipeline_stage {pp} = \
             {product} does not match the world size nodes x workersPerNode = {world}; \
             change parallel_config or the node count"
        ));
    }
}

/// Checks the overrides as the runtime will parse them; returns its argv tokens.
fn check_overrides(overrides: &[String], errors: &mut Vec<String>) -> Option<Vec<String>> {
    let args = training::override_args(overrides);
    let parsed = match training::parse_overrides(&args) {
        Ok(p) => p,
        Err(e) => {
            errors.push(format!("config.overrides: {e}"));
            return None;
        }
    };
    let mut ok = true;
    for o in parsed {
        let word =
            |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !o.key.split('.').all(word) {
            errors.push(format!(
                "override {:?} must look like section.key=value (or --section.key value)",
                o.key
            ));
            ok = false;
        }
    }
    ok.then_some(args)
}

/// Validates the job; `Err` carries every problem, separated by "; ".
pub fn validate(job: &PretrainJob, config: ConfigSource<'_>) -> Result<(), String> {
    let s = &job.spec;
    let mut errors = vec![];
    check_name(job, &mut errors);
    check_sizes(s, &mut errors);
    check_accelerator(s, &mut errors);
    check_scheduling(job, &mut errors);
    if s.accelerator.kind != AcceleratorType::Ascend && s.accelerator.rank_table.is_some() {
        errors.push("accelerator.rankTable applies to Ascend only".into());
    }
    check_scale_out_type(job, &mut errors);
    check_config(s, config, &mut errors);
    check_checkpoint(s, &mut errors);
    check_lifecycle(s, &mut errors);
    check_pod_template(s, &mut errors);
    if errors.is_empty() {
        check_pod_builds(job, &mut errors);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// The job's name: pod names `<name>-<rank>` are hostnames.
fn check_name(job: &PretrainJob, errors: &mut Vec<String>) {
    let name = job.name_any();
    if !is_dns_label(&name) || name.len() > MAX_NAME {
        errors.push(format!(
            "name {name:?} must be a DNS label of at most {MAX_NAME} characters starting with a \
             letter (pod names <name>-<rank> are hostnames)"
        ));
    }
}

/// The gang's size and what each pod runs: nodes, workers, image, command and port.
fn check_sizes(s: &PretrainJobSpec, errors: &mut Vec<String>) {
    if s.nodes == 0 {
        errors.push("nodes must be at least 1".into());
    }
    if s.workers_per_node == 0 {
        errors.push("workersPerNode must be at least 1".into());
    }
    if s.image.trim().is_empty() {
        errors.push("image must be set".into());
    }
    if s.command.as_ref().is_some_and(|c| c.is_empty()) {
        errors.push("command must not be empty when set (omit it for the default launcher)".into());
    }
    if s.master_port == 0 || s.master_port == u16::MAX {
        errors.push(
            "masterPort must be between 1 and 65534 (node 0 serves progress on masterPort + 1)"
                .into(),
        );
    }
    if s.failure_policy.hang_timeout_seconds == Some(0) {
        errors.push(
            "failurePolicy.hangTimeoutSeconds must be at least 1 (omit it for the default)".into(),
        );
    }
}

/// The accelerator: CPU takes no device resource; with devices, one process per device.
fn check_accelerator(s: &PretrainJobSpec, errors: &mut Vec<String>) {
    let a = &s.accelerator;
    check_super_pod_block(s, errors);
    match a.kind {
        AcceleratorType::Cpu => {
            if a.count_per_node.is_some() || a.resource_name.is_some() {
                errors.push("accelerator CPU takes no resourceName or countPerNode".into());
            }
        }
        AcceleratorType::Ascend | AcceleratorType::Nvidia => {
            if let Some(n) = a.count_per_node {
                if n != s.workers_per_node {
                    errors.push(format!(
                        "workersPerNode ({}) must equal accelerator.countPerNode ({n}): one \
                         process per device",
                        s.workers_per_node
                    ));
                }
            }
        }
    }
}

/// `accelerator.superPodBlock`: Ascend only, whole pods per logical super pod.
fn check_super_pod_block(s: &PretrainJobSpec, errors: &mut Vec<String>) {
    let Some(block) = s.accelerator.super_pod_block else {
        return;
    };
    let devices = s.devices_per_pod();
    if s.accelerator.kind != AcceleratorType::Ascend {
        errors.push("accelerator.superPodBlock applies to Ascend only".into());
    } else if block == 0 || devices == 0 || block % devices != 0 {
        errors.push(format!(
            "accelerator.superPodBlock ({block}) must be a positive multiple of the devices per \
             pod ({devices}): a logical super pod holds whole pods"
        ));
    }
}

/// The `scaleout-type` label of a rank table 2.0 job (ascend-operator's): `ROCE` or `UBOE`.
fn check_scale_out_type(job: &PretrainJob, errors: &mut Vec<String>) {
    let Some(value) = job.labels().get(rank_table::SCALE_OUT_TYPE_LABEL) else {
        return;
    };
    let v2 = matches!(
        rank_table::Layout::of(job).version,
        rank_table::Version::V2_0 { .. }
    );
    if v2 && rank_table::ScaleOutType::parse(value).is_none() {
        errors.push(format!(
            "label {}: {value:?} is neither ROCE nor UBOE (the scale-out network of rank table \
             2.0; remove the label to choose by the NPUs' ports)",
            rank_table::SCALE_OUT_TYPE_LABEL
        ));
    }
}

/// Gang scheduling and queues, which both need Volcano.
fn check_scheduling(job: &PretrainJob, errors: &mut Vec<String>) {
    let sched = &job.spec.scheduling;
    if sched.gang == Some(true) && sched.scheduler_name.as_deref() != Some("volcano") {
        errors.push(
            "scheduling.gang needs scheduling.schedulerName: volcano (gang scheduling uses \
             Volcano's PodGroup)"
                .into(),
        );
    }
    if sched.queue.is_some() && !crate::resources::pod_group::enabled(job) {
        errors.push("scheduling.queue is a Volcano queue: it needs gang scheduling".into());
    }
}

/// The training config: one source, overrides the runtime accepts, and a parallel layout that
/// matches the world size (checked only when the overrides parse and the world is not empty).
fn check_config(s: &PretrainJobSpec, config: ConfigSource<'_>, errors: &mut Vec<String>) {
    match (&s.config.inline, &s.config.config_map) {
        (Some(_), Some(_)) => errors.push("config: set inline or configMap, not both".into()),
        (None, None) => errors.push("config: set inline or configMap".into()),
        _ => {}
    }
    let args = check_overrides(&s.config.overrides, errors);
    let world = u64::from(s.nodes) * u64::from(s.workers_per_node);
    match (config, args) {
        (ConfigSource::Missing(what), _) => errors.push(what),
        (_, None) => {}
        (_, Some(_)) if world == 0 => {}
        (ConfigSource::Text(text), Some(args)) => {
            let files = [(CONFIG_KEY.to_string(), text.to_string())].into();
            check_layout(&files, &args, world, errors);
        }
        (ConfigSource::Files(files), Some(args)) => {
            check_layout(files, &args, world, errors);
        }
    }
}

/// The checkpoint volume: exactly one source, and the path at or under its mount.
fn check_checkpoint(s: &PretrainJobSpec, errors: &mut Vec<String>) {
    let Some(c) = &s.checkpoint else {
        return;
    };
    if c.claim_name.is_some() == c.volume.is_some() {
        errors.push("checkpoint: set exactly one of claimName and volume".into());
    }
    let mount = c.mount_path.trim_end_matches('/');
    if !c.mount_path.starts_with('/')
        || !(c.path == mount || c.path.starts_with(&format!("{mount}/")))
    {
        errors.push(format!(
            "checkpoint.path {:?} must be an absolute path at or under mountPath {:?}",
            c.path, c.mount_path
        ));
    }
}

/// What happens when attempts fail and the job ends: the failure policy and the TTL.
fn check_lifecycle(s: &PretrainJobSpec, errors: &mut Vec<String>) {
    let p = &s.failure_policy;
    if let Some(c) = p
        .non_retryable_exit_codes
        .iter()
        .find(|c| !(1..=255).contains(*c))
    {
        errors.push(format!(
            "failurePolicy.nonRetryableExitCodes: {c} is not an exit code in 1..=255"
        ));
    }
    if p.backoff.initial_seconds > p.backoff.max_seconds {
        errors.push("failurePolicy.backoff.initialSeconds must not exceed maxSeconds".into());
    }
    if s.ttl_seconds_after_finished.is_some_and(|t| t < 0) {
        errors.push("ttlSecondsAfterFinished must not be negative".into());
    }
}

/// `podTemplate.spec`: an object that leaves the containers to the operator;
/// `podTemplate.containerSecurityContext`: an object.
fn check_pod_template(s: &PretrainJobSpec, errors: &mut Vec<String>) {
    let Some(t) = &s.pod_template else { return };
    if let Some(spec) = &t.spec {
        if !spec.is_object() {
            errors.push("podTemplate.spec must be an object".into());
        } else if spec.get("containers").is_some() || spec.get("initContainers").is_some() {
            errors.push("podTemplate.spec may not set containers or initContainers".into());
        }
    }
    if t.container_security_context
        .as_ref()
        .is_some_and(|c| !c.is_object())
    {
        errors.push("podTemplate.containerSecurityContext must be an object".into());
    }
}

/// The builders are the last word: a volume source or template patch that does not produce a
/// pod, or a pod that could never start (root with `runAsNonRoot`), is a spec error too.
fn check_pod_builds(job: &PretrainJob, errors: &mut Vec<String>) {
    let slot = PodSlot {
        rank: 0,
        attempt: 1,
        resume: false,
    };
    if let Err(e) = pod::build(job, slot) {
        errors.push(e.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures;

    const LAYOUT: &str =
        "parallel_config:\n  data_parallel: &dp 1\n  model_parallel: 4\n  pipeline_stage: 4\n";

    #[test]
    fn good_specs_pass() {
        assert_eq!(
            validate(&fixtures::cpu_job(), ConfigSource::Text("seed: 1")),
            Ok(())
        );
        assert_eq!(
            validate(&fixtures::ascend_job(), ConfigSource::Text(LAYOUT)),
            Ok(())
        );
    }

    #[test]
    fn zero_nodes_and_device_mismatch_are_reported_together() {
        let job = fixtures::job(serde_json::json!({
            "nodes": 0, "workersPerNode": 4, "image": "i", "config": {"inline": "a: 1"},
            "accelerator": {"type": "NVIDIA", "countPerNode": 8}
        }));
        let e = validate(&job, ConfigSource::Text("a: 1")).expect_err("invalid");
        assert!(e.contains("nodes must be at least 1"), "{e}");
        assert!(
            e.contains("workersPerNode (4) must equal accelerator.countPerNode (8)"),
            "{e}"
        );
    }

    #[test]
    fn super_pod_blocks_hold_whole_ascend_pods() {
        let with = |accelerator: serde_json::Value| {
            validate(
                &fixtures::job(serde_json::json!({
                    "nodes": 4, "workersPerNode": 16, "image": "i", "config": {"inline": "a: 1"},
                    "accelerator": accelerator
                })),
                ConfigSource::Text("a: 1"),
            )
        };
        assert_eq!(
            with(serde_json::json!({"type": "Ascend", "superPodBlock": 32})),
            Ok(())
        );
        let e = with(serde_json::json!({"type": "Ascend", "superPodBlock": 24})).expect_err("24");
        assert!(
            e.contains("accelerator.superPodBlock (24) must be a positive multiple of the devices per pod (16)"),
            "{e}"
        );
        let e = with(serde_json::json!({"type": "Ascend", "superPodBlock": 0})).expect_err("0");
        assert!(e.contains("superPodBlock (0)"), "{e}");
        let e = with(serde_json::json!({"type": "NVIDIA", "superPodBlock": 16})).expect_err("gpu");
        assert!(e.contains("superPodBlock applies to Ascend only"), "{e}");
    }

    #[test]
    fn a_rank_table_2_job_takes_a_known_scale_out_type() {
        let with = |resource: &str, label: &str| {
            let mut job = fixtures::job(serde_json::json!({
                "nodes": 2, "workersPerNode": 8, "image": "i", "config": {"inline": "a: 1"},
                "accelerator": {"type": "Ascend", "resourceName": resource}
            }));
            job.metadata.labels = Some([("scaleout-type".into(), label.into())].into());
            validate(&job, ConfigSource::Text("a: 1"))
        };
        assert_eq!(with("huawei.com/npu", "RoCE"), Ok(()));
        let e = with("huawei.com/npu", "UBG").expect_err("UBG is a port type");
        assert!(
            e.contains(r#"label scaleout-type: "UBG" is neither ROCE nor UBOE"#),
            "{e}"
        );
        // Other tables do not read it.
        assert_eq!(with("huawei.com/Ascend910", "UBG"), Ok(()));
    }

    #[test]
    fn gang_and_queue_need_volcano() {
        let with = |sched: serde_json::Value| {
            validate(
                &fixtures::job(serde_json::json!({
                    "nodes": 2, "workersPerNode": 1, "image": "i", "config": {"inline": "a: 1"},
                    "scheduling": sched
                })),
                ConfigSource::Text("a: 1"),
            )
        };
        let e = with(serde_json::json!({"gang": true})).expect_err("no volcano");
        assert!(
            e.contains("scheduling.gang needs scheduling.schedulerName: volcano"),
            "{e}"
        );
        let e = with(serde_json::json!({"schedulerName": "volcano", "gang": false, "queue": "q"}))
            .expect_err("queue without gang");
        assert!(e.contains("scheduling.queue is a Volcano queue"), "{e}");
        assert_eq!(
            with(serde_json::json!({"schedulerName": "volcano", "queue": "q"})),
            Ok(())
        );
    }

    #[test]
    fn layout_must_match_world_size_with_overrides_applied() {
        let mut job = fixtures::ascend_job();
        job.spec.nodes = 1;
        let e = validate(&job, ConfigSource::Text(LAYOUT)).expect_err("16 != 8");
        assert!(
            e.contains("= 16 does not match the world size nodes x workersPerNode = 8"),
            "{e}"
        );
        job.spec.config.overrides = vec!["parallel_config.pipeline_stage=2".into()];
        assert_eq!(validate(&job, ConfigSource::Text(LAYOUT)), Ok(()));
    }

    #[test]
    fn a_layout_in_a_parent_config_map_key_is_checked_with_either_override_form() {
        let mut job = fixtures::ascend_job();
        job.spec.nodes = 1;
        let files: BTreeMap<String, String> = [
            (
                "config.yaml".into(),
                "base_config: base.yaml\nseed: 1\n".into(),
            ),
            ("base.yaml".into(), LAYOUT.into()),
        ]
        .into();
        let e = validate(&job, ConfigSource::Files(&files)).expect_err("16 != 8");
        assert!(e.contains("= 16 does not match the world size"), "{e}");
        job.spec.config.overrides = vec!["--parallel_config.pipeline_stage".into(), "2".into()];
        assert_eq!(validate(&job, ConfigSource::Files(&files)), Ok(()));
        job.spec.config.overrides = vec!["parallel_config.pipeline_stage=8".into()];
        let e = validate(&job, ConfigSource::Files(&files)).expect_err("32 != 8");
        assert!(e.contains("= 32 does not match"), "{e}");
        // A parent the operator cannot see leaves the check to the runtime.
        let outside: BTreeMap<String, String> =
            [("config.yaml".into(), "base_config: /opt/base.yaml\n".into())].into();
        assert_eq!(validate(&job, ConfigSource::Files(&outside)), Ok(()));
        // A malformed layout is reported with where it was set.
        let bad: BTreeMap<String, String> = [(
            "config.yaml".into(),
            "parallel_config: {data_parallel: two}\n".into(),
        )]
        .into();
        let e = validate(&job, ConfigSource::Files(&bad)).expect_err("not a number");
        assert!(
            e.contains("/etc/pretrain/config.yaml:1:34: parallel_config.data_parallel"),
            "{e}"
        );
    }

    #[test]
    fn missing_config_map_and_bad_fields() {
        let mut job = fixtures::cpu_job();
        job.spec.config.overrides = vec!["not an override".into()];
        job.spec.checkpoint.as_mut().expect("ckpt").path = "/elsewhere".into();
        job.spec.failure_policy.non_retryable_exit_codes = vec![0];
        let e = validate(
            &job,
            ConfigSource::Missing("configMap \"x\" not found".into()),
        )
        .expect_err("invalid");
        for needle in [
            "configMap \"x\" not found",
            "config.overrides: --not an override has no value",
            "checkpoint.path",
            "0 is not an exit code",
        ] {
            assert!(e.contains(needle), "{needle} in {e}");
        }
    }

    #[test]
    fn a_template_running_as_root_must_remove_run_as_non_root() {
        let mut job = fixtures::cpu_job();
        job.spec.pod_template = Some(
            serde_json::from_value(serde_json::json!({
                "spec": {"securityContext": {"runAsUser": 0}}
            }))
            .expect("template"),
        );
        let e = validate(&job, ConfigSource::Text("seed: 1\n")).expect_err("invalid");
        assert!(e.contains("runAsNonRoot: false"), "{e}");
        job.spec.pod_template = Some(
            serde_json::from_value(serde_json::json!({"containerSecurityContext": "ALL"}))
                .expect("template"),
        );
        let e = validate(&job, ConfigSource::Text("seed: 1\n")).expect_err("invalid");
        assert_eq!(e, "podTemplate.containerSecurityContext must be an object");
    }
}
