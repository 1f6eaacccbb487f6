//! Names of the environment variables of the launch contract (ARCHITECTURE.md, "Launch
//! contract"). The operator sets the pod's, the launcher adds each worker's, and in the runtime
//! only the binary's environment module reads them.

// Set by the operator on every pod (the launcher's defaults).

/// DNS name or address of node 0, which hosts the rendezvous store.
pub const MASTER_ADDR: &str = "MASTER_ADDR";
/// Port of the rendezvous store.
pub const MASTER_PORT: &str = "MASTER_PORT";
/// Number of nodes (pods).
pub const NNODES: &str = "NNODES";
/// This node's index, 0-based.
pub const NODE_RANK: &str = "NODE_RANK";
/// Workers on this node.
pub const LOCAL_WORLD_SIZE: &str = "LOCAL_WORLD_SIZE";
/// Workers over all nodes.
pub const WORLD_SIZE: &str = "WORLD_SIZE";
/// The job's name: peers of another job are refused.
pub const JOB_ID: &str = "PRETRAIN_JOB_ID";
/// Path of a file holding the job's secret store token (the operator mounts one Secret per
/// job there); every process of a job must hold the same token.
pub const STORE_TOKEN_FILE: &str = "PRETRAIN_STORE_TOKEN_FILE";
/// The job's secret store token itself (the launcher hands it to its workers this way); wins
/// over [`STORE_TOKEN_FILE`].
pub const STORE_TOKEN: &str = "PRETRAIN_STORE_TOKEN";
/// The address node 0 binds its store to (default: `MASTER_ADDR`); the operator sets the
/// pod's IP.
pub const MASTER_BIND: &str = "PRETRAIN_MASTER_BIND";
/// The port on which node 0's launcher serves `GET /progress` (the operator sets
/// `masterPort + 1`); unset: no progress endpoint.
pub const PROGRESS_PORT: &str = "PRETRAIN_PROGRESS_PORT";
/// The launcher's `--max-restarts` when the flag is not given: in-place restarts of the
/// workers of every node after a retryable failure (the operator sets
/// `failurePolicy.inPlaceRestarts`).
pub const MAX_RESTARTS: &str = "PRETRAIN_MAX_RESTARTS";
/// How many attempts' logs node 0's launcher keeps when its `--log-dir` is named
/// `attempt-<n>`: it removes the sibling `attempt-<k>` directories with `k <= n - keep`.
pub const LOG_KEEP: &str = "PRETRAIN_LOG_KEEP";
/// The job's UID.
pub const JOB_UID: &str = "PRETRAIN_JOB_UID";
/// 1 for the first gang, +1 for each gang restart: keeps rendezvous keys of attempts apart.
pub const ATTEMPT: &str = "PRETRAIN_ATTEMPT";
/// Path of the training config.
pub const CONFIG: &str = "PRETRAIN_CONFIG";
/// `true`: resume from the newest complete checkpoint (a fresh start when there is none).
pub const RESUME: &str = "PRETRAIN_RESUME";
/// The checkpoint directory, in place of the config's, for saving and resuming.
pub const CHECKPOINT_DIR: &str = "PRETRAIN_CHECKPOINT_DIR";
/// Where the launcher writes the termination message.
pub const TERMINATION_LOG: &str = "PRETRAIN_TERMINATION_LOG";
/// The launcher's `--log-dir` (worker logs and status files).
pub const LOG_DIR: &str = "PRETRAIN_LOG_DIR";
/// Downward API: the pod's name.
pub const POD_NAME: &str = "POD_NAME";
/// Downward API: the pod's namespace.
pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
/// Downward API: the pod's IP.
pub const POD_IP: &str = "POD_IP";
/// Ascend only: the rank table file.
pub const RANK_TABLE_FILE: &str = "RANK_TABLE_FILE";
/// Ascend only: the devices of this pod.
pub const ASCEND_VISIBLE_DEVICES: &str = "ASCEND_VISIBLE_DEVICES";
/// Ascend only: the logical super pod of this pod (HCCL builds its HCCS network from it on A3
/// super pods); 0 without `accelerator.superPodBlock`.
pub const HCCL_LOGIC_SUPERPOD_ID: &str = "HCCL_LOGIC_SUPERPOD_ID";

// Added by the launcher for each worker.

/// Global rank of the worker.
pub const RANK: &str = "RANK";
/// Rank of the worker on its node.
pub const LOCAL_RANK: &str = "LOCAL_RANK";
/// The launcher's restart count within the attempt.
pub const RESTART: &str = "PRETRAIN_RESTART";
/// Seconds rendezvous may take.
pub const CLUSTER_TIMEOUT: &str = "PRETRAIN_CLUSTER_TIMEOUT";
/// `1`: the launcher hosts the store, rank 0 must not.
pub const STORE_HOSTED: &str = "PRETRAIN_STORE_HOSTED";
/// Where the worker leaves its [`crate::termination::WorkerStatus`].
pub const STATUS_FILE: &str = "PRETRAIN_STATUS_FILE";
/// Where the worker writes its heartbeat (every second: a beat counter, the last completed
/// step and a progress counter) for the launcher's hang detection.
pub const HEARTBEAT_FILE: &str = "PRETRAIN_HEARTBEAT_FILE";
/// The launcher's `--heartbeat-timeout` when the flag is not given (seconds).
pub const HEARTBEAT_TIMEOUT: &str = "PRETRAIN_HEARTBEAT_TIMEOUT";
/// The launcher's `--hang-timeout` when the flag is not given (seconds; 0 = automatic).
pub const HANG_TIMEOUT: &str = "PRETRAIN_HANG_TIMEOUT";
/// Compute threads per worker (cores / local workers unless set).
pub const RAYON_NUM_THREADS: &str = "RAYON_NUM_THREADS";

// Worker tuning, optional.

/// Seconds every collective wait may take (default 600).
pub const COMM_TIMEOUT: &str = "PRETRAIN_COMM_TIMEOUT";
/// Seconds from a stop signal to a forced exit without a final checkpoint (default 300).
pub const STOP_DEADLINE: &str = "PRETRAIN_STOP_DEADLINE";
/// Peak FLOP/s per device assumed for MFU.
pub const PEAK_FLOPS: &str = "PRETRAIN_PEAK_FLOPS";
