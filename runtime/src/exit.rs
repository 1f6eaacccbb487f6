//! Process exit codes: the runtime's half of the contract with launchers and the operator
//! (documented in ARCHITECTURE.md, "Exit codes"). A supervisor retries only retryable codes.

use crate::data;

/// Success.
pub const OK: i32 = 0;
/// An unexpected or transient failure (I/O, a lost peer, a crash): retrying may help.
pub const RETRYABLE: i32 = 1;
/// Invalid command line or configuration: retrying the same job cannot help.
pub const CONFIG_INVALID: i32 = 2;
/// Invalid input data or checkpoint: retrying the same job cannot help.
pub const DATA_INVALID: i32 = 3;
/// The loss or gradient norm became NaN/Inf: the weights were not updated and the last
/// checkpoint is intact, but the same job would diverge again.
pub const DIVERGED: i32 = 4;
/// Stopped by SIGTERM/SIGINT after saving a final-state checkpoint at the last completed step:
/// nothing was lost, restart with `resume_training` to continue.
pub const STOPPED: i32 = 10;

/// Whether a supervisor should restart a worker that exited with `code`.
pub fn is_retryable(code: i32) -> bool {
    !matches!(code, OK | CONFIG_INVALID | DATA_INVALID | DIVERGED)
}

/// The exit code for a data-pipeline error.
pub fn for_data_error(e: &data::Error) -> i32 {
    match e {
        data::Error::Io { .. } => RETRYABLE,
        data::Error::InvalidArgument(_) | data::Error::Tokenizer { .. } => CONFIG_INVALID,
        data::Error::Corrupt { .. }
        | data::Error::BadLine { .. }
        | data::Error::TokenOutOfRange { .. } => DATA_INVALID,
    }
}

/// The exit code for a rendezvous or collective error: a peer of another job is a
/// configuration error; lost peers, timeouts and socket errors may pass on a retry.
pub fn for_dist_error(e: &crate::dist::Error) -> i32 {
    match e {
        crate::dist::Error::Handshake(_) => CONFIG_INVALID,
        _ => RETRYABLE,
    }
}

/// The exit code for a training error.
pub fn for_train_error(e: &crate::train::Error) -> i32 {
    use crate::train::Error as E;
    match e {
        E::Data(d) => for_data_error(d),
        E::Model(crate::model::Error::Config(_)) => CONFIG_INVALID,
        E::Model(crate::model::Error::Dist(d)) | E::Dist(d) => for_dist_error(d),
        E::Model(crate::model::Error::Io { .. }) => RETRYABLE,
        E::Model(_) => DATA_INVALID,
        E::Checkpoint(crate::checkpoint::Error::Io { .. }) => RETRYABLE,
        E::Checkpoint(_) => DATA_INVALID,
        E::Metrics(_) => RETRYABLE,
        E::Unsupported(_) => CONFIG_INVALID,
        E::Diverged { .. } | E::Unhealthy { .. } => DIVERGED,
        E::Stopped { .. } => STOPPED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unexpected_failures_are_retryable() {
        assert!(!is_retryable(OK));
        assert!(!is_retryable(CONFIG_INVALID));
        assert!(!is_retryable(DATA_INVALID));
        assert!(!is_retryable(DIVERGED));
        assert!(is_retryable(RETRYABLE));
        assert!(is_retryable(STOPPED));
        assert!(is_retryable(137));
    }
}
