//! The objects a job needs beside its pods, created or applied before them: the store-token
//! Secret, the NetworkPolicy, the Service and ConfigMap, the Volcano PodGroup, the
//! PodDisruptionBudget and the Ascend rank table.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DynamicObject, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use tracing::warn;

use super::{apply, is_code, lock, Context, Error};
use crate::crd::PretrainJob;
use crate::observe::PodView;
use crate::resources::env::rank_table_enabled;
use crate::resources::{config_map, disruption, pod_group, rank_table, service, store_access};

/// The objects a running job needs beside its pods: the store-token Secret, the NetworkPolicy
/// (unless turned off), the Service and ConfigMap (when the config resolved), the PodGroup, the
/// PodDisruptionBudget and the rank table of `attempt` where they apply.
pub(super) async fn apply_children(
    job: &PretrainJob,
    ns: &str,
    ctx: &Context,
    config: &Result<BTreeMap<String, String>, String>,
    attempt: u32,
    pods: &[Pod],
) -> Result<(), Error> {
    ensure_token_secret(job, ns, ctx).await?;
    if ctx.network_policy {
        apply(
            &Api::<NetworkPolicy>::namespaced(ctx.client.clone(), ns),
            &store_access::network_policy(job),
        )
        .await?;
    }
    if let Ok(files) = config {
        apply(
            &Api::<Service>::namespaced(ctx.client.clone(), ns),
            &service::build(job),
        )
        .await?;
        apply(
            &Api::<ConfigMap>::namespaced(ctx.client.clone(), ns),
            &config_map::build(job, files),
        )
        .await?;
    }
    if pod_group::enabled(job) {
        apply_pod_group(job, ns, ctx).await?;
    }
    if disruption::enabled(job) {
        apply_disruption_budget(job, ns, ctx).await?;
    }
    if rank_table_enabled(job) {
        apply_rank_table(job, ns, ctx, attempt, pods).await?;
    }
    Ok(())
}

/// Creates the job's store-token Secret unless it exists. Never read nor updated (the operator
/// needs only `create` on Secrets): every attempt of the job shares the token.
async fn ensure_token_secret(job: &PretrainJob, ns: &str, ctx: &Context) -> Result<(), Error> {
    let uid = job.uid().unwrap_or_default();
    if lock(&ctx.tokens).contains(&uid) {
        return Ok(());
    }
    let token = store_access::new_token().map_err(Error::Unavailable)?;
    let created = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .create(&PostParams::default(), &store_access::secret(job, &token))
        .await;
    match created {
        Err(e) if !is_code(&e, 409) => return Err(e.into()),
        _ => {}
    }
    lock(&ctx.tokens).insert(uid);
    Ok(())
}

/// The job's Volcano PodGroup, before any pod that joins it; a cluster without Volcano's CRD
/// gets a message that says so.
async fn apply_pod_group(job: &PretrainJob, ns: &str, ctx: &Context) -> Result<(), Error> {
    let ar = pod_group::api_resource();
    let api = Api::<kube::api::DynamicObject>::namespaced_with(ctx.client.clone(), ns, &ar);
    match apply(&api, &pod_group::build(job)).await {
        Err(Error::Kube(e)) if is_code(&e, 404) => {
            let message = "gang scheduling needs Volcano's PodGroup (scheduling.volcano.sh/\
                           v1beta1), which this cluster does not serve; install Volcano or set \
                           scheduling.gang: false";
            let ev = Event {
                type_: EventType::Warning,
                reason: "GangSchedulingUnavailable".into(),
                note: Some(message.into()),
                action: "CreatePodGroup".into(),
                secondary: None,
            };
            if let Err(err) = ctx.recorder.publish(&ev, &job.object_ref(&())).await {
                warn!(error = %err, "publishing event failed");
            }
            Err(Error::Unavailable(message.into()))
        }
        r => r,
    }
}

/// The job's PodDisruptionBudget, as `policy/v1` or, on API servers that do not serve it
/// (before 1.21), `policy/v1beta1`; the version that worked is remembered.
async fn apply_disruption_budget(job: &PretrainJob, ns: &str, ctx: &Context) -> Result<(), Error> {
    let known = *lock(&ctx.pdb_version);
    let versions = known
        .map(|v| vec![v])
        .unwrap_or(disruption::VERSIONS.to_vec());
    for version in versions {
        let ar = disruption::api_resource(version);
        let api = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), ns, &ar);
        match apply(&api, &disruption::build(job, version)).await {
            Err(Error::Kube(e)) if is_code(&e, 404) => continue,
            r => {
                *lock(&ctx.pdb_version) = Some(version);
                return r;
            }
        }
    }
    Err(Error::Unavailable(
        "this cluster serves no PodDisruptionBudget API (policy/v1 or policy/v1beta1); set \
         scheduling.disruptionBudget: false"
            .into(),
    ))
}

/// The Ascend rank table of `attempt`, from the devices the device plugin gave its pods.
async fn apply_rank_table(
    job: &PretrainJob,
    ns: &str,
    ctx: &Context,
    attempt: u32,
    pods: &[Pod],
) -> Result<(), Error> {
    let rank_pods: Vec<rank_table::RankPod> = pods
        .iter()
        .filter_map(|p| Some((p, PodView::from_pod(p)?)))
        .filter(|(_, v)| v.attempt == attempt && v.deleting_since.is_none())
        .map(|(p, v)| rank_table::RankPod {
            rank: v.rank,
            devices: rank_table::parse_annotation(
                p.metadata
                    .annotations
                    .as_ref()
                    .and_then(rank_table::device_annotation),
            ),
            pod_ip: p.status.as_ref().and_then(|s| s.pod_ip.clone()),
        })
        .collect();
    let table = rank_table::render(rank_table::Layout::of(job), &rank_pods);
    apply(
        &Api::namespaced(ctx.client.clone(), ns),
        &rank_table::build(job, &table),
    )
    .await
}
