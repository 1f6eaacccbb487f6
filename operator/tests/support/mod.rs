//! Test harness: a real etcd + kube-apiserver on loopback (started once per test binary, and
//! stopped by a watchdog when the test process exits), the CRD installed, and operator
//! processes run from the built binary, one per test namespace.
//!
//! Binaries come from `scripts/k8s-test-bin.sh`: `PRETRAIN_ETCD`, `PRETRAIN_KUBE_APISERVER`.

pub mod kubelet;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, CustomResourceExt};
use pretrain_operator::crd::PretrainJob;

/// A running API server.
pub struct Cluster {
    /// Working directory (certs, data, kubeconfig, logs).
    pub dir: PathBuf,
    /// Kubeconfig for clients and the operator.
    pub kubeconfig: PathBuf,
    /// The watchdog shells of etcd and kube-apiserver (they outlive every test).
    _children: std::sync::Mutex<Vec<Child>>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn bin(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set; run scripts/test-apiserver.sh"))
}

/// Starts `cmd` under a shell watchdog that kills it once this test process is gone.
fn spawn_watched(args: &[String], log: &Path) -> Child {
    let parent = std::process::id();
    let script = format!(
        "\"$@\" & c=$!; trap 'kill $c 2>/dev/null; exit 0' TERM INT; \
         while kill -0 {parent} 2>/dev/null && kill -0 $c 2>/dev/null; do sleep 1; done; \
         kill $c 2>/dev/null; wait $c"
    );
    let log = std::fs::File::create(log).expect("log file");
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn")
}

fn run(cmd: &mut Command) {
    let st = cmd.status().expect("runs");
    assert!(st.success(), "{cmd:?} failed");
}

/// The shared cluster, started on first use (5-15 s).
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("pretrain-apiserver-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("certs")).expect("dir");
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let d = |p: &str| dir.join(p).display().to_string();
        let etcd = spawn_watched(
            &[
                bin("PRETRAIN_ETCD"),
                "--name=k8s".into(),
                format!("--data-dir={}", d("etcd-data")),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
                format!("--initial-cluster=k8s=http://127.0.0.1:{peer_port}"),
            ],
            &dir.join("etcd.log"),
        );
        run(Command::new("openssl").args(["genrsa", "-out", &d("sa.key"), "2048"]).stderr(Stdio::null()));
        run(Command::new("openssl")
            .args(["rsa", "-in", &d("sa.key"), "-pubout", "-out", &d("sa.pub")])
            .stderr(Stdio::null()));
        let token = format!("{:x}{:x}", std::process::id(), Instant::now().elapsed().as_nanos() ^ 0x5eed_1234_abcd);
        std::fs::write(dir.join("tokens.csv"), format!("{token},admin,admin,\"system:masters\"\n")).expect("tokens");
        let apiserver = spawn_watched(
            &[
                bin("PRETRAIN_KUBE_APISERVER"),
                format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                "--insecure-port=0".into(),
                format!("--cert-dir={}", d("certs")),
                format!("--token-auth-file={}", d("tokens.csv")),
                "--authorization-mode=RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", d("sa.pub")),
                format!("--service-account-signing-key-file={}", d("sa.key")),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--disable-admission-plugins=ServiceAccount".into(),
            ],
            &dir.join("apiserver.log"),
        );
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{api_port}\n    insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: admin}}\ncurrent-context: test\n"
            ),
        )
        .expect("kubeconfig");
        let c = Cluster { dir, kubeconfig, _children: std::sync::Mutex::new(vec![etcd, apiserver]) };
        // Tests call this from inside their own runtime: wait on a separate thread.
        let (dir2, kubeconfig2) = (c.dir.clone(), c.kubeconfig.clone());
        std::thread::spawn(move || {
        let c = Cluster { dir: dir2, kubeconfig: kubeconfig2, _children: Default::default() };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let client = c.client().await;
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let ready = client
                    .request_text(http_get("/readyz"))
                    .await
                    .map(|t| t.trim() == "ok")
                    .unwrap_or(false);
                if ready {
                    break;
                }
                assert!(Instant::now() < deadline, "apiserver not ready; see {}", c.dir.join("apiserver.log").display());
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            install_crd(&client).await;
        });
        })
        .join()
        .expect("apiserver start-up");
        c
    })
}

fn http_get(path: &str) -> http::Request<Vec<u8>> {
    http::Request::get(path).body(vec![]).expect("request")
}

/// The CRD as tests install it: CEL rules stripped (1.20 has none).
pub fn crd_for_old_servers() -> CustomResourceDefinition {
    let mut v = serde_json::to_value(PretrainJob::crd()).expect("crd json");
    strip_key(&mut v, "x-kubernetes-validations");
    serde_json::from_value(v).expect("crd back")
}

fn strip_key(v: &mut serde_json::Value, key: &str) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove(key);
            m.values_mut().for_each(|x| strip_key(x, key));
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| strip_key(x, key)),
        _ => {}
    }
}

/// Volcano's PodGroup type as Volcano's chart installs it, with the schema left open (the
/// tests check what the operator writes, not Volcano's validation).
fn volcano_pod_group_crd() -> CustomResourceDefinition {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "podgroups.scheduling.volcano.sh"},
        "spec": {"group": "scheduling.volcano.sh", "scope": "Namespaced",
            "names": {"plural": "podgroups", "singular": "podgroup", "kind": "PodGroup",
                      "shortNames": ["pg", "podgroup-v1beta1"]},
            "versions": [{"name": "v1beta1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .expect("podgroup crd")
}

/// The PretrainJob CRD, and Volcano's PodGroup for gang scheduling.
async fn install_crd(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [crd_for_old_servers(), volcano_pod_group_crd()] {
        let name = crd.metadata.name.clone().unwrap_or_default();
        match api.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("installing the CRD {name}: {e}"),
        }
        let mut established = false;
        for _ in 0..100 {
            let crd = api.get(&name).await.expect("crd");
            established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(established, "CRD {name} not established");
    }
    // Discovery can lag the condition slightly.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

impl Cluster {
    /// A client for the test apiserver.
    pub async fn client(&self) -> Client {
        let kc = Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("config");
        Client::try_from(cfg).expect("client")
    }

    /// The API server's address and port, as pods see it (`KUBERNETES_SERVICE_HOST`/`_PORT`).
    pub fn api_endpoint(&self) -> (String, u16) {
        let kc = std::fs::read_to_string(&self.kubeconfig).expect("kubeconfig");
        let server = kc
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: https://"))
            .expect("server in kubeconfig");
        let (host, port) = server.rsplit_once(':').expect("host:port");
        (host.into(), port.parse().expect("port"))
    }

    /// The API server's self-signed serving certificate and its CA (what pods get as `ca.crt`).
    pub fn ca_bundle(&self) -> PathBuf {
        self.dir.join("certs/apiserver.crt")
    }

    /// Creates a fresh namespace for one test.
    pub async fn namespace(&self, client: &Client, name: &str) {
        let api: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &ns)
            .await
            .expect("namespace");
    }
}

/// An operator process; killed on drop.
pub struct Operator {
    child: Child,
    /// Its /metrics port.
    pub http_port: u16,
    /// Log file.
    pub log: PathBuf,
}

impl Operator {
    /// Starts the operator watching `namespace` (lease in the same namespace).
    pub fn start(namespace: &str, identity: &str) -> Operator {
        let c = cluster();
        let http_port = free_port();
        let log = c
            .dir
            .join(format!("operator-{namespace}-{identity}-{http_port}.log"));
        let file = std::fs::File::create(&log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_pretrain-operator"))
            .env("KUBECONFIG", &c.kubeconfig)
            .env("PRETRAIN_OPERATOR_NAMESPACE", namespace)
            .env("PRETRAIN_OPERATOR_LEASE_NAMESPACE", namespace)
            .env("PRETRAIN_OPERATOR_LEASE_SECONDS", "6")
            .env("PRETRAIN_OPERATOR_PROGRESS_INTERVAL", "1")
            .env(
                "PRETRAIN_OPERATOR_HTTP_ADDR",
                format!("127.0.0.1:{http_port}"),
            )
            .env("PRETRAIN_OPERATOR_LOG_FORMAT", "json")
            .env("POD_NAME", identity)
            .env("RUST_LOG", "info,pretrain_operator=debug")
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("operator starts");
        Operator {
            child,
            http_port,
            log,
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// GET a path on the operator's HTTP endpoint.
    pub fn get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        for _ in 0..50 {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.http_port)) {
                // Sent in pieces on purpose: the server must read the whole request head.
                let _ = s.write_all(format!("GET {path} HTTP/1.1\r\n").as_bytes());
                let _ = s.write_all(b"host: x\r\n\r\n");
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                return out;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "operator http endpoint not reachable; log {}",
            self.log.display()
        );
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `helm install <release>` of `charts/pretrain-operator` into `namespace` (created) against the
/// test API server, with `--set` values; panics with helm's output on failure.
pub fn helm_install(release: &str, namespace: &str, values: &[String]) {
    let c = cluster();
    let helm = std::env::var("PRETRAIN_HELM")
        .expect("PRETRAIN_HELM is not set; run scripts/test-apiserver.sh");
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/pretrain-operator");
    let mut cmd = Command::new(&helm);
    cmd.args(["install", release])
        .arg(&chart)
        .args(["--namespace", namespace, "--create-namespace"])
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .env("HELM_CACHE_HOME", c.dir.join("helm-cache"))
        .env("HELM_CONFIG_HOME", c.dir.join("helm-config"))
        .env("HELM_DATA_HOME", c.dir.join("helm-data"));
    for v in values {
        cmd.args(["--set", v]);
    }
    let out = cmd.output().expect("helm runs");
    assert!(
        out.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `f` every 100 ms until it returns Some, or panics after `secs` with `what`.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
