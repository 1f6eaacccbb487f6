//! The training pods' secure defaults: what Pod Security Admission's `restricted` profile asks
//! for (non-root, the container runtime's seccomp profile, no capabilities, no privilege
//! escalation), and no ServiceAccount token, since training never talks to the API server.
//!
//! Each default is one field, set before `podTemplate` is applied: `podTemplate.spec` patches
//! the pod's fields and `podTemplate.containerSecurityContext` the training container's, so a
//! template overrides exactly the fields it names (`null` removes a default) and keeps the rest.

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, PodSpec, SeccompProfile, SecurityContext,
};

use super::merge_patch;
use super::pod::BuildError;
use crate::crd::PretrainJob;

/// The group of the runtime image's user (the Dockerfile's `USER 65532:65532`). Pods get it as
/// `fsGroup`, so a freshly provisioned, root-owned checkpoint volume is writable by the image;
/// `podTemplate.spec.securityContext` replaces it for images that run as someone else.
pub const IMAGE_GROUP: i64 = 65532;

/// The pod's security context before the template patch. `runAsNonRoot` needs no `runAsUser`:
/// the runtime image's user is numeric and not root, which the kubelet can check.
pub fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        fs_group: Some(IMAGE_GROUP),
        // Only when the volume's root is not already the group's: a large checkpoint volume is
        // not walked at every gang start.
        fs_group_change_policy: Some("OnRootMismatch".into()),
        ..Default::default()
    }
}

/// The training container's security context: the defaults with
/// `podTemplate.containerSecurityContext` merged over them.
pub fn container_security_context(job: &PretrainJob) -> Result<SecurityContext, BuildError> {
    let defaults = SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..Default::default()
    };
    let patch = job
        .spec
        .pod_template
        .as_ref()
        .and_then(|t| t.container_security_context.as_ref());
    let Some(patch) = patch else {
        return Ok(defaults);
    };
    let invalid = |e: serde_json::Error| BuildError::ContainerSecurityContext(e.to_string());
    let mut v = serde_json::to_value(&defaults).map_err(invalid)?;
    merge_patch::apply(&mut v, patch);
    serde_json::from_value(v).map_err(invalid)
}

/// Refuses a pod whose template makes it run as root while `runAsNonRoot` (a default, unless
/// removed) stays true: the kubelet would never start it, and the job would wait for its
/// startup timeout instead of saying why at once.
pub fn check_root(spec: &PodSpec) -> Result<(), BuildError> {
    let pod = spec.security_context.as_ref();
    for c in &spec.containers {
        let own = c.security_context.as_ref();
        let user = own
            .and_then(|s| s.run_as_user)
            .or(pod.and_then(|s| s.run_as_user));
        let non_root = own
            .and_then(|s| s.run_as_non_root)
            .or(pod.and_then(|s| s.run_as_non_root));
        if user == Some(0) && non_root == Some(true) {
            return Err(BuildError::RootWithRunAsNonRoot);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::env::PodSlot;
    use crate::resources::{fixtures, pod};

    fn build(template: serde_json::Value) -> Result<PodSpec, BuildError> {
        let job = fixtures::job(serde_json::json!({
            "nodes": 1, "workersPerNode": 1, "image": "i", "config": {"inline": "a: 1"},
            "podTemplate": template
        }));
        let slot = PodSlot {
            rank: 0,
            attempt: 1,
            resume: false,
        };
        Ok(pod::build(&job, slot)?.spec.expect("spec"))
    }

    #[test]
    fn defaults_meet_the_restricted_profile() {
        let spec = build(serde_json::json!({})).expect("builds");
        assert_eq!(spec.automount_service_account_token, Some(false));
        let sc = spec.security_context.expect("pod securityContext");
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.seccomp_profile.expect("seccomp").type_, "RuntimeDefault");
        assert_eq!(sc.fs_group, Some(IMAGE_GROUP));
        let c = spec.containers[0]
            .security_context
            .clone()
            .expect("container securityContext");
        assert_eq!(c.allow_privilege_escalation, Some(false));
        let caps = c.capabilities.expect("capabilities");
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert_eq!(caps.add, None);
    }

    #[test]
    fn the_template_overrides_each_pod_default_and_keeps_the_others() {
        let spec = build(serde_json::json!({"spec": {
            "automountServiceAccountToken": true,
            "securityContext": {"runAsNonRoot": false, "seccompProfile": {"type": "Unconfined"}}
        }}))
        .expect("builds");
        assert_eq!(spec.automount_service_account_token, Some(true));
        let sc = spec.security_context.expect("pod securityContext");
        assert_eq!(sc.run_as_non_root, Some(false));
        assert_eq!(sc.seccomp_profile.expect("seccomp").type_, "Unconfined");
        assert_eq!(sc.fs_group, Some(IMAGE_GROUP));
        // A container default is untouched by a pod-level patch.
        let c = spec.containers[0]
            .security_context
            .clone()
            .expect("container securityContext");
        assert_eq!(c.allow_privilege_escalation, Some(false));

        // `null` removes a default.
        let spec =
            build(serde_json::json!({"spec": {"securityContext": {"seccompProfile": null}}}))
                .expect("builds");
        let sc = spec.security_context.expect("pod securityContext");
        assert_eq!((sc.seccomp_profile, sc.run_as_non_root), (None, Some(true)));
    }

    #[test]
    fn the_template_overrides_each_container_default_and_keeps_the_others() {
        let spec = build(serde_json::json!({"containerSecurityContext": {
            "capabilities": {"add": ["NET_ADMIN"]}, "readOnlyRootFilesystem": true
        }}))
        .expect("builds");
        let c = spec.containers[0]
            .security_context
            .clone()
            .expect("securityContext");
        let caps = c.capabilities.expect("capabilities");
        assert_eq!(caps.add.as_deref(), Some(&["NET_ADMIN".to_string()][..]));
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert_eq!(c.allow_privilege_escalation, Some(false));
        assert_eq!(c.read_only_root_filesystem, Some(true));

        let spec = build(serde_json::json!({"containerSecurityContext": {
            "allowPrivilegeEscalation": true, "capabilities": {"drop": null}
        }}))
        .expect("builds");
        let c = spec.containers[0]
            .security_context
            .clone()
            .expect("securityContext");
        assert_eq!(c.allow_privilege_escalation, Some(true));
        assert_eq!(c.capabilities.expect("capabilities").drop, None);
    }

    #[test]
    fn root_needs_run_as_non_root_removed() {
        let root = serde_json::json!({"spec": {"securityContext": {"runAsUser": 0}}});
        assert!(matches!(build(root), Err(BuildError::RootWithRunAsNonRoot)));
        let root = serde_json::json!({"containerSecurityContext": {"runAsUser": 0}});
        assert!(matches!(build(root), Err(BuildError::RootWithRunAsNonRoot)));
        let allowed = serde_json::json!({"spec": {"securityContext": {"runAsUser": 0, "runAsNonRoot": false}}});
        assert!(build(allowed).is_ok());
        let bad = serde_json::json!({"containerSecurityContext": {"capabilities": {"add": "ALL"}}});
        assert!(matches!(
            build(bad),
            Err(BuildError::ContainerSecurityContext(_))
        ));
    }
}
