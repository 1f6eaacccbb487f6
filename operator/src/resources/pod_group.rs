//! Gang scheduling with Volcano: one PodGroup per job (`minMember` = `nodes`), joined by every
//! pod through the `scheduling.k8s.io/group-name` annotation, so an attempt's pods are placed
//! all together or not at all (a partly placed gang would hold devices while it waits for
//! peers that never come). The PodGroup outlives attempts; each new gang joins it again.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

use super::{owned_dynamic, quantity};
use crate::crd::PretrainJob;

/// The pod annotation naming its PodGroup (what Volcano reads).
pub const GROUP_ANNOTATION: &str = "scheduling.k8s.io/group-name";

/// Volcano's PodGroup type.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("scheduling.volcano.sh", "v1beta1", "PodGroup"),
        "podgroups",
    )
}

/// Whether the job is gang scheduled: `scheduling.gang`, by default on with the `volcano`
/// scheduler.
pub fn enabled(job: &PretrainJob) -> bool {
    let s = &job.spec.scheduling;
    s.gang
        .unwrap_or(s.scheduler_name.as_deref() == Some("volcano"))
}

/// What the whole gang requests: each pod's requests (its limits where a resource has no
/// request, as Kubernetes defaults them) times `nodes`, so Volcano admits the group only when
/// the queue can hold all of it. `None` when the pods request nothing (or a quantity is not
/// one this can multiply exactly; the group is then admitted on `minMember` alone).
pub fn min_resources(job: &PretrainJob) -> Option<BTreeMap<String, Quantity>> {
    let r = super::pod::resources(job)?;
    let mut per_pod = r.limits.unwrap_or_default();
    per_pod.extend(r.requests.unwrap_or_default());
    let total = per_pod
        .iter()
        .map(|(name, q)| Some((name.clone(), quantity::times(q, job.spec.nodes)?)))
        .collect::<Option<BTreeMap<_, _>>>()?;
    (!total.is_empty()).then_some(total)
}

/// Annotation of NPUs per logical super pod, read by Volcano's Ascend plugin (and by
/// ascend-operator on its own jobs).
pub const SUPER_POD_BLOCK_ANNOTATION: &str = "sp-block";

/// The PodGroup, named after the job.
pub fn build(job: &PretrainJob) -> DynamicObject {
    let s = &job.spec.scheduling;
    let mut spec = serde_json::json!({"minMember": job.spec.nodes});
    if let Some(q) = &s.queue {
        spec["queue"] = q.clone().into();
    }
    if let Some(p) = &s.priority_class_name {
        spec["priorityClassName"] = p.clone().into();
    }
    if let Some(total) = min_resources(job) {
        spec["minResources"] = serde_json::json!(total);
    }
    let mut group = owned_dynamic(job, &api_resource(), spec);
    if let Some(block) = job.spec.accelerator.super_pod_block {
        // Volcano's Ascend plugin places the gang into super pods of this many NPUs.
        group.metadata.annotations =
            Some([(SUPER_POD_BLOCK_ANNOTATION.to_string(), block.to_string())].into());
    }
    group
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures;

    #[test]
    fn volcano_jobs_get_a_pod_group_of_all_nodes() {
        let job = fixtures::job(serde_json::json!({
            "nodes": 4, "workersPerNode": 8, "image": "i", "config": {"inline": "a: 1"},
            "scheduling": {"schedulerName": "volcano", "queue": "training",
                           "priorityClassName": "high"}
        }));
        assert!(enabled(&job));
        let pg = build(&job);
        let v = serde_json::to_value(&pg).expect("json");
        assert_eq!(v["apiVersion"], "scheduling.volcano.sh/v1beta1");
        assert_eq!(v["kind"], "PodGroup");
        assert_eq!(v["metadata"]["name"], "run1");
        assert_eq!(v["metadata"]["namespace"], "ml");
        assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "PretrainJob");
        assert_eq!(
            v["spec"],
            serde_json::json!({"minMember": 4, "queue": "training", "priorityClassName": "high"})
        );
    }

    #[test]
    fn a3_super_pod_jobs_tell_volcano_their_block() {
        let mut job = fixtures::ascend_job();
        job.spec.scheduling.scheduler_name = Some("volcano".into());
        let v = serde_json::to_value(build(&job)).expect("json");
        assert!(v["metadata"].get("annotations").is_none(), "{v}");
        job.spec.accelerator.super_pod_block = Some(32);
        let v = serde_json::to_value(build(&job)).expect("json");
        assert_eq!(
            v["metadata"]["annotations"],
            serde_json::json!({"sp-block": "32"})
        );
    }

    #[test]
    fn min_resources_are_the_whole_gang_s_requests() {
        let job = fixtures::job(serde_json::json!({
            "nodes": 4, "workersPerNode": 8, "image": "i", "config": {"inline": "a: 1"},
            "accelerator": {"type": "Ascend"},
            "scheduling": {"schedulerName": "volcano", "resources": {
                "requests": {"cpu": "60", "memory": "1.5Ti"},
                "limits": {"cpu": "64", "hugepages-2Mi": "512Mi"}}}
        }));
        let v = serde_json::to_value(build(&job)).expect("json");
        assert_eq!(
            v["spec"]["minResources"],
            serde_json::json!({"cpu": "240", "memory": "6Ti", "hugepages-2Mi": "2048Mi",
                               "huawei.com/Ascend910": "32"})
        );
        let none = fixtures::job(serde_json::json!({
            "nodes": 2, "workersPerNode": 1, "image": "i", "config": {"inline": "a: 1"},
            "scheduling": {"schedulerName": "volcano"}
        }));
        assert_eq!(min_resources(&none), None);
    }

    #[test]
    fn gang_follows_the_scheduler_unless_set() {
        let with = |sched: serde_json::Value| {
            enabled(&fixtures::job(serde_json::json!({
                "nodes": 2, "workersPerNode": 1, "image": "i", "config": {"inline": "a: 1"},
                "scheduling": sched
            })))
        };
        assert!(!with(serde_json::json!({})));
        assert!(with(serde_json::json!({"schedulerName": "volcano"})));
        assert!(!with(
            serde_json::json!({"schedulerName": "volcano", "gang": false})
        ));
        assert!(with(
            serde_json::json!({"schedulerName": "volcano", "gang": true})
        ));
    }
}
