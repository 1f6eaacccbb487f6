//! The termination message (ARCHITECTURE.md, "Termination message"): each worker leaves a
//! [`WorkerStatus`] file for its launcher ([`crate::env::STATUS_FILE`]); the launcher writes one
//! [`TerminationMessage`] to [`crate::env::TERMINATION_LOG`]; the operator reads it back with
//! [`TerminationMessage::parse`].

use serde::{Deserialize, Serialize};

/// What a worker reports when it exits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// Its exit code.
    pub code: i32,
    /// Its error, or a summary.
    pub message: String,
    /// Step of the newest committed checkpoint, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_step: Option<u64>,
    /// Its directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_path: Option<String>,
}

/// The termination message: one JSON object. Every field is optional to a reader.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminationMessage {
    /// CamelCase reason ([`crate::exit::reason`], or the launcher's own such as `PeerLost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// One line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Step of the newest committed checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_step: Option<u64>,
    /// Its directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_path: Option<String>,
    /// In-place restarts of the workers the launcher did (`--max-restarts`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u32>,
    /// The log file of the failing worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// Longest message kept from text that is not JSON (the kubelet caps termination messages at
/// 4 KiB anyway).
pub const MAX_MESSAGE: usize = 1024;

impl TerminationMessage {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Parses a termination message: JSON if it is JSON; any other text (the log tail
    /// Kubernetes substitutes with `FallbackToLogsOnError`) is kept as the message, its last
    /// [`MAX_MESSAGE`] characters.
    pub fn parse(text: &str) -> TerminationMessage {
        let t = text.trim();
        if let Ok(m) = serde_json::from_str::<TerminationMessage>(t) {
            return m;
        }
        let chars = t.chars().count();
        let mut msg: String = t.chars().skip(chars.saturating_sub(MAX_MESSAGE)).collect();
        if msg.len() < t.len() {
            msg.insert_str(0, "...");
        }
        TerminationMessage {
            message: (!msg.is_empty()).then_some(msg),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_omits_what_is_unknown() {
        let m = TerminationMessage {
            reason: Some("PeerLost".into()),
            message: Some("rank 5 closed the connection at step 1234".into()),
            last_checkpoint_step: Some(1200),
            last_checkpoint_path: None,
            restarts: None,
            log: None,
        };
        let json = m.to_json();
        assert_eq!(
            json,
            r#"{"reason":"PeerLost","message":"rank 5 closed the connection at step 1234","lastCheckpointStep":1200}"#
        );
        assert_eq!(TerminationMessage::parse(&json), m);
    }

    #[test]
    fn plain_text_is_kept_as_the_message_tail() {
        let m = TerminationMessage::parse("  panicked at step 3\n");
        assert_eq!(m.message.as_deref(), Some("panicked at step 3"));
        assert_eq!(m.reason, None);
        let long = "x".repeat(MAX_MESSAGE + 10) + "end";
        let m = TerminationMessage::parse(&long);
        let msg = m.message.expect("kept");
        assert!(msg.starts_with("...") && msg.ends_with("end"), "{msg}");
        assert_eq!(msg.chars().count(), MAX_MESSAGE + 3);
        assert_eq!(TerminationMessage::parse("").message, None);
    }

    #[test]
    fn worker_status_fields_are_camel_case() {
        let s = WorkerStatus {
            code: 2,
            message: "bad".into(),
            last_checkpoint_step: Some(4),
            last_checkpoint_path: Some("/c/iteration_00000004".into()),
        };
        let json = serde_json::to_string(&s).expect("serializes");
        assert!(json.contains(r#""lastCheckpointStep":4"#), "{json}");
        let back: WorkerStatus = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, s);
    }
}
