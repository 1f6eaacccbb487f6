//! Process exit codes (ARCHITECTURE.md, "Exit codes"). A supervisor retries only the retryable
//! ones.

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
/// The launcher stopped a gang with a hung worker (no heartbeat, or no progress within the
/// hang timeout): retrying from the last checkpoint may help.
pub const HUNG: i32 = 11;

/// Whether a supervisor should restart a worker that exited with `code`.
pub fn is_retryable(code: i32) -> bool {
    !matches!(code, OK | CONFIG_INVALID | DATA_INVALID | DIVERGED)
}

/// The termination message's `reason` for an exit code.
pub fn reason(code: i32) -> &'static str {
    match code {
        OK => "Succeeded",
        CONFIG_INVALID => "ConfigInvalid",
        DATA_INVALID => "DataInvalid",
        DIVERGED => "Diverged",
        STOPPED => "Stopped",
        HUNG => "Hung",
        c if c > 128 => "WorkerKilled",
        _ => "WorkerFailed",
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
        assert!(is_retryable(HUNG));
        assert!(is_retryable(137));
    }

    #[test]
    fn reasons_name_the_codes() {
        assert_eq!(reason(OK), "Succeeded");
        assert_eq!(reason(CONFIG_INVALID), "ConfigInvalid");
        assert_eq!(reason(STOPPED), "Stopped");
        assert_eq!(reason(HUNG), "Hung");
        assert_eq!(reason(137), "WorkerKilled");
        assert_eq!(reason(RETRYABLE), "WorkerFailed");
    }
}
