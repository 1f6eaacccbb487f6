//! Leader election on a `coordination.k8s.io/v1` Lease, the same protocol as client-go's
//! leaderelection: whoever holds an unexpired lease leads and renews it; others wait until it
//! expires and then take it with an optimistic (resourceVersion-checked) replace.
//! [`run_elected`] is the whole life of a replica around that: wait, lead, step down.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::metrics::Metrics;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Our identity (the pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub duration: Duration,
}

impl LeaseConfig {
    /// How often a standby retries taking the lease and the leader renews it: a third of its
    /// duration, so two renewals may fail before the lease expires.
    pub fn retry_interval(&self) -> Duration {
        self.duration / 3
    }
}

/// How a replica's time under [`run_elected`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// Shutdown came before the lease did; the work never ran.
    NeverHeld,
    /// The work ended while we held the lease, which was then released for a standby.
    Released,
    /// The lease was taken by another replica or not renewed within its duration; the work was
    /// stopped through the shutdown channel and the lease is not touched again.
    Lost,
}

/// One renewal attempt, as far as keeping leadership is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Renewal {
    /// We hold the lease for another `duration`.
    Renewed,
    /// Another replica holds the lease now.
    Taken,
    /// The request failed; the lease may still be ours.
    Failed,
}

/// Whether leadership is lost after `renewal`, `unrenewed` after the last successful renewal:
/// at once when the lease was taken, and after failed requests once the lease has gone a whole
/// `duration` without renewal (another replica may then take it). Returns the reason to log.
fn lost_after(renewal: Renewal, unrenewed: Duration, duration: Duration) -> Option<&'static str> {
    match renewal {
        Renewal::Renewed => None,
        Renewal::Taken => Some("lease taken by another replica"),
        Renewal::Failed if unrenewed >= duration => Some("lease not renewed within its duration"),
        Renewal::Failed => None,
    }
}

/// Whether `lease` is free for `identity` at `now`: unheld, held by us, or expired.
pub fn can_take(lease: &LeaseSpec, identity: &str, now: Timestamp) -> bool {
    let holder = lease.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == identity {
        return true;
    }
    let secs = i64::from(lease.lease_duration_seconds.unwrap_or(15));
    let renewed = lease
        .renew_time
        .as_ref()
        .or(lease.acquire_time.as_ref())
        .map(|t| t.0.as_second());
    renewed.is_none_or(|r| now.as_second() >= r + secs)
}

/// Tries once to take or renew the lease; Ok(true) when we hold it afterwards.
pub async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let secs = i32::try_from(cfg.duration.as_secs()).unwrap_or(15);
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if !can_take(spec, &cfg.identity, now) {
                return Ok(false);
            }
            if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.holder_identity = Some(cfg.identity.clone());
            spec.lease_duration_seconds = Some(secs);
            spec.renew_time = Some(MicroTime(now));
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Gives the lease up (on graceful shutdown) so a standby takes over at once.
pub async fn release(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<(), kube::Error> {
    if let Some(mut lease) = api.get_opt(&cfg.name).await? {
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() == Some(cfg.identity.as_str()) {
            spec.holder_identity = None;
            spec.renew_time = None;
            api.replace(&cfg.name, &PostParams::default(), &lease)
                .await?;
        }
    }
    Ok(())
}

/// Runs `work` only while this replica leads. Waits until the lease is ours (returning
/// [`Leadership::NeverHeld`] without running `work` if `shutdown` is signalled first), then
/// renews it in the background while `work` runs. Losing the lease sends `shutdown` so that
/// `work` stops (two leaders must never act on the same jobs) and returns
/// [`Leadership::Lost`]; the caller exits non-zero so the pod restarts as a standby. When `work`
/// ends otherwise, the lease is released so a standby takes over at once.
///
/// `work` must end once `shutdown` carries `true`. The `pretrain_operator_leader` metric is set
/// on election and cleared on loss.
pub async fn run_elected(
    api: Api<Lease>,
    cfg: LeaseConfig,
    shutdown: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    work: impl Future<Output = ()>,
) -> Leadership {
    let namespace = api.namespace().unwrap_or_default().to_owned();
    info!(lease = %cfg.name, %namespace, identity = %cfg.identity, "waiting for leadership");
    if !acquire(&api, &cfg, shutdown.subscribe()).await {
        return Leadership::NeverHeld;
    }
    info!("became leader");
    metrics.set_leader(true);

    let lost = Arc::new(AtomicBool::new(false));
    tokio::spawn(renew(
        api.clone(),
        cfg.clone(),
        shutdown,
        metrics,
        lost.clone(),
    ));
    work.await;
    if lost.load(Ordering::Relaxed) {
        return Leadership::Lost;
    }
    if let Err(e) = release(&api, &cfg).await {
        warn!(error = %e, "releasing the lease failed");
    }
    Leadership::Released
}

/// Retries taking the lease every [`LeaseConfig::retry_interval`]; false when shutdown came
/// first.
async fn acquire(api: &Api<Lease>, cfg: &LeaseConfig, mut shutdown: watch::Receiver<bool>) -> bool {
    loop {
        match try_acquire(api, cfg).await {
            Ok(true) => return true,
            Ok(false) => {}
            Err(e) => warn!(error = %e, "lease request failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.retry_interval()) => {}
            _ = shutdown.wait_for(|s| *s) => return false,
        }
    }
}

/// Renews the lease every [`LeaseConfig::retry_interval`] until shutdown; on loss clears the
/// leader metric, sets `lost` and then signals shutdown (in that order, so whoever sees the
/// shutdown sees `lost`).
async fn renew(
    api: Api<Lease>,
    cfg: LeaseConfig,
    shutdown: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    lost: Arc<AtomicBool>,
) {
    let mut stopped = shutdown.subscribe();
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.retry_interval()) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let renewal = match try_acquire(&api, &cfg).await {
            Ok(true) => {
                last_ok = Instant::now();
                Renewal::Renewed
            }
            Ok(false) => Renewal::Taken,
            Err(e) => {
                warn!(error = %e, "lease renewal failed");
                Renewal::Failed
            }
        };
        if let Some(reason) = lost_after(renewal, last_ok.elapsed(), cfg.duration) {
            error!("{reason}");
            break;
        }
    }
    metrics.set_leader(false);
    lost.store(true, Ordering::Relaxed);
    let _ = shutdown.send(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("valid time")
    }

    #[test]
    fn lease_is_taken_only_when_free_ours_or_expired() {
        let held = LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(t(0))),
            ..Default::default()
        };
        assert!(can_take(&held, "a", t(1)));
        assert!(!can_take(&held, "b", t(14)));
        assert!(can_take(&held, "b", t(15)));
        assert!(can_take(&LeaseSpec::default(), "b", t(0)));
    }

    #[test]
    fn leadership_is_lost_when_taken_or_unrenewed_for_a_whole_duration() {
        let d = Duration::from_secs(15);
        let s = Duration::from_secs;
        assert_eq!(lost_after(Renewal::Renewed, s(0), d), None);
        assert!(lost_after(Renewal::Taken, s(0), d).is_some());
        assert_eq!(lost_after(Renewal::Failed, s(14), d), None);
        assert!(lost_after(Renewal::Failed, s(15), d).is_some());
    }

    #[test]
    fn retries_and_renewals_come_every_third_of_the_duration() {
        let cfg = LeaseConfig {
            name: "l".into(),
            identity: "a".into(),
            duration: Duration::from_secs(15),
        };
        assert_eq!(cfg.retry_interval(), Duration::from_secs(5));
    }
}
