//! Spec validation, done by the reconciler because the oldest supported API server (1.20) has
//! no CEL. Every problem is reported at once, in one message for the `Invalid` condition.

use kube::ResourceExt;

use crate::crd::{AcceleratorType, PretrainJob};
use crate::resources::env::PodSlot;
use crate::resources::pod::{self, BuildError};

/// Longest job name: pod names `<job>-<rank>` are also hostnames (63 characters at most).
const MAX_NAME: usize = 52;

/// The training config as the controller found it.
pub enum ConfigSource<'a> {
    /// The YAML text (inline, or read from the referenced ConfigMap).
    Text(&'a str),
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

/// Reads an integer at a dotted path of the config, with dotted overrides applied on top.
fn config_int(config: &serde_json::Value, overrides: &[String], path: &str) -> Option<i64> {
    for o in overrides.iter().rev() {
        let o = o.trim_start_matches("--");
        if let Some((k, v)) = o.split_once('=') {
            if k == path {
                return v.trim().parse().ok();
            }
        }
    }
    let mut v = config;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    v.as_i64()
}

/// Checks the parallel layout of the config (MindSpore Transformers' `parallel_config`:
/// `data_parallel x model_parallel x pipeline_stage` must equal the world size).
fn check_layout(text: &str, overrides: &[String], world: u64, errors: &mut Vec<String>) {
    let config: serde_json::Value = match serde_saphyr::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            errors.push(format!("the training config is not valid YAML: {e}"));
            return;
        }
    };
    let get = |k: &str| config_int(&config, overrides, &format!("parallel_config.{k}"));
    let (dp, mp, pp) = (
        get("data_parallel"),
        get("model_parallel"),
        get("pipeline_stage"),
    );
    if dp.is_none() && mp.is_none() && pp.is_none() {
        return;
    }
    let (dp, mp, pp) = (dp.unwrap_or(1), mp.unwrap_or(1), pp.unwrap_or(1));
    if dp < 1 || mp < 1 || pp < 1 {
        errors.push(format!(
            "parallel_config sizes must be positive (dp {dp}, mp {mp}, pp {pp})"
        ));
        return;
    }
    let product = (dp * mp * pp) as u64;
    if product != world {
        errors.push(format!(
            "parallel layout data_parallel {dp} x model_parallel {mp} x pipeline_stage {pp} = \
             {product} does not match the world size nodes x workersPerNode = {world}; \
             change parallel_config or the node count"
        ));
    }
}

/// Validates the job; `Err` carries every problem, separated by "; ".
pub fn validate(job: &PretrainJob, config: ConfigSource<'_>) -> Result<(), String> {
    let s = &job.spec;
    let mut errors = vec![];
    let name = job.name_any();
    if !is_dns_label(&name) || name.len() > MAX_NAME {
        errors.push(format!(
            "name {name:?} must be a DNS label of at most {MAX_NAME} characters starting with a \
             letter (pod names <name>-<rank> are hostnames)"
        ));
    }
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
    if s.master_port == 0 {
        errors.push("masterPort must be between 1 and 65535".into());
    }
    let a = &s.accelerator;
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
    let sched = &s.scheduling;
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
    if a.kind != AcceleratorType::Ascend && a.rank_table.is_some() {
        errors.push("accelerator.rankTable applies to Ascend only".into());
    }
    match (&s.config.inline, &s.config.config_map) {
        (Some(_), Some(_)) => errors.push("config: set inline or configMap, not both".into()),
        (None, None) => errors.push("config: set inline or configMap".into()),
        _ => {}
    }
    for o in &s.config.overrides {
        let body = o.trim_start_matches("--");
        let ok = body.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty()
                && k.split('.').all(|p| {
                    !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
        });
        if !ok {
            errors.push(format!("override {o:?} must look like section.key=value"));
        }
    }
    match config {
        ConfigSource::Text(text) => {
            let world = u64::from(s.nodes) * u64::from(s.workers_per_node);
            if world > 0 {
                check_layout(text, &s.config.overrides, world, &mut errors);
            }
        }
        ConfigSource::Missing(what) => errors.push(what),
    }
    if let Some(c) = &s.checkpoint {
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
    if let Some(spec) = s.pod_template.as_ref().and_then(|t| t.spec.as_ref()) {
        if !spec.is_object() {
            errors.push("podTemplate.spec must be an object".into());
        } else if spec.get("containers").is_some() || spec.get("initContainers").is_some() {
            errors.push("podTemplate.spec may not set containers or initContainers".into());
        }
    }
    if errors.is_empty() {
        // The builders are the last word: a volume source or template patch that does not
        // produce a pod is a spec error too.
        if let Err(e @ (BuildError::CheckpointVolume(_) | BuildError::TemplatePatch(_))) =
            pod::build(
                job,
                PodSlot {
                    rank: 0,
                    attempt: 1,
                    resume: false,
                },
            )
        {
            errors.push(e.to_string());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
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
            "must look like section.key=value",
            "checkpoint.path",
            "0 is not an exit code",
        ] {
            assert!(e.contains(needle), "{needle} in {e}");
        }
    }
}
