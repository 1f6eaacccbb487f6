//! The operator process: logging, leader election, the controller, `/metrics` and health.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Parser};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use pretrain_operator::controller::{self, Context};
use pretrain_operator::http::{self, State};
use pretrain_operator::leader::{self, Leadership, LeaseConfig};
use pretrain_operator::metrics::Metrics;
use tokio::sync::watch;
use tracing::{error, info};

/// Kubernetes operator for PretrainJob.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address of the /metrics, /healthz and /readyz endpoint.
    #[arg(
        long,
        env = "PRETRAIN_OPERATOR_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    http_addr: String,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "PRETRAIN_OPERATOR_NAMESPACE")]
    namespace: Option<String>,
    /// Take a Lease before reconciling, so only one replica acts.
    #[arg(long, env = "PRETRAIN_OPERATOR_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(
        long,
        env = "PRETRAIN_OPERATOR_LEASE_NAME",
        default_value = "pretrain-operator"
    )]
    lease_name: String,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(long, env = "PRETRAIN_OPERATOR_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Lease duration; renewed every third of it.
    #[arg(long, env = "PRETRAIN_OPERATOR_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// This replica's identity (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Give each job a NetworkPolicy that admits only the job's own pods to its pods (the
    /// rendezvous store and mesh ports).
    #[arg(long, env = "PRETRAIN_OPERATOR_NETWORK_POLICY", default_value_t = true, action = ArgAction::Set)]
    network_policy: bool,
    /// Seconds between reads of a running job's progress from its node-0 launcher.
    #[arg(
        long,
        env = "PRETRAIN_OPERATOR_PROGRESS_INTERVAL",
        default_value_t = 10
    )]
    progress_interval: u64,
    /// `json` (in cluster) or `text`.
    #[arg(long, env = "PRETRAIN_OPERATOR_LOG_FORMAT", default_value = "json")]
    log_format: String,
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}

async fn signal(tx: watch::Sender<bool>) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
    }
    let _ = tx.send(true);
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_logging(&args.log_format);
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The Lease's namespace and settings from the flags: namespace `--lease-namespace`, else
/// `$POD_NAMESPACE`, else `default`; identity `--identity` (the pod name), else
/// `<hostname>-<pid>`; duration `--lease-seconds`, at least 3 s.
fn lease_config(args: &Args) -> (String, LeaseConfig) {
    let namespace = args
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".into());
    let identity = args.identity.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "operator".into()),
            std::process::id()
        )
    });
    let cfg = LeaseConfig {
        name: args.lease_name.clone(),
        identity,
        duration: Duration::from_secs(args.lease_seconds.max(3)),
    };
    (namespace, cfg)
}

async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let client = Client::try_default()
        .await
        .context("connecting to the kubernetes api")?;
    let metrics = Arc::new(Metrics::default());
    let (tx, rx) = watch::channel(false);
    tokio::spawn(signal(tx.clone()));

    let controller = controller::controller(&client, args.namespace.as_deref());
    let store = controller.store();
    let state = Arc::new(State {
        metrics: metrics.clone(),
        ready: Default::default(),
        jobs: Box::new(move || controller::phases(&store)),
    });
    let listener = tokio::net::TcpListener::bind(&args.http_addr)
        .await
        .with_context(|| format!("binding {}", args.http_addr))?;
    info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    tokio::spawn(http::serve(listener, state.clone()));
    state.ready.store(true, Ordering::Relaxed);

    let ctx = Arc::new(
        Context::new(client.clone(), metrics.clone(), args.identity.clone())
            .with_network_policy(args.network_policy)
            .with_progress_interval(Duration::from_secs(args.progress_interval.max(1))),
    );
    let work = async move {
        controller::run(controller, ctx, stopped(rx)).await;
        info!("controller stopped");
    };
    if !args.leader_election {
        work.await;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let (namespace, cfg) = lease_config(&args);
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    // A replica that lost the lease exits non-zero, so its pod restarts as a standby.
    let code = match leader::run_elected(api, cfg, tx.clone(), metrics, work).await {
        Leadership::NeverHeld | Leadership::Released => std::process::ExitCode::SUCCESS,
        Leadership::Lost => std::process::ExitCode::FAILURE,
    };
    Ok(code)
}
