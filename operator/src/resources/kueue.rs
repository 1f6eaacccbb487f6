//! Kueue admission through its plain-pod-group integration. A job labelled
//! `kueue.x-k8s.io/queue-name` passes the label (and `kueue.x-k8s.io/priority-class`) to its
//! pods and makes each attempt's pods one Kueue pod group of `nodes` pods: Kueue's webhook
//! gates them (`kueue.x-k8s.io/admission`) and lifts the gates of the whole group at once when
//! its Workload is admitted, so an attempt is queued and admitted as a gang.
//!
//! All pods of a group declare one role (one Kueue pod set of `nodes` pods).
//!
//! Each attempt is a group of its own (`<job>-a<attempt>`), marked not retriable in the group:
//! the operator never replaces one pod of an attempt, it replaces the whole gang, so a group
//! whose pods have all ended is finished and its quota released; the next attempt queues again.
//! When Kueue preempts a group it marks each pod with the condition `TerminationTarget` and
//! deletes it; the operator then requeues the job (see `status`), which is not a failure.
//!
//! The names are Kueue's (`pkg/controller/constants`, `pkg/controller/jobs/pod`), documented at
//! <https://kueue.sigs.k8s.io/docs/tasks/run/plain_pods/>.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::crd::PretrainJob;

/// The job label naming the Kueue LocalQueue; passed to the pods.
pub const QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";
/// The job label naming a Kueue WorkloadPriorityClass; passed to the pods.
pub const PRIORITY_LABEL: &str = "kueue.x-k8s.io/priority-class";
/// The pod label naming the pod group (and the Kueue Workload of the attempt).
pub const GROUP_LABEL: &str = "kueue.x-k8s.io/pod-group-name";
/// The pod annotation with the number of pods in the group.
pub const GROUP_COUNT_ANNOTATION: &str = "kueue.x-k8s.io/pod-group-total-count";
/// The pod annotation saying whether Kueue waits for replacements of failed pods.
pub const RETRIABLE_ANNOTATION: &str = "kueue.x-k8s.io/retriable-in-group";
/// The pod annotation naming the pod's role (Kueue pod set) in the group. Every pod of an
/// attempt plays the same role; without it Kueue derives the role from a hash of the pod's
/// shape, which in recent versions includes its labels, so the rank label would make each pod
/// a role of its own (and Kueue refuses groups of more than 8 roles).
pub const ROLE_ANNOTATION: &str = "kueue.x-k8s.io/role-hash";
/// The one role (pod set) of the group.
pub const ROLE: &str = "pretrain";
/// The scheduling gate Kueue's webhook puts on the pods it queues.
pub const ADMISSION_GATE: &str = "kueue.x-k8s.io/admission";
/// The pod condition Kueue sets on the pods it stops (preemption, eviction) before deleting
/// them; its reason says why.
pub const STOP_CONDITION: &str = "TerminationTarget";

/// The LocalQueue the job is queued in, if it is one for Kueue.
pub fn queue_name(job: &PretrainJob) -> Option<&str> {
    job.metadata
        .labels
        .as_ref()?
        .get(QUEUE_LABEL)
        .map(String::as_str)
        .filter(|q| !q.is_empty())
}

/// The pod group of `attempt`: `<job>-a<attempt>`, a valid label value (job names have at
/// most 52 characters, and attempts fewer than 10 digits).
pub fn group_name(job: &PretrainJob, attempt: u32) -> String {
    format!("{}-a{attempt}", job.name_any())
}

/// The Kueue labels of the pods of `attempt` (none for a job without a queue).
pub fn pod_labels(job: &PretrainJob, attempt: u32) -> BTreeMap<String, String> {
    let Some(queue) = queue_name(job) else {
        return BTreeMap::new();
    };
    let mut labels = BTreeMap::from([
        (QUEUE_LABEL.to_string(), queue.to_string()),
        (GROUP_LABEL.to_string(), group_name(job, attempt)),
    ]);
    if let Some(p) = job.labels().get(PRIORITY_LABEL) {
        labels.insert(PRIORITY_LABEL.into(), p.clone());
    }
    labels
}

/// The Kueue annotations of the pods (none for a job without a queue).
pub fn pod_annotations(job: &PretrainJob) -> BTreeMap<String, String> {
    if queue_name(job).is_none() {
        return BTreeMap::new();
    }
    BTreeMap::from([
        (
            GROUP_COUNT_ANNOTATION.to_string(),
            job.spec.nodes.to_string(),
        ),
        (RETRIABLE_ANNOTATION.to_string(), "false".to_string()),
        (ROLE_ANNOTATION.to_string(), ROLE.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures;

    #[test]
    fn a_queued_job_makes_each_attempt_one_pod_group() {
        let mut job = fixtures::cpu_job();
        assert!(pod_labels(&job, 1).is_empty() && pod_annotations(&job).is_empty());
        job.metadata.labels = Some(BTreeMap::from([
            (QUEUE_LABEL.to_string(), "team-a".to_string()),
            (PRIORITY_LABEL.to_string(), "high".to_string()),
        ]));
        let labels = pod_labels(&job, 3);
        assert_eq!(labels[QUEUE_LABEL], "team-a");
        assert_eq!(labels[PRIORITY_LABEL], "high");
        assert_eq!(labels[GROUP_LABEL], "run1-a3");
        let annotations = pod_annotations(&job);
        assert_eq!(annotations[GROUP_COUNT_ANNOTATION], "2");
        assert_eq!(annotations[RETRIABLE_ANNOTATION], "false");
        assert_eq!(annotations[ROLE_ANNOTATION], "pretrain");
    }

    #[test]
    fn the_longest_group_name_is_a_label_value() {
        let mut job = fixtures::cpu_job();
        job.metadata.name = Some("j".repeat(52));
        assert!(group_name(&job, 999_999_999).len() <= 63);
    }
}
