#!/usr/bin/env python3
"""Check that a directory loads with Hugging Face transformers (e.g. a checkpoint `pretrain` wrote).

Usage (venv from scripts/hf-oracle/gen_qwen3_fixtures.py: torch 2.15.0, transformers 5.24.0):
    /work/venvs/torch/bin/python scripts/hf-oracle/check_from_pretrained.py DIR [--tokens 1,2,3,4]
        [--dtype float32|bfloat16|auto] [--expect-params N]

Loads DIR with AutoModelForCausalLM.from_pretrained (and AutoTokenizer.from_pretrained when tokenizer
files are present), reports missing/unexpected/mismatched keys (any of them is a failure), checks
that tie_word_embeddings is honoured, runs one forward on a few tokens and prints the parameter
count and the first logits. Exits 0 on success, 1 on any failure.
"""
import argparse
import math
import os
import sys
import traceback

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--tokens", default=None, help="comma-separated token ids (default: tokenizer or 0..7 mod vocab)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    ap.add_argument("--expect-params", type=int, default=None, help="fail unless the unique parameter count is N")
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    if not os.path.isfile(os.path.join(args.dir, "config.json")):
        print(f"FAIL: {args.dir}/config.json missing")
        return 1
    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    model, info = AutoModelForCausalLM.from_pretrained(
        args.dir, dtype=dtype, attn_implementation="eager", output_loading_info=True)
    model.eval()
    cfg = model.config
    print(f"architecture {type(model).__name__}, model_type {cfg.model_type}, dtype {next(model.parameters()).dtype}")
    failures = []
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        vals = list(info.get(key, []) or [])
        if vals:
            failures.append(f"{key}: {vals[:10]}{' ...' if len(vals) > 10 else ''}")

    tied_cfg = bool(getattr(cfg, "tie_word_embeddings", False))
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    is_tied = out is not None and out.weight.data_ptr() == emb.data_ptr()
    print(f"tie_word_embeddings {tied_cfg}, lm_head shares embedding: {is_tied}")
    if tied_cfg != is_tied:
        failures.append(f"tie_word_embeddings={tied_cfg} but shared={is_tied}")

    n_unique = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_unique:,} unique")
    if args.expect_params is not None and n_unique != args.expect_params:
        failures.append(f"expected {args.expect_params} parameters, found {n_unique}")

    nonfinite = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if nonfinite:
        failures.append(f"non-finite parameters: {nonfinite[:5]}")

    tok = None
    if any(os.path.isfile(os.path.join(args.dir, f)) for f in TOKENIZER_FILES):
        try:
            tok = AutoTokenizer.from_pretrained(args.dir)
            print(f"tokenizer {type(tok).__name__}, vocab {len(tok)}")
        except Exception as e:  # noqa: BLE001
            failures.append(f"tokenizer load failed: {e!r}")
    if args.tokens:
        ids = [int(x) for x in args.tokens.split(",")]
    elif tok is not None:
        ids = tok("Hello, world! The quick brown fox")["input_ids"]
    else:
        ids = [i % cfg.vocab_size for i in range(8)]
    if max(ids) >= cfg.vocab_size:
        failures.append(f"token id {max(ids)} >= vocab_size {cfg.vocab_size}")
    else:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits.float()
        print(f"input ids {ids}")
        print(f"logits shape {tuple(logits.shape)}; logits[0,0,:8] = {[round(v, 6) for v in logits[0, 0, :8].tolist()]}")
        print(f"logits[0,-1,:8] = {[round(v, 6) for v in logits[0, -1, :8].tolist()]}")
        if not torch.isfinite(logits).all():
            failures.append("non-finite logits")
        else:
            nll = torch.nn.functional.cross_entropy(logits[0, :-1], torch.tensor(ids[1:]))
            print(f"next-token loss on the input: {nll.item():.6f} (ln V = {math.log(cfg.vocab_size):.4f})")

    if failures:
        for f in failures:
            print("FAIL:", f)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        print("FAIL: exception")
        sys.exit(1)
