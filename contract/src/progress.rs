//! Training progress, as the node-0 launcher serves it (ARCHITECTURE.md, "Progress"): one JSON
//! object, the answer to `GET /progress` on [`crate::env::PROGRESS_PORT`] of node 0. The
//! operator reads it every few seconds into the job's `status.progress`.

use serde::{Deserialize, Serialize};

/// The path of the progress endpoint.
pub const PATH: &str = "/progress";

/// What rank 0 has done so far in the current attempt. Every field but `step` is optional to a
/// reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressReport {
    /// Last completed optimizer step (0 before the first).
    pub step: u64,
    /// Steps of the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<u64>,
    /// Mean loss of the last completed step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f32>,
    /// Mean seconds per step over the steps of this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_per_step: Option<f64>,
    /// Training tokens per second at that pace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
    /// Step of the newest checkpoint this process committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_step: Option<u64>,
    /// In-place restarts of the workers by the launchers so far (`--max-restarts`; none =
    /// 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u32>,
}

impl ProgressReport {
    /// Parses a report; `None` for anything that is not one.
    pub fn parse(body: &[u8]) -> Option<ProgressReport> {
        serde_json::from_slice(body).ok()
    }

    /// Seconds until the last step at the measured pace, when both are known.
    pub fn seconds_left(&self) -> Option<f64> {
        let total = self.total_steps?;
        let pace = self
            .seconds_per_step
            .filter(|s| s.is_finite() && *s >= 0.0)?;
        Some(total.saturating_sub(self.step) as f64 * pace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_estimate_the_rest() {
        let r = ProgressReport {
            step: 30,
            total_steps: Some(100),
            loss: Some(2.5),
            seconds_per_step: Some(0.5),
            tokens_per_second: Some(8192.0),
            last_checkpoint_step: Some(25),
            restarts: Some(1),
        };
        let text = serde_json::to_string(&r).expect("json");
        assert!(text.contains("\"totalSteps\":100"), "{text}");
        assert_eq!(ProgressReport::parse(text.as_bytes()), Some(r));
        assert_eq!(r.seconds_left(), Some(35.0));
        assert_eq!(
            ProgressReport::parse(b"{\"step\": 3}").map(|r| r.step),
            Some(3)
        );
        assert_eq!(ProgressReport::parse(b"not json"), None);
        let early = ProgressReport::default();
        assert_eq!(early.seconds_left(), None);
    }
}
