//! System tests, one binary. Table of contents:
//! - `hf_parity`: Qwen3 logits, loss, gradients and two AdamW steps against transformers.
//! - `train`: loss falls on real text; stop + resume is bit-identical; mismatched checkpoints.
//! - `megatron`: sample order, indices and builder bytes against megatron-core 0.16.1 fixtures.

mod hf_parity;
mod megatron;
mod train;
