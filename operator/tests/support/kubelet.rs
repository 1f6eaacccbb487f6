//! A process-backed test node: a minimal kubelet that runs the pods of one namespace as local
//! processes of the locally built binaries, for end-to-end tests. Not shipped.
//!
//! - The image is ignored; `PATH` starts with the directory of the built `pretrain` binary.
//! - Pod `<job>-<i>` gets IP 127.0.0.(10+i); each pod runs in a private mount namespace
//!   (`unshare --mount`) where `/etc/hosts` maps every `<job>-<k>.<job>.<ns>.svc` name to its
//!   IP, as cluster DNS would, ConfigMap volumes are bind-mounted from files written from the
//!   API, PersistentVolumeClaims from the host directories given per claim name, and the
//!   container's `terminationMessagePath` from a per-pod file.
//! - Environment: literal values and the downward-API fields the operator uses
//!   (`metadata.name`, `metadata.namespace`, `status.podIP`).
//! - Status: `Running` with the pod IP when started; on exit `Succeeded`/`Failed` with the
//!   container's exit code and termination message (or, with `FallbackToLogsOnError`, the log
//!   tail), as a kubelet reports them.
//! - It registers Node `test-node` and binds each pod to it, so deletion is graceful as with a
//!   real kubelet: a deleted pod's process gets SIGTERM, SIGKILL after the grace period, and
//!   the pod object goes away only once the process has exited.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// The Node the pods are bound to.
const NODE: &str = "test-node";

/// A running test node; stops every process it started when dropped.
pub struct Kubelet {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

struct Proc {
    pod: String,
    child: Child,
    dir: PathBuf,
    term_file: PathBuf,
    fallback_to_logs: bool,
    /// When SIGTERM was sent (the pod was deleted), with the grace period.
    stopping: Option<(Instant, Duration)>,
}

/// Mount points must exist on the host; they stay empty there (mounts are private).
fn ensure_mount_point(target: &Path, is_file: bool) {
    if is_file {
        if !target.exists() {
            if let Some(p) = target.parent() {
                let _ = std::fs::create_dir_all(p);
            }
            let _ = std::fs::File::create(target);
        }
    } else {
        let _ = std::fs::create_dir_all(target);
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Kubelet {
    /// Starts serving the pods of `ns`; `claims` maps PVC names to host directories, `bin` is
    /// the directory of the built binaries, `work` where pod directories go.
    pub fn start(
        client: Client,
        ns: &str,
        claims: HashMap<String, PathBuf>,
        bin: PathBuf,
        work: PathBuf,
    ) -> Kubelet {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let ns = ns.to_string();
        let task = tokio::spawn(async move {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE},
                "status": {"capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                           "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"}}
            }))
            .expect("node");
            let _ = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
                .create(&PostParams::default(), &node)
                .await;
            let mut procs: HashMap<String, Proc> = HashMap::new(); // by pod uid
            let mut done: Vec<String> = Vec::new(); // uids that ran
            while !flag.load(Ordering::SeqCst) {
                let list = match pods.list(&ListParams::default()).await {
                    Ok(l) => l.items,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let live: BTreeMap<String, &Pod> = list
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter_map(|p| p.uid().map(|u| (u, p)))
                    .collect();
                // Pods being deleted whose process is gone (or never started): remove them.
                for p in list
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_some())
                {
                    let uid = p.uid().unwrap_or_default();
                    if !procs.contains_key(&uid) {
                        let _ = pods
                            .delete(&p.name_any(), &DeleteParams::default().grace_period(0))
                            .await;
                    }
                }
                // Start new pods.
                for (uid, pod) in &live {
                    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                    let pending = matches!(phase, None | Some("Pending"));
                    if procs.contains_key(uid) || done.contains(uid) || !pending {
                        continue;
                    }
                    let binding = json!({"apiVersion": "v1", "kind": "Binding",
                        "metadata": {"name": pod.name_any()},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}});
                    let bound: Result<serde_json::Value, _> = pods
                        .create_subresource(
                            "binding",
                            &pod.name_any(),
                            &PostParams::default(),
                            &binding,
                        )
                        .await;
                    if bound.is_err()
                        && pod
                            .spec
                            .as_ref()
                            .and_then(|s| s.node_name.as_ref())
                            .is_none()
                    {
                        continue; // retried next round
                    }
                    match start_pod(&cms, pod, &ns, &claims, &bin, &work).await {
                        Ok(p) => {
                            let ip = pod_ip(pod);
                            let status = json!({"status": {
                                "phase": "Running", "podIP": ip, "hostIP": "127.0.0.1",
                                "containerStatuses": [{"name": "pretrain", "image": "local", "imageID": "",
                                    "ready": true, "restartCount": 0, "started": true,
                                    "state": {"running": {}}}]}});
                            let _ = pods
                                .patch_status(
                                    &p.pod,
                                    &PatchParams::default(),
                                    &Patch::Merge(&status),
                                )
                                .await;
                            procs.insert(uid.clone(), p);
                        }
                        Err(e) => panic!("test node cannot start pod {}: {e}", pod.name_any()),
                    }
                }
                // Stop processes of deleted pods.
                for (uid, p) in procs.iter_mut() {
                    if !live.contains_key(uid) && p.stopping.is_none() {
                        let _ = Command::new("kill")
                            .args(["-TERM", &p.child.id().to_string()])
                            .status();
                        let grace = list
                            .iter()
                            .find(|x| x.uid().as_deref() == Some(uid))
                            .and_then(|x| x.spec.as_ref())
                            .and_then(|s| s.termination_grace_period_seconds)
                            .unwrap_or(30);
                        p.stopping = Some((Instant::now(), Duration::from_secs(grace as u64)));
                    }
                    if let Some((since, grace)) = p.stopping {
                        if since.elapsed() > grace {
                            let _ = p.child.kill();
                        }
                    }
                }
                // Report exits.
                let mut finished = Vec::new();
                for (uid, p) in procs.iter_mut() {
                    let Ok(Some(st)) = p.child.try_wait() else {
                        continue;
                    };
                    finished.push(uid.clone());
                    if p.stopping.is_some() {
                        // Deleted: the process has exited, so the pod object may go.
                        let _ = pods
                            .delete(&p.pod, &DeleteParams::default().grace_period(0))
                            .await;
                        continue;
                    }
                    use std::os::unix::process::ExitStatusExt;
                    let code = st.code().or(st.signal().map(|s| 128 + s)).unwrap_or(1);
                    let mut message = std::fs::read_to_string(&p.term_file).unwrap_or_default();
                    if message.trim().is_empty() && code != 0 && p.fallback_to_logs {
                        let log = std::fs::read_to_string(p.dir.join("log")).unwrap_or_default();
                        let lines: Vec<&str> = log.lines().collect();
                        message = lines[lines.len().saturating_sub(20)..].join("\n");
                    }
                    let status = json!({"status": {
                        "phase": if code == 0 { "Succeeded" } else { "Failed" },
                        "containerStatuses": [{"name": "pretrain", "image": "local", "imageID": "",
                            "ready": false, "restartCount": 0,
                            "state": {"terminated": {"exitCode": code,
                                "reason": if code == 0 { "Completed" } else { "Error" },
                                "message": message}}}]}});
                    let _ = pods
                        .patch_status(&p.pod, &PatchParams::default(), &Patch::Merge(&status))
                        .await;
                }
                for uid in finished {
                    procs.remove(&uid);
                    done.push(uid);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for p in procs.values_mut() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        });
        Kubelet {
            stop,
            task: Some(task),
        }
    }

    /// Stops the node and every process it runs.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// `<job>-<i>` → i.
fn pod_index(pod: &Pod) -> usize {
    pod.spec
        .as_ref()
        .and_then(|s| s.hostname.as_deref())
        .and_then(|h| h.rsplit('-').next())
        .and_then(|i| i.parse().ok())
        .unwrap_or(0)
}

fn pod_ip(pod: &Pod) -> String {
    format!("127.0.0.{}", 10 + pod_index(pod))
}

async fn start_pod(
    cms: &Api<ConfigMap>,
    pod: &Pod,
    ns: &str,
    claims: &HashMap<String, PathBuf>,
    bin: &Path,
    work: &Path,
) -> Result<Proc, String> {
    let name = pod.name_any();
    let spec = pod.spec.as_ref().ok_or("no spec")?;
    let c = spec.containers.first().ok_or("no container")?;
    let dir = work.join(format!("{name}-{}", pod.uid().unwrap_or_default()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // /etc/hosts: the host's plus every pod of the job under its cluster DNS names.
    let mut hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    if let Some(sub) = spec.subdomain.as_deref() {
        for k in 0..32 {
            let host = format!("{sub}-{k}.{sub}.{ns}.svc");
            hosts.push_str(&format!("127.0.0.{} {host} {host}.cluster.local\n", 10 + k));
        }
    }
    std::fs::write(dir.join("hosts"), hosts).map_err(|e| e.to_string())?;
    // Volumes → host paths.
    let mut sources: HashMap<String, PathBuf> = HashMap::new();
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            let data = cms
                .get(&cm.name)
                .await
                .map_err(|e| format!("configmap {}: {e}", cm.name))?
                .data
                .unwrap_or_default();
            let d = dir.join(format!("cm-{}", v.name));
            std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
            for (k, val) in data {
                std::fs::write(d.join(k), val).map_err(|e| e.to_string())?;
            }
            sources.insert(v.name.clone(), d);
        } else if let Some(pvc) = &v.persistent_volume_claim {
            let d = claims
                .get(&pvc.claim_name)
                .ok_or(format!("no host directory for claim {}", pvc.claim_name))?;
            sources.insert(v.name.clone(), d.clone());
        } else if let Some(hp) = &v.host_path {
            sources.insert(v.name.clone(), PathBuf::from(&hp.path));
        }
    }
    let term_path = c
        .termination_message_path
        .clone()
        .unwrap_or("/dev/termination-log".into());
    let term_file = dir.join("termination-log");
    std::fs::write(&term_file, "").map_err(|e| e.to_string())?;
    let mut mounts: Vec<(PathBuf, PathBuf, bool)> = vec![
        (dir.join("hosts"), "/etc/hosts".into(), true),
        (term_file.clone(), PathBuf::from(&term_path), true),
    ];
    for m in c.volume_mounts.iter().flatten() {
        if let Some(src) = sources.get(&m.name) {
            mounts.push((src.clone(), PathBuf::from(&m.mount_path), false));
        }
    }
    let mut script = String::new();
    for (src, target, is_file) in &mounts {
        ensure_mount_point(target, *is_file);
        script.push_str(&format!(
            "mount --bind {} {} && ",
            shell_quote(&src.to_string_lossy()),
            shell_quote(&target.to_string_lossy())
        ));
    }
    script.push_str("exec \"$@\"");
    // Environment.
    let ip = pod_ip(pod);
    let mut env: Vec<(String, String)> = Vec::new();
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("metadata.name") => name.clone(),
                Some("metadata.namespace") => ns.to_string(),
                Some("status.podIP") => ip.clone(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        env.push((e.name.clone(), value));
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = std::fs::File::create(dir.join("log")).map_err(|e| e.to_string())?;
    let argv: Vec<String> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .cloned()
        .collect();
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(&script)
        .arg("sh")
        .args(&argv)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &dir)
        .envs(env)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("unshare: {e}"))?;
    Ok(Proc {
        pod: name,
        child,
        dir,
        term_file,
        fallback_to_logs: c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError"),
        stopping: None,
    })
}
