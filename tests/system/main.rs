//! System tests, one binary. Table of contents:
//! - `megatron`: sample order, indices and builder bytes against megatron-core 0.16.1 fixtures.

mod megatron;
