//! Liveness and progress of a worker, as its launcher sees them. The worker's binary writes a
//! [`Heartbeat`] to `PRETRAIN_HEARTBEAT_FILE` every [`INTERVAL`] from a thread of its own, with
//! the trainer's [`Progress`]; the launcher's [`Watch`] reads it and calls a worker hung when
//! the beats stop (the process is stopped, swapped out or wedged whole: SIGSTOP) or when its
//! progress stops while the beats go on (a deadlock in a collective, a stuck read).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use pretrain_contract::progress::ProgressReport;
use serde::{Deserialize, Serialize};

/// How often a worker writes its heartbeat.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// When a step completed, and which.
type StepAt = (Instant, u64);

/// What the trainer reports as it goes: the last completed step, and a counter of progress
/// events (steps and checkpoint saves), so that a long save is not mistaken for a hang; and for
/// the job's progress report, the run's length, the last loss, the pace and the newest
/// checkpoint.
#[derive(Debug, Default)]
pub struct Progress {
    step: AtomicU64,
    events: AtomicU64,
    total_steps: AtomicU64,
    tokens_per_step: AtomicU64,
    loss_bits: AtomicU64,
    checkpoint: AtomicU64,
    /// The first and the last step this process completed.
    pace: Mutex<Option<(StepAt, StepAt)>>,
}

impl Progress {
    /// The run has `total_steps` steps of `tokens_per_step` tokens.
    pub fn plan(&self, total_steps: u64, tokens_per_step: u64) {
        self.total_steps.store(total_steps, Ordering::Relaxed);
        self.tokens_per_step
            .store(tokens_per_step, Ordering::Relaxed);
    }

    /// A step completed with mean loss `loss`.
    pub fn step_done(&self, step: u64, loss: f32) {
        let now = Instant::now();
        {
            let mut pace = self.pace.lock().unwrap_or_else(PoisonError::into_inner);
            let first = pace.map_or((now, step), |(first, _)| first);
            *pace = Some((first, (now, step)));
        }
        self.loss_bits
            .store(u64::from(loss.to_bits()), Ordering::Relaxed);
        self.step.store(step, Ordering::Relaxed);
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    /// The checkpoint of `step` is committed (progress too: a long save is not a hang).
    pub fn saved(&self, step: u64) {
        self.checkpoint.store(step, Ordering::Relaxed);
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    /// The heartbeat to write now, the `beat`-th.
    pub fn heartbeat(&self, beat: u64) -> Heartbeat {
        let step = self.step.load(Ordering::Relaxed);
        let pace = *self.pace.lock().unwrap_or_else(PoisonError::into_inner);
        let seconds_per_step = pace.and_then(|((t0, s0), (t1, s1))| {
            (s1 > s0).then(|| (t1 - t0).as_secs_f64() / (s1 - s0) as f64)
        });
        let nonzero = |a: &AtomicU64| Some(a.load(Ordering::Relaxed)).filter(|&v| v > 0);
        let tokens = nonzero(&self.tokens_per_step);
        let loss = f32::from_bits(self.loss_bits.load(Ordering::Relaxed) as u32);
        Heartbeat {
            beat,
            progress: self.events.load(Ordering::Relaxed),
            report: ProgressReport {
                step,
                total_steps: nonzero(&self.total_steps),
                loss: (step > 0).then_some(loss),
                seconds_per_step,
                tokens_per_second: seconds_per_step
                    .zip(tokens)
                    .filter(|(s, _)| *s > 0.0)
                    .map(|(s, t)| t as f64 / s),
                last_checkpoint_step: nonzero(&self.checkpoint),
                restarts: None,
            },
        }
    }
}

/// One heartbeat (a small JSON object): the liveness counters, and the progress rank 0's
/// launcher serves as the job's progress report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Counts up with every write.
    pub beat: u64,
    /// Progress events so far.
    pub progress: u64,
    /// Step, run length, loss, pace and newest checkpoint.
    #[serde(flatten)]
    pub report: ProgressReport,
}

/// Writes `hb` to `path` (temporary file + rename: a reader never sees half of it).
pub fn write(path: &Path, hb: &Heartbeat) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(hb).unwrap_or_default())?;
    std::fs::rename(&tmp, path)
}

/// Reads the heartbeat at `path`, if there is a whole one.
pub fn read(path: &Path) -> Option<Heartbeat> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The launcher's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A worker whose heartbeat has not changed for this long is hung.
    pub heartbeat: Duration,
    /// A worker whose progress has not changed for this long is hung; `None`: from the
    /// measured step time ([`auto_hang_timeout`]), once a step has been measured.
    pub progress: Option<Duration>,
}

/// The hang timeout from the longest interval between progress events seen so far: ten times
/// it, at least 5 minutes and at most an hour.
pub fn auto_hang_timeout(longest: Duration) -> Duration {
    (longest * 10).clamp(Duration::from_secs(300), Duration::from_secs(3600))
}

/// What the launcher knows of one worker's heartbeats.
#[derive(Debug)]
pub struct Watch {
    last: Option<Heartbeat>,
    beat_at: Instant,
    progress_at: Instant,
    longest: Option<Duration>,
}

impl Watch {
    /// A worker started `now` (its first beat is due within the heartbeat limit).
    pub fn new(now: Instant) -> Watch {
        Watch {
            last: None,
            beat_at: now,
            progress_at: now,
            longest: None,
        }
    }

    /// Takes in the heartbeat read `now` (or none); returns why the worker is hung, if it is.
    pub fn check(
        &mut self,
        hb: Option<Heartbeat>,
        now: Instant,
        limits: &Limits,
    ) -> Option<String> {
        if let Some(hb) = hb {
            let last = self.last.unwrap_or_default();
            if self.last.is_none() || hb.beat != last.beat {
                self.beat_at = now;
            }
            // The spawn is progress 0: the first beat only counts if something was done.
            if hb.progress != last.progress {
                if self.last.is_some_and(|l| l.progress > 0) {
                    let took = now - self.progress_at;
                    self.longest = Some(self.longest.map_or(took, |l| l.max(took)));
                }
                self.progress_at = now;
            }
            self.last = Some(hb);
        }
        let step = self.last.map_or(0, |h| h.report.step);
        let silent = now - self.beat_at;
        if silent > limits.heartbeat {
            return Some(format!(
                "no heartbeat for {:.0} s (limit {:.0} s; last completed step {step})",
                silent.as_secs_f64(),
                limits.heartbeat.as_secs_f64()
            ));
        }
        let limit = limits.progress.or(self.longest.map(auto_hang_timeout))?;
        let still = now - self.progress_at;
        (still > limit).then(|| {
            format!(
                "no progress for {:.0} s after step {step} (hang timeout {:.0} s)",
                still.as_secs_f64(),
                limit.as_secs_f64()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(beat: u64, step: u64, progress: u64) -> Option<Heartbeat> {
        Some(Heartbeat {
            beat,
            progress,
            report: ProgressReport {
                step,
                ..ProgressReport::default()
            },
        })
    }

    #[test]
    fn the_heartbeat_carries_the_run_s_progress() {
        let p = Progress::default();
        let early = p.heartbeat(1).report;
        assert_eq!((early.step, early.loss, early.total_steps), (0, None, None));
        p.plan(100, 4096);
        p.step_done(1, 3.5);
        std::thread::sleep(Duration::from_millis(20));
        p.step_done(3, 3.25);
        p.saved(3);
        let beat = p.heartbeat(2);
        assert_eq!(beat.progress, 3);
        let hb = beat.report;
        assert_eq!((hb.step, hb.total_steps), (3, Some(100)));
        assert_eq!(hb.loss, Some(3.25));
        assert_eq!(hb.last_checkpoint_step, Some(3));
        let pace = hb.seconds_per_step.expect("two steps measured");
        assert!((0.009..1.0).contains(&pace), "{pace}");
        let tps = hb.tokens_per_second.expect("tokens per second");
        assert!((tps - 4096.0 / pace).abs() < 1e-6 * tps);
        let back: Heartbeat =
            serde_json::from_slice(&serde_json::to_vec(&beat).expect("json")).expect("parse");
        assert_eq!(back.progress, beat.progress);
        let back = back.report;
        // serde_json's float parsing may differ in the last bit.
        let close = |a: Option<f64>, b: Option<f64>| {
            a.zip(b)
                .is_some_and(|(a, b)| (a - b).abs() <= 1e-12 * a.abs())
        };
        assert!(close(back.tokens_per_second, hb.tokens_per_second));
        assert!(close(back.seconds_per_step, hb.seconds_per_step));
        assert_eq!(
            (back.step, back.loss, back.last_checkpoint_step),
            (hb.step, hb.loss, hb.last_checkpoint_step)
        );
        assert_eq!(hb.seconds_left(), Some(97.0 * pace));
    }

    #[test]
    fn silence_and_stalled_progress_are_hangs() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let limits = Limits {
            heartbeat: s(30),
            progress: None,
        };
        let mut w = Watch::new(t0);
        assert_eq!(
            w.check(None, t0 + s(29), &limits),
            None,
            "startup within the limit"
        );
        assert!(w.check(None, t0 + s(31), &limits).is_some(), "never a beat");
        let mut w = Watch::new(t0);
        assert_eq!(w.check(hb(1, 0, 0), t0 + s(1), &limits), None);
        // Steps every 10 s: no progress limit until one is measured, then 300 s (the floor).
        assert_eq!(w.check(hb(2, 1, 1), t0 + s(10), &limits), None);
        assert_eq!(w.check(hb(3, 2, 2), t0 + s(20), &limits), None);
        assert_eq!(w.check(hb(30, 2, 2), t0 + s(300), &limits), None);
        let why = w
            .check(hb(33, 2, 2), t0 + s(330), &limits)
            .expect("stalled");
        assert!(why.contains("no progress for 310 s after step 2"), "{why}");
        // Beats that stop are a hang at the heartbeat limit, whatever the progress.
        let why = w.check(hb(33, 2, 2), t0 + s(364), &limits).expect("silent");
        assert!(why.contains("no heartbeat for 34 s"), "{why}");
        // An explicit progress limit applies from the start.
        let limits = Limits {
            heartbeat: s(30),
            progress: Some(s(60)),
        };
        let mut w = Watch::new(t0);
        assert_eq!(w.check(hb(1, 0, 0), t0 + s(59), &limits), None);
        assert!(w.check(hb(2, 0, 0), t0 + s(61), &limits).is_some());
    }

    #[test]
    fn the_automatic_timeout_follows_the_step_time_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(auto_hang_timeout(s(1)), s(300));
        assert_eq!(auto_hang_timeout(s(60)), s(600));
        assert_eq!(auto_hang_timeout(s(1000)), s(3600));
    }
}
