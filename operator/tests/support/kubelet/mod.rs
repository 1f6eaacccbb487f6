//! A process-backed test node: a minimal kubelet that runs the pods of one namespace as local
//! processes of the locally built binaries, for end-to-end tests. Not shipped.
//!
//! - Images: `pretrain` and `pretrain-operator` (any registry and tag) are the built binaries
//!   with the Dockerfile's ENTRYPOINT, CMD and USER 65532, in a working directory that user
//!   cannot write; `command`/`args` replace them as in Kubernetes. The security contexts'
//!   `runAsUser`/`runAsGroup`/`runAsNonRoot`, `fsGroup` (as a supplementary group, and as the
//!   group owning claim directories) and `readOnlyRootFilesystem` are honoured.
//! - Pod `<job>-<i>` gets IP 127.0.0.(10+i), any other pod 127.0.0.2; each pod runs in a
//!   private mount namespace (`unshare --mount`) where `/etc/hosts` maps every
//!   `<job>-<k>.<job>.<ns>.svc` name to its IP, as cluster DNS would, ConfigMap and Secret
//!   volumes are bind-mounted from files written from the API (Secrets with their
//!   `defaultMode`), PersistentVolumeClaims from the host
//!   directories given per claim name, `emptyDir`s from fresh directories, the container's
//!   `terminationMessagePath` from a per-pod file, and a pod with a ServiceAccount gets a
//!   TokenRequest token, the API server's CA and its namespace in
//!   `/var/run/secrets/kubernetes.io/serviceaccount`.
//! - Environment: literal values, the downward-API fields the operator and the chart use
//!   (`metadata.name`, `metadata.namespace`, `status.podIP`), and `KUBERNETES_SERVICE_HOST` /
//!   `_PORT` pointing at the test API server (in-cluster config works).
//! - Status: `Running` with the pod IP when started, `Ready` once the `readinessProbe`'s
//!   HTTP GET answers 200 (at once without a probe); on exit `Succeeded`/`Failed` with the
//!   container's exit code and termination message (or, with `FallbackToLogsOnError`, the log
//!   tail), as a kubelet reports them. A pod that cannot start stays `Pending` with the reason
//!   in its container status.
//! - It registers Nodes `test-node` and `test-node-2` and binds each pod to the first one its
//!   required node affinity admits (`matchFields` on `metadata.name`, as the operator's
//!   bad-node exclusion writes it; a pod no node admits stays Pending), so deletion is graceful
//!   as with a real kubelet: a deleted pod's process gets SIGTERM, SIGKILL after the grace
//!   period, and the pod object goes away only once the process has exited.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod pod;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// The Nodes, in the order pods are bound to them: the first one a pod's required node
/// affinity admits.
const NODES: [&str; 2] = ["test-node", "test-node-2"];

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
    container: String,
    fallback_to_logs: bool,
    /// The readiness probe (port, path), the readiness last reported, and when it was probed.
    probe: Option<(u16, String)>,
    ready: bool,
    probed: Instant,
    /// When SIGTERM was sent (the pod was deleted), with the grace period.
    stopping: Option<(Instant, Duration)>,
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
            // Devices for Ascend and NVIDIA manifests too (their pods are only scheduled here).
            let capacity = json!({"cpu": "64", "memory": "256Gi", "pods": "110",
                                  "huawei.com/Ascend910": "16", "nvidia.com/gpu": "8"});
            for name in NODES {
                let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                    "status": {"capacity": capacity, "allocatable": capacity}
                }))
                .expect("node");
                let _ = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
                    .create(&PostParams::default(), &node)
                    .await;
            }
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
                    let Some(node) = NODES.into_iter().find(|n| pod::admits(pod, n)) else {
                        continue; // unschedulable: stays Pending
                    };
                    let binding = json!({"apiVersion": "v1", "kind": "Binding",
                        "metadata": {"name": pod.name_any()},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
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
                    match pod::start(&client, pod, &ns, &claims, &bin, &work).await {
                        Ok(p) => {
                            let ready = p.probe.is_none();
                            let status = json!({"status": {
                                "phase": "Running", "podIP": pod::pod_ip(pod), "hostIP": "127.0.0.1",
                                "conditions": [ready_condition(ready)],
                                "containerStatuses": [{"name": p.container, "image": "local", "imageID": "",
                                    "ready": ready, "restartCount": 0, "started": true,
                                    "state": {"running": {}}}]}});
                            report(&pods, &pod.name_any(), &status).await;
                            let fallback_to_logs = pod
                                .spec
                                .as_ref()
                                .and_then(|s| s.containers.first())
                                .and_then(|c| c.termination_message_policy.as_deref())
                                == Some("FallbackToLogsOnError");
                            procs.insert(
                                uid.clone(),
                                Proc {
                                    pod: pod.name_any(),
                                    child: p.child,
                                    dir: p.dir,
                                    term_file: p.term_file,
                                    container: p.container,
                                    fallback_to_logs,
                                    probe: p.probe,
                                    ready,
                                    probed: Instant::now(),
                                    stopping: None,
                                },
                            );
                        }
                        Err(e) => {
                            // As a kubelet: the pod stays Pending, the reason in its status.
                            eprintln!("test node cannot start pod {}: {e}", pod.name_any());
                            let status = json!({"status": {"containerStatuses": [{
                                "name": "c", "image": "local", "imageID": "", "ready": false,
                                "restartCount": 0, "state": {"waiting": {
                                    "reason": "CreateContainerConfigError", "message": e}}}]}});
                            report(&pods, &pod.name_any(), &status).await;
                            done.push(uid.clone());
                        }
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
                // Readiness probes, every 500 ms while running.
                for p in procs.values_mut() {
                    let Some((port, path)) = p.probe.clone() else {
                        continue;
                    };
                    if p.stopping.is_some() || p.probed.elapsed() < Duration::from_millis(500) {
                        continue;
                    }
                    p.probed = Instant::now();
                    let ready = http_ok(port, &path);
                    if ready != p.ready {
                        p.ready = ready;
                        let status = json!({"status": {"conditions": [ready_condition(ready)],
                            "containerStatuses": [{"name": p.container, "image": "local",
                                "imageID": "", "ready": ready, "restartCount": 0,
                                "started": true, "state": {"running": {}}}]}});
                        report(&pods, &p.pod, &status).await;
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
                        "conditions": [ready_condition(false)],
                        "containerStatuses": [{"name": p.container, "image": "local", "imageID": "",
                            "ready": false, "restartCount": 0,
                            "state": {"terminated": {"exitCode": code,
                                "reason": if code == 0 { "Completed" } else { "Error" },
                                "message": message}}}]}});
                    report(&pods, &p.pod, &status).await;
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

fn ready_condition(ready: bool) -> serde_json::Value {
    json!({"type": "Ready", "status": if ready { "True" } else { "False" }})
}

/// An HTTP GET on the pod's port (pods share the host's network) answering 200 within 300 ms.
fn http_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
    let request = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// Writes pod status as a kubelet does (a merge patch of the status subresource); a failure is
/// retried by the next report or left to the test's own timeout.
async fn report(pods: &Api<Pod>, name: &str, status: &serde_json::Value) {
    let _ = pods
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await;
}
