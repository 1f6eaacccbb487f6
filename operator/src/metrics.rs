//! Prometheus metrics in the text exposition format (0.0.4), kept as plain atomics: the set
//! is small and fixed, so a metrics library would add more than it saves.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::crd::Phase;

/// Counters and gauges of one operator process.
#[derive(Default)]
pub struct Metrics {
    reconciles: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    gang_restarts: AtomicU64,
    failed_ranks: AtomicU64,
    pods_created: AtomicU64,
    pods_deleted: AtomicU64,
    reconcile_micros: AtomicU64,
    leader: AtomicBool,
}

impl Metrics {
    /// One reconcile finished after `micros`.
    pub fn reconciled(&self, micros: u64) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        self.reconcile_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// A reconcile failed with error kind `kind`.
    pub fn error(&self, kind: &str) {
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(kind.to_string()).or_default() += 1;
        }
    }

    /// A gang restart was decided.
    pub fn gang_restart(&self) {
        self.gang_restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// A failed rank was seen.
    pub fn failed_rank(&self) {
        self.failed_ranks.fetch_add(1, Ordering::Relaxed);
    }

    /// Pods created.
    pub fn pods_created(&self, n: u64) {
        self.pods_created.fetch_add(n, Ordering::Relaxed);
    }

    /// Pods deleted.
    pub fn pods_deleted(&self, n: u64) {
        self.pods_deleted.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether this process holds the leader lease.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    /// Renders everything, with `jobs` the current phase of each known job.
    pub fn render(&self, jobs: &[Phase]) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            "pretrain_operator_reconciles_total",
            "Reconciles finished.",
            self.reconciles.load(Ordering::Relaxed),
        );
        counter(
            "pretrain_operator_gang_restarts_total",
            "Gang restarts decided (all pods of an attempt deleted and recreated).",
            self.gang_restarts.load(Ordering::Relaxed),
        );
        counter(
            "pretrain_operator_failed_ranks_total",
            "Failed pods seen.",
            self.failed_ranks.load(Ordering::Relaxed),
        );
        counter(
            "pretrain_operator_pods_created_total",
            "Pods created.",
            self.pods_created.load(Ordering::Relaxed),
        );
        counter(
            "pretrain_operator_pods_deleted_total",
            "Pods deleted.",
            self.pods_deleted.load(Ordering::Relaxed),
        );
        let secs = self.reconcile_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "# HELP pretrain_operator_reconcile_seconds_total Time spent reconciling.\n\
             # TYPE pretrain_operator_reconcile_seconds_total counter\n\
             pretrain_operator_reconcile_seconds_total {secs}"
        );
        let _ = writeln!(
            out,
            "# HELP pretrain_operator_reconcile_errors_total Reconcile errors by kind."
        );
        let _ = writeln!(
            out,
            "# TYPE pretrain_operator_reconcile_errors_total counter"
        );
        if let Ok(m) = self.errors.lock() {
            for (kind, v) in m.iter() {
                let _ = writeln!(
                    out,
                    "pretrain_operator_reconcile_errors_total{{kind=\"{kind}\"}} {v}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP pretrain_jobs PretrainJobs by phase.\n# TYPE pretrain_jobs gauge"
        );
        for phase in Phase::ALL {
            let n = jobs.iter().filter(|p| **p == phase).count();
            let _ = writeln!(out, "pretrain_jobs{{phase=\"{}\"}} {n}", phase.as_str());
        }
        let leader = u8::from(self.leader.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "# HELP pretrain_operator_leader 1 when this replica holds the leader lease.\n\
             # TYPE pretrain_operator_leader gauge\npretrain_operator_leader {leader}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.reconciled(1500);
        m.error("Kube");
        m.gang_restart();
        let text = m.render(&[Phase::Running, Phase::Running, Phase::Failed]);
        assert!(text.contains("pretrain_operator_reconciles_total 1\n"));
        assert!(text.contains("pretrain_operator_reconcile_errors_total{kind=\"Kube\"} 1\n"));
        assert!(text.contains("pretrain_jobs{phase=\"Running\"} 2\n"));
        assert!(text.contains("pretrain_jobs{phase=\"Failed\"} 1\n"));
        assert!(text.contains("pretrain_operator_gang_restarts_total 1\n"));
        assert!(text.contains("# TYPE pretrain_jobs gauge"));
    }
}
