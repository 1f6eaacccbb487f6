//! The runtime's small tensor layer: f32 buffers in row-major layout, the GEMM entry point (f32, or bf16 inputs with f32 sums),
//! and deterministic random initialisation. Ops themselves live in `model::ops`, each as a
//! `*_forward`/`*_backward` pair over plain slices (llm.c style), with shapes in comments.

pub mod bf16;
pub mod gemm;
pub mod gemm_bf16;
pub mod init;
pub mod math;
