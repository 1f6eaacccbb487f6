//! The headless Service: gives each pod the DNS name `<job>-<rank>.<job>.<ns>.svc`.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};

use super::{owned_meta, service_name, LABEL_JOB};
use crate::crd::PretrainJob;
use kube::ResourceExt;

/// Builds the headless Service. `publishNotReadyAddresses` makes the master's name resolve as
/// soon as the pod has an IP, so workers never race DNS.
pub fn build(job: &PretrainJob) -> Service {
    Service {
        metadata: owned_meta(job, service_name(job)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some([(LABEL_JOB.to_string(), job.name_any())].into()),
            ports: Some(vec![ServicePort {
                name: Some("rendezvous".into()),
                port: i32::from(job.spec.master_port),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures;

    #[test]
    fn headless_and_publishes_not_ready() {
        let svc = build(&fixtures::cpu_job());
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(spec.ports.expect("ports")[0].port, 29500);
        assert_eq!(
            svc.metadata.owner_references.expect("owner")[0].name,
            "run1"
        );
    }
}
