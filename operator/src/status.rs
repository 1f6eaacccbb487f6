//! The job state machine, as a pure function: (spec, current status, pods, now) -> (new
//! status, one action, events). The controller writes the status first and then performs the
//! action, so a crash between the two is repaired by the next reconcile:
//!
//! ```text
//!  Pending ──start──▶ Starting ──all pods Running──▶ Running ──all pods exit 0──▶ Succeeded
//!                       │  ▲                           │
//!             pod fails │  └──── gang gone, backoff ───┤ pod fails / lost / deleted
//!                       ▼        elapsed: attempt+1    ▼
//!                   Restarting ◀───────────────────────┘
//!   any ──non-retryable exit, budget or no-progress limit, deadline──▶ Failed (sticky)
//!   any ──suspend──▶ Suspended (pods deleted) ──unsuspend──▶ Restarting (not counted)
//!   Starting ──Kueue gates the pods──▶ Queued ──admitted──▶ Starting ─▶ Running
//!   Running ──Kueue stops the pod group──▶ Restarting (requeued, not counted)
//! ```
//!
//! Attempt N+1 is only created once every pod of attempt N is gone (blocking recreate), and
//! every attempt after the first resumes from the last committed checkpoint.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::crd::{Phase, PretrainJobSpec, PretrainJobStatus};
use crate::observe::PodView;
use pretrain_contract::progress::ProgressReport;

mod conditions;
mod failure;
mod progress;
mod queue;

pub use conditions::set_condition;
use failure::{delete_all, failure_reason, reported_checkpoint, root_failure, ttl_requeue};
pub use progress::{hang_limit, POLL as PROGRESS_POLL};

/// Re-check a job at least this often while pods are being deleted.
const DELETE_POLL: Duration = Duration::from_secs(2);

/// What the controller does after writing the new status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to change.
    None,
    /// Create the pods of these ranks for `attempt` (409 = already there, fine).
    CreatePods {
        /// Attempt number the pods carry.
        attempt: u32,
        /// Resume from the last committed checkpoint.
        resume: bool,
        /// Ranks to create.
        ranks: Vec<u32>,
    },
    /// Delete these pods (name, uid precondition); `force` ones with grace period 0.
    DeletePods {
        /// Graceful deletes.
        graceful: Vec<(String, Option<String>)>,
        /// Forced deletes (stuck terminating, e.g. on a lost node).
        force: Vec<(String, Option<String>)>,
    },
    /// `ttlSecondsAfterFinished` elapsed: delete the job itself.
    DeleteJob,
}

/// A Kubernetes Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable note.
    pub message: String,
}

/// The decision for one reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Status to write.
    pub status: PretrainJobStatus,
    /// What to do next.
    pub action: Action,
    /// Events for the transitions made.
    pub events: Vec<JobEvent>,
    /// When to look again at the latest (deadlines, backoff); None = on the next change.
    pub requeue_after: Option<Duration>,
}

fn time(ts: Timestamp) -> Time {
    Time(ts)
}

fn secs_between(from: Timestamp, to: Timestamp) -> i64 {
    to.as_second() - from.as_second()
}

fn until(now: Timestamp, deadline_secs: i64) -> Duration {
    Duration::from_secs(
        u64::try_from(deadline_secs - now.as_second())
            .unwrap_or(0)
            .max(1),
    )
}

/// Delay before restart number `restarts` (1-based): `min(initial * 2^(restarts-1), max)`.
pub fn backoff(spec: &PretrainJobSpec, restarts: u32) -> Duration {
    let b = &spec.failure_policy.backoff;
    let shift = restarts.saturating_sub(1).min(30);
    let secs = u64::from(b.initial_seconds).saturating_mul(1u64 << shift);
    Duration::from_secs(secs.min(u64::from(b.max_seconds)))
}

struct Ctx<'a> {
    spec: &'a PretrainJobSpec,
    now: Timestamp,
    st: PretrainJobStatus,
    events: Vec<JobEvent>,
}

impl Ctx<'_> {
    fn event(&mut self, warning: bool, reason: &str, message: String) {
        self.events.push(JobEvent {
            warning,
            reason: reason.into(),
            message,
        });
    }

    fn outcome(self, action: Action, requeue_after: Option<Duration>) -> Outcome {
        Outcome {
            status: self.st,
            action,
            events: self.events,
            requeue_after,
        }
    }

    fn set_phase(&mut self, phase: Phase) {
        self.st.phase = phase;
    }

    /// Terminal failure: sticky phase, condition, event, and every live pod deleted.
    fn fail(mut self, reason: &str, message: String, pods: &[PodView]) -> Outcome {
        let now = self.now;
        self.set_phase(Phase::Failed);
        self.st.completion_time = Some(time(now));
        self.st.next_attempt_time = None;
        set_condition(&mut self.st, "Running", false, reason, "", now);
        set_condition(&mut self.st, "Restarting", false, reason, "", now);
        set_condition(&mut self.st, "Failed", true, reason, &message, now);
        self.event(true, "Failed", format!("{reason}: {message}"));
        // Only running pods are stopped; finished ones stay so their logs can be read (the
        // job's TTL or deletion removes them).
        let live: Vec<PodView> = pods.iter().filter(|p| p.is_live()).cloned().collect();
        let action = delete_all(&live, self.spec, now);
        let requeue = ttl_requeue(self.spec, &self.st, now);
        self.outcome(action, requeue)
    }

    fn start_attempt(mut self, resume: bool) -> Outcome {
        let now = self.now;
        self.st.attempt += 1;
        self.st.attempt_start_time = Some(time(now));
        self.st.next_attempt_time = None;
        self.set_phase(Phase::Starting);
        set_condition(&mut self.st, "Restarting", false, "AttemptStarted", "", now);
        let attempt = self.st.attempt;
        if resume {
            let from = match &self.st.last_checkpoint {
                Some(c) => format!("the last committed checkpoint (step {} reported)", c.step),
                None => "the last committed checkpoint, if any".into(),
            };
            self.event(
                false,
                "GangRestart",
                format!("creating attempt {attempt}, resuming from {from}"),
            );
        } else {
            self.event(false, "Started", format!("creating attempt {attempt}"));
        }
        let ranks = (0..self.spec.nodes).collect();
        let requeue = self
            .spec
            .timeouts
            .startup_seconds
            .map(|s| Duration::from_secs(s.into()));
        self.outcome(
            Action::CreatePods {
                attempt,
                resume,
                ranks,
            },
            requeue,
        )
    }
}

/// Status for a spec that failed validation: `Invalid` condition and phase (unless the job is
/// already terminal), an Event when the message changes, nothing created.
pub fn invalid(
    current: &PretrainJobStatus,
    generation: Option<i64>,
    message: &str,
    now: Timestamp,
) -> Outcome {
    let mut st = current.clone();
    st.observed_generation = generation;
    let changed = !st
        .conditions
        .iter()
        .any(|c| c.type_ == "Invalid" && c.status == "True" && c.message == message);
    set_condition(&mut st, "Invalid", true, "InvalidSpec", message, now);
    if !st.phase.is_terminal() {
        st.phase = Phase::Invalid;
    }
    let events = if changed {
        vec![JobEvent {
            warning: true,
            reason: "InvalidSpec".into(),
            message: message.into(),
        }]
    } else {
        vec![]
    };
    Outcome {
        status: st,
        action: Action::None,
        events,
        requeue_after: None,
    }
}

/// Decides the next step for a valid job. `pods` are all pods labelled with the job's name;
/// `progress` is node 0's progress report when one was read for this decision.
///
/// The steps run in a fixed order, each ending the decision when it applies: a finished job,
/// the active deadline, suspension (and resuming), a gang restart, the first start, and last
/// the progress of the running attempt.
pub fn decide(
    name: &str,
    spec: &PretrainJobSpec,
    generation: Option<i64>,
    current: &PretrainJobStatus,
    pods: &[PodView],
    progress: Option<&ProgressReport>,
    now: Timestamp,
) -> Outcome {
    let mut st = current.clone();
    st.observed_generation = generation;
    set_condition(&mut st, "Invalid", false, "SpecValid", "", now);
    if st.phase == Phase::Invalid {
        // Back to what the pods say; phase is recomputed below.
        st.phase = if st.attempt == 0 {
            Phase::Pending
        } else {
            Phase::Starting
        };
    }
    let mut cx = Ctx {
        spec,
        now,
        st,
        events: vec![],
    };

    if cx.st.phase.is_terminal() {
        return cx.finished(pods);
    }
    if let Some(limit) = cx.active_deadline_passed() {
        let msg = format!("the job ran longer than activeDeadlineSeconds ({limit}s)");
        return cx.fail("DeadlineExceeded", msg, pods);
    }
    if spec.suspend {
        return cx.suspend(pods);
    }
    if cx.st.phase == Phase::Suspended {
        cx.resume();
    }
    if cx.st.phase == Phase::Restarting {
        return cx.restart(pods);
    }
    if cx.st.attempt == 0 {
        return cx.first_start(pods);
    }
    cx.attempt_progress(name, pods, progress)
}

/// The steps of [`decide`], in the order it takes them.
impl Ctx<'_> {
    /// A terminal job: a failed one keeps stopping its live pods; once nothing is left to
    /// delete, `ttlSecondsAfterFinished` deletes the job itself.
    fn finished(self, pods: &[PodView]) -> Outcome {
        let (spec, now) = (self.spec, self.now);
        let action = if self.st.phase == Phase::Failed {
            delete_all(
                &pods
                    .iter()
                    .filter(|p| p.is_live())
                    .cloned()
                    .collect::<Vec<_>>(),
                spec,
                now,
            )
        } else {
            Action::None
        };
        if action == Action::None {
            if let Some(ttl) = spec.ttl_seconds_after_finished {
                let done = self.st.completion_time.as_ref().map(|t| t.0.as_second());
                if done.is_some_and(|d| now.as_second() >= d + ttl) {
                    return self.outcome(Action::DeleteJob, None);
                }
            }
        }
        let requeue = ttl_requeue(spec, &self.st, now);
        self.outcome(action, requeue)
    }

    /// `activeDeadlineSeconds`, if the job has run that long since it first started.
    fn active_deadline_passed(&self) -> Option<u32> {
        let limit = self.spec.timeouts.active_deadline_seconds?;
        let start = self.st.start_time.as_ref()?;
        (secs_between(start.0, self.now) >= i64::from(limit)).then_some(limit)
    }

    /// `spec.suspend`: enter `Suspended` (once, with an event) and delete every pod; state
    /// and restart counts are kept.
    fn suspend(mut self, pods: &[PodView]) -> Outcome {
        let now = self.now;
        if self.st.phase != Phase::Suspended {
            self.set_phase(Phase::Suspended);
            set_condition(
                &mut self.st,
                "Suspended",
                true,
                "Suspended",
                "spec.suspend is true",
                now,
            );
            set_condition(&mut self.st, "Running", false, "Suspended", "", now);
            self.event(
                false,
                "Suspended",
                "deleting all pods; state and restart counts are kept".into(),
            );
        }
        let action = delete_all(pods, self.spec, now);
        let requeue = (action != Action::None).then_some(DELETE_POLL);
        self.outcome(action, requeue)
    }

    /// Leaves `Suspended`: the next attempt starts at once (without counting as a restart),
    /// or the first one if the job never started.
    fn resume(&mut self) {
        set_condition(&mut self.st, "Suspended", false, "Resumed", "", self.now);
        self.event(
            false,
            "Resumed",
            "spec.suspend is false; starting the next attempt".into(),
        );
        self.st.next_attempt_time = None;
        // Before the first start there is nothing to resume from.
        self.set_phase(if self.st.attempt == 0 {
            Phase::Pending
        } else {
            Phase::Restarting
        });
    }

    /// `Restarting`: wait until every pod of the old attempt is gone and the backoff has
    /// elapsed, then start the next attempt from the last checkpoint.
    fn restart(self, pods: &[PodView]) -> Outcome {
        let now = self.now;
        if !pods.is_empty() {
            let action = delete_all(pods, self.spec, now);
            return self.outcome(action, Some(DELETE_POLL));
        }
        if let Some(next) = &self.st.next_attempt_time {
            if next.0 > now {
                let wait = until(now, next.0.as_second());
                return self.outcome(Action::None, Some(wait));
            }
        }
        self.start_attempt(true)
    }

    /// A job that never started: remove leftover pods (of an earlier job with the same
    /// name), then start attempt 1 from scratch.
    fn first_start(mut self, pods: &[PodView]) -> Outcome {
        let now = self.now;
        if !pods.is_empty() {
            let action = delete_all(pods, self.spec, now);
            return self.outcome(action, Some(DELETE_POLL));
        }
        self.st.start_time = Some(time(now));
        self.start_attempt(false)
    }

    /// A `Starting` or `Running` attempt: clear leftovers of other attempts, then end the
    /// attempt on a failure, record success, create missing pods, or follow the startup.
    fn attempt_progress(
        mut self,
        name: &str,
        pods: &[PodView],
        progress: Option<&ProgressReport>,
    ) -> Outcome {
        let (spec, now) = (self.spec, self.now);
        let attempt = self.st.attempt;
        // Pods of other attempts are leftovers: remove them first.
        let stale: Vec<PodView> = pods
            .iter()
            .filter(|p| p.attempt != attempt)
            .cloned()
            .collect();
        if !stale.is_empty() {
            let action = delete_all(&stale, spec, now);
            return self.outcome(action, Some(DELETE_POLL));
        }
        self.follow_admission(pods);
        if let Some(reason) = pods.iter().find_map(|p| p.kueue_stop.as_deref()) {
            return self.requeue(reason, pods);
        }
        let mut failed: Vec<&PodView> = pods
            .iter()
            .filter(|p| failure_reason(p).is_some())
            .collect();
        failed.sort_by_key(|p| p.rank);
        let present: Vec<u32> = pods.iter().map(|p| p.rank).collect();
        let missing: Vec<u32> = (0..spec.nodes).filter(|r| !present.contains(r)).collect();

        let root = root_failure(spec, &failed).cloned();
        let vanished = (self.st.phase == Phase::Running)
            .then(|| missing.first().copied())
            .flatten();
        if root.is_some() || vanished.is_some() {
            return self.restart_or_fail(name, pods, root.as_ref(), vanished);
        }
        if missing.is_empty() && pods.iter().all(|p| p.phase == "Succeeded") {
            return self.succeed(pods);
        }
        if !missing.is_empty() {
            // Starting: pods not created yet (or the operator stopped half way): create them.
            return self.outcome(
                Action::CreatePods {
                    attempt,
                    resume: attempt > 1,
                    ranks: missing,
                },
                Some(DELETE_POLL),
            );
        }
        let all_running = pods
            .iter()
            .all(|p| matches!(p.phase.as_str(), "Running" | "Succeeded"));
        if all_running {
            return self.mark_running(name, pods, progress);
        }
        self.await_startup(pods)
    }

    /// Every pod of the attempt exited 0: `Succeeded`, with the newest reported checkpoint.
    fn succeed(mut self, pods: &[PodView]) -> Outcome {
        let now = self.now;
        // A job that succeeded has no use for its list of bad nodes.
        self.st.excluded_nodes.clear();
        self.st.node_failures.clear();
        self.count_in_place(progress::reported_restarts(pods));
        if let Some(c) = reported_checkpoint(pods, self.st.last_checkpoint.as_ref()) {
            self.st.last_checkpoint = Some(c);
        }
        self.set_phase(Phase::Succeeded);
        self.st.completion_time = Some(time(now));
        set_condition(&mut self.st, "Running", false, "Succeeded", "", now);
        set_condition(
            &mut self.st,
            "Succeeded",
            true,
            "AllRanksSucceeded",
            "every pod exited 0",
            now,
        );
        let (nodes, attempt) = (self.spec.nodes, self.st.attempt);
        self.event(
            false,
            "Succeeded",
            format!("all {nodes} pods exited 0 in attempt {attempt}"),
        );
        let requeue = ttl_requeue(self.spec, &self.st, now);
        self.outcome(Action::None, requeue)
    }

    /// Every pod of the attempt runs (or already finished): `Running`, with an event the
    /// first time; then its progress, and a restart with reason `Hung` when it has none for
    /// the hang limit. Looks again after the progress poll interval.
    fn mark_running(
        mut self,
        name: &str,
        pods: &[PodView],
        progress: Option<&ProgressReport>,
    ) -> Outcome {
        if self.st.phase != Phase::Running {
            self.set_phase(Phase::Running);
            set_condition(
                &mut self.st,
                "Running",
                true,
                "AllPodsRunning",
                "",
                self.now,
            );
            let (nodes, attempt) = (self.spec.nodes, self.st.attempt);
            self.event(
                false,
                "Running",
                format!("all {nodes} pods of attempt {attempt} are running"),
            );
        }
        if let Some(hung) = self.observe_progress(name, progress) {
            return self.end_attempt(hung, pods);
        }
        self.outcome(Action::None, Some(PROGRESS_POLL))
    }

    /// Some pods are not running yet: `Starting`, failing the job once `startupSeconds` have
    /// passed since the attempt was created.
    fn await_startup(mut self, pods: &[PodView]) -> Outcome {
        if pods.iter().any(|p| p.queued) {
            // Waiting for Kueue: phase `Queued` until the pods' next change.
            self.set_phase(Phase::Queued);
            return self.outcome(Action::None, None);
        }
        self.set_phase(Phase::Starting);
        let limit = self.spec.timeouts.startup_seconds;
        let (Some(limit), Some(started)) = (limit, &self.st.attempt_start_time) else {
            return self.outcome(Action::None, None);
        };
        let deadline = started.0.as_second() + i64::from(limit);
        if self.now.as_second() >= deadline {
            let waiting: Vec<&str> = pods
                .iter()
                .filter(|p| p.phase != "Running")
                .map(|p| p.name.as_str())
                .collect();
            let msg = format!(
                "pods not running {limit}s after creation: {}",
                waiting.join(", ")
            );
            return self.fail("StartupTimeout", msg, pods);
        }
        let wait = until(self.now, deadline);
        self.outcome(Action::None, Some(wait))
    }
}

#[cfg(test)]
mod tests;
