//! [`Activations`]: everything the Qwen3 backward needs from the forward, in one arena per
//! micro-batch shape (allocated once, reused every step), plus the activation gradients of one
//! layer at a time.

use super::Qwen3Config;

/// `dst += src`, elementwise.
pub(super) fn add_into(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// Activations of one micro-batch shape, reused across steps.
pub struct Activations {
    pub(super) b: usize,
    pub(super) t: usize,
    pub(super) resid: Vec<f32>,     // (L+1, N, H)
    pub(super) ln1: Vec<f32>,       // (L, N, H)
    pub(super) ln1_rstd: Vec<f32>,  // (L, N)
    pub(super) q_raw: Vec<f32>,     // (L, N, Nq·d)
    pub(super) q_rstd: Vec<f32>,    // (L, N, Nq)
    pub(super) q: Vec<f32>,         // (L, N, Nq·d) after q_norm and RoPE
    pub(super) k_raw: Vec<f32>,     // (L, N, Nkv·d)
    pub(super) k_rstd: Vec<f32>,    // (L, N, Nkv)
    pub(super) k: Vec<f32>,         // (L, N, Nkv·d)
    pub(super) v: Vec<f32>,         // (L, N, Nkv·d)
    pub(super) lse: Vec<f32>,       // (L, B, Nq, T) attention row log-sum-exps
    pub(super) attn_out: Vec<f32>,  // (L, N, Nq·d)
    pub(super) resid_mid: Vec<f32>, // (L, N, H)
    pub(super) ln2: Vec<f32>,       // (L, N, H)
    pub(super) ln2_rstd: Vec<f32>,  // (L, N)
    pub(super) gate: Vec<f32>,      // (L, N, F)
    pub(super) up: Vec<f32>,        // (L, N, F)
    pub(super) act: Vec<f32>,       // (L, N, F)
    pub(super) lnf: Vec<f32>,       // (N, H)
    pub(super) lnf_rstd: Vec<f32>,  // (N)
    /// Logits (N, V); after backward, their gradient.
    pub logits: Vec<f32>,
    /// Per-token cross-entropy (N).
    pub losses: Vec<f32>,
    pub(super) ce_max: Vec<f32>, // (N) vocabulary-parallel softmax statistics
    pub(super) ce_sum: Vec<f32>, // (N)
    pub(super) cos: Vec<f32>,    // (N, d/2)
    pub(super) sin: Vec<f32>,    // (N, d/2)
    /// A projection's output before its residual add (N, H).
    pub(super) proj: Vec<f32>,
    pub(super) heads: HeadScratch,
    pub(super) grads: GradScratch,
}

/// Head-major buffers of the attention kernel, forward and backward.
pub(super) struct HeadScratch {
    pub(super) q: Vec<f32>, // (B, Nq, T, d)
    pub(super) k: Vec<f32>, // (B, Nkv, T, d)
    pub(super) v: Vec<f32>, // (B, Nkv, T, d)
}

/// One layer's saved activations, borrowed apart from each other so that a block can write
/// some while reading others.
pub(super) struct LayerActs<'a> {
    pub(super) x: &'a [f32],            // (N, H) the layer's input
    pub(super) ln1: &'a mut [f32],      // (N, H)
    pub(super) ln1_rstd: &'a mut [f32], // (N)
    pub(super) q_raw: &'a mut [f32],    // (N, Nq·d)
    pub(super) q_rstd: &'a mut [f32],   // (N, Nq)
    pub(super) q: &'a mut [f32],        // (N, Nq·d)
    pub(super) k_raw: &'a mut [f32],    // (N, Nkv·d)
    pub(super) k_rstd: &'a mut [f32],   // (N, Nkv)
    pub(super) k: &'a mut [f32],        // (N, Nkv·d)
    pub(super) v: &'a mut [f32],        // (N, Nkv·d)
    pub(super) lse: &'a mut [f32],      // (B, Nq, T) attention row log-sum-exps
    pub(super) attn_out: &'a mut [f32], // (N, Nq·d)
    pub(super) mid: &'a mut [f32],      // (N, H) after the attention residual
    pub(super) ln2: &'a mut [f32],      // (N, H)
    pub(super) ln2_rstd: &'a mut [f32], // (N)
    pub(super) gate: &'a mut [f32],     // (N, F)
    pub(super) up: &'a mut [f32],       // (N, F)
    pub(super) act: &'a mut [f32],      // (N, F)
    pub(super) out: &'a mut [f32],      // (N, H) the layer's output
}

/// What every layer shares: RoPE tables and scratch buffers.
pub(super) struct LayerScratch<'a> {
    pub(super) cos: &'a [f32],
    pub(super) sin: &'a [f32],
    pub(super) proj: &'a mut [f32],
    pub(super) heads: &'a mut HeadScratch,
    pub(super) grads: &'a mut GradScratch,
}

/// Activation gradients, one layer at a time.
pub(super) struct GradScratch {
    pub(super) dresid: Vec<f32>,  // (N, H)
    pub(super) dx: Vec<f32>,      // (N, H)
    pub(super) dln: Vec<f32>,     // (N, H)
    pub(super) dattn: Vec<f32>,   // (N, Nq·d)
    pub(super) dq: Vec<f32>,      // (N, Nq·d)
    pub(super) dk: Vec<f32>,      // (N, Nkv·d)
    pub(super) dv: Vec<f32>,      // (N, Nkv·d)
    pub(super) dq_raw: Vec<f32>,  // (N, Nq·d)
    pub(super) dk_raw: Vec<f32>,  // (N, Nkv·d)
    pub(super) dgate: Vec<f32>,   // (N, F)
    pub(super) dup: Vec<f32>,     // (N, F)
    pub(super) dact: Vec<f32>,    // (N, F)
    pub(super) dlosses: Vec<f32>, // (N)
}

impl Activations {
    /// Allocates the arena for micro-batches of `b` sequences of `t` tokens.
    pub fn new(c: &Qwen3Config, b: usize, t: usize) -> Activations {
        let n = b * t;
        let (h, f, l, v) = (
            c.hidden_size,
            c.intermediate_size,
            c.num_hidden_layers,
            c.vocab_size,
        );
        let (q, kv, nq, nkv) = (
            c.q_dim(),
            c.kv_dim(),
            c.num_attention_heads,
            c.num_key_value_heads,
        );
        let z = |len: usize| vec![0.0f32; len];
        Activations {
            b,
            t,
            resid: z((l + 1) * n * h),
            ln1: z(l * n * h),
            ln1_rstd: z(l * n),
            q_raw: z(l * n * q),
            q_rstd: z(l * n * nq),
            q: z(l * n * q),
            k_raw: z(l * n * kv),
            k_rstd: z(l * n * nkv),
            k: z(l * n * kv),
            v: z(l * n * kv),
            lse: z(l * b * nq * t),
            attn_out: z(l * n * q),
            resid_mid: z(l * n * h),
            ln2: z(l * n * h),
            ln2_rstd: z(l * n),
            gate: z(l * n * f),
            up: z(l * n * f),
            act: z(l * n * f),
            lnf: z(n * h),
            lnf_rstd: z(n),
            logits: z(n * v),
            losses: z(n),
            ce_max: z(n),
            ce_sum: z(n),
            cos: z(n * c.head_dim / 2),
            sin: z(n * c.head_dim / 2),
            proj: z(n * h),
            heads: HeadScratch {
                q: z(n * q),
                k: z(n * kv),
                v: z(n * kv),
            },
            grads: GradScratch {
                dresid: z(n * h),
                dx: z(n * h),
                dln: z(n * h),
                dattn: z(n * q),
                dq: z(n * q),
                dk: z(n * kv),
                dv: z(n * kv),
                dq_raw: z(n * q),
                dk_raw: z(n * kv),
                dgate: z(n * f),
                dup: z(n * f),
                dact: z(n * f),
                dlosses: z(n),
            },
        }
    }

    /// Layer `l`'s activations and the shared scratch, borrowed apart.
    pub(super) fn layer(&mut self, l: usize) -> (LayerActs<'_>, LayerScratch<'_>) {
        let layers = self.ln1_rstd.len() / (self.b * self.t);
        let nh = self.proj.len();
        let (before, after) = self.resid.split_at_mut((l + 1) * nh);
        fn slot(buf: &mut [f32], l: usize, layers: usize) -> &mut [f32] {
            let len = buf.len() / layers;
            &mut buf[l * len..(l + 1) * len]
        }
        let acts = LayerActs {
            x: &before[l * nh..],
            ln1: slot(&mut self.ln1, l, layers),
            ln1_rstd: slot(&mut self.ln1_rstd, l, layers),
            q_raw: slot(&mut self.q_raw, l, layers),
            q_rstd: slot(&mut self.q_rstd, l, layers),
            q: slot(&mut self.q, l, layers),
            k_raw: slot(&mut self.k_raw, l, layers),
            k_rstd: slot(&mut self.k_rstd, l, layers),
            k: slot(&mut self.k, l, layers),
            v: slot(&mut self.v, l, layers),
            lse: slot(&mut self.lse, l, layers),
            attn_out: slot(&mut self.attn_out, l, layers),
            mid: slot(&mut self.resid_mid, l, layers),
            ln2: slot(&mut self.ln2, l, layers),
            ln2_rstd: slot(&mut self.ln2_rstd, l, layers),
            gate: slot(&mut self.gate, l, layers),
            up: slot(&mut self.up, l, layers),
            act: slot(&mut self.act, l, layers),
            out: &mut after[..nh],
        };
        let scratch = LayerScratch {
            cos: &self.cos,
            sin: &self.sin,
            proj: &mut self.proj,
            heads: &mut self.heads,
            grads: &mut self.grads,
        };
        (acts, scratch)
    }

    /// Micro-batch size and sequence length this arena serves.
    pub fn shape(&self) -> (usize, usize) {
        (self.b, self.t)
    }

    /// A pipeline stage's input hidden states (N, H), filled by the caller before the forward
    /// of a stage that does not embed.
    pub fn stage_input_mut(&mut self) -> &mut [f32] {
        let nh = self.grads.dresid.len();
        &mut self.resid[..nh]
    }

    /// A pipeline stage's output hidden states (N, H) after its forward.
    pub fn stage_output(&self) -> &[f32] {
        let nh = self.grads.dresid.len();
        &self.resid[self.resid.len() - nh..]
    }

    /// The gradient of a stage's output (N, H), filled by the caller before the backward of a
    /// stage without the loss; after the backward, the gradient of the stage's input.
    pub fn stage_grad_mut(&mut self) -> &mut [f32] {
        &mut self.grads.dresid
    }

    /// The gradient of the stage's input (after a backward) and the input (for the next
    /// micro-batch's forward) at once.
    pub fn stage_grad_and_input_mut(&mut self) -> (&[f32], &mut [f32]) {
        let nh = self.grads.dresid.len();
        (&self.grads.dresid, &mut self.resid[..nh])
    }

    /// The gradient of the stage's input (N, H) after its backward.
    pub fn stage_grad(&self) -> &[f32] {
        &self.grads.dresid
    }
}
