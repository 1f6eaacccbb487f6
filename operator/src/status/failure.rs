//! Failure classification and the pods to delete, for the state machine.

use k8s_openapi::jiff::Timestamp;
use std::time::Duration;

use super::{secs_between, until, Action};
use crate::crd::{CheckpointRecord, PretrainJobSpec, PretrainJobStatus};
use crate::observe::PodView;

/// Terminating pods are force-deleted after this long unless the spec says otherwise.
const DEFAULT_FORCE_DELETE_SECS: u32 = 300;

pub(super) fn force_after(spec: &PretrainJobSpec) -> i64 {
    i64::from(
        spec.timeouts
            .force_delete_after_seconds
            .unwrap_or(DEFAULT_FORCE_DELETE_SECS),
    )
}

/// Deletes every pod still there: live ones gracefully, long-terminating ones by force.
pub(super) fn delete_all(pods: &[PodView], spec: &PretrainJobSpec, now: Timestamp) -> Action {
    let mut graceful = vec![];
    let mut force = vec![];
    for p in pods {
        match p.deleting_since {
            None if p.is_live() => graceful.push((p.name.clone(), p.uid.clone())),
            // Finished pods of a failed attempt are removed too, so the next attempt can reuse
            // the names; their logs are gone, but status keeps the failure.
            None => graceful.push((p.name.clone(), p.uid.clone())),
            Some(since) if secs_between(since, now) >= force_after(spec) => {
                force.push((p.name.clone(), p.uid.clone()))
            }
            Some(_) => {}
        }
    }
    if graceful.is_empty() && force.is_empty() {
        Action::None
    } else {
        Action::DeletePods { graceful, force }
    }
}

pub(super) fn ttl_requeue(
    spec: &PretrainJobSpec,
    st: &PretrainJobStatus,
    now: Timestamp,
) -> Option<Duration> {
    let ttl = spec.ttl_seconds_after_finished?;
    let done = st.completion_time.as_ref()?.0.as_second();
    Some(until(now, done + ttl))
}

/// The newest checkpoint any pod of the attempt reported, if newer than what status has.
pub(super) fn reported_checkpoint(
    pods: &[PodView],
    known: Option<&CheckpointRecord>,
) -> Option<CheckpointRecord> {
    let best = pods
        .iter()
        .filter_map(|p| p.termination.as_ref())
        .filter_map(|t| Some((t.last_checkpoint_step?, t.last_checkpoint_path.clone())))
        .max_by_key(|(s, _)| *s)?;
    if known.is_some_and(|k| k.step >= best.0) {
        return None;
    }
    Some(CheckpointRecord {
        step: best.0,
        path: best.1,
    })
}

/// Why this pod counts as failed, if it does.
pub(super) fn failure_reason(p: &PodView) -> Option<&'static str> {
    if p.phase == "Failed" || p.exit_code.is_some_and(|c| c != 0) {
        Some("PodFailed")
    } else if p.phase == "Unknown" {
        Some("NodeLost")
    } else if p.deleting_since.is_some() {
        Some("PodDeleted")
    } else {
        None
    }
}

/// Failure reasons the infrastructure causes: the node (lost, shut down), the scheduler or the
/// kubelet (preemption, eviction), someone deleting the pod, or the runtime stopping on a signal
/// (`Stopped`, exit 10, which the runtime only does when told to).
const INFRA_REASONS: [&str; 10] = [
    "NodeLost",
    "PodDeleted",
    "PodMissing",
    "Evicted",
    "Preempting",
    "Preempted",
    "Shutdown",
    "NodeShutdown",
    "Terminated",
    "Stopped",
];

/// Whether a failure with this reason counts against `maxInfraRestarts` (else `maxRestarts`).
pub(super) fn is_infra(reason: &str) -> bool {
    INFRA_REASONS.contains(&reason)
}

/// The reason a failed pod reports: the runtime's termination message, else the container's
/// or pod's reason, else what the operator observed.
pub(super) fn reason_of(p: &PodView) -> String {
    p.termination
        .as_ref()
        .and_then(|t| t.reason.clone())
        .or_else(|| p.reason.clone())
        .unwrap_or_else(|| failure_reason(p).unwrap_or("PodFailed").into())
}

/// Picks the failure to report: a non-retryable exit first (it decides the job), then one the
/// infrastructure caused, then the earliest to finish (the others usually fail because they
/// lost that peer), then lowest rank.
pub(super) fn root_failure<'a>(
    spec: &PretrainJobSpec,
    failed: &[&'a PodView],
) -> Option<&'a PodView> {
    let non_retryable = |p: &PodView| {
        p.exit_code
            .is_some_and(|c| spec.failure_policy.non_retryable_exit_codes.contains(&c))
    };
    failed.iter().copied().min_by_key(|p| {
        (
            !non_retryable(p),
            !is_infra(&reason_of(p)),
            p.finished_at.map(|t| t.as_second()).unwrap_or(i64::MAX),
            p.rank,
        )
    })
}
