//! One pod per node rank. Names are stable across attempts (`<job>-<rank>`); the attempt is a
//! label, and a new attempt is only created once every pod of the previous one is gone.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, NodeAffinity,
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolumeClaimVolumeSource,
    Pod, PodSpec, ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;
use kube::ResourceExt;

use super::config_map::{CONFIG_DIR, CONFIG_KEY};
use super::env::{self, PodSlot, LOG_DIR, TERMINATION_LOG};
use super::kueue;
use super::pod_group;
use super::rank_table::{RANK_INDEX_ANNOTATION, RANK_TABLE_DIR};
use super::security;
use super::store_access;
use super::{
    common_labels, config_map_name, merge_patch, namespace, owner_ref, pod_name, rank_table_name,
    service_name, CONTAINER, LABEL_ATTEMPT, LABEL_RANK,
};
use crate::crd::PretrainJob;

/// The default container command: the runtime's launcher, which starts `workersPerNode`
/// `pretrain train` processes with the contract environment.
pub const DEFAULT_COMMAND: [&str; 6] = ["pretrain", "launch", "--join", "--", "pretrain", "train"];

/// Why a pod could not be built (reported as an `Invalid` condition).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `checkpoint.volume` is not a volume source.
    #[error("checkpoint.volume is not a valid volume source: {0}")]
    CheckpointVolume(String),
    /// `podTemplate.spec` does not patch into a valid pod spec.
    #[error("podTemplate.spec does not produce a valid pod spec: {0}")]
    TemplatePatch(String),
    /// `podTemplate.containerSecurityContext` does not patch into a valid security context.
    #[error("podTemplate.containerSecurityContext does not produce a valid securityContext: {0}")]
    ContainerSecurityContext(String),
    /// The template sets `runAsUser: 0` and leaves `runAsNonRoot: true` (a default) in place.
    #[error(
        "podTemplate sets runAsUser 0 while runAsNonRoot is true (a default), so the pods would \
         never start; to run as root, also set podTemplate.spec.securityContext.runAsNonRoot: false"
    )]
    RootWithRunAsNonRoot,
}

/// The container args: the config file, then each override as `--section.key=value`.
pub fn args(job: &PretrainJob) -> Vec<String> {
    let mut a = vec!["--config".to_string(), format!("{CONFIG_DIR}/{CONFIG_KEY}")];
    a.extend(pretrain_contract::config::override_args(
        &job.spec.config.overrides,
    ));
    a
}

/// The training container's resources: `scheduling.resources` with the accelerator devices
/// (`count` of them, requested and limited).
pub(super) fn resources(job: &PretrainJob) -> Option<ResourceRequirements> {
    let mut r = job.spec.scheduling.resources.clone().unwrap_or_default();
    if let Some(name) = env::resource_name(job) {
        let count = Quantity(job.spec.devices_per_pod().to_string());
        r.limits
            .get_or_insert_with(BTreeMap::new)
            .insert(name.clone(), count.clone());
        r.requests
            .get_or_insert_with(BTreeMap::new)
            .insert(name, count);
    }
    (r != ResourceRequirements::default()).then_some(r)
}

fn checkpoint_volume(job: &PretrainJob) -> Result<Option<(Volume, VolumeMount)>, BuildError> {
    let Some(c) = &job.spec.checkpoint else {
        return Ok(None);
    };
    let mut vol = match (&c.claim_name, &c.volume) {
        (Some(claim), _) => Volume {
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: None,
            }),
            ..Default::default()
        },
        (None, Some(v)) => {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.insert("name".into(), "checkpoint".into());
            }
            serde_json::from_value(v).map_err(|e| BuildError::CheckpointVolume(e.to_string()))?
        }
        (None, None) => return Ok(None),
    };
    vol.name = "checkpoint".into();
    let mount = VolumeMount {
        name: "checkpoint".into(),
        mount_path: c.mount_path.clone(),
        ..Default::default()
    };
    Ok(Some((vol, mount)))
}

fn config_map_volume(name: &str, cm: String) -> Volume {
    Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: cm,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Builds the pod for `slot`.
pub fn build(job: &PretrainJob, slot: PodSlot) -> Result<Pod, BuildError> {
    build_avoiding(job, slot, &[])
}

/// [`build`] for a pod that must not run on the nodes `avoid` (`status.excludedNodes`): a
/// required node affinity term `metadata.name NotIn avoid`, before `podTemplate` (a template
/// that sets its own required node affinity replaces it).
pub fn build_avoiding(
    job: &PretrainJob,
    slot: PodSlot,
    avoid: &[String],
) -> Result<Pod, BuildError> {
    let name = pod_name(job, slot.rank);
    let (volumes, mounts) = volumes(job)?;
    let container = container(job, slot, mounts)?;
    let mut spec = pod_spec(job, &name, container, volumes);
    if !avoid.is_empty() {
        spec.affinity = Some(avoid_nodes(avoid));
    }
    let pod_spec = patch_template(job, spec)?;
    security::check_root(&pod_spec)?;
    let annotations = annotations(job, slot);
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace(job)),
            labels: Some(labels(job, slot)),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![owner_ref(job)]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    })
}

/// The template's labels, then the job's, Kueue's (for a queued job), rank and attempt labels
/// (which win).
fn labels(job: &PretrainJob, slot: PodSlot) -> BTreeMap<String, String> {
    let mut labels = job
        .spec
        .pod_template
        .as_ref()
        .map(|t| t.labels.clone())
        .unwrap_or_default();
    labels.extend(common_labels(job));
    labels.extend(kueue::pod_labels(job, slot.attempt));
    labels.insert(LABEL_RANK.into(), slot.rank.to_string());
    labels.insert(LABEL_ATTEMPT.into(), slot.attempt.to_string());
    labels
}

/// The template's annotations, then the PodGroup, Kueue's pod group and the rank table index
/// where they apply.
fn annotations(job: &PretrainJob, slot: PodSlot) -> BTreeMap<String, String> {
    let mut annotations = job
        .spec
        .pod_template
        .as_ref()
        .map(|t| t.annotations.clone())
        .unwrap_or_default();
    if pod_group::enabled(job) {
        annotations.insert(pod_group::GROUP_ANNOTATION.into(), job.name_any());
    }
    annotations.extend(kueue::pod_annotations(job));
    if env::rank_table_enabled(job) {
        annotations.insert(RANK_INDEX_ANNOTATION.into(), slot.rank.to_string());
    }
    annotations
}

/// Node affinity that keeps a pod off the nodes `avoid`.
fn avoid_nodes(avoid: &[String]) -> Affinity {
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_fields: Some(vec![NodeSelectorRequirement {
                        key: "metadata.name".into(),
                        operator: "NotIn".into(),
                        values: Some(avoid.to_vec()),
                    }]),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod's volumes and the container's mounts of them: the config (read-only), the logs,
/// the checkpoint volume if any, the store token (read-only) and the rank table (read-only)
/// where it applies.
fn volumes(job: &PretrainJob) -> Result<(Vec<Volume>, Vec<VolumeMount>), BuildError> {
    let mut volumes = vec![config_map_volume("config", config_map_name(job))];
    let mut mounts = vec![VolumeMount {
        name: "config".into(),
        mount_path: CONFIG_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    volumes.push(Volume {
        name: "logs".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    });
    mounts.push(VolumeMount {
        name: "logs".into(),
        mount_path: LOG_DIR.into(),
        ..Default::default()
    });
    if let Some((v, m)) = checkpoint_volume(job)? {
        volumes.push(v);
        mounts.push(m);
    }
    let (token, token_mount) = store_access::token_volume(job);
    volumes.push(token);
    mounts.push(token_mount);
    if env::rank_table_enabled(job) {
        volumes.push(config_map_volume("rank-table", rank_table_name(job)));
        mounts.push(VolumeMount {
            name: "rank-table".into(),
            mount_path: RANK_TABLE_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    Ok((volumes, mounts))
}

/// The training container: the launcher (or `spec.command`), the contract environment, the
/// devices, the rendezvous port, the termination message the operator reads and the secure
/// defaults with `podTemplate.containerSecurityContext` over them.
fn container(
    job: &PretrainJob,
    slot: PodSlot,
    mounts: Vec<VolumeMount>,
) -> Result<Container, BuildError> {
    let spec = &job.spec;
    let command = spec
        .command
        .clone()
        .unwrap_or_else(|| DEFAULT_COMMAND.iter().map(|s| s.to_string()).collect());
    Ok(Container {
        name: CONTAINER.into(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.clone(),
        command: Some(command),
        args: Some(args(job)),
        env: Some(env::build(job, slot)),
        resources: resources(job),
        ports: Some(vec![
            ContainerPort {
                name: Some("rendezvous".into()),
                container_port: i32::from(spec.master_port),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("progress".into()),
                container_port: i32::from(env::progress_port(job)),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        volume_mounts: Some(mounts),
        termination_message_path: Some(TERMINATION_LOG.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(security::container_security_context(job)?),
        ..Default::default()
    })
}

/// The pod spec before the template patch: never restarted in place, a stable hostname under
/// the job's Service, the scheduling fields, no ServiceAccount token (training never calls the
/// API server) and the secure pod security context, with the image's group for the volumes.
fn pod_spec(job: &PretrainJob, name: &str, container: Container, volumes: Vec<Volume>) -> PodSpec {
    let s = &job.spec.scheduling;
    PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".into()),
        hostname: Some(name.into()),
        subdomain: Some(service_name(job)),
        enable_service_links: Some(false),
        scheduler_name: s.scheduler_name.clone(),
        priority_class_name: s.priority_class_name.clone(),
        node_selector: (!s.node_selector.is_empty()).then(|| s.node_selector.clone()),
        tolerations: (!s.tolerations.is_empty()).then(|| s.tolerations.clone()),
        volumes: Some(volumes),
        automount_service_account_token: Some(false),
        security_context: Some(security::pod_security_context()),
        ..Default::default()
    }
}

/// Applies `podTemplate.spec` to `pod_spec` as a JSON merge patch.
fn patch_template(job: &PretrainJob, pod_spec: PodSpec) -> Result<PodSpec, BuildError> {
    let Some(patch) = job.spec.pod_template.as_ref().and_then(|t| t.spec.as_ref()) else {
        return Ok(pod_spec);
    };
    let mut v =
        serde_json::to_value(&pod_spec).map_err(|e| BuildError::TemplatePatch(e.to_string()))?;
    merge_patch::apply(&mut v, patch);
    serde_json::from_value(v).map_err(|e| BuildError::TemplatePatch(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures;

    fn slot(rank: u32) -> PodSlot {
        PodSlot {
            rank,
            attempt: 1,
            resume: false,
        }
    }

    #[test]
    fn cpu_pod_has_identity_config_and_checkpoint() {
        let pod = build(&fixtures::cpu_job(), slot(1)).expect("builds");
        assert_eq!(pod.metadata.name.as_deref(), Some("run1-1"));
        let labels = pod.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels[LABEL_RANK], "1");
        assert_eq!(labels[LABEL_ATTEMPT], "1");
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some("run1-1"));
        assert_eq!(spec.subdomain.as_deref(), Some("run1"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let c = &spec.containers[0];
        assert_eq!(
            c.args.as_deref().expect("args"),
            [
                "--config",
                "/etc/pretrain/config.yaml",
                "--training.epochs=1"
            ]
        );
        assert_eq!(
            c.command.as_deref().expect("cmd")[0..2],
            ["pretrain", "launch"]
        );
        assert!(c.resources.is_none());
        let vols = spec.volumes.expect("volumes");
        let by_name = |n: &str| vols.iter().find(|v| v.name == n).expect("volume");
        assert_eq!(
            by_name("checkpoint")
                .persistent_volume_claim
                .as_ref()
                .expect("pvc")
                .claim_name,
            "ckpt"
        );
        // With a checkpoint volume the launcher's logs go there, per attempt (they outlive the
        // pod); the emptyDir stays for jobs without one.
        assert!(by_name("logs").empty_dir.is_some());
        let mount = c.volume_mounts.iter().flatten().find(|m| m.name == "logs");
        assert_eq!(mount.expect("logs mount").mount_path, LOG_DIR);
        let env = c.env.as_deref().expect("env");
        assert!(env.iter().any(|e| e.name == "PRETRAIN_LOG_DIR"
            && e.value.as_deref() == Some("/checkpoints/run1/logs/attempt-1")));
        assert_eq!(
            spec.security_context.and_then(|s| s.fs_group),
            Some(security::IMAGE_GROUP)
        );
    }

    #[test]
    fn ascend_pod_requests_devices_and_mounts_rank_table() {
        let pod = build(&fixtures::ascend_job(), slot(1)).expect("builds");
        assert_eq!(
            pod.metadata.annotations.as_ref().expect("ann")[RANK_INDEX_ANNOTATION],
            "1"
        );
        let spec = pod.spec.expect("spec");
        let r = spec.containers[0].resources.clone().expect("resources");
        assert_eq!(r.limits.expect("limits")["huawei.com/Ascend910"].0, "8");
        assert_eq!(r.requests.expect("requests")["huawei.com/Ascend910"].0, "8");
        let vols = spec.volumes.expect("volumes");
        assert!(vols.iter().any(|v| v
            .config_map
            .as_ref()
            .is_some_and(|c| c.name == "rings-config-run1")));
    }

    #[test]
    fn nvidia_pod_requests_gpus_on_top_of_user_resources() {
        let job = fixtures::job(serde_json::json!({
            "nodes": 1, "workersPerNode": 8, "image": "i", "config": {"inline": "a: 1"},
            "accelerator": {"type": "NVIDIA"},
            "scheduling": {"resources": {"limits": {"memory": "64Gi"}}, "schedulerName": "volcano"}
        }));
        let pod = build(&job, slot(0)).expect("builds");
        let spec = pod.spec.expect("spec");
        let limits = spec.containers[0]
            .resources
            .clone()
            .expect("r")
            .limits
            .expect("limits");
        assert_eq!(limits["nvidia.com/gpu"].0, "8");
        assert_eq!(limits["memory"].0, "64Gi");
        assert_eq!(spec.scheduler_name.as_deref(), Some("volcano"));
        // Gang scheduled by default with Volcano: the pod joins the job's PodGroup.
        assert_eq!(
            pod.metadata.annotations.expect("annotations")[pod_group::GROUP_ANNOTATION],
            "run1"
        );
    }

    #[test]
    fn template_patch_and_any_volume_source() {
        let job = fixtures::job(serde_json::json!({
            "nodes": 1, "workersPerNode": 1, "image": "i", "config": {"inline": "a: 1"},
            "checkpoint": {"volume": {"hostPath": {"path": "/data/ckpt"}}, "path": "/checkpoints/x"},
            "podTemplate": {"labels": {"team": "llm"}, "spec": {"hostNetwork": true, "enableServiceLinks": null,
                "securityContext": {"runAsUser": 1000, "fsGroup": null}}}
        }));
        let pod = build(&job, slot(0)).expect("builds");
        assert_eq!(pod.metadata.labels.expect("labels")["team"], "llm");
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.host_network, Some(true));
        assert_eq!(spec.enable_service_links, None);
        let sc = spec.security_context.clone().expect("securityContext");
        assert_eq!((sc.run_as_user, sc.fs_group), (Some(1000), None));
        let volumes = spec.volumes.expect("volumes");
        let v = volumes
            .iter()
            .find(|v| v.name == "checkpoint")
            .expect("ckpt");
        assert_eq!(v.host_path.as_ref().expect("hostPath").path, "/data/ckpt");
    }

    #[test]
    fn excluded_nodes_become_a_required_node_affinity() {
        let job = fixtures::cpu_job();
        let avoid = vec!["bad-1".to_string(), "bad-2".to_string()];
        let p = build_avoiding(&job, slot(0), &avoid).expect("pod");
        let terms = p
            .spec
            .and_then(|s| {
                s.affinity?
                    .node_affinity?
                    .required_during_scheduling_ignored_during_execution
            })
            .expect("required node affinity")
            .node_selector_terms;
        let fields = terms[0].match_fields.as_ref().expect("fields");
        assert_eq!(fields[0].key, "metadata.name");
        assert_eq!(fields[0].operator, "NotIn");
        assert_eq!(fields[0].values.as_deref(), Some(&avoid[..]));
        assert!(build(&job, slot(0))
            .expect("pod")
            .spec
            .expect("spec")
            .affinity
            .is_none());
    }
}
