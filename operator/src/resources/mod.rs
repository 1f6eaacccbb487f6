//! Pure builders for everything a `PretrainJob` owns. No API calls here: each function maps the
//! job (and, where needed, observed pods) to the object the controller creates or applies.
//!
//! - [`service`]: the headless Service giving pods stable DNS names before they are ready
//! - [`config_map`]: the ConfigMap holding the training config
//! - [`env`]: the launch-contract environment (documented in ARCHITECTURE.md)
//! - [`pod`]: one pod per node rank
//! - [`security`]: the pods' secure defaults, which `podTemplate` overrides field by field
//! - [`store_access`]: the job's store-token Secret and its rendezvous NetworkPolicy
//! - [`rank_table`]: the Ascend HCCL rank table (`hccl.json`)
//! - [`pod_group`]: the Volcano PodGroup for gang scheduling, with [`quantity`] for its totals
//! - [`disruption`]: the PodDisruptionBudget that refuses voluntary evictions of a gang
//! - [`kueue`]: the labels that queue each attempt's pods in Kueue as one pod group

pub mod config_map;
pub mod disruption;
pub mod env;
pub mod kueue;
pub mod merge_patch;
pub mod pod;
pub mod pod_group;
pub mod quantity;
pub mod rank_table;
pub mod security;
pub mod service;
pub mod store_access;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{ApiResource, DynamicObject};
use kube::{Resource, ResourceExt};

use crate::crd::PretrainJob;

/// Label holding the job name, on every owned object.
pub const LABEL_JOB: &str = "pretrain.io/job-name";
/// Label holding the node rank, on pods.
pub const LABEL_RANK: &str = "pretrain.io/node-rank";
/// Label holding the attempt number, on pods.
pub const LABEL_ATTEMPT: &str = "pretrain.io/attempt";
/// The field manager and `app.kubernetes.io/managed-by` value.
pub const MANAGER: &str = "pretrain-operator";
/// Name of the training container.
pub const CONTAINER: &str = "pretrain";

/// Labels on every object the job owns.
pub fn common_labels(job: &PretrainJob) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_JOB.to_string(), job.name_any()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGER.to_string(),
        ),
    ])
}

/// The controller owner reference pointing at the job, so deleting the job deletes its
/// children through garbage collection.
pub fn owner_ref(job: &PretrainJob) -> OwnerReference {
    let mut r = job
        .controller_owner_ref(&())
        .unwrap_or_else(|| OwnerReference {
            api_version: PretrainJob::api_version(&()).into_owned(),
            kind: PretrainJob::kind(&()).into_owned(),
            name: job.name_any(),
            uid: String::new(),
            ..Default::default()
        });
    r.block_owner_deletion = Some(true);
    r
}

/// Metadata of an object the job owns: its name, the job's namespace, [`common_labels`] and
/// the controller [`owner_ref`].
pub fn owned_meta(job: &PretrainJob, name: impl Into<String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace(job)),
        labels: Some(common_labels(job)),
        owner_references: Some(vec![owner_ref(job)]),
        ..Default::default()
    }
}

/// An object the job owns, of a kind known only by its [`ApiResource`] (Volcano's PodGroup,
/// a PodDisruptionBudget of whichever version the API server serves), named after the job.
pub fn owned_dynamic(
    job: &PretrainJob,
    resource: &ApiResource,
    spec: serde_json::Value,
) -> DynamicObject {
    let mut obj =
        DynamicObject::new(&job.name_any(), resource).data(serde_json::json!({ "spec": spec }));
    obj.metadata = owned_meta(job, job.name_any());
    obj
}

/// Namespace of the job (`default` when unset, as in tests building jobs by hand).
pub fn namespace(job: &PretrainJob) -> String {
    job.namespace().unwrap_or_else(|| "default".into())
}

/// Name of the pod with node rank `rank`; also its hostname.
pub fn pod_name(job: &PretrainJob, rank: u32) -> String {
    format!("{}-{rank}", job.name_any())
}

/// Pod name from a job name (for messages built without the job object).
pub fn pod_name_for(job_name: &str, rank: u32) -> String {
    format!("{job_name}-{rank}")
}

/// Name of the headless Service (the pods' subdomain).
pub fn service_name(job: &PretrainJob) -> String {
    job.name_any()
}

/// Name of the config ConfigMap.
pub fn config_map_name(job: &PretrainJob) -> String {
    format!("{}-config", job.name_any())
}

/// Name of the Ascend rank-table ConfigMap (ascend-operator's naming).
pub fn rank_table_name(job: &PretrainJob) -> String {
    format!("rings-config-{}", job.name_any())
}

/// DNS name of the master (rank 0) pod, resolvable before it is ready because the Service
/// publishes not-ready addresses.
pub fn master_addr(job: &PretrainJob) -> String {
    format!(
        "{}.{}.{}.svc",
        pod_name(job, 0),
        service_name(job),
        namespace(job)
    )
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::crd::{PretrainJob, PretrainJobSpec};

    /// A job as the API server would return it (uid, namespace, generation set).
    pub fn job(spec: serde_json::Value) -> PretrainJob {
        let spec: PretrainJobSpec = serde_json::from_value(spec).expect("fixture spec parses");
        let mut job = PretrainJob::new("run1", spec);
        job.metadata.namespace = Some("ml".into());
        job.metadata.uid = Some("0f0e0d0c-1111-2222-3333-444455556666".into());
        job.metadata.generation = Some(1);
        job
    }

    pub fn cpu_job() -> PretrainJob {
        job(serde_json::json!({
            "nodes": 2, "workersPerNode": 4, "image": "pretrain:0.1",
            "config": {"inline": "seed: 42\n", "overrides": ["training.epochs=1"]},
            "checkpoint": {"claimName": "ckpt", "path": "/checkpoints/run1"}
        }))
    }

    pub fn ascend_job() -> PretrainJob {
        job(serde_json::json!({
            "nodes": 2, "workersPerNode": 8, "image": "pretrain:0.1",
            "config": {"configMap": {"name": "qwen3-32b"}},
            "accelerator": {"type": "Ascend"},
            "checkpoint": {"claimName": "ckpt", "path": "/checkpoints/qwen3"}
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_master_is_rank_zero() {
        let job = fixtures::cpu_job();
        assert_eq!(pod_name(&job, 1), "run1-1");
        assert_eq!(master_addr(&job), "run1-0.run1.ml.svc");
        let o = owner_ref(&job);
        assert_eq!(o.kind, "PretrainJob");
        assert_eq!(o.controller, Some(true));
        assert_eq!(o.uid, "0f0e0d0c-1111-2222-3333-444455556666");
    }
}
