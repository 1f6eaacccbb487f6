//! Operator tests against a real kube-apiserver 1.20 + etcd on loopback. Ignored by default;
//! `scripts/test-apiserver.sh` obtains the binaries and runs them.
//!
//! There is no scheduler or controller-manager: outside the `e2e` tests (which run a test node)
//! pods stay Pending until a test writes their status, and owner-reference garbage collection
//! does not run (tests check the references instead).
//!
//! Contents:
//! - `job_yields_service_config_and_pods`: CRD, Service, ConfigMap, pods, env, owner refs,
//!   metrics and health endpoints
//! - `lifecycle::*`: a failed pod restarts the gang as attempt 2 with resume; non-retryable
//!   exit codes; the restart budget; suspend and resume; an invalid spec; a deleted job
//! - `ascend::ascend_job_gets_rank_table` (version 1.0, and 1.2 for A3 super pods)
//! - `operator_restart_converges_without_duplicates` (and leader election)
//! - `gang::volcano_job_gets_a_pod_group_that_every_attempt_joins`
//! - `gang::a_protected_gang_gets_a_disruption_budget`
//! - `e2e::*`: end to end on a process-backed test node (`support::kubelet`): the CPU example
//!   trains to the end, recovers from kill -9, loses no step on pod deletion, fails once on a
//!   config error, survives an operator restart; `e2e::helm`: the same through the operator
//!   that `helm install` of the chart deployed, running as a pod of the test node

mod ascend;
mod e2e;
mod gang;
mod lifecycle;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use pretrain_operator::crd::{Phase, PretrainJob};
use serde_json::json;
use support::{cluster, wait_for, Operator};

const IGNORE: &str = "needs etcd + kube-apiserver";
const _: &str = IGNORE;

async fn setup(ns: &str) -> (Client, Operator) {
    let c = cluster();
    let client = c.client().await;
    c.namespace(&client, ns).await;
    let op = Operator::start(ns, "op-a");
    (client, op)
}

fn job(name: &str, extra: serde_json::Value) -> PretrainJob {
    let mut spec = json!({
        "nodes": 2, "workersPerNode": 4, "image": "pretrain:test",
        "config": {"inline": "seed: 42\n", "overrides": ["training.epochs=1"]},
        "checkpoint": {"claimName": "ckpt", "path": "/checkpoints/run"},
        "failurePolicy": {"backoff": {"initialSeconds": 1, "maxSeconds": 2}}
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "pretrain.io/v1alpha1", "kind": "PretrainJob",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("job parses")
}

async fn create(client: &Client, ns: &str, j: &PretrainJob) -> PretrainJob {
    Api::<PretrainJob>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), j)
        .await
        .expect("job created")
}

async fn pods(client: &Client, ns: &str) -> Vec<Pod> {
    let mut p = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items;
    p.sort_by_key(|p| p.name_any());
    p
}

fn label(p: &Pod, k: &str) -> String {
    p.labels().get(k).cloned().unwrap_or_default()
}

fn env_of(p: &Pod) -> BTreeMap<String, String> {
    p.spec.as_ref().expect("spec").containers[0]
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect()
}

async fn get_job(client: &Client, ns: &str, name: &str) -> PretrainJob {
    Api::<PretrainJob>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("job")
}

async fn wait_phase(client: &Client, ns: &str, name: &str, phase: Phase, secs: u64) -> PretrainJob {
    wait_for(secs, &format!("{name} phase {phase:?}"), || async {
        let j = get_job(client, ns, name).await;
        (j.status.as_ref().map(|s| s.phase) == Some(phase)).then_some(j)
    })
    .await
}

/// Waits for exactly `n` live pods of `attempt`.
async fn wait_pods(client: &Client, ns: &str, attempt: u32, n: usize, secs: u64) -> Vec<Pod> {
    wait_for(secs, &format!("{n} pods of attempt {attempt}"), || async {
        let p = pods(client, ns).await;
        let ok = p.len() == n
            && p.iter().all(|p| {
                label(p, "pretrain.io/attempt") == attempt.to_string()
                    && p.metadata.deletion_timestamp.is_none()
            });
        ok.then_some(p)
    })
    .await
}

/// Writes pod status as a kubelet would.
async fn set_pod_status(
    client: &Client,
    ns: &str,
    name: &str,
    phase: &str,
    exit: Option<(i32, &str)>,
) {
    let state = match exit {
        Some((code, msg)) => {
            json!({"terminated": {"exitCode": code, "reason": if code == 0 {"Completed"} else {"Error"}, "message": msg}})
        }
        None => json!({"running": {}}),
    };
    let status = json!({"status": {
        "phase": phase, "podIP": "10.0.0.9",
        "containerStatuses": [{"name": "pretrain", "image": "pretrain:test", "imageID": "", "ready": phase == "Running",
                               "restartCount": 0, "state": state}]
    }});
    Api::<Pod>::namespaced(client.clone(), ns)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("pod status patched");
}

async fn run_all(client: &Client, ns: &str) {
    for p in pods(client, ns).await {
        set_pod_status(client, ns, &p.name_any(), "Running", None).await;
    }
}

async fn events(client: &Client, ns: &str) -> Vec<(String, String)> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver"]
async fn job_yields_service_config_and_pods() {
    let ns = "t-children";
    let (client, op) = setup(ns).await;
    let t0 = Instant::now();
    let created = create(
        &client,
        ns,
        &job(
            "run",
            json!({"scheduling": {"resources": {"limits": {"memory": "1Gi"}}}}),
        ),
    )
    .await;
    let ps = wait_pods(&client, ns, 1, 2, 30).await;
    println!(
        "timing: apply -> all 2 pods created: {} ms",
        t0.elapsed().as_millis()
    );

    let uid = created.uid().expect("uid");
    assert_owned_children(&client, ns, &uid).await;
    assert_pod_contract(&ps, &uid, ns);
    let j = get_job(&client, ns, "run").await;
    let st = j.status.expect("status");
    assert_eq!(
        (st.phase, st.attempt, st.observed_generation),
        (Phase::Starting, 1, Some(1))
    );

    run_all(&client, ns).await;
    wait_phase(&client, ns, "run", Phase::Running, 20).await;
    let metrics = op.get("/metrics");
    assert!(
        metrics.contains("pretrain_jobs{phase=\"Running\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("pretrain_operator_leader 1"), "{metrics}");
    assert!(op.get("/healthz").starts_with("HTTP/1.1 200"));
    assert!(op.get("/readyz").starts_with("HTTP/1.1 200"));

    // All pods exit 0: Succeeded, and it stays so.
    for p in pods(&client, ns).await {
        set_pod_status(
            &client,
            ns,
            &p.name_any(),
            "Succeeded",
            Some((0, r#"{"lastCheckpointStep": 50}"#)),
        )
        .await;
    }
    let j = wait_phase(&client, ns, "run", Phase::Succeeded, 20).await;
    assert_eq!(
        j.status.and_then(|s| s.last_checkpoint).map(|c| c.step),
        Some(50)
    );
    let log = op.log_text();
    assert!(
        log.lines()
            .any(|l| l.starts_with('{') && l.contains("\"level\"")),
        "json logs: {log}"
    );
    assert_eq!(op.terminate(), Some(0), "graceful shutdown exits 0");
}

/// The children of job `run` besides its pods: the headless Service, the config ConfigMap,
/// the store token (fresh randomness in an immutable Secret) and the NetworkPolicy admitting
/// only the job's own pods, each controlled by the job `uid`.
async fn assert_owned_children(client: &Client, ns: &str, uid: &str) {
    let svc = Api::<Service>::namespaced(client.clone(), ns)
        .get("run")
        .await
        .expect("service");
    let s = svc.spec.clone().expect("spec");
    assert_eq!(s.cluster_ip.as_deref(), Some("None"));
    assert_eq!(s.publish_not_ready_addresses, Some(true));
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get("run-config")
        .await
        .expect("configmap");
    assert_eq!(cm.data.as_ref().expect("data")["config.yaml"], "seed: 42\n");
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get("run-store-token")
        .await
        .expect("token secret");
    let token = &secret.data.as_ref().expect("data")["token"].0;
    assert_eq!(token.len(), 64);
    assert!(token.iter().all(u8::is_ascii_hexdigit));
    assert_eq!(secret.immutable, Some(true));
    let policy = Api::<NetworkPolicy>::namespaced(client.clone(), ns)
        .get("run-rendezvous")
        .await
        .expect("network policy");
    let p_spec = policy.spec.clone().expect("spec");
    let own = Some(BTreeMap::from([(
        "pretrain.io/job-name".to_string(),
        "run".to_string(),
    )]));
    assert_eq!(p_spec.pod_selector.expect("selector").match_labels, own);
    let from = &p_spec.ingress.expect("ingress")[0];
    assert_eq!(
        from.from.as_ref().expect("from")[0]
            .pod_selector
            .as_ref()
            .expect("pods")
            .match_labels,
        own
    );
    for owned in [
        svc.owner_references(),
        cm.owner_references(),
        secret.owner_references(),
        policy.owner_references(),
    ] {
        assert_eq!(owned[0].uid, uid);
        assert_eq!(owned[0].controller, Some(true));
    }
}

/// Each pod of job `run`: its name, owner, contract environment, token volume, DNS
/// subdomain, resources and arguments.
fn assert_pod_contract(ps: &[Pod], uid: &str, ns: &str) {
    for (rank, p) in ps.iter().enumerate() {
        assert_eq!(p.name_any(), format!("run-{rank}"));
        assert_eq!(p.owner_references()[0].uid, uid);
        let env = env_of(p);
        assert_eq!(env["NODE_RANK"], rank.to_string());
        assert_eq!(env["MASTER_ADDR"], format!("run-0.run.{ns}.svc"));
        assert_eq!(env["WORLD_SIZE"], "8");
        assert_eq!(env["LOCAL_WORLD_SIZE"], "4");
        assert_eq!(env["PRETRAIN_ATTEMPT"], "1");
        assert_eq!(env["PRETRAIN_RESUME"], "false");
        assert_eq!(
            env["PRETRAIN_STORE_TOKEN_FILE"],
            "/var/run/pretrain/store/token"
        );
        let master_port: u16 = env["MASTER_PORT"].parse().expect("port");
        assert_eq!(env["PRETRAIN_PROGRESS_PORT"], (master_port + 1).to_string());
        let spec = p.spec.as_ref().expect("spec");
        let token_volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "store-token")
            .expect("token volume");
        assert_eq!(
            token_volume
                .secret
                .as_ref()
                .expect("secret")
                .secret_name
                .as_deref(),
            Some("run-store-token")
        );
        assert_eq!(spec.subdomain.as_deref(), Some("run"));
        let c = &spec.containers[0];
        assert_eq!(
            c.resources
                .as_ref()
                .and_then(|r| r.limits.clone())
                .expect("limits")["memory"]
                .0,
            "1Gi"
        );
        assert_eq!(
            c.args.as_deref().expect("args").last().map(String::as_str),
            Some("--training.epochs=1")
        );
    }
}

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver"]
async fn operator_restart_converges_without_duplicates() {
    let ns = "t-crash";
    let c = cluster();
    let client = c.client().await;
    c.namespace(&client, ns).await;
    let a = Operator::start(ns, "op-a");
    wait_for(20, "op-a leads", || async {
        a.get("/metrics")
            .contains("pretrain_operator_leader 1")
            .then_some(())
    })
    .await;
    // A standby does not act while the leader holds the lease.
    let b = Operator::start(ns, "op-b");
    create(&client, ns, &job("run", json!({"nodes": 4}))).await;
    wait_for(30, "first pod", || async {
        (!pods(&client, ns).await.is_empty()).then_some(())
    })
    .await;
    a.kill(); // crash mid-reconcile (the gang may be half created)
    let ps = wait_pods(&client, ns, 1, 4, 60).await; // b takes over after the lease expires
    wait_for(30, "op-b takes over the lease", || async {
        b.get("/metrics")
            .contains("pretrain_operator_leader 1")
            .then_some(())
    })
    .await;
    assert_eq!(ps.len(), 4);

    // Crash right after a failure is seen: the restart completes exactly once.
    run_all(&client, ns).await;
    wait_phase(&client, ns, "run", Phase::Running, 20).await;
    set_pod_status(&client, ns, "run-2", "Failed", Some((1, ""))).await;
    wait_phase(&client, ns, "run", Phase::Restarting, 20).await;
    b.kill();
    let _c = Operator::start(ns, "op-c");
    wait_pods(&client, ns, 2, 4, 60).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ps = pods(&client, ns).await;
    assert_eq!(ps.len(), 4, "no duplicates");
    let st = get_job(&client, ns, "run").await.status.expect("status");
    assert_eq!((st.attempt, st.restarts), (2, 1));
}

/// The committed CRD is what `crdgen` writes now (CI fails on a stale file).
#[test]
fn committed_crd_is_fresh() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crdgen"))
        .output()
        .expect("crdgen runs");
    assert!(out.status.success());
    let fresh = String::from_utf8(out.stdout).expect("utf-8");
    for path in [
        "crds/pretrainjobs.pretrain.io.yaml",
        "charts/pretrain-operator/crds/pretrainjobs.pretrain.io.yaml",
    ] {
        let committed = std::fs::read_to_string(root.join(path)).unwrap_or_default();
        assert!(
            committed == fresh,
            "{path} is stale; regenerate with `cargo run -p pretrain-operator --bin crdgen -- {path}`"
        );
    }
}

/// Every example parses and validates against the config it names (from configs/qwen3/).
#[test]
fn examples_validate_with_their_configs() {
    use pretrain_operator::validate::{validate, ConfigSource};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let configs = [
        ("qwen3-tiny", "configs/qwen3/qwen3_tiny.yaml"),
        ("qwen3-0-6b", "configs/qwen3/pretrain_qwen3_0_6b_4k.yaml"),
        ("qwen3-32b", "configs/qwen3/pretrain_qwen3_32b_4k.yaml"),
    ];
    let mut seen = 0;
    for entry in std::fs::read_dir(root.join("examples")).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let mut job: PretrainJob =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        job.metadata.namespace = Some("default".into());
        let cm = job
            .spec
            .config
            .config_map
            .as_ref()
            .expect("examples use a ConfigMap")
            .name
            .clone();
        let (_, file) = configs
            .iter()
            .find(|(n, _)| *n == cm)
            .unwrap_or_else(|| panic!("unknown configmap {cm}"));
        let config = std::fs::read_to_string(root.join(file)).expect("config");
        validate(&job, ConfigSource::Text(&config))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        seen += 1;
    }
    assert_eq!(seen, 3);
}

/// `helm install` of the chart against the test API server, then the operator run with exactly
/// the chart's RBAC (impersonating its ServiceAccount) reconciles a job: the least-privilege
/// rules are enough.
#[tokio::test]
#[ignore = "needs etcd + kube-apiserver"]
async fn helm_chart_installs_and_its_rbac_suffices() {
    let c = cluster();
    support::helm_install("op", "t-helm", &[]);
    let client = c.client().await;
    let dep = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), "t-helm")
        .get("op-pretrain-operator")
        .await
        .expect("deployment");
    let pod = dep.spec.expect("spec").template.spec.expect("pod spec");
    let sc = pod.containers[0]
        .security_context
        .clone()
        .expect("securityContext");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        pod.security_context.and_then(|s| s.run_as_non_root),
        Some(true)
    );

    // Run the operator as the chart's ServiceAccount.
    let kc = std::fs::read_to_string(&c.kubeconfig)
        .expect("kubeconfig")
        .replace(
            "    token:",
            "    as: system:serviceaccount:t-helm:op-pretrain-operator\n    token:",
        );
    let sa_kubeconfig = c.dir.join("kubeconfig-sa");
    std::fs::write(&sa_kubeconfig, kc).expect("write");
    c.namespace(&client, "t-helm-jobs").await;
    let log = c.dir.join("operator-helm.log");
    let file = std::fs::File::create(&log).expect("log");
    let port = support::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pretrain-operator"))
        .env("KUBECONFIG", &sa_kubeconfig)
        .env("PRETRAIN_OPERATOR_NAMESPACE", "t-helm-jobs")
        .env("PRETRAIN_OPERATOR_LEASE_NAMESPACE", "t-helm")
        .env("PRETRAIN_OPERATOR_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("POD_NAME", "op-sa")
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .expect("operator");
    let ns = "t-helm-jobs";
    create(
        &client,
        ns,
        // Gang scheduled and protected, so the chart's RBAC must cover PodGroups and
        // PodDisruptionBudgets too.
        &job(
            "run",
            json!({"config": {"configMap": {"name": "cfg"}},
                   "scheduling": {"schedulerName": "volcano", "disruptionBudget": true}}),
        ),
    )
    .await;
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("cfg".into()),
            ..Default::default()
        },
        data: Some([("config.yaml".to_string(), "seed: 1\n".to_string())].into()),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
        .expect("cm");
    // The job was invalid (missing ConfigMap) until now; the 30 s re-check or any change picks
    // the ConfigMap up. Touch the job to avoid waiting.
    Api::<PretrainJob>::namespaced(client.clone(), ns)
        .patch(
            "run",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"touch": "1"}}})),
        )
        .await
        .expect("touch");
    let result = async {
        wait_pods(&client, ns, 1, 2, 40).await;
        wait_phase(&client, ns, "run", Phase::Starting, 20).await;
        set_pod_status(&client, ns, "run-0", "Failed", Some((1, ""))).await;
        wait_pods(&client, ns, 2, 2, 40).await;
        let ev = events(&client, ns).await;
        assert!(ev.iter().any(|(r, _)| r == "GangRestart"), "{ev:?}");
    };
    let ok = tokio::time::timeout(Duration::from_secs(120), result).await;
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(ok.is_ok(), "timed out; operator log:\n{text}");
    assert!(
        !text.contains("forbidden"),
        "RBAC denied something:\n{text}"
    );
}
