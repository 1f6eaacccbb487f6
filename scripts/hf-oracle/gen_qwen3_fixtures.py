#!/usr/bin/env python3
"""Golden Qwen3 fixtures for `pretrain`, from REAL PyTorch + Hugging Face transformers (CPU).

Produced with (exact versions):
    Python        3.11.7
    torch         2.15.0   (PyPI wheel, the CUDA build, run on CPU; torch.set_num_threads(1))
    transformers  5.24.0   (modeling_qwen3.py, attn_implementation="eager", no `kernels` package)
    safetensors   0.8.0
    numpy         2.4.6

Install and run (venv outside the repo; ~5.5 GB because of torch's CUDA wheels):
    python3 -m venv /work/venvs/torch
    /work/venvs/torch/bin/pip install torch==2.15.0 transformers==5.24.0 safetensors==0.8.0 numpy
    cd <repo> && /work/venvs/torch/bin/python scripts/hf-oracle/gen_qwen3_fixtures.py
    # options: --out DIR (default tests/assets/qwen3), --save-model (also write save_pretrained's
    #          model.safetensors next to config.json; off by default to keep the fixtures small)

Models (random, never from a hub), both Qwen3ForCausalLM from Qwen3Config:
    vocab 128, hidden 64, intermediate 96, 2 layers, 4 query heads, 2 KV heads (GQA),
    head_dim 32 (explicit: q_proj out 128 != hidden 64), rope_theta 1e6 (rope_type default),
    rms_norm_eps 1e-6, max_position_embeddings 128, attention_bias false, sliding window off,
    eager attention, use_cache False, float32.
    untied/ : tie_word_embeddings false (102,848 parameters)
    tied/   : tie_word_embeddings true  (94,656 parameters; lm_head.weight IS embed_tokens.weight)
    Init: torch.manual_seed(SEED) then AutoModelForCausalLM.from_config (Linear/Embedding N(0,0.02));
    then every RMSNorm weight (input_layernorm, post_attention_layernorm, q_norm, k_norm, model.norm)
    is set to 1 + 0.1*N(0,1) (own seeded generator) so norm weights/gradients are exercised.

Batch: B=2, T=16. tokens ~ U[0, vocab) of shape [B, T+1]; input_ids = tokens[:, :T],
    labels = tokens[:, 1:] (pre-shifted, Megatron convention: labels[b,t] is the target of
    position t; HF's internal shift is NOT used), loss_mask f32 with zeros, position_ids 0..T-1.

Loss (all losses in these fixtures):
    logits = model(input_ids, attention_mask=ones(B,T), position_ids=P, use_cache=False).logits
    loss   = sum_{b,t} CE(logits[b,t,:], labels[b,t]) * loss_mask[b,t] / sum_{b,t} loss_mask[b,t]
    (CE = F.cross_entropy(..., reduction="none"), i.e. logsumexp(logits) - logits[label].)
    The all-ones 2-D attention_mask is passed so that the mask is plain causal over the whole row
    even when position_ids restart (transformers 5.x, given attention_mask=None and restarting
    position_ids, silently builds a block-diagonal "packed sequence" mask; that variant is recorded
    separately as reset_blockdiag.*).

Optimizer: torch.optim.AdamW(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, foreach=False) with two groups:
    ndim >= 2 -> weight_decay 0.1, ndim < 2 (norm weights) -> weight_decay 0.0;
    before each step torch.nn.utils.clip_grad_norm_(params, max_norm=1.0, foreach=False).

f64 reference: a deepcopy of the model in float64. HF's modules hard-code three f32 casts
    (RMSNorm computes in f32, eager softmax uses dtype=float32, rotary cos/sin computed in f32); for
    the f64 model those three are patched (only while the f64 model runs) to stay in f64, so
    loss64/grad64 are a genuine f64 reference (cos/sin from inv_freq computed in f64 too).

Outputs: tests/assets/qwen3/{untied,tied}/{fixture.safetensors,config.json},
    tests/assets/qwen3/manifest.json (versions, sha256, f32-vs-f64 error stats), README.md
    (tensor names, layouts, op details). See README.md for the full naming scheme.
"""
import argparse
import contextlib
import copy
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile

import numpy as np
import safetensors
import safetensors.torch
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoModelForCausalLM, Qwen3Config
from transformers.models.qwen3 import modeling_qwen3 as mq

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

SEED = 20250101
B, T = 2, 16
VOCAB = 128
LR, BETAS, EPS, WD, MAX_NORM = 1e-3, (0.9, 0.95), 1e-8, 0.1, 1.0


def make_config(tied: bool) -> Qwen3Config:
    return Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        hidden_act="silu",
        max_position_embeddings=128,
        initializer_range=0.02,
        rms_norm_eps=1e-6,
        use_cache=False,
        tie_word_embeddings=tied,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        attention_bias=False,
        attention_dropout=0.0,
        use_sliding_window=False,
        sliding_window=None,
        max_window_layers=2,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


def build_model(tied: bool, seed: int):
    cfg = make_config(tied)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    model.train()  # dropout is 0.0 anyway
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float32))
    if tied:
        assert model.lm_head.weight is model.model.embed_tokens.weight, "tie not in effect"
    else:
        assert model.lm_head.weight is not model.model.embed_tokens.weight
    return model


def make_inputs(seed: int):
    g = torch.Generator().manual_seed(seed + 2)
    tokens = torch.randint(0, VOCAB, (B, T + 1), generator=g, dtype=torch.int64)
    input_ids = tokens[:, :T].contiguous()
    labels = tokens[:, 1:].contiguous()
    mask = (torch.rand((B, T), generator=g) > 0.25).to(torch.float32)
    mask[0, 0:3] = 0.0  # a run of masked positions at the start of row 0
    mask[1, T - 2:] = 0.0  # and at the end of row 1
    pos = torch.arange(T, dtype=torch.int64).unsqueeze(0).expand(B, T).contiguous()
    # reset_position_ids case: positions restart mid-row (different per row)
    reset = torch.stack([
        torch.cat([torch.arange(8), torch.arange(8)]),
        torch.cat([torch.arange(5), torch.arange(11)]),
    ]).to(torch.int64)
    return input_ids, labels, mask, pos, reset


def masked_ce(logits, labels, mask):
    V = logits.shape[-1]
    ce = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), reduction="none")
    m = mask.reshape(-1).to(logits.dtype)
    return (ce * m).sum() / m.sum()


def forward_loss(model, input_ids, labels, mask, pos, block_diag=False):
    am = None if block_diag else torch.ones_like(input_ids)
    out = model(input_ids=input_ids, attention_mask=am, position_ids=pos, use_cache=False)
    return out.logits, masked_ce(out.logits, labels, mask)


# ---------------------------------------------------------------------------------------------
# f64 patches: HF hard-codes f32 in RMSNorm, eager softmax and the rotary embedding.
@contextlib.contextmanager
def true_f64():
    orig_norm = mq.Qwen3RMSNorm.forward
    orig_rot = mq.Qwen3RotaryEmbedding.forward
    orig_eager = mq.eager_attention_forward

    def norm_forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        cdt = torch.promote_types(input_dtype, torch.float32)
        h = hidden_states.to(cdt)
        variance = h.pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * h.to(input_dtype)

    def rot_forward(self, x, position_ids):
        if x.dtype != torch.float64:
            return orig_rot(self, x, position_ids)
        base = self.config.rope_parameters["rope_theta"]
        dim = self.config.head_dim
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        freqs = position_ids[..., None].to(torch.float64) * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling

    def eager(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        k = mq.repeat_kv(key, module.num_key_value_groups)
        v = mq.repeat_kv(value, module.num_key_value_groups)
        w = torch.matmul(query, k.transpose(2, 3)) * scaling
        if attention_mask is not None:
            w = w + attention_mask
        w = torch.nn.functional.softmax(w, dim=-1, dtype=torch.promote_types(query.dtype, torch.float32)).to(query.dtype)
        o = torch.matmul(w, v).transpose(1, 2).contiguous()
        return o, w

    mq.Qwen3RMSNorm.forward = norm_forward
    mq.Qwen3RotaryEmbedding.forward = rot_forward
    mq.eager_attention_forward = eager
    try:
        yield
    finally:
        mq.Qwen3RMSNorm.forward = orig_norm
        mq.Qwen3RotaryEmbedding.forward = orig_rot
        mq.eager_attention_forward = orig_eager


# ---------------------------------------------------------------------------------------------
# Intermediate activations from the real HF modules (hooks + wrappers around module globals).
@contextlib.contextmanager
def capture_acts(model, acts: dict):
    """Fill `acts` (name -> tensor with retain_grad) during one forward of `model`."""
    handles = []
    m = model.model
    l0 = m.layers[0]

    def keep(name, t):
        if t.requires_grad:
            t.retain_grad()
        acts[name] = t

    def out_hook(name):
        def h(_mod, _inp, out):
            keep(name, out[0] if isinstance(out, tuple) else out)
        return h

    def in_hook(name):
        def h(_mod, inp):
            keep(name, inp[0])
        return h

    handles.append(m.embed_tokens.register_forward_hook(out_hook("embed")))
    def rope_hook(_mod, _inp, out):  # must return None (a returned value replaces the output)
        acts["rope.cos"], acts["rope.sin"] = out[0], out[1]

    handles.append(m.rotary_emb.register_forward_hook(rope_hook))
    handles.append(l0.input_layernorm.register_forward_hook(out_hook("layers.0.input_layernorm")))
    handles.append(l0.self_attn.q_proj.register_forward_hook(out_hook("layers.0.q_proj")))
    handles.append(l0.self_attn.k_proj.register_forward_hook(out_hook("layers.0.k_proj")))
    handles.append(l0.self_attn.v_proj.register_forward_hook(out_hook("layers.0.v_proj")))
    handles.append(l0.self_attn.q_norm.register_forward_hook(out_hook("layers.0.q_norm")))
    handles.append(l0.self_attn.k_norm.register_forward_hook(out_hook("layers.0.k_norm")))
    handles.append(l0.self_attn.o_proj.register_forward_pre_hook(in_hook("layers.0.attn_out")))
    handles.append(l0.self_attn.o_proj.register_forward_hook(out_hook("layers.0.o_proj")))
    handles.append(l0.post_attention_layernorm.register_forward_hook(out_hook("layers.0.post_attention_layernorm")))
    handles.append(l0.mlp.down_proj.register_forward_pre_hook(in_hook("layers.0.mlp_act")))
    handles.append(l0.mlp.register_forward_hook(out_hook("layers.0.mlp")))
    handles.append(l0.register_forward_hook(out_hook("layers.0.output")))
    handles.append(m.layers[1].register_forward_hook(out_hook("layers.1.output")))
    handles.append(m.norm.register_forward_hook(out_hook("norm")))

    orig_rope = mq.apply_rotary_pos_emb
    orig_eager = mq.eager_attention_forward
    calls = {"rope": 0, "attn": 0}

    def rope_wrap(q, k, cos, sin, unsqueeze_dim=1):
        qe, ke = orig_rope(q, k, cos, sin, unsqueeze_dim)
        if calls["rope"] == 0:
            keep("layers.0.q_rope", qe)
            keep("layers.0.k_rope", ke)
        calls["rope"] += 1
        return qe, ke

    def eager_wrap(module, *a, **kw):
        o, w = orig_eager(module, *a, **kw)
        if calls["attn"] == 0:
            keep("layers.0.attn_probs", w)
        calls["attn"] += 1
        return o, w

    mq.apply_rotary_pos_emb = rope_wrap
    mq.eager_attention_forward = eager_wrap
    try:
        yield
    finally:
        mq.apply_rotary_pos_emb = orig_rope
        mq.eager_attention_forward = orig_eager
        for h in handles:
            h.remove()


ACT_GRADS = ["logits", "norm", "layers.1.output", "layers.0.output", "layers.0.mlp_act",
             "layers.0.post_attention_layernorm", "layers.0.attn_out", "layers.0.q_rope",
             "layers.0.k_rope", "layers.0.q_norm", "layers.0.input_layernorm", "embed"]


# ---------------------------------------------------------------------------------------------
def param_groups(model):
    decay = [p for _, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for _, p in model.named_parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}]


def rel_err(a, b):
    a = a.double()
    b = b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def one(x, dtype=torch.float32):
    return torch.tensor([float(x)], dtype=dtype)


def gen_case(name, tied, out_root, save_model, stats):
    model = build_model(tied, SEED)
    input_ids, labels, mask, pos, reset = make_inputs(SEED)
    names = [n for n, _ in model.named_parameters()]  # tied: lm_head.weight not listed (dedup)
    n_params = sum(p.numel() for p in model.parameters())
    t = {}
    for n, p in model.named_parameters():
        t[n] = p.detach().clone()
    t["input_ids"] = input_ids
    t["labels"] = labels
    t["loss_mask"] = mask
    t["position_ids"] = pos

    # f64 copy (before any optimizer step)
    model64 = copy.deepcopy(model).double()

    # ---- f32 forward/backward (with activation capture for the untied case)
    acts = {}
    capture = (not tied)
    model.zero_grad(set_to_none=True)
    ctx = capture_acts(model, acts) if capture else contextlib.nullcontext()
    with ctx:
        logits, loss = forward_loss(model, input_ids, labels, mask, pos)
    if capture:
        logits.retain_grad()
        acts["logits"] = logits
    loss.backward()
    t["logits"] = logits.detach().clone()
    t["loss"] = one(loss.item())
    for n, p in model.named_parameters():
        t["grad." + n] = p.grad.detach().clone()
    if capture:
        for k, v in acts.items():
            if k != "logits":
                t["act." + k] = v.detach().clone().contiguous()
        for k in ACT_GRADS:
            t["actgrad." + k] = acts[k].grad.detach().clone().contiguous()

    # ---- f64 reference
    with true_f64():
        model64.zero_grad(set_to_none=True)
        logits64, loss64 = forward_loss(model64, input_ids, labels, mask.double(), pos)
        loss64.backward()
    t["loss64"] = one(loss64.item(), torch.float64)
    for n, p in model64.named_parameters():
        t["grad64." + n] = p.grad.detach().clone()
    st = {"loss_rel": abs(loss.item() - loss64.item()) / abs(loss64.item()),
          "logits_rel_max": rel_err(logits.detach(), logits64.detach()),
          "grad_rel_max_per_tensor": {n: rel_err(t["grad." + n], t["grad64." + n]) for n in names}}
    st["grad_rel_max"] = max(st["grad_rel_max_per_tensor"].values())

    # ---- reset_position_ids input set (untied only): plain causal over the whole row
    if not tied:
        t["reset.position_ids"] = reset
        model.zero_grad(set_to_none=True)
        rl, rloss = forward_loss(model, input_ids, labels, mask, reset)
        rloss.backward()
        t["reset.logits"] = rl.detach().clone()
        t["reset.loss"] = one(rloss.item())
        for n, p in model.named_parameters():
            t["reset.grad." + n] = p.grad.detach().clone()
        with true_f64():
            model64.zero_grad(set_to_none=True)
            rl64, rloss64 = forward_loss(model64, input_ids, labels, mask.double(), reset)
        t["reset.loss64"] = one(rloss64.item(), torch.float64)
        # what HF does by default (attention_mask=None): block-diagonal packed-sequence mask
        with torch.no_grad():
            bl, bloss = forward_loss(model, input_ids, labels, mask, reset, block_diag=True)
            pl, _ = forward_loss(model, input_ids, labels, mask, pos, block_diag=True)
        assert torch.equal(pl, t["logits"]), "attention_mask=None with 0..T-1 must equal explicit ones"
        t["reset_blockdiag.logits"] = bl.clone()
        t["reset_blockdiag.loss"] = one(bloss.item())
        st["reset_loss_rel"] = abs(rloss.item() - rloss64.item()) / abs(rloss64.item())
        st["reset_logits_rel_max"] = rel_err(rl.detach(), rl64.detach())
        model.zero_grad(set_to_none=True)

    # ---- 2 AdamW steps with clipping
    opt = torch.optim.AdamW(param_groups(model), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD,
                            foreach=False)
    for step in (1, 2):
        opt.zero_grad(set_to_none=True)
        _, l = forward_loss(model, input_ids, labels, mask, pos)
        l.backward()
        if step == 1:
            for n, p in model.named_parameters():
                assert torch.equal(p.grad, t["grad." + n]), f"non-deterministic grad {n}"
        gn = torch.nn.utils.clip_grad_norm_(list(model.parameters()), max_norm=MAX_NORM, foreach=False)
        t[f"step{step}.loss"] = one(l.item())
        t[f"step{step}.grad_norm"] = one(gn.item())
        opt.step()
    with torch.no_grad():
        _, l = forward_loss(model, input_ids, labels, mask, pos)
    t["loss_after_2_steps"] = one(l.item())
    for n, p in model.named_parameters():
        t["after2." + n] = p.detach().clone()

    # ---- write
    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    t = {k: v.contiguous() for k, v in t.items()}
    meta = {
        "generator": "scripts/hf-oracle/gen_qwen3_fixtures.py",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "seed": str(SEED), "tied": str(tied).lower(), "B": str(B), "T": str(T),
        "loss": "sum(CE(logits[b,t], labels[b,t]) * loss_mask[b,t]) / sum(loss_mask); labels pre-shifted",
        "optimizer": "AdamW lr=1e-3 betas=(0.9,0.95) eps=1e-8; wd 0.1 for ndim>=2 else 0; clip_grad_norm_ 1.0",
    }
    path = os.path.join(d, "fixture.safetensors")
    # one metadata key only: safetensors writes a multi-key metadata map in hash order, which would
    # make the file bytes differ between identical runs
    safetensors.torch.save_file(t, path, metadata={"info": json.dumps(meta, sort_keys=True)})
    with tempfile.TemporaryDirectory() as tmp:
        fresh = build_model(tied, SEED)  # initial params (model above was stepped)
        fresh.save_pretrained(tmp)
        shutil.copy(os.path.join(tmp, "config.json"), os.path.join(d, "config.json"))
        if save_model:
            shutil.copy(os.path.join(tmp, "model.safetensors"), os.path.join(d, "model.safetensors"))
    st["n_params"] = n_params
    st["losses"] = {k: t[k].item() for k in ["loss", "loss64", "step1.loss", "step2.loss",
                                               "loss_after_2_steps", "step1.grad_norm",
                                               "step2.grad_norm"]}
    stats[name] = st
    print(f"{name}: params {n_params}, loss {loss.item():.7f} (f64 {loss64.item():.10f}), "
          f"grad rel max {st['grad_rel_max']:.2e}, after2 loss {t['loss_after_2_steps'].item():.7f}, "
          f"{len(t)} tensors, {os.path.getsize(path)} bytes")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "assets", "qwen3"))
    ap.add_argument("--save-model", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    stats = {}
    for name, tied in (("untied", False), ("tied", True)):
        gen_case(name, tied, args.out, args.save_model, stats)
    files = {}
    for root, _, fs in os.walk(args.out):
        for f in sorted(fs):
            if f in ("manifest.json", "README.md"):
                continue
            p = os.path.join(root, f)
            files[os.path.relpath(p, args.out)] = {"bytes": os.path.getsize(p), "sha256": sha256(p)}
    manifest = {
        "generator": "scripts/hf-oracle/gen_qwen3_fixtures.py",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "safetensors": safetensors.__version__,
                     "numpy": np.__version__},
        "seed": SEED, "B": B, "T": T, "threads": 1,
        "f32_vs_f64": stats,
        "files": files,
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    total = sum(v["bytes"] for v in files.values())
    print(f"wrote {args.out}: {total} bytes in {len(files)} files (+ manifest.json)")


if __name__ == "__main__":
    sys.exit(main())
