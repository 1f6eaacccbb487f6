#!/usr/bin/env python3
"""PyTorch eager training-step benchmark: the peer that `pretrain` is measured against on CPU.

Model (docs: shared/reference/compute.md "bench model"): transformers' Qwen3ForCausalLM, hidden 512,
8 layers, 8 query / 4 KV heads, head_dim 64, intermediate 1536, vocab 32000, untied lm_head,
rope_theta 1e6, rms_norm_eps 1e-6, f32 (57.9 M parameters); seq 256, batch 4 (1024 tokens/step).
One step = forward + loss + backward + AdamW(lr 1e-3, betas (0.9, 0.95), eps 1e-8, weight decay
0.1 for ndim >= 2 else 0) + zero_grad. Loss: sum(CE(logits, labels) * mask) / sum(mask) with
pre-shifted labels (as in scripts/hf-oracle/gen_qwen3_fixtures.py); the mask is all ones here.
Random tokens from a fixed seed (one fixed batch per step index, generated up front).

Versions used: torch 2.15.0 (PyPI CUDA build, run on CPU), transformers 5.24.0.
    /work/venvs/torch/bin/python scripts/bench/torch_train_step.py [--threads 2] [--steps 10]
        [--warmup 2] [--sdpa] [--seq 256] [--batch 4] [--seed 1234] [--bf16]
--bf16: forward and loss under torch.autocast("cpu", dtype=torch.bfloat16) (f32 master weights,
the backward follows autocast's dtypes), the peer of `compute_dtype: bfloat16`.
Prints per-step times and, last, one line:
    torch: <median s/step> s/step, <tokens/s> tokens/s, peak RSS <MB> MB
(median over the steps after the warm-up ones; tokens/s = batch*seq / median.)
"""
import argparse
import os
import resource
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="total steps, warm-up included")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--sdpa", action="store_true", help="attn_implementation='sdpa' instead of 'eager'")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--bf16", action="store_true", help="autocast to bfloat16")
    args = ap.parse_args()
    if args.steps <= args.warmup:
        sys.exit("--steps must exceed --warmup")

    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import AutoModelForCausalLM, Qwen3Config

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = Qwen3Config(
        vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=4, head_dim=64, hidden_act="silu",
        max_position_embeddings=max(4096, args.seq), rms_norm_eps=1e-6, use_cache=False,
        tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        attention_bias=False, attention_dropout=0.0, use_sliding_window=False,
    )
    attn = "sdpa" if args.sdpa else "eager"
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn, dtype=torch.float32)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)

    B, T, V = args.batch, args.seq, cfg.vocab_size
    g = torch.Generator().manual_seed(args.seed + 1)
    batches = []
    for _ in range(args.steps):
        tok = torch.randint(0, V, (B, T + 1), generator=g)
        batches.append((tok[:, :T].contiguous(), tok[:, 1:].contiguous(), torch.ones(B, T)))
    attention_mask = torch.ones(B, T, dtype=torch.int64)
    position_ids = torch.arange(T).unsqueeze(0).expand(B, T)

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads "
          f"{torch.get_num_threads()}, attn {attn}, bf16 {args.bf16}, params {n_params:,}, tokens/step {B * T}")
    times = []
    for step, (ids, labels, mask) in enumerate(batches):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(input_ids=ids, attention_mask=attention_mask,
                           position_ids=position_ids, use_cache=False).logits
        ce = F.cross_entropy(logits.float().view(-1, V), labels.view(-1), reduction="none")
        loss = (ce * mask.view(-1)).sum() / mask.sum()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        times.append(dt)
        tag = " (warm-up)" if step < args.warmup else ""
        print(f"step {step}: {dt:.3f} s, loss {loss.item():.4f}{tag}", flush=True)

    med = statistics.median(times[args.warmup:])
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    print(f"torch: {med:.3f} s/step, {B * T / med:.0f} tokens/s, peak RSS {rss_mb:.0f} MB")


if __name__ == "__main__":
    main()
