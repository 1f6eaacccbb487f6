//! Kueue admission (see `resources::kueue`): an attempt whose pods carry Kueue's admission
//! gate is queued, not starting; an attempt whose pod group Kueue stopped (preemption,
//! eviction) is requeued, which is not a failure.

use super::conditions::set_condition;
use super::failure::delete_all;
use super::{time, Ctx, Outcome, DELETE_POLL};
use crate::crd::Phase;
use crate::observe::PodView;

impl Ctx<'_> {
    /// Follows Kueue's admission of the attempt's pods: condition `Queued` while some carry
    /// Kueue's gate, and on admission (the job was `Queued`, no pod is gated now) the attempt's
    /// start moves to now, so `startupSeconds` and the hang clock count from there. Nothing
    /// changes while a job waits, so a queued job costs no status write.
    pub(super) fn follow_admission(&mut self, pods: &[PodView]) {
        let now = self.now;
        let gated: Vec<&str> = pods
            .iter()
            .filter(|p| p.queued)
            .map(|p| p.name.as_str())
            .collect();
        if !gated.is_empty() {
            let message = format!(
                "waiting for Kueue to admit attempt {}: {} gated",
                self.st.attempt,
                gated.join(", ")
            );
            set_condition(
                &mut self.st,
                "Queued",
                true,
                "WaitingForAdmission",
                &message,
                now,
            );
            return;
        }
        if self.st.phase == Phase::Queued {
            self.st.attempt_start_time = Some(time(now));
            let attempt = self.st.attempt;
            self.event(
                false,
                "Admitted",
                format!("Kueue admitted attempt {attempt}"),
            );
        }
        set_condition(&mut self.st, "Queued", false, "Admitted", "", now);
    }

    /// Kueue stopped the attempt's pod group (its reason given): delete the rest of the gang
    /// (each launcher saves the final state on SIGTERM) and start the next attempt, resumed and
    /// queued again, as soon as the pods are gone. Counted in no budget, as for `suspend`.
    pub(super) fn requeue(mut self, reason: &str, pods: &[PodView]) -> Outcome {
        let (now, attempt) = (self.now, self.st.attempt);
        self.record_checkpoint(pods);
        self.st.next_attempt_time = None;
        self.set_phase(Phase::Restarting);
        let message = format!("Kueue stopped attempt {attempt} ({reason})");
        set_condition(&mut self.st, "Running", false, "Requeued", "", now);
        set_condition(&mut self.st, "Restarting", true, "Requeued", &message, now);
        self.event(
            false,
            "Requeued",
            format!("{message}; attempt {} queues again", attempt + 1),
        );
        let action = delete_all(pods, self.spec, now);
        self.outcome(action, Some(DELETE_POLL))
    }
}
