//! The Qwen3 ops, each a `*_forward`/`*_backward` pair over row-major f32 slices. Argument order:
//! outputs first, then inputs, then dimensions; gradients are named `d<x>` and *accumulated*
//! (`+=`) into parameter gradients, *written* (`=`) into activation gradients unless a doc says
//! otherwise. Every op has a reference test and a gradient check against an f64 reference.

pub mod attention;
pub mod cross_entropy;
pub mod embedding;
pub mod flash_attention;
pub mod linear;
pub mod rmsnorm;
pub mod rope;
pub mod swiglu;
pub mod vocab_parallel;

#[cfg(test)]
pub(crate) mod gradcheck;
