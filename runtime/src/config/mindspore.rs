//! Sections that only mean something to MindSpore (graph compiler context, auto-parallel
//! context, recomputation, profiler). They are accepted so MindFormers' files load unchanged, and
//! kept so the resolved config shows them, but this runtime ignores their values. Their key names
//! are still checked, so a typo is reported rather than silently kept.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// Any YAML value, kept as written (for keys whose values this runtime ignores).
#[derive(Debug, Clone, PartialEq)]
pub enum Opaque {
    /// `null` or an empty value.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A list.
    Seq(Vec<Opaque>),
    /// A mapping, in file order.
    Map(Vec<(String, Opaque)>),
}

impl<'de> Deserialize<'de> for Opaque {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OpaqueVisitor;
        impl<'de> Visitor<'de> for OpaqueVisitor {
            type Value = Opaque;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Opaque, E> {
                Ok(Opaque::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Opaque, E> {
                Ok(Opaque::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Opaque, E> {
                Ok(Opaque::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Opaque, E> {
                Ok(Opaque::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Opaque, E> {
                i64::try_from(v)
                    .map(Opaque::Int)
                    .or(Ok(Opaque::Float(v as f64)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Opaque, E> {
                Ok(Opaque::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Opaque, E> {
                Ok(Opaque::Str(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Opaque, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Opaque::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Opaque, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Opaque::Map(entries))
            }
        }
        deserializer.deserialize_any(OpaqueVisitor)
    }
}

impl Serialize for Opaque {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Opaque::Null => serializer.serialize_unit(),
            Opaque::Bool(b) => serializer.serialize_bool(*b),
            Opaque::Int(i) => serializer.serialize_i64(*i),
            Opaque::Float(f) => serializer.serialize_f64(*f),
            Opaque::Str(s) => serializer.serialize_str(s),
            Opaque::Seq(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Opaque::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// Declares a section of known keys with opaque, optional values.
macro_rules! opaque_section {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            $($(#[$fdoc])*
            #[serde(skip_serializing_if = "Option::is_none")]
            pub $field: Option<Opaque>,)*
        }
    };
}

opaque_section! {
    /// `context`: MindSpore's `set_context` arguments. Ignored.
    ContextConfig {
        /// 0 = graph mode, 1 = PyNative.
        mode,
        /// `Ascend`, `GPU` or `CPU`.
        device_target,
        /// Device id for single-device runs.
        device_id,
        /// Memory cap such as `"58GB"`.
        max_device_memory,
        /// Memory optimisation level (`O0`, `O1`).
        memory_optimize_level,
        /// Graph compiler options (`jit_level`).
        jit_config,
        /// Ascend options (`precision_mode`, `parallel_speed_up_json_path`).
        ascend_config,
        /// Dump compiled graphs.
        save_graphs,
        /// Where to dump graphs.
        save_graphs_path,
        /// Recursion limit of the graph compiler.
        max_call_depth,
        /// Graph-kernel fusion switch.
        enable_graph_kernel,
        /// Host threads of the runtime.
        runtime_num_threads,
        /// Deterministic kernels (`ON`/`OFF`).
        deterministic,
    }
}

opaque_section! {
    /// `parallel`: MindSpore's auto-parallel context. Ignored: this runtime lays out tensor,
    /// pipeline and data parallelism itself from `parallel_config`.
    ParallelContextConfig {
        /// 0 data, 1 semi-auto, 2 auto, 3 hybrid parallel.
        parallel_mode,
        /// AllToAll communication.
        enable_alltoall,
        /// Whether every rank loads the full batch.
        full_batch,
        /// Per-input sharding of the dataset.
        dataset_strategy,
        /// Strategy search mode for auto parallel.
        search_mode,
        /// Where the sharding strategy is saved or loaded.
        strategy_ckpt_config,
        /// Optimizer-state sharding (ZeRO-like).
        enable_parallel_optimizer,
        /// Options of the parallel optimizer.
        parallel_optimizer_config,
        /// Average gradients over data-parallel ranks.
        gradients_mean,
        /// Average the loss over repeated computations.
        loss_repeated_mean,
        /// Pipeline scheduler options.
        pipeline_config,
        /// Save the strategy only and exit.
        strategy_ckpt_save_file,
    }
}

opaque_section! {
    /// `recompute_config`: activation recomputation. `recompute` is honoured (every layer, or
    /// the first n of each pipeline stage); `select_recompute` is what the attention kernel
    /// always does; the communication switches are MindSpore graph options, ignored.
    RecomputeConfig {
        /// Full recomputation (bool or per-stage list).
        recompute,
        /// Selective recomputation (bool or list of layer names).
        select_recompute,
        /// Recompute communication of the parallel optimizer.
        parallel_optimizer_comm_recompute,
        /// Recompute model-parallel communication.
        mp_comm_recompute,
        /// Recompute sliced activations.
        recompute_slice_activation,
        /// Selective communication recomputation.
        select_comm_recompute,
    }
}

opaque_section! {
    /// `monitor_config`: MindFormers' extra training-state monitors (local norms, optimizer
    /// state norms, global-norm spike checks). Kept; only `global_norm_spike_count_threshold`
    /// is acted on.
    MonitorConfig {
        /// Master switch.
        monitor_on,
        /// Where dumps go.
        dump_path,
        /// Parameter-name patterns to monitor.
        target,
        /// Invert `target`.
        invert,
        /// Monitor every N steps.
        step_interval,
        /// Where local losses are written (`log`, `tensorboard`).
        local_loss_format,
        /// Per-device local losses.
        device_local_loss_format,
        /// Where local gradient norms are written.
        local_norm_format,
        /// Per-device local norms.
        device_local_norm_format,
        /// Adam moment norms.
        optimizer_state_format,
        /// Weight norms.
        weight_state_format,
        /// Expected throughput, for the throughput-drop alarm.
        throughput_baseline,
        /// Print the network structure.
        print_struct,
        /// Global-norm spike detection switch.
        check_for_global_norm,
        /// Spike threshold on the global norm.
        global_norm_spike_threshold,
        /// Consecutive spikes before failing (default 10; acted on with
        /// `runner_wrapper.use_skip_data_by_global_norm` or `loss_spike_factor`).
        global_norm_spike_count_threshold,
    }
}

/// `train_dataset_task`: MindFormers' dataset wrapper; its `dataset_config` is usually a YAML
/// alias of `train_dataset`. Ignored: `train_dataset` is what this runtime reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatasetTaskConfig {
    /// `CausalLanguageModelDataset`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// A copy of the dataset section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_config: Option<Opaque>,
}
