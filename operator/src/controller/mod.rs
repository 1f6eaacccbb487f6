//! The reconciler: reads a `PretrainJob`, its ConfigMap and pods, asks the pure state machine
//! ([`crate::status`]) what to do, writes the status with server-side apply, publishes Events,
//! then acts (create or delete pods, or delete the finished job).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::crd::{Phase, PretrainJob, PretrainJobStatus};
use crate::metrics::Metrics;
use crate::observe::{self, PodView};
use crate::resources::env::{self, PodSlot};
use crate::resources::{self, config_map, pod, LABEL_JOB, MANAGER};
use crate::status::{self, Action, Outcome};
use crate::validate::{self, ConfigSource};

mod children;
use children::apply_children;
use pretrain_contract::progress::ProgressReport;

/// Reconcile errors; the variant name is the `kind` label of the error metric.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed (retried with backoff).
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    /// The status could not be serialized (a bug).
    #[error("serializing status: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A pod could not be built although the spec validated (a bug).
    #[error("building pod: {0}")]
    Build(#[from] pod::BuildError),
    /// The cluster lacks something the job needs (retried: it may be installed meanwhile).
    #[error("{0}")]
    Unavailable(String),
}

impl Error {
    /// Metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "Kube",
            Error::Serialize(_) => "Serialize",
            Error::Build(_) => "Build",
            Error::Unavailable(_) => "Unavailable",
        }
    }
}

/// Shared by all reconciles.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event recorder (events.k8s.io/v1).
    pub recorder: Recorder,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Give each job a NetworkPolicy admitting only its own pods (`--network-policy`).
    pub network_policy: bool,
    /// UIDs of the jobs whose store-token Secret is known to exist.
    tokens: std::sync::Mutex<std::collections::HashSet<String>>,
    /// When each running job's progress was last read (by UID).
    polled: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
    /// How often a running job's progress is read (`--progress-interval`).
    pub progress_interval: Duration,
    /// The PodDisruptionBudget version the API server serves, once known.
    pdb_version: std::sync::Mutex<Option<&'static str>>,
}

impl Context {
    /// A context reporting Events as `pretrain-operator` (instance = pod name, if known).
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            network_policy: true,
            tokens: Default::default(),
            polled: Default::default(),
            progress_interval: status::PROGRESS_POLL,
            pdb_version: Default::default(),
        }
    }

    /// How often a running job's progress is read (default 10 s).
    pub fn with_progress_interval(mut self, every: Duration) -> Self {
        self.progress_interval = every;
        self
    }

    /// Whether jobs get their rendezvous NetworkPolicy (on by default).
    pub fn with_network_policy(mut self, on: bool) -> Self {
        self.network_policy = on;
        self
    }
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Resolves the files of the job's ConfigMap: the training config as `config.yaml` (inline,
/// or the referenced ConfigMap key) and, with a referenced ConfigMap, its other keys, which a
/// `base_config: <key>` can name (they are mounted beside it).
async fn resolve_config(
    job: &PretrainJob,
    ns: &str,
    client: &Client,
) -> Result<Result<BTreeMap<String, String>, String>, Error> {
    if let Some(text) = &job.spec.config.inline {
        return Ok(Ok(
            [(config_map::CONFIG_KEY.to_string(), text.clone())].into()
        ));
    }
    let Some(r) = &job.spec.config.config_map else {
        return Ok(Err(String::new())); // reported by validation
    };
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    Ok(match cms.get_opt(&r.name).await? {
        None => Err(format!(
            "config.configMap {:?} not found in namespace {ns:?}; create it or fix the name",
            r.name
        )),
        Some(cm) => {
            let mut data = cm.data.unwrap_or_default();
            match data.remove(&r.key) {
                Some(text) => {
                    data.insert(config_map::CONFIG_KEY.to_string(), text);
                    Ok(data)
                }
                None => Err(format!(
                    "config.configMap {:?} has no key {:?}",
                    r.name, r.key
                )),
            }
        }
    })
}

async fn apply<K>(api: &Api<K>, obj: &K) -> Result<(), Error>
where
    K: Resource + serde::Serialize + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await?;
    Ok(())
}

async fn publish(ctx: &Context, job: &PretrainJob, outcome: &Outcome) {
    let reference = job.object_ref(&());
    for e in &outcome.events {
        let ev = Event {
            type_: if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason.clone(),
            note: Some(e.message.chars().take(1000).collect()),
            action: e.reason.clone(),
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&ev, &reference).await {
            warn!(error = %err, reason = %e.reason, "publishing event failed");
        }
    }
}

async fn write_status(
    job: &PretrainJob,
    ns: &str,
    ctx: &Context,
    outcome: &Outcome,
) -> Result<(), Error> {
    if job.status.as_ref() == Some(&outcome.status) {
        return Ok(());
    }
    let api: Api<PretrainJob> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({
        "apiVersion": PretrainJob::api_version(&()),
        "kind": PretrainJob::kind(&()),
        "status": outcome.status,
    });
    api.patch_status(
        &job.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Performs `action`; new pods avoid the nodes `avoid` (`status.excludedNodes`).
async fn act(
    job: &PretrainJob,
    ns: &str,
    ctx: &Context,
    action: &Action,
    avoid: &[String],
) -> Result<(), Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    match action {
        Action::None => {}
        Action::CreatePods {
            attempt,
            resume,
            ranks,
        } => {
            let mut created = 0;
            for &rank in ranks {
                let p = pod::build_avoiding(
                    job,
                    PodSlot {
                        rank,
                        attempt: *attempt,
                        resume: *resume,
                    },
                    avoid,
                )?;
                match pods.create(&PostParams::default(), &p).await {
                    Ok(_) => created += 1,
                    // Deterministic names make a repeated create harmless.
                    Err(e) if is_code(&e, 409) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            ctx.metrics.pods_created(created);
            info!(attempt, resume, created, "created pods");
        }
        Action::DeletePods { graceful, force } => {
            let mut deleted = 0;
            for ((name, uid), force) in graceful
                .iter()
                .map(|p| (p, false))
                .chain(force.iter().map(|p| (p, true)))
            {
                // The UID precondition makes sure a stale view never deletes a newer pod that
                // reuses the name.
                let dp = DeleteParams {
                    grace_period_seconds: force.then_some(0),
                    preconditions: uid.clone().map(|uid| Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match pods.delete(name, &dp).await {
                    Ok(_) => deleted += 1,
                    Err(e) if is_code(&e, 404) || is_code(&e, 409) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            ctx.metrics.pods_deleted(deleted);
            info!(deleted, "deleted pods");
        }
        Action::DeleteJob => {
            let jobs: Api<PretrainJob> = Api::namespaced(ctx.client.clone(), ns);
            let dp = DeleteParams::background();
            match jobs.delete(&job.name_any(), &dp).await {
                Ok(_) => info!("ttlSecondsAfterFinished elapsed: deleted the job"),
                Err(e) if is_code(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Reconciles one job.
#[instrument(skip_all, fields(job = %job.name_any(), namespace = job.namespace().unwrap_or_default()))]
pub async fn reconcile(job: Arc<PretrainJob>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&job, &ctx).await;
    ctx.metrics.reconciled(started.elapsed().as_micros() as u64);
    result
}

/// Reconciles one job: validate, observe the pods, decide, then write the status, publish
/// Events and act, in that order (see [`crate::status`]).
async fn reconcile_inner(job: &PretrainJob, ctx: &Context) -> Result<Requeue, Error> {
    if job.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove pods, Service and ConfigMaps.
        return Ok(Requeue::await_change());
    }
    let ns = resources::namespace(job);
    let now = Timestamp::now();
    let current = job.status.clone().unwrap_or_default();
    let generation = job.metadata.generation;

    let config = if current.phase.is_terminal() {
        Ok(BTreeMap::new()) // never re-validated: terminal is sticky
    } else {
        resolve_config(job, &ns, &ctx.client).await?
    };
    if !current.phase.is_terminal() {
        let source = match &config {
            Ok(files) => ConfigSource::Files(files),
            Err(what) => ConfigSource::Missing(what.clone()),
        };
        if let Err(message) = validate::validate(job, source) {
            let outcome = status::invalid(&current, generation, &message, now);
            return report_invalid(job, &ns, ctx, &outcome, &message).await;
        }
    }

    let pods = list_pods(job, &ns, ctx).await?;
    let views: Vec<PodView> = pods.iter().filter_map(PodView::from_pod).collect();
    let progress = read_progress(job, ctx, &current, &views).await;
    let outcome = status::decide(
        &job.name_any(),
        &job.spec,
        generation,
        &current,
        &views,
        progress.as_ref(),
        now,
    );

    if !outcome.status.phase.is_terminal() {
        apply_children(job, &ns, ctx, &config, outcome.status.attempt, &pods).await?;
    }
    observe_transition(ctx, &current, &outcome);
    match write_status(job, &ns, ctx, &outcome).await {
        // The job was deleted after the watch cache saw it: nothing left to do.
        Err(Error::Kube(e)) if is_code(&e, 404) => return Ok(Requeue::await_change()),
        r => r?,
    }
    publish(ctx, job, &outcome).await;
    act(
        job,
        &ns,
        ctx,
        &outcome.action,
        &outcome.status.excluded_nodes,
    )
    .await?;
    // A running job is looked at again when its progress is due.
    let requeue = match outcome.requeue_after {
        Some(d) if outcome.status.phase == Phase::Running => d.min(ctx.progress_interval),
        Some(d) => d,
        None => Duration::from_secs(300),
    };
    Ok(Requeue::requeue(requeue.min(Duration::from_secs(300))))
}

/// Writes the `Invalid` status of a spec that failed validation and publishes its Event;
/// nothing is created.
async fn report_invalid(
    job: &PretrainJob,
    ns: &str,
    ctx: &Context,
    outcome: &Outcome,
    message: &str,
) -> Result<Requeue, Error> {
    write_status(job, ns, ctx, outcome).await?;
    publish(ctx, job, outcome).await;
    if !outcome.events.is_empty() {
        warn!(%message, "invalid spec");
    }
    // Re-check now and then: a missing ConfigMap may appear without the job changing.
    Ok(Requeue::requeue(Duration::from_secs(30)))
}

/// The job's pods: those labelled with its name that it owns (by UID).
async fn list_pods(job: &PretrainJob, ns: &str, ctx: &Context) -> Result<Vec<Pod>, Error> {
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!("{LABEL_JOB}={}", job.name_any());
    // A fresh list, not the watch cache: gang decisions must never act on a stale view.
    Ok(pods_api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == job.metadata.uid.as_ref())
        })
        .collect())
}

/// Node 0's progress report, read at most once per poll interval per job and only while the
/// job runs: one small HTTP request to its launcher, no API write unless the status changes.
async fn read_progress(
    job: &PretrainJob,
    ctx: &Context,
    current: &PretrainJobStatus,
    pods: &[PodView],
) -> Option<ProgressReport> {
    let uid = job.uid().unwrap_or_default();
    if current.phase != Phase::Running {
        lock(&ctx.polled).remove(&uid);
        return None;
    }
    let ip = pods
        .iter()
        .find(|p| p.rank == 0 && p.attempt == current.attempt)?
        .ip
        .clone()?;
    {
        let mut polled = lock(&ctx.polled);
        let every = ctx.progress_interval;
        let fresh = |at: &Instant| at.elapsed() + every / 10 < every;
        if polled.get(&uid).is_some_and(fresh) {
            return None;
        }
        polled.insert(uid, Instant::now());
    }
    observe::fetch_progress(&ip, env::progress_port(job)).await
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Logs a phase change and counts failed ranks and gang restarts.
fn observe_transition(ctx: &Context, current: &PretrainJobStatus, outcome: &Outcome) {
    if outcome.status.phase != current.phase {
        info!(
            from = current.phase.as_str(),
            to = outcome.status.phase.as_str(),
            attempt = outcome.status.attempt,
            "phase"
        );
    }
    for e in &outcome.events {
        match e.reason.as_str() {
            "RankFailed" => ctx.metrics.failed_rank(),
            "GangRestart" if outcome.status.phase == Phase::Restarting => {
                ctx.metrics.gang_restart()
            }
            _ => {}
        }
    }
}

/// Retries failed reconciles with a short fixed delay (the controller deduplicates).
pub fn error_policy(_job: Arc<PretrainJob>, error: &Error, ctx: Arc<Context>) -> Requeue {
    warn!(error = %error, "reconcile failed");
    ctx.metrics.error(error.kind());
    Requeue::requeue(Duration::from_secs(5))
}

/// Builds the controller for all namespaces, or one when `namespace` is set.
pub fn controller(client: &Client, namespace: Option<&str>) -> Controller<PretrainJob> {
    let (jobs, pods) = match namespace {
        Some(ns) => (
            Api::<PretrainJob>::namespaced(client.clone(), ns),
            Api::<Pod>::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let owned = watcher::Config::default().labels(LABEL_JOB);
    Controller::new(jobs, watcher::Config::default()).owns(pods, owned)
}

/// Phases of all jobs in a controller's store, for `/metrics`.
pub fn phases(store: &Store<PretrainJob>) -> Vec<Phase> {
    store
        .state()
        .iter()
        .map(|j| j.status.as_ref().map(|s| s.phase).unwrap_or_default())
        .collect()
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    controller: Controller<PretrainJob>,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}
