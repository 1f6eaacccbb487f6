//! What the state machine needs to know about a pod, extracted once from the API object, and
//! the runtime's termination message.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use crate::resources::{kueue, CONTAINER, LABEL_ATTEMPT, LABEL_RANK};

use pretrain_contract::progress::{ProgressReport, PATH};
/// The runtime's termination message (the contract crate's type): one JSON object the
/// launcher writes to `$PRETRAIN_TERMINATION_LOG` before it exits; any other text (the log
/// tail Kubernetes substitutes with `FallbackToLogsOnError`) is kept as `message`.
pub use pretrain_contract::termination::TerminationMessage;

/// Reads node 0's progress report (`GET /progress` on `ip:port`), within 2 s; `None` when the
/// launcher does not answer with one.
pub async fn fetch_progress(ip: &str, port: u16) -> Option<ProgressReport> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let read = async {
        let mut s = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
        let request = format!("GET {PATH} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        s.take(64 << 10).read_to_end(&mut answer).await.ok()?;
        if !answer.starts_with(b"HTTP/1.1 200") {
            return None;
        }
        let body = answer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        ProgressReport::parse(&answer[body..])
    };
    tokio::time::timeout(std::time::Duration::from_secs(2), read)
        .await
        .ok()
        .flatten()
}

/// One pod of the job, as the state machine sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodView {
    /// Pod name.
    pub name: String,
    /// Pod UID (delete preconditions use it, so a stale view never deletes a newer pod).
    pub uid: Option<String>,
    /// Node rank (label).
    pub rank: u32,
    /// Attempt (label).
    pub attempt: u32,
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    pub phase: String,
    /// Set when the pod is being deleted.
    pub deleting_since: Option<Timestamp>,
    /// Exit code of the training container, once terminated.
    pub exit_code: Option<i32>,
    /// Container or pod reason (`Error`, `OOMKilled`, `Evicted`, ...).
    pub reason: Option<String>,
    /// Parsed termination message.
    pub termination: Option<TerminationMessage>,
    /// Node the pod ran on.
    pub node: Option<String>,
    /// When the container finished.
    pub finished_at: Option<Timestamp>,
    /// The pod's IP, once it has one.
    pub ip: Option<String>,
    /// Kueue's admission gate is on it: queued, not yet admitted.
    pub queued: bool,
    /// Kueue stopped it (preemption, eviction): the reason of its `TerminationTarget` condition.
    pub kueue_stop: Option<String>,
}

impl PodView {
    /// Extracts the view; None for pods without the operator's labels.
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let labels = pod.metadata.labels.as_ref()?;
        let rank = labels.get(LABEL_RANK)?.parse().ok()?;
        let attempt = labels.get(LABEL_ATTEMPT)?.parse().ok()?;
        let status = pod.status.as_ref();
        let terminated = status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER))
            .and_then(|c| c.state.as_ref().and_then(|s| s.terminated.clone()));
        Some(PodView {
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone(),
            rank,
            attempt,
            phase: status
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Pending".into()),
            deleting_since: pod.metadata.deletion_timestamp.as_ref().map(|t| t.0),
            exit_code: terminated.as_ref().map(|t| t.exit_code),
            reason: terminated
                .as_ref()
                .and_then(|t| t.reason.clone())
                .or_else(|| status.and_then(|s| s.reason.clone())),
            termination: terminated
                .as_ref()
                .and_then(|t| t.message.as_deref())
                .or_else(|| status.and_then(|s| s.message.as_deref()))
                .map(TerminationMessage::parse),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            finished_at: terminated
                .as_ref()
                .and_then(|t| t.finished_at.as_ref().map(|t| t.0)),
            ip: status.and_then(|s| s.pod_ip.clone()),
            queued: pod
                .spec
                .as_ref()
                .and_then(|s| s.scheduling_gates.as_ref())
                .is_some_and(|g| g.iter().any(|g| g.name == kueue::ADMISSION_GATE)),
            kueue_stop: status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == kueue::STOP_CONDITION))
                .filter(|c| c.status == "True")
                .map(|c| c.reason.clone().unwrap_or_else(|| "Stopped".into())),
        })
    }

    /// Whether the pod still runs or may run (not finished, not being deleted).
    pub fn is_live(&self) -> bool {
        self.deleting_since.is_none() && !matches!(self.phase.as_str(), "Succeeded" | "Failed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_message_is_structured_and_text_is_kept() {
        let m = TerminationMessage::parse(
            r#"{"reason":"PeerLost","message":"rank 3 closed","lastCheckpointStep":1200,
                "lastCheckpointPath":"/ckpt/iteration_00001200"}"#,
        );
        assert_eq!(m.reason.as_deref(), Some("PeerLost"));
        assert_eq!(m.last_checkpoint_step, Some(1200));
        let m = TerminationMessage::parse("error: config.yaml:3: unknown key `foo`\n");
        assert_eq!(
            m.message.as_deref(),
            Some("error: config.yaml:3: unknown key `foo`")
        );
        assert_eq!(m.last_checkpoint_step, None);
    }

    #[test]
    fn view_reads_labels_exit_code_and_message() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "run1-1", "uid": "u1",
                         "labels": {"pretrain.io/node-rank": "1", "pretrain.io/attempt": "2"}},
            "spec": {"containers": [{"name": "pretrain"}], "nodeName": "n7"},
            "status": {"phase": "Failed", "containerStatuses": [{
                "name": "pretrain", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 2, "reason": "Error",
                          "message": "{\"reason\":\"ConfigInvalid\"}"}}}]}
        }))
        .expect("pod parses");
        let v = PodView::from_pod(&pod).expect("view");
        assert_eq!((v.rank, v.attempt, v.exit_code), (1, 2, Some(2)));
        assert_eq!(v.node.as_deref(), Some("n7"));
        assert_eq!(
            v.termination.as_ref().expect("msg").reason.as_deref(),
            Some("ConfigInvalid")
        );
        assert!(!v.is_live());
        assert!(!v.queued && v.kueue_stop.is_none());
    }

    #[test]
    fn view_sees_kueue_s_gate_and_its_stop() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "run1-0",
                         "labels": {"pretrain.io/node-rank": "0", "pretrain.io/attempt": "1"}},
            "spec": {"containers": [{"name": "pretrain"}],
                     "schedulingGates": [{"name": "kueue.x-k8s.io/admission"}]},
            "status": {"phase": "Pending"}
        }))
        .expect("pod parses");
        assert!(PodView::from_pod(&pod).expect("view").queued);
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "run1-0",
                         "labels": {"pretrain.io/node-rank": "0", "pretrain.io/attempt": "1"}},
            "spec": {"containers": [{"name": "pretrain"}]},
            "status": {"phase": "Running", "conditions": [{"type": "TerminationTarget",
                "status": "True", "reason": "WorkloadEvicted", "message": "Preempted"}]}
        }))
        .expect("pod parses");
        let v = PodView::from_pod(&pod).expect("view");
        assert_eq!(v.kueue_stop.as_deref(), Some("WorkloadEvicted"));
        assert!(!v.queued);
    }
}
