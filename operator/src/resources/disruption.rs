//! The job's PodDisruptionBudget (`scheduling.disruptionBudget`): voluntary evictions of its
//! pods (`kubectl drain`, the cluster autoscaler's scale-down) are refused while all of them
//! run, since one evicted pod stops every rank. Deletions (the operator's own gang restarts,
//! suspension, Kueue's preemption) are not evictions and are not held back. Built as a
//! dynamic object so that it can be written as `policy/v1` or, on API servers before 1.21,
//! `policy/v1beta1`, whose fields are the same.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::ResourceExt;

use super::{owned_dynamic, LABEL_JOB};
use crate::crd::PretrainJob;

/// The versions tried, newest first.
pub const VERSIONS: [&str; 2] = ["v1", "v1beta1"];

/// `policy/<version>` PodDisruptionBudget.
pub fn api_resource(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy", version, "PodDisruptionBudget"),
        "poddisruptionbudgets",
    )
}

/// Whether the job asks for one (`scheduling.disruptionBudget`, off by default).
pub fn enabled(job: &PretrainJob) -> bool {
    job.spec.scheduling.disruption_budget.unwrap_or(false)
}

/// The budget, named after the job: every pod of the job must stay (`minAvailable` = `nodes`).
pub fn build(job: &PretrainJob, version: &str) -> DynamicObject {
    let spec = serde_json::json!({
        "minAvailable": job.spec.nodes,
        "selector": {"matchLabels": {LABEL_JOB: job.name_any()}},
    });
    owned_dynamic(job, &api_resource(version), spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures;

    #[test]
    fn every_pod_of_the_job_must_stay() {
        let mut job = fixtures::cpu_job();
        assert!(!enabled(&job));
        job.spec.scheduling.disruption_budget = Some(true);
        assert!(enabled(&job));
        for version in VERSIONS {
            let v = serde_json::to_value(build(&job, version)).expect("json");
            assert_eq!(v["apiVersion"], format!("policy/{version}"));
            assert_eq!(v["kind"], "PodDisruptionBudget");
            assert_eq!(v["metadata"]["name"], "run1");
            assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "PretrainJob");
            assert_eq!(
                v["spec"],
                serde_json::json!({"minAvailable": 2,
                    "selector": {"matchLabels": {"pretrain.io/job-name": "run1"}}})
            );
        }
    }
}
