//! The test node's state and its sync round: register the Nodes, then, every 100 ms, remove
//! pods whose deletion is complete, bind and start pending pods, stop deleted ones, probe
//! readiness and report exits.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node as NodeObject, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::{http_ok, pod, ready_condition, report, NODES};

/// A pod's running process, by pod UID.
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

pub(super) struct Node {
    client: Client,
    pods: Api<Pod>,
    ns: String,
    claims: HashMap<String, PathBuf>,
    bin: PathBuf,
    work: PathBuf,
    procs: HashMap<String, Proc>,
    /// UIDs of pods that ran (or could not start): never started again.
    done: Vec<String>,
}

impl Node {
    pub(super) fn new(
        client: Client,
        ns: &str,
        claims: HashMap<String, PathBuf>,
        bin: PathBuf,
        work: PathBuf,
    ) -> Node {
        Node {
            pods: Api::namespaced(client.clone(), ns),
            client,
            ns: ns.to_string(),
            claims,
            bin,
            work,
            procs: HashMap::new(),
            done: Vec::new(),
        }
    }

    /// Registers the Nodes (an existing one is kept), with devices for Ascend and NVIDIA
    /// manifests too (their pods are only scheduled here).
    pub(super) async fn register(&self) {
        let capacity = json!({"cpu": "64", "memory": "256Gi", "pods": "110",
                              "huawei.com/Ascend910": "16", "nvidia.com/gpu": "8"});
        for name in NODES {
            let node: NodeObject = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                "status": {"capacity": capacity, "allocatable": capacity}
            }))
            .expect("node");
            let _ = Api::<NodeObject>::all(self.client.clone())
                .create(&PostParams::default(), &node)
                .await;
        }
    }

    /// One round over the namespace's pods.
    pub(super) async fn sync(&mut self) {
        let list = match self.pods.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            }
        };
        let live: BTreeMap<String, &Pod> = list
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.uid().map(|u| (u, p)))
            .collect();
        self.remove_deleted(&list).await;
        for (uid, pod) in &live {
            self.start_pending(uid, pod).await;
        }
        self.stop_deleted(&list, &live);
        self.probe().await;
        self.report_exits().await;
    }

    /// Pods being deleted whose process is gone (or never started): removes them.
    async fn remove_deleted(&self, list: &[Pod]) {
        for p in list
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
        {
            if !self.procs.contains_key(&p.uid().unwrap_or_default()) {
                let _ = self
                    .pods
                    .delete(&p.name_any(), &DeleteParams::default().grace_period(0))
                    .await;
            }
        }
    }

    /// Binds a pending pod to the first Node that admits it and starts its process; one no
    /// Node admits stays Pending, one that cannot start stays Pending with the reason.
    async fn start_pending(&mut self, uid: &str, pod: &Pod) {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let pending = matches!(phase, None | Some("Pending"));
        if self.procs.contains_key(uid) || self.done.iter().any(|d| d == uid) || !pending {
            return;
        }
        let Some(node) = NODES.into_iter().find(|n| pod::admits(pod, n)) else {
            return; // unschedulable: stays Pending
        };
        if !self.bind(pod, node).await {
            return; // retried next round
        }
        match pod::start(
            &self.client,
            pod,
            &self.ns,
            &self.claims,
            &self.bin,
            &self.work,
        )
        .await
        {
            Ok(p) => {
                let ready = p.probe.is_none();
                let status = json!({"status": {
                    "phase": "Running", "podIP": pod::pod_ip(pod), "hostIP": "127.0.0.1",
                    "conditions": [ready_condition(ready)],
                    "containerStatuses": [{"name": p.container, "image": "local", "imageID": "",
                        "ready": ready, "restartCount": 0, "started": true,
                        "state": {"running": {}}}]}});
                report(&self.pods, &pod.name_any(), &status).await;
                let fallback_to_logs = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.termination_message_policy.as_deref())
                    == Some("FallbackToLogsOnError");
                let proc = Proc {
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
                };
                self.procs.insert(uid.to_string(), proc);
            }
            Err(e) => {
                // As a kubelet: the pod stays Pending, the reason in its status.
                eprintln!("test node cannot start pod {}: {e}", pod.name_any());
                let status = json!({"status": {"containerStatuses": [{
                    "name": "c", "image": "local", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"waiting": {
                        "reason": "CreateContainerConfigError", "message": e}}}]}});
                report(&self.pods, &pod.name_any(), &status).await;
                self.done.push(uid.to_string());
            }
        }
    }

    /// Binds the pod to `node` as the scheduler does; true when it is bound (now or before).
    async fn bind(&self, pod: &Pod, node: &str) -> bool {
        let binding = json!({"apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": pod.name_any()},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
        let bound: Result<serde_json::Value, _> = self
            .pods
            .create_subresource("binding", &pod.name_any(), &PostParams::default(), &binding)
            .await;
        bound.is_ok()
            || pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some()
    }

    /// Processes of deleted pods: SIGTERM, then SIGKILL after the pod's grace period.
    fn stop_deleted(&mut self, list: &[Pod], live: &BTreeMap<String, &Pod>) {
        for (uid, p) in self.procs.iter_mut() {
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
    }

    /// Readiness probes, every 500 ms while running; a change is reported.
    async fn probe(&mut self) {
        for p in self.procs.values_mut() {
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
                report(&self.pods, &p.pod, &status).await;
            }
        }
    }

    /// Exited processes: a deleted pod's object goes; any other gets its final status.
    async fn report_exits(&mut self) {
        let mut finished = Vec::new();
        for (uid, p) in self.procs.iter_mut() {
            let Ok(Some(st)) = p.child.try_wait() else {
                continue;
            };
            finished.push(uid.clone());
            if p.stopping.is_some() {
                // Deleted: the process has exited, so the pod object may go.
                let _ = self
                    .pods
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
            report(&self.pods, &p.pod, &status).await;
        }
        for uid in finished {
            self.procs.remove(&uid);
            self.done.push(uid);
        }
    }

    /// Kills every process and waits for it (the test node stops).
    pub(super) fn kill_all(&mut self) {
        for p in self.procs.values_mut() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}
