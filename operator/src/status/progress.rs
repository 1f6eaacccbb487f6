//! A running attempt's progress: node 0's report into `status.progress`, the `Progressing`
//! condition, and the hang backstop (no new step for `failurePolicy.hangTimeoutSeconds`).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use pretrain_contract::progress::ProgressReport;

use super::conditions::set_condition;
use super::{secs_between, time, Ctx};
use crate::crd::{FailureRecord, PretrainJobSpec, ProgressStatus};
use crate::observe::PodView;

/// How often the controller reads a running job's progress.
pub const POLL: Duration = Duration::from_secs(10);

/// The operator's hang limit when `hangTimeoutSeconds` is unset (the launchers' automatic
/// limit is at most an hour).
pub const DEFAULT_HANG_SECS: i64 = 7200;

/// Slack over an explicit `hangTimeoutSeconds`, which the launchers apply themselves first.
const BACKSTOP_SLACK_SECS: i64 = 15;

/// The most in-place restarts any pod's termination message reports.
pub(super) fn reported_restarts(pods: &[PodView]) -> u32 {
    pods.iter()
        .filter_map(|p| p.termination.as_ref()?.restarts)
        .max()
        .unwrap_or(0)
}

/// Seconds without a new step after which the operator calls the job hung.
pub fn hang_limit(spec: &PretrainJobSpec) -> i64 {
    match spec.failure_policy.hang_timeout_seconds {
        Some(s) => i64::from(s) + BACKSTOP_SLACK_SECS,
        None => DEFAULT_HANG_SECS,
    }
}

/// `status.progress` of `attempt` from `report`, read at `now`, after `prev`.
fn merge(
    prev: Option<&ProgressStatus>,
    report: &ProgressReport,
    attempt: u32,
    now: Timestamp,
) -> ProgressStatus {
    // A restarted process reports step 0 until its first step: keep the last known one.
    let step = match prev {
        Some(p) if report.step == 0 => p.step,
        _ => report.step,
    };
    let advanced = prev.is_none_or(|p| p.step != step) && report.step > 0;
    let eta = report.seconds_left().and_then(|s| {
        let secs = i64::try_from(s.round() as u64).ok()?;
        now.checked_add(jiff_secs(secs)).ok()
    });
    ProgressStatus {
        step,
        total_steps: report.total_steps,
        tokens_per_second: report.tokens_per_second.map(|t| t.round() as u64),
        loss: report.loss.map(|l| format!("{l:.4}")),
        last_checkpoint_step: report.last_checkpoint_step,
        estimated_completion_time: eta.map(time),
        step_time: if advanced {
            Some(time(now))
        } else {
            prev.and_then(|p| p.step_time.clone())
        },
        attempt,
        in_place_restarts: report.restarts.unwrap_or(0),
    }
}

fn jiff_secs(secs: i64) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::from_secs(secs)
}

impl Ctx<'_> {
    /// The launchers report `reported` in-place restarts in the current attempt (through the
    /// progress endpoint, or at the end in the termination message): counts the new ones once,
    /// with an Event.
    pub(super) fn count_in_place(&mut self, reported: u32) {
        if reported == 0 {
            return;
        }
        let attempt = self.st.attempt;
        let progress = self.st.progress.get_or_insert_with(ProgressStatus::default);
        // The launchers' count starts again with each attempt.
        let before = if progress.attempt == attempt {
            progress.in_place_restarts
        } else {
            0
        };
        progress.attempt = attempt;
        progress.in_place_restarts = before.max(reported);
        if reported <= before {
            return;
        }
        self.st.in_place_restarts += reported - before;
        let msg = format!(
            "the launchers restarted the workers in place ({reported} of {} in attempt \
             {attempt}), resuming from the newest checkpoint",
            self.spec.failure_policy.in_place_restarts
        );
        self.event(true, "InPlaceRestart", msg);
    }

    /// Takes in the report read now (if one was), then checks for a hang: the failure to
    /// restart with when the step has not advanced for the limit since it last did (or since
    /// the attempt started), once any report was ever read.
    pub(super) fn observe_progress(
        &mut self,
        name: &str,
        report: Option<&ProgressReport>,
    ) -> Option<FailureRecord> {
        let now = self.now;
        if let Some(r) = report {
            let next = merge(self.st.progress.as_ref(), r, self.st.attempt, now);
            self.count_in_place(next.in_place_restarts);
            if next.step_time != self.st.progress.as_ref().and_then(|p| p.step_time.clone()) {
                let of = next
                    .total_steps
                    .map_or(String::new(), |t| format!(" of {t}"));
                let msg = format!("step {}{of}", next.step);
                set_condition(&mut self.st, "Progressing", true, "StepAdvanced", &msg, now);
            }
            self.st.progress = Some(next);
        }
        // Only a job whose progress the operator has read at least once can be judged by it:
        // an unreachable endpoint (a policy of the cluster's) must not restart healthy jobs.
        self.st.progress.as_ref()?;
        let attempt_start = self.st.attempt_start_time.as_ref().map(|t| t.0);
        let last_step = self
            .st
            .progress
            .as_ref()
            .and_then(|p| p.step_time.as_ref())
            .map(|t| t.0);
        let since = match (last_step, attempt_start) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => a.or(b)?,
        };
        let limit = hang_limit(self.spec);
        let still = secs_between(since, now);
        if still < limit {
            return None;
        }
        let step = self.st.progress.as_ref().map_or(0, |p| p.step);
        let message = format!(
            "no training step completed for {still} s (after step {step}; the limit is {limit} \
             s: failurePolicy.hangTimeoutSeconds, or 7200 s unset, plus {BACKSTOP_SLACK_SECS} s \
             when set)"
        );
        set_condition(&mut self.st, "Progressing", false, "Hung", &message, now);
        Some(FailureRecord {
            attempt: self.st.attempt,
            rank: Some(0),
            pod: Some(crate::resources::pod_name_for(name, 0)),
            reason: "Hung".into(),
            message: Some(message),
            time: Some(time(now)),
            ..FailureRecord::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("time")
    }

    #[test]
    fn reports_become_status_with_an_eta_and_the_time_of_the_last_step() {
        let r = ProgressReport {
            step: 10,
            total_steps: Some(110),
            loss: Some(2.123_456),
            seconds_per_step: Some(1.5),
            tokens_per_second: Some(2730.6),
            last_checkpoint_step: Some(8),
            restarts: None,
        };
        let a = merge(None, &r, 1, at(0));
        assert_eq!(a.step, 10);
        assert_eq!(a.loss.as_deref(), Some("2.1235"));
        assert_eq!(a.tokens_per_second, Some(2731));
        assert_eq!(
            a.estimated_completion_time.as_ref().expect("eta").0,
            at(150)
        );
        assert_eq!(a.step_time.as_ref().expect("advanced").0, at(0));
        // The same step later: the step time stays.
        let b = merge(Some(&a), &r, 1, at(30));
        assert_eq!(b.step_time.as_ref().expect("kept").0, at(0));
        // A restarted process says step 0 before its first step: the last known step stays.
        let fresh = ProgressReport::default();
        let c = merge(Some(&b), &fresh, 1, at(60));
        assert_eq!(
            (c.step, c.step_time.as_ref().map(|t| t.0)),
            (10, Some(at(0)))
        );
        let d = merge(Some(&c), &ProgressReport { step: 11, ..r }, 1, at(90));
        assert_eq!(d.step_time.as_ref().expect("advanced").0, at(90));
    }
}
