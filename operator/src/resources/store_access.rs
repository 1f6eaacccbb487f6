//! Who may reach a job's rendezvous: the Secret holding the job's store token, which every pod
//! mounts, and the NetworkPolicy that admits only the job's own pods to them.
//!
//! The runtime's store and mesh admit only peers that prove the token (a challenge-response;
//! the token never crosses the network), so a process that reaches the port without it can
//! neither read nor write rendezvous keys. The NetworkPolicy keeps everything else from
//! reaching the pods in the first place, where the cluster's network plugin enforces policies.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::core::v1::{SecretVolumeSource, Volume, VolumeMount};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use kube::ResourceExt;

use super::env::progress_port;
use super::{owned_meta, LABEL_JOB};
use crate::crd::PretrainJob;

/// Where pods mount the token Secret.
pub const TOKEN_DIR: &str = "/var/run/pretrain/store";
/// The Secret's key, and so the file name under [`TOKEN_DIR`].
pub const TOKEN_KEY: &str = "token";
/// The pod volume of the token.
pub const TOKEN_VOLUME: &str = "store-token";

/// Name of the job's token Secret.
pub fn secret_name(job: &PretrainJob) -> String {
    format!("{}-store-token", job.name_any())
}

/// Name of the job's NetworkPolicy.
pub fn network_policy_name(job: &PretrainJob) -> String {
    format!("{}-rendezvous", job.name_any())
}

/// The Secret with the job's store token (`token`: 64 hex digits of fresh randomness). The
/// controller creates it once and never changes it, so restarted gangs share the token.
pub fn secret(job: &PretrainJob, token: &str) -> Secret {
    Secret {
        metadata: owned_meta(job, secret_name(job)),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_string(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        type_: Some("Opaque".into()),
        immutable: Some(true),
        ..Default::default()
    }
}

/// A new token: 32 bytes of the system's randomness as hex.
pub fn new_token() -> Result<String, String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| format!("cannot draw a store token: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The pod's volume and the container's read-only mount of the token.
pub fn token_volume(job: &PretrainJob) -> (Volume, VolumeMount) {
    let volume = Volume {
        name: TOKEN_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret_name(job)),
            // Readable by whatever user the image runs as; the pod is the job's own.
            default_mode: Some(0o444),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mount = VolumeMount {
        name: TOKEN_VOLUME.into(),
        mount_path: TOKEN_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    };
    (volume, mount)
}

/// The NetworkPolicy of the job's pods: ingress from pods of the same job on any port (the
/// store's master port and the ranks' ephemeral mesh ports), and from anywhere to the
/// read-only progress port only (the operator reads it).
pub fn network_policy(job: &PretrainJob) -> NetworkPolicy {
    let own = LabelSelector {
        match_labels: Some(BTreeMap::from([(LABEL_JOB.to_string(), job.name_any())])),
        ..Default::default()
    };
    NetworkPolicy {
        metadata: owned_meta(job, network_policy_name(job)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(own.clone()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        pod_selector: Some(own),
                        ..Default::default()
                    }]),
                    ports: None,
                },
                NetworkPolicyIngressRule {
                    from: None,
                    ports: Some(vec![NetworkPolicyPort {
                        port: Some(IntOrString::Int(i32::from(progress_port(job)))),
                        protocol: Some("TCP".into()),
                        end_port: None,
                    }]),
                },
            ]),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures;

    #[test]
    fn the_secret_holds_a_fresh_token_and_never_changes() {
        let job = fixtures::cpu_job();
        let (a, b) = (new_token().expect("random"), new_token().expect("random"));
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        let s = secret(&job, &a);
        assert_eq!(s.metadata.name.as_deref(), Some("run1-store-token"));
        assert_eq!(s.immutable, Some(true));
        assert_eq!(s.data.expect("data")[TOKEN_KEY].0, a.as_bytes());
        assert_eq!(s.metadata.owner_references.expect("owner")[0].name, "run1");
    }

    #[test]
    fn the_policy_admits_only_the_job_s_own_pods() {
        let p = network_policy(&fixtures::cpu_job());
        let spec = p.spec.expect("spec");
        let own = BTreeMap::from([(LABEL_JOB.to_string(), "run1".to_string())]);
        assert_eq!(
            spec.pod_selector.expect("pods").match_labels,
            Some(own.clone())
        );
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
        let rules = spec.ingress.expect("ingress");
        assert_eq!(rules.len(), 2);
        // Anyone may read the progress port, and only that port.
        assert!(rules[1].from.is_none());
        let ports = rules[1].ports.as_ref().expect("ports");
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].port, Some(IntOrString::Int(29501)));
        let from = rules[0].from.as_ref().expect("from");
        assert_eq!(from.len(), 1);
        assert_eq!(
            from[0].pod_selector.as_ref().expect("pods").match_labels,
            Some(own)
        );
        assert!(from[0].namespace_selector.is_none() && from[0].ip_block.is_none());
    }
}
