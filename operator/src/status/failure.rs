//! Failures: classification, the pods to delete, and how a failed attempt ends (restart or fail).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::time::Duration;

use super::conditions::set_condition;
use super::{backoff, secs_between, time, until, Action, Ctx, Outcome, DELETE_POLL};
use crate::crd::{CheckpointRecord, FailureRecord, Phase, PretrainJobSpec, PretrainJobStatus};
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

/// What a failed attempt leads to.
enum Verdict {
    /// The job fails with this condition reason and message.
    Fail(&'static str, String),
    /// The gang restarts.
    Restart {
        /// The failure counts against `maxInfraRestarts` (else `maxRestarts`).
        infra: bool,
        /// Consecutive restarts without a newer checkpoint, this one included.
        without_progress: u32,
    },
}

/// The failure record of attempt `attempt`: the root failure's pod, or the pod of rank
/// `vanished` of job `name` that disappeared.
fn failure_record(
    attempt: u32,
    name: &str,
    root: Option<&PodView>,
    vanished: Option<u32>,
    now: Timestamp,
) -> FailureRecord {
    match root {
        Some(p) => {
            let t = p.termination.clone().unwrap_or_default();
            FailureRecord {
                attempt,
                rank: Some(p.rank),
                pod: Some(p.name.clone()),
                node: p.node.clone(),
                exit_code: p.exit_code,
                reason: reason_of(p),
                message: t.message.filter(|m| !m.is_empty()),
                log: t.log,
                time: Some(time(now)),
            }
        }
        None => {
            let rank = vanished.unwrap_or_default();
            FailureRecord {
                attempt,
                rank: Some(rank),
                pod: Some(crate::resources::pod_name_for(name, rank)),
                reason: "PodMissing".into(),
                message: format!("the pod of rank {rank} disappeared while the job was running")
                    .into(),
                time: Some(time(now)),
                ..Default::default()
            }
        }
    }
}

/// Nodes remembered at most (failures per node, and excluded nodes).
const MAX_NODES: usize = 16;

/// Infrastructure failures on one node after which later attempts avoid it.
const EXCLUDE_AFTER: u32 = 2;

impl Ctx<'_> {
    /// Counts an infrastructure failure on `node`; the second one excludes the node from
    /// later attempts (with an Event).
    fn note_bad_node(&mut self, node: &str) {
        let st = &mut self.st;
        let failures = match st.node_failures.iter_mut().find(|n| n.node == node) {
            Some(n) => {
                n.failures += 1;
                n.failures
            }
            None => {
                if st.node_failures.len() >= MAX_NODES {
                    st.node_failures.remove(0);
                }
                st.node_failures.push(crate::crd::NodeFailures {
                    node: node.into(),
                    failures: 1,
                });
                1
            }
        };
        if failures < EXCLUDE_AFTER || st.excluded_nodes.iter().any(|n| n == node) {
            return;
        }
        if st.excluded_nodes.len() >= MAX_NODES {
            st.excluded_nodes.remove(0);
        }
        st.excluded_nodes.push(node.into());
        self.event(
            true,
            "NodeExcluded",
            format!(
                "{failures} infrastructure failures of this job's pods on node {node}: later \
                 attempts avoid it"
            ),
        );
    }
}

/// One line for events and conditions: attempt, rank, pod, node, exit code, reason, message.
fn summarize(record: &FailureRecord) -> String {
    let exit = record
        .exit_code
        .map(|c| format!("exit code {c}"))
        .unwrap_or_else(|| "no exit code".into());
    format!(
        "attempt {}: rank {} (pod {}{}) failed: {exit}, {}{}",
        record.attempt,
        record.rank.unwrap_or_default(),
        record.pod.clone().unwrap_or_default(),
        record
            .node
            .as_ref()
            .map(|n| format!(" on {n}"))
            .unwrap_or_default(),
        record.reason,
        record
            .message
            .as_ref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default(),
    ) + &record
        .log
        .as_ref()
        .map(|l| format!(" (log: {l})"))
        .unwrap_or_default()
}

/// When the next attempt may start: `delay` after `now`, rounded up to whole seconds.
fn next_attempt_time(now: Timestamp, delay: Duration) -> Option<Time> {
    let delay_secs = i64::try_from(delay.as_secs()).unwrap_or(i64::MAX / 2);
    // Status times have whole seconds: round up, so the wait is never shorter than the backoff.
    let ceil_now = now.as_second() + i64::from(now.subsec_nanosecond() > 0);
    Timestamp::from_second(ceil_now + delay_secs).ok().map(time)
}

impl Ctx<'_> {
    /// Ends attempt `self.st.attempt` after `root` failed (or the pod of rank `vanished`
    /// disappeared): records the failure, then fails the job (non-retryable exit, a budget
    /// used up, no progress) or deletes the gang for a restart after the backoff.
    pub(super) fn restart_or_fail(
        self,
        name: &str,
        pods: &[PodView],
        root: Option<&PodView>,
        vanished: Option<u32>,
    ) -> Outcome {
        let record = failure_record(self.st.attempt, name, root, vanished, self.now);
        self.end_attempt(record, pods)
    }

    /// Ends the attempt on `record`: restart it or fail the job, as the policy says.
    pub(super) fn end_attempt(mut self, record: FailureRecord, pods: &[PodView]) -> Outcome {
        self.count_in_place(super::progress::reported_restarts(pods));
        if is_infra(&record.reason) {
            if let Some(node) = &record.node {
                self.note_bad_node(node);
            }
        }
        let progressed = self.record_checkpoint(pods);
        let summary = summarize(&record);
        self.event(true, "RankFailed", summary.clone());
        self.st.last_failure = Some(record.clone());
        match self.verdict(&record, &summary, progressed) {
            Verdict::Fail(reason, message) => self.fail(reason, message, pods),
            Verdict::Restart {
                infra,
                without_progress,
            } => self.schedule_restart(&record, &summary, infra, without_progress, pods),
        }
    }

    /// Takes the newest checkpoint the pods reported, with an event; whether there was one
    /// (the attempt made progress).
    pub(super) fn record_checkpoint(&mut self, pods: &[PodView]) -> bool {
        let Some(c) = reported_checkpoint(pods, self.st.last_checkpoint.as_ref()) else {
            return false;
        };
        self.event(
            false,
            "CheckpointCommitted",
            format!("step {} at {}", c.step, c.path.as_deref().unwrap_or("?")),
        );
        self.st.last_checkpoint = Some(c);
        true
    }

    /// Applies the failure policy, in order: a non-retryable exit code, the restart budget
    /// (infrastructure or application), then the limit on restarts without progress.
    fn verdict(&self, record: &FailureRecord, summary: &str, progressed: bool) -> Verdict {
        let policy = &self.spec.failure_policy;
        if let Some(code) = record
            .exit_code
            .filter(|c| policy.non_retryable_exit_codes.contains(c))
        {
            let msg = format!("exit code {code} is not retryable; {summary}");
            return Verdict::Fail("NonRetryableExitCode", msg);
        }
        let infra = is_infra(&record.reason);
        let (used, budget, kind) = if infra {
            (
                self.st.infra_restarts,
                policy.max_infra_restarts,
                "infrastructure ",
            )
        } else {
            let app = self.st.restarts.saturating_sub(self.st.infra_restarts);
            (app, policy.max_restarts, "")
        };
        if used >= budget {
            let msg = format!("{kind}restart budget exhausted ({used} of {budget}); {summary}");
            return Verdict::Fail("RestartBudgetExhausted", msg);
        }
        // An attempt the infrastructure ended says nothing about the job's own progress.
        let without_progress = if progressed {
            0
        } else if infra {
            self.st.restarts_without_progress
        } else {
            self.st.restarts_without_progress + 1
        };
        if without_progress > policy.max_restarts_without_progress {
            let msg = format!(
                "{without_progress} consecutive failed attempts without a newer checkpoint \
                 (limit {}); {summary}",
                policy.max_restarts_without_progress
            );
            return Verdict::Fail("NoProgress", msg);
        }
        Verdict::Restart {
            infra,
            without_progress,
        }
    }

    /// Counts the restart, sets `Restarting` with the next attempt's time after the backoff,
    /// and deletes the gang.
    fn schedule_restart(
        mut self,
        record: &FailureRecord,
        summary: &str,
        infra: bool,
        without_progress: u32,
        pods: &[PodView],
    ) -> Outcome {
        let (spec, now, attempt) = (self.spec, self.now, self.st.attempt);
        self.st.restarts += 1;
        self.st.infra_restarts += u32::from(infra);
        self.st.restarts_without_progress = without_progress;
        let delay = backoff(spec, self.st.restarts);
        self.st.next_attempt_time = next_attempt_time(now, delay);
        self.set_phase(Phase::Restarting);
        set_condition(&mut self.st, "Running", false, "GangRestart", "", now);
        set_condition(
            &mut self.st,
            "Restarting",
            true,
            &record.reason,
            summary,
            now,
        );
        self.event(
            false,
            "GangRestart",
            format!(
                "deleting attempt {attempt}; attempt {} starts in {}s",
                attempt + 1,
                delay.as_secs()
            ),
        );
        let action = delete_all(pods, spec, now);
        self.outcome(
            action,
            Some(DELETE_POLL.min(delay.max(Duration::from_secs(1)))),
        )
    }
}
