//! A training process's place in the job: where it sits ([`Placement`], which the binary reads
//! from the launch environment), rendezvous, its groups, its part of the model, and the gather
//! of every part to rank 0 for a checkpoint.

use std::time::Duration;

use crate::config::TrainPlan;
use crate::dist::auth::Token;
use crate::dist::store::{StoreClient, StoreServer};
use crate::dist::tcp::Mesh;
use crate::model::shard::{stage_layers, Shard};
use crate::parallel::{Groups, Topology};

use super::Error;

/// Where this process sits in the job and how it meets the others (ARCHITECTURE.md, "Launch
/// contract"): the binary fills it from the environment; [`Placement::default`] is a single
/// process.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// Global rank (`RANK`).
    pub rank: usize,
    /// Processes in the job (`WORLD_SIZE`).
    pub world_size: usize,
    /// Rank on this node (`LOCAL_RANK`).
    pub local_rank: usize,
    /// Host of the rendezvous store (`MASTER_ADDR`).
    pub master_addr: String,
    /// Its port (`MASTER_PORT`).
    pub master_port: u16,
    /// Job id (`PRETRAIN_JOB_ID`): peers of another job are refused.
    pub job_id: String,
    /// Gang attempt (`PRETRAIN_ATTEMPT`), keeps the keys of a restarted gang apart.
    pub attempt: u32,
    /// The launcher's restart count within the attempt (`PRETRAIN_RESTART`).
    pub restart: u32,
    /// How long rendezvous may take (`PRETRAIN_CLUSTER_TIMEOUT`).
    pub cluster_timeout: Duration,
    /// Whether this process hosts the store: rank 0 when no launcher does.
    pub hosts_store: bool,
    /// The address the store binds when this process hosts it (`PRETRAIN_MASTER_BIND`, else
    /// `master_addr`).
    pub master_bind: Option<String>,
    /// The job's secret (`PRETRAIN_STORE_TOKEN` or `PRETRAIN_STORE_TOKEN_FILE`): needed with
    /// more than one process.
    pub token: Option<Token>,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: 8118,
            job_id: "pretrain".into(),
            attempt: 1,
            restart: 0,
            cluster_timeout: Duration::from_secs(300),
            hosts_store: true,
            master_bind: None,
            token: None,
        }
    }
}

/// This process in the job.
pub struct Cluster {
    /// Grid position.
    pub topo: Topology,
    /// Communicators.
    pub groups: Groups,
    // Kept alive for the run: the store (rank 0 without a launcher) and the connections.
    _server: Option<StoreServer>,
    _store: Option<StoreClient>,
    _mesh: Option<Mesh>,
}

impl Cluster {
    /// Checks the placement against the plan's layout and, with more than one process, meets
    /// the other ranks (within the cluster timeout).
    pub fn join(plan: &TrainPlan, env: &Placement) -> Result<Cluster, Error> {
        if env.world_size != plan.world_size {
            return Err(Error::Unsupported(format!(
                "WORLD_SIZE is {} but parallel_config needs data_parallel {} x model_parallel {} \
                 x pipeline_stage {} = {} processes; start {} workers (pretrain launch \
                 --worker-num {}) or change parallel_config",
                env.world_size,
                plan.dp_size,
                plan.tp_size,
                plan.pp_size,
                plan.world_size,
                plan.world_size,
                plan.world_size
            )));
        }
        let topo = Topology::new(env.rank, plan.dp_size, plan.tp_size, plan.pp_size);
        if env.world_size == 1 {
            return Ok(Cluster {
                topo,
                groups: Groups::solo(),
                _server: None,
                _store: None,
                _mesh: None,
            });
        }
        let token = env.token.as_ref().ok_or_else(|| {
            Error::Unsupported(format!(
                "a job of {} processes needs the job's secret store token in \
                 PRETRAIN_STORE_TOKEN or PRETRAIN_STORE_TOKEN_FILE, the same for every process \
                 (`pretrain launch` sets it for its workers)",
                env.world_size
            ))
        })?;
        let server = if env.hosts_store {
            let bind = env.master_bind.as_deref().unwrap_or(&env.master_addr);
            Some(StoreServer::start(
                bind,
                env.master_port,
                &env.job_id,
                token,
            )?)
        } else {
            None
        };
        let mut store = StoreClient::connect(
            &env.master_addr,
            env.master_port,
            &env.job_id,
            token,
            env.cluster_timeout,
        )?;
        let prefix = format!("attempt-{}.{}/mesh", env.attempt, env.restart);
        let mesh = Mesh::connect(
            &mut store,
            &prefix,
            &env.job_id,
            token,
            env.rank,
            env.world_size,
            env.cluster_timeout,
        )?;
        let groups = Groups::over(&mesh, &topo, plan.model.tie_word_embeddings)?;
        tracing::info!(
            dp_rank = topo.dp_rank,
            tp_rank = topo.tp_rank,
            pp_rank = topo.pp_rank,
            "joined {} ranks (data_parallel {} x model_parallel {} x pipeline_stage {})",
            topo.world(),
            topo.dp,
            topo.tp,
            topo.pp
        );
        Ok(Cluster {
            topo,
            groups,
            _server: server,
            _store: Some(store),
            _mesh: Some(mesh),
        })
    }
}

/// The part of the model rank `topo` holds.
pub fn shard_of(plan: &TrainPlan, topo: &Topology) -> Shard {
    Shard {
        tp_rank: topo.tp_rank,
        tp_size: topo.tp,
        layers: stage_layers(&plan.layers_per_stage, topo.pp_rank),
        first: topo.pp_rank == 0,
        last: topo.pp_rank + 1 == topo.pp,
    }
}
