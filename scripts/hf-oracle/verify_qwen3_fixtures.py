#!/usr/bin/env python3
"""Independent numpy (float64) re-implementation of the Qwen3 forward, checked against the fixtures.

Needs only numpy + safetensors (no torch):  pip install numpy safetensors
    python3 scripts/hf-oracle/verify_qwen3_fixtures.py [tests/assets/qwen3]
It rebuilds logits/loss from the stored parameters and inputs, following tests/assets/qwen3/README.md
literally (RMSNorm, per-head q/k norm before RoPE, rotate_half RoPE, contiguous GQA groups, causal
softmax, SwiGLU, masked CE over pre-shifted labels), and compares with logits, loss, loss64,
reset.*, reset_blockdiag.* and the act.* intermediates. Exits non-zero on a mismatch.
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file


def rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope_cos_sin(pos, d, theta):
    inv = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    ang = pos[..., None].astype(np.float64) * inv  # [B,T,d/2]
    emb = np.concatenate([ang, ang], -1)
    return np.cos(emb), np.sin(emb)


def rot_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], -1)


def forward(p, cfg, ids, pos, tied, block_diag=False, acts=None):
    H, nq, nkv, d = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps, theta = cfg["rms_norm_eps"], cfg["rope_parameters"]["rope_theta"]
    B, T = ids.shape
    g = lambda n: p[n].astype(np.float64)
    x = g("model.embed_tokens.weight")[ids]
    cos, sin = rope_cos_sin(pos, d, theta)  # [B,T,d]
    causal = np.tril(np.ones((T, T), bool))[None]  # [1,T,T]
    if block_diag:
        seg = np.cumsum(np.diff(pos, prepend=pos[:, :1] - 1, axis=-1) != 1, -1)
        causal = causal & (seg[:, :, None] == seg[:, None, :])
    for i in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{i}."
        n = rms(x, g(pre + "input_layernorm.weight"), eps)
        q = (n @ g(pre + "self_attn.q_proj.weight").T).reshape(B, T, nq, d)
        k = (n @ g(pre + "self_attn.k_proj.weight").T).reshape(B, T, nkv, d)
        v = (n @ g(pre + "self_attn.v_proj.weight").T).reshape(B, T, nkv, d)
        q = rms(q, g(pre + "self_attn.q_norm.weight"), eps)
        k = rms(k, g(pre + "self_attn.k_norm.weight"), eps)
        q = q.transpose(0, 2, 1, 3)  # [B,nq,T,d]
        k = k.transpose(0, 2, 1, 3)
        v = v.transpose(0, 2, 1, 3)
        c, s = cos[:, None], sin[:, None]
        q = q * c + rot_half(q) * s
        k = k * c + rot_half(k) * s
        r = nq // nkv
        k = np.repeat(k, r, axis=1)  # kv head j serves query heads j*r .. j*r+r-1
        v = np.repeat(v, r, axis=1)
        sc = q @ k.transpose(0, 1, 3, 2) * d ** -0.5
        sc = np.where(causal[:, None], sc, -np.inf)
        sc = np.exp(sc - sc.max(-1, keepdims=True))
        pr = sc / sc.sum(-1, keepdims=True)
        a = (pr @ v).transpose(0, 2, 1, 3).reshape(B, T, nq * d)
        if acts is not None and i == 0:
            acts.update({"act.layers.0.input_layernorm": n, "act.layers.0.q_rope": q,
                         "act.layers.0.attn_probs": pr, "act.layers.0.attn_out": a})
        x = x + a @ g(pre + "self_attn.o_proj.weight").T
        n = rms(x, g(pre + "post_attention_layernorm.weight"), eps)
        gt = n @ g(pre + "mlp.gate_proj.weight").T
        up = n @ g(pre + "mlp.up_proj.weight").T
        x = x + (gt / (1 + np.exp(-gt)) * up) @ g(pre + "mlp.down_proj.weight").T
        if acts is not None and i == 0:
            acts["act.layers.0.output"] = x
    x = rms(x, g("model.norm.weight"), eps)
    if acts is not None:
        acts["act.norm"] = x
    lm = g("model.embed_tokens.weight") if tied else g("lm_head.weight")
    return x @ lm.T


def loss(logits, labels, mask):
    m = logits.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
    ce = lse - np.take_along_axis(logits, labels[..., None], -1)[..., 0]
    return float((ce * mask).sum() / mask.sum())


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "tests/assets/qwen3"
    bad = 0

    def check(what, got, want, tol):
        nonlocal bad
        want = np.asarray(want, np.float64)
        err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
        ok = err <= tol
        bad += not ok
        print(f"  {'ok ' if ok else 'BAD'} {what:32s} rel err {err:.2e} (tol {tol:.0e})")

    for name in ("untied", "tied"):
        cfg = json.load(open(os.path.join(root, name, "config.json")))
        p = load_file(os.path.join(root, name, "fixture.safetensors"))
        tied = cfg["tie_word_embeddings"]
        assert ("lm_head.weight" in p) == (not tied)
        print(name)
        acts = {}
        lg = forward(p, cfg, p["input_ids"], p["position_ids"], tied, acts=acts)
        check("logits", lg, p["logits"], 1e-5)
        l = loss(lg, p["labels"], p["loss_mask"].astype(np.float64))
        check("loss vs loss64", np.array(l), p["loss64"], 1e-12)
        check("loss vs loss (f32)", np.array(l), p["loss"], 1e-6)
        for k, v in acts.items():
            if k in p:
                check(k, v, p[k], 1e-5)
        if "reset.position_ids" in p:
            lg = forward(p, cfg, p["input_ids"], p["reset.position_ids"], tied)
            check("reset.logits", lg, p["reset.logits"], 1e-5)
            check("reset.loss64", np.array(loss(lg, p["labels"], p["loss_mask"])), p["reset.loss64"], 1e-12)
            lg = forward(p, cfg, p["input_ids"], p["reset.position_ids"], tied, block_diag=True)
            check("reset_blockdiag.logits", lg, p["reset_blockdiag.logits"], 1e-5)
    print("FAILED" if bad else "all fixture checks passed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
