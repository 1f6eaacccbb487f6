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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod node;
mod pod;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use node::Node;

/// The Nodes, in the order pods are bound to them: the first one a pod's required node
/// affinity admits.
const NODES: [&str; 2] = ["test-node", "test-node-2"];

/// A running test node; stops every process it started when dropped.
pub struct Kubelet {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
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
        let mut node = Node::new(client, ns, claims, bin, work);
        let task = tokio::spawn(async move {
            node.register().await;
            while !flag.load(Ordering::SeqCst) {
                node.sync().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            node.kill_all();
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
