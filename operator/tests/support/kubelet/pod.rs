//! Starting one pod's container as a local process, as a container runtime would: the image's
//! entrypoint and user, the pod's volumes, environment, service-account credentials and
//! security context.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec, Secret, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use serde_json::json;

/// Where a pod's service-account credentials appear, as in every Kubernetes pod.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A started container process.
pub struct Started {
    pub child: Child,
    pub dir: PathBuf,
    pub term_file: PathBuf,
    pub container: String,
    /// `readinessProbe.httpGet` as (port, path).
    pub probe: Option<(u16, String)>,
}

/// What the test node knows of an image: the Dockerfile's ENTRYPOINT, CMD and USER.
struct Image {
    entrypoint: &'static str,
    cmd: &'static [&'static str],
    user: i64,
}

/// The images the repository's Dockerfile builds; any registry prefix and tag is accepted.
fn image(reference: &str) -> Result<Image, String> {
    let name = reference.rsplit('/').next().unwrap_or(reference);
    let name = name.split(['@', ':']).next().unwrap_or(name);
    match name {
        "pretrain" => Ok(Image {
            entrypoint: "pretrain",
            cmd: &["--help"],
            user: 65532,
        }),
        "pretrain-operator" => Ok(Image {
            entrypoint: "pretrain-operator",
            cmd: &[],
            user: 65532,
        }),
        other => Err(format!(
            "the test node has no image {other:?} (it has pretrain and pretrain-operator)"
        )),
    }
}

/// The images' binaries, linked (or copied) into a directory every user may traverse: the
/// image's unprivileged user must be able to run them wherever the build directory is.
fn image_bin(bin: &Path) -> Result<PathBuf, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("pretrain-test-images-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        for name in ["pretrain", "pretrain-operator"] {
            let (src, dst) = (bin.join(name), dir.join(name));
            let _ = std::fs::remove_file(&dst);
            if std::fs::hard_link(&src, &dst).is_err() {
                std::fs::copy(&src, &dst).map_err(|e| format!("{}: {e}", src.display()))?;
            }
        }
        Ok(dir)
    })
    .clone()
}

/// Mount points must exist on the host; they stay empty there (mounts are private).
fn ensure_mount_point(target: &Path, is_file: bool) {
    if is_file {
        if !target.exists() {
            if let Some(p) = target.parent() {
                let _ = std::fs::create_dir_all(p);
            }
            let _ = std::fs::File::create(target);
        }
    } else {
        let _ = std::fs::create_dir_all(target);
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn io(e: std::io::Error) -> String {
    e.to_string()
}

/// `<job>-<i>` → i.
fn pod_index(pod: &Pod) -> usize {
    pod.spec
        .as_ref()
        .and_then(|s| s.hostname.as_deref())
        .and_then(|h| h.rsplit('-').next())
        .and_then(|i| i.parse().ok())
        .unwrap_or(0)
}

/// Whether `pod`'s required node affinity admits Node `node`: every `matchFields` requirement
/// on `metadata.name` (`In`, `NotIn`) of some term holds. Label expressions are not evaluated
/// (the test Nodes have no labels); a pod without required node affinity fits any node.
pub fn admits(pod: &Pod, node: &str) -> bool {
    let terms = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| r.node_selector_terms.clone());
    let Some(terms) = terms else {
        return true;
    };
    terms.iter().any(|t| {
        t.match_fields.iter().flatten().all(|r| {
            let listed = r.values.iter().flatten().any(|v| v == node);
            match (r.key.as_str(), r.operator.as_str()) {
                ("metadata.name", "In") => listed,
                ("metadata.name", "NotIn") => !listed,
                _ => true,
            }
        })
    })
}

/// Pods of a job (with a subdomain) get 127.0.0.(10+i); any other pod 127.0.0.2.
pub fn pod_ip(pod: &Pod) -> String {
    match pod.spec.as_ref().and_then(|s| s.subdomain.as_ref()) {
        Some(_) => format!("127.0.0.{}", 10 + pod_index(pod)),
        None => "127.0.0.2".into(),
    }
}

/// The user, group and supplementary groups the container runs as: the security contexts
/// (container over pod) over the image's USER; `fsGroup` and `supplementalGroups` are added.
fn identity(spec: &PodSpec, c: &Container, img: &Image) -> Result<(i64, i64, Vec<i64>), String> {
    let pod = spec.security_context.clone().unwrap_or_default();
    let own = c.security_context.clone().unwrap_or_default();
    let uid = own.run_as_user.or(pod.run_as_user).unwrap_or(img.user);
    let gid = own.run_as_group.or(pod.run_as_group).unwrap_or(img.user);
    if own.run_as_non_root.or(pod.run_as_non_root) == Some(true) && uid == 0 {
        return Err("container's runAsNonRoot and image will run as root".into());
    }
    let mut groups: Vec<i64> = pod.fs_group.into_iter().collect();
    groups.extend(pod.supplemental_groups.into_iter().flatten());
    Ok((uid, gid, groups))
}

/// A volume's host directory given to `fsGroup` as the kubelet does: group-owned, group
/// read/write, set-group-ID directories.
fn set_volume_ownership(dir: &Path, group: i64) -> Result<(), String> {
    let st = Command::new("sh")
        .arg("-c")
        .arg(
            "chgrp -R \"$1\" \"$2\" && chmod -R g+rwX \"$2\" && \
             find \"$2\" -type d -exec chmod g+s {} +",
        )
        .arg("sh")
        .arg(group.to_string())
        .arg(dir)
        .status()
        .map_err(io)?;
    st.success()
        .then_some(())
        .ok_or(format!("fsGroup ownership of {}", dir.display()))
}

/// Writes `token`, `ca.crt` and `namespace` for the pod's ServiceAccount (a TokenRequest, as
/// the kubelet's projected volume does) into `dir`.
async fn service_account(
    client: &kube::Client,
    ns: &str,
    sa: &str,
    dir: &Path,
) -> Result<(), String> {
    let req = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                     "spec": {"expirationSeconds": 3600}});
    let resp: serde_json::Value = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_subresource("token", sa, &PostParams::default(), &req)
        .await
        .map_err(|e| format!("token for serviceaccount {sa}: {e}"))?;
    let token = resp["status"]["token"].as_str().ok_or("no token")?;
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::write(dir.join("token"), token).map_err(io)?;
    std::fs::copy(super::super::cluster().ca_bundle(), dir.join("ca.crt")).map_err(io)?;
    std::fs::write(dir.join("namespace"), ns).map_err(io)?;
    for f in ["token", "ca.crt", "namespace"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644))
            .map_err(io)?;
    }
    Ok(())
}

/// The host directory behind each of the pod's volumes: ConfigMap and Secret files written
/// from the API under `dir`, claim directories from `claims`, fresh `emptyDir`s, `hostPath`s.
async fn volume_sources(
    client: &kube::Client,
    ns: &str,
    spec: &PodSpec,
    dir: &Path,
    claims: &HashMap<String, PathBuf>,
) -> Result<HashMap<String, PathBuf>, String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut sources: HashMap<String, PathBuf> = HashMap::new();
    for v in spec.volumes.iter().flatten() {
        let d = dir.join(format!("vol-{}", v.name));
        if let Some(cm) = &v.config_map {
            let data = cms
                .get(&cm.name)
                .await
                .map_err(|e| format!("configmap {}: {e}", cm.name))?
                .data
                .unwrap_or_default();
            std::fs::create_dir_all(&d).map_err(io)?;
            for (k, val) in data {
                std::fs::write(d.join(k), val).map_err(io)?;
            }
        } else if let Some(sv) = &v.secret {
            // As the kubelet: the keys as files, with the volume's defaultMode (0644 unset).
            let name = sv.secret_name.clone().unwrap_or_default();
            let data = Api::<Secret>::namespaced(client.clone(), ns)
                .get(&name)
                .await
                .map_err(|e| format!("secret {name}: {e}"))?
                .data
                .unwrap_or_default();
            std::fs::create_dir_all(&d).map_err(io)?;
            let mode = sv.default_mode.unwrap_or(0o644) as u32;
            for (k, val) in data {
                std::fs::write(d.join(&k), &val.0).map_err(io)?;
                std::fs::set_permissions(d.join(&k), std::fs::Permissions::from_mode(mode))
                    .map_err(io)?;
            }
        } else if let Some(pvc) = &v.persistent_volume_claim {
            let host = claims
                .get(&pvc.claim_name)
                .ok_or(format!("no host directory for claim {}", pvc.claim_name))?;
            if let Some(g) = spec.security_context.as_ref().and_then(|s| s.fs_group) {
                set_volume_ownership(host, g)?;
            }
            sources.insert(v.name.clone(), host.clone());
            continue;
        } else if v.empty_dir.is_some() {
            std::fs::create_dir_all(&d).map_err(io)?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).map_err(io)?;
        } else if let Some(hp) = &v.host_path {
            sources.insert(v.name.clone(), PathBuf::from(&hp.path));
            continue;
        } else {
            continue;
        }
        sources.insert(v.name.clone(), d);
    }
    Ok(sources)
}

/// Starts `pod`'s first container in a private mount namespace; see the module docs of
/// `kubelet` for what is emulated.
pub async fn start(
    client: &kube::Client,
    pod: &Pod,
    ns: &str,
    claims: &HashMap<String, PathBuf>,
    bin: &Path,
    work: &Path,
) -> Result<Started, String> {
    let name = pod.name_any();
    let spec = pod.spec.as_ref().ok_or("no spec")?;
    let c = spec.containers.first().ok_or("no container")?;
    let img = image(c.image.as_deref().unwrap_or_default())?;
    let (uid, gid, groups) = identity(spec, c, &img)?;
    let dir = work.join(format!("{name}-{}", pod.uid().unwrap_or_default()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    std::fs::write(dir.join("hosts"), hosts(spec, ns)).map_err(io)?;
    let sources = volume_sources(client, ns, spec, &dir, claims).await?;
    let term_path = c
        .termination_message_path
        .clone()
        .unwrap_or("/dev/termination-log".into());
    let term_file = dir.join("termination-log");
    std::fs::write(&term_file, "").map_err(io)?;
    std::fs::set_permissions(&term_file, std::fs::Permissions::from_mode(0o666)).map_err(io)?;
    let mut mounts: Vec<(PathBuf, PathBuf, bool)> = vec![
        (dir.join("hosts"), "/etc/hosts".into(), true),
        (term_file.clone(), PathBuf::from(&term_path), true),
    ];
    if let Some(sa) = spec
        .service_account_name
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        if spec.automount_service_account_token != Some(false) {
            service_account(client, ns, sa, &dir.join("serviceaccount")).await?;
            mounts.push((
                dir.join("serviceaccount"),
                SERVICE_ACCOUNT_DIR.into(),
                false,
            ));
        }
    }
    for m in c.volume_mounts.iter().flatten() {
        if let Some(src) = sources.get(&m.name) {
            mounts.push((src.clone(), PathBuf::from(&m.mount_path), false));
        }
    }
    let script = mount_script(c, &mounts, (uid, gid, &groups));
    let env = container_env(c, &name, ns, &pod_ip(pod));
    let path = format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        image_bin(bin)?.display()
    );
    // The working directory of the image: not writable by its user.
    let workdir = dir.join("workdir");
    std::fs::create_dir_all(&workdir).map_err(io)?;
    let log = std::fs::File::create(dir.join("log")).map_err(io)?;
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(&script)
        .arg("sh")
        .args(argv(c, &img))
        .env_clear()
        .env("PATH", path)
        .env("HOME", "/")
        .envs(env)
        .current_dir(&workdir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io)?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("unshare: {e}"))?;
    Ok(Started {
        child,
        dir,
        term_file,
        container: c.name.clone(),
        probe: http_probe(c),
    })
}

/// `/etc/hosts`: the host's, plus every pod of the job under its cluster DNS names.
fn hosts(spec: &PodSpec, ns: &str) -> String {
    let mut hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    if let Some(sub) = spec.subdomain.as_deref() {
        for k in 0..32 {
            let host = format!("{sub}-{k}.{sub}.{ns}.svc");
            hosts.push_str(&format!("127.0.0.{} {host} {host}.cluster.local\n", 10 + k));
        }
    }
    hosts
}

/// The shell script run in the pod's mount namespace: bind `mounts` (source, target, is a
/// file), make the root read-only if asked, drop to the image's `(uid, gid, groups)` (and with
/// root every capability) after the mounts, then exec the command.
fn mount_script(
    c: &Container,
    mounts: &[(PathBuf, PathBuf, bool)],
    (uid, gid, groups): (i64, i64, &[i64]),
) -> String {
    let mut script = String::new();
    for (src, target, is_file) in mounts {
        ensure_mount_point(target, *is_file);
        script.push_str(&format!(
            "mount --bind {} {} && ",
            shell_quote(&src.to_string_lossy()),
            shell_quote(&target.to_string_lossy())
        ));
    }
    let read_only_root = c
        .security_context
        .as_ref()
        .and_then(|s| s.read_only_root_filesystem)
        == Some(true);
    if read_only_root {
        script.push_str("mount -o remount,bind,ro / && ");
    }
    let user = if uid == 0 {
        String::new()
    } else {
        let extra: Vec<String> = groups.iter().map(i64::to_string).collect();
        let groups_arg = if extra.is_empty() {
            "--clear-groups".to_string()
        } else {
            format!("--groups {}", extra.join(","))
        };
        format!("setpriv --reuid {uid} --regid {gid} {groups_arg} -- ")
    };
    script.push_str(&format!("exec {user}\"$@\""));
    script
}

/// The container's environment: literal values, the downward API, the API server as
/// in-cluster config.
fn container_env(c: &Container, name: &str, ns: &str, ip: &str) -> Vec<(String, String)> {
    let (api_host, api_port) = super::super::cluster().api_endpoint();
    let mut env: Vec<(String, String)> = vec![
        ("KUBERNETES_SERVICE_HOST".into(), api_host),
        ("KUBERNETES_SERVICE_PORT".into(), api_port.to_string()),
    ];
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("metadata.name") => name.to_string(),
                Some("metadata.namespace") => ns.to_string(),
                Some("status.podIP") => ip.to_string(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        env.push((e.name.clone(), value));
    }
    env
}

/// The command line: the container's command and args, or the image's entrypoint with the
/// container's args or the image's cmd.
fn argv(c: &Container, img: &Image) -> Vec<String> {
    match (&c.command, &c.args) {
        (Some(cmd), args) => cmd.iter().chain(args.iter().flatten()).cloned().collect(),
        (None, Some(args)) => std::iter::once(img.entrypoint.to_string())
            .chain(args.iter().cloned())
            .collect(),
        (None, None) => std::iter::once(img.entrypoint)
            .chain(img.cmd.iter().copied())
            .map(String::from)
            .collect(),
    }
}

/// The container's HTTP readiness probe: (port, path).
fn http_probe(c: &Container) -> Option<(u16, String)> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let g = c.readiness_probe.as_ref()?.http_get.as_ref()?;
    let port = match &g.port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(n) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(n))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }?;
    Some((port, g.path.clone().unwrap_or("/".into())))
}
