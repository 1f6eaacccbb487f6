//! The ConfigMap holding the training config the pods mount read-only.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{config_map_name, owned_meta};
use crate::crd::PretrainJob;

/// Key of the config in the owned ConfigMap (and file name in the mount).
pub const CONFIG_KEY: &str = "config.yaml";
/// Directory the config ConfigMap is mounted at.
pub const CONFIG_DIR: &str = "/etc/pretrain";

/// Builds the owned ConfigMap from the resolved files: the config under [`CONFIG_KEY`] (inline,
/// or copied from the referenced ConfigMap by the controller) and that ConfigMap's other keys.
pub fn build(job: &PretrainJob, files: &BTreeMap<String, String>) -> ConfigMap {
    ConfigMap {
        metadata: owned_meta(job, config_map_name(job)),
        data: Some(files.clone()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures;

    #[test]
    fn holds_the_config_under_one_key() {
        let files = [(CONFIG_KEY.to_string(), "seed: 42\n".to_string())].into();
        let cm = build(&fixtures::cpu_job(), &files);
        assert_eq!(cm.metadata.name.as_deref(), Some("run1-config"));
        assert_eq!(cm.data.expect("data")[CONFIG_KEY], "seed: 42\n");
    }
}
