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

/// Largest logits buffer in bytes: the LM head and the loss run over chunks of tokens whose
/// logits fit in it, so the (tokens × vocabulary) logits never exist whole once they would be
/// larger (2.5 GB for Qwen3's 151,936 words at 4096 tokens).
pub const LOGITS_CHUNK_BYTES: usize = 256 << 20;

/// Tokens per logits chunk for `n` tokens over a vocabulary of `v`.
pub fn loss_chunk(n: usize, v: usize) -> usize {
    (LOGITS_CHUNK_BYTES / (v.max(1) * 4)).clamp(1, n.max(1))
}

/// Activations of one micro-batch shape, reused across steps.
pub struct Activations {
    pub(super) b: usize,
    pub(super) t: usize,
    /// The first `recompute` layers are recomputed in the backward.
    recompute: usize,
    pub(super) resid: Vec<f32>, // (L+1, N, H)
    // The buffers below hold S sets, S = L without recomputation: one per layer kept, plus
    // one shared by the recomputed layers.
    pub(super) ln1: Vec<f32>,       // (S, N, H)
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
    /// Logits of one chunk of tokens (C, V), C = [`loss_chunk`]: the whole
    /// (N, V) when one chunk covers every token. After the backward, the gradient of the
    /// first chunk's logits.
    pub logits: Vec<f32>,
    /// Tokens per logits chunk.
    pub(super) loss_chunk: usize,
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
    /// Allocates the arena for micro-batches of `b` sequences of `t` tokens, keeping every
    /// layer's activations.
    pub fn new(c: &Qwen3Config, b: usize, t: usize) -> Activations {
        Activations::with_recompute(c, b, t, 0)
    }

    /// The arena when the first `recompute` layers are recomputed in the backward: those keep
    /// only their input (the residual stream) and share one set of buffers, which the backward
    /// fills again by running the layer's forward before its backward.
    pub fn with_recompute(c: &Qwen3Config, b: usize, t: usize, recompute: usize) -> Activations {
        let n = b * t;
        let layers = c.num_hidden_layers;
        let recompute = recompute.min(layers);
        // Buffer sets: one per kept layer, plus one shared by the recomputed layers.
        let l = layers - recompute + usize::from(recompute > 0);
        let (h, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
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
            recompute,
            resid: z((layers + 1) * n * h),
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
            logits: z(loss_chunk(n, v) * v),
            loss_chunk: loss_chunk(n, v),
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
        // Recomputed layers share set 0; kept layers follow.
        let set = match self.recomputed(l) {
            true => 0,
            false => l - self.recompute + usize::from(self.recompute > 0),
        };
        let nh = self.proj.len();
        let (before, after) = self.resid.split_at_mut((l + 1) * nh);
        fn slot(buf: &mut [f32], set: usize, sets: usize) -> &mut [f32] {
            let len = buf.len() / sets;
            &mut buf[set * len..(set + 1) * len]
        }
        let l = set;
        let acts = LayerActs {
            x: &before[before.len() - nh..],
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

    /// The bytes [`Activations::with_recompute`] allocates, counted without allocating and
    /// with checked arithmetic (`None` when the count overflows): the memory plan's figure.
    pub fn bytes(c: &Qwen3Config, b: usize, t: usize, recompute: usize) -> Option<u64> {
        let u = |x: usize| x as u64;
        let n = u(b).checked_mul(u(t))?;
        let layers = u(c.num_hidden_layers);
        let recompute = u(recompute).min(layers);
        let sets = layers - recompute + u64::from(recompute > 0);
        let (h, f, v) = (u(c.hidden_size), u(c.intermediate_size), u(c.vocab_size));
        let (nq, nkv, d) = (
            u(c.num_attention_heads),
            u(c.num_key_value_heads),
            u(c.head_dim),
        );
        let sum = |xs: &[Option<u64>]| xs.iter().try_fold(0u64, |acc, x| acc.checked_add((*x)?));
        let m = |a: u64, b: u64| a.checked_mul(b);
        let (q, kv) = (m(nq, d)?, m(nkv, d)?);
        // ln1, ln1_rstd, q_raw, q_rstd, q, k_raw, k_rstd, k, v, lse, attn_out, mid, ln2,
        // ln2_rstd, gate, up, act: per token.
        let per_token_set = sum(&[
            Some(h),
            Some(1),
            Some(q),
            Some(nq),
            Some(q),
            Some(kv),
            Some(nkv),
            Some(kv),
            Some(kv),
            Some(nq),
            Some(q),
            Some(h),
            Some(h),
            Some(1),
            m(3, f),
        ])?;
        let chunk = (LOGITS_CHUNK_BYTES as u64 / v.saturating_mul(4).max(1)).clamp(1, n.max(1));
        let floats = sum(&[
            m(m(layers + 1, n)?, h),
            m(m(sets, n)?, per_token_set),
            // lnf, lnf_rstd, losses, ce_max, ce_sum, cos, sin, proj
            m(n, sum(&[Some(h), Some(4), Some(d), Some(h)])?),
            m(chunk, v),
            // head scratch q, k, v
            m(n, sum(&[Some(q), m(2, kv)])?),
            // gradient scratch: dresid, dx, dln; dattn, dq, dq_raw; dk, dv, dk_raw; dgate,
            // dup, dact; dlosses
            m(n, sum(&[m(3, h), m(3, q), m(3, kv), m(3, f), Some(1)])?),
        ])?;
        m(floats, 4)
    }

    /// Runs the LM head and the loss over chunks of `tokens` tokens (at least 1, at most the
    /// micro-batch) instead of the size [`LOGITS_CHUNK_BYTES`] gives.
    pub fn set_loss_chunk(&mut self, tokens: usize) {
        let (n, v) = (self.b * self.t, self.logits.len() / self.loss_chunk);
        self.loss_chunk = tokens.clamp(1, n);
        self.logits = vec![0.0; self.loss_chunk * v];
    }

    /// Whether layer `l`'s activations are recomputed in the backward.
    pub fn recomputed(&self, l: usize) -> bool {
        l < self.recompute
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every buffer's length, in floats.
    fn allocated(a: &Activations) -> usize {
        let g = &a.grads;
        [
            &a.resid,
            &a.ln1,
            &a.ln1_rstd,
            &a.q_raw,
            &a.q_rstd,
            &a.q,
            &a.k_raw,
            &a.k_rstd,
            &a.k,
            &a.v,
            &a.lse,
            &a.attn_out,
            &a.resid_mid,
            &a.ln2,
            &a.ln2_rstd,
            &a.gate,
            &a.up,
            &a.act,
            &a.lnf,
            &a.lnf_rstd,
            &a.logits,
            &a.losses,
            &a.ce_max,
            &a.ce_sum,
            &a.cos,
            &a.sin,
            &a.proj,
            &a.heads.q,
            &a.heads.k,
            &a.heads.v,
            &g.dresid,
            &g.dx,
            &g.dln,
            &g.dattn,
            &g.dq,
            &g.dk,
            &g.dv,
            &g.dq_raw,
            &g.dk_raw,
            &g.dgate,
            &g.dup,
            &g.dact,
            &g.dlosses,
        ]
        .iter()
        .map(|v| v.len())
        .sum()
    }

    #[test]
    fn the_memory_plan_counts_what_is_allocated() {
        let c = Qwen3Config::from_hf_json(
            r#"{"vocab_size": 5000, "hidden_size": 48, "intermediate_size": 80,
            "num_hidden_layers": 5, "num_attention_heads": 6, "num_key_value_heads": 2,
            "head_dim": 8}"#,
        )
        .expect("config");
        for (b, t, recompute) in [(2, 33, 0), (1, 64, 5), (3, 16, 2)] {
            let a = Activations::with_recompute(&c, b, t, recompute);
            let counted = Activations::bytes(&c, b, t, recompute).expect("counts");
            assert_eq!(
                counted,
                4 * allocated(&a) as u64,
                "b {b} t {t} recompute {recompute}"
            );
        }
        let mut huge = c.clone();
        huge.hidden_size = usize::MAX / 2;
        assert_eq!(Activations::bytes(&huge, 4, 4096, 0), None);
    }
}
