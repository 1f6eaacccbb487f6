//! Status conditions (`type/status/reason/message`, `metav1.Condition`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;

use super::time;
use crate::crd::PretrainJobStatus;

/// Sets condition `type_`, keeping `lastTransitionTime` when its status does not change.
pub fn set_condition(
    st: &mut PretrainJobStatus,
    type_: &str,
    on: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let status = if on { "True" } else { "False" }.to_string();
    // Never an empty message: the 1.20 test API server (json-iterator) reads "" as null and
    // rejects it against the string schema.
    let message = if message.is_empty() { reason } else { message };
    let generation = st.observed_generation;
    if let Some(c) = st.conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = time(now);
        }
        c.status = status;
        c.reason = reason.into();
        c.message = message.into();
        c.observed_generation = generation;
        return;
    }
    if !on {
        return; // an absent condition already reads as False
    }
    st.conditions.push(Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: message.into(),
        last_transition_time: time(now),
        observed_generation: generation,
    });
}
