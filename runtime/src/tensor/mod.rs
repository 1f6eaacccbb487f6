//! The runtime's small tensor layer: f32 buffers in row-major layout, the one GEMM entry point,
//! and deterministic random initialisation. Ops themselves live in `model::ops`, each as a
//! `*_forward`/`*_backward` pair over plain slices (llm.c style), with shapes in comments.

pub mod gemm;
pub mod init;
pub mod math;
