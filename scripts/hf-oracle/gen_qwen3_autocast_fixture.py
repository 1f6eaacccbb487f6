#!/usr/bin/env python3
"""bf16 peer for `compute_dtype: bfloat16`: the untied fixture model's loss and gradients under
`torch.autocast("cpu", dtype=torch.bfloat16)` (REAL PyTorch + Hugging Face transformers).

Versions: torch 2.15.0, transformers 5.25.0 (install as gen_qwen3_fixtures.py says), CPU,
torch.set_num_threads(1)). Run from the repository root after that script:
    /work/venvs/torch/bin/python scripts/hf-oracle/gen_qwen3_autocast_fixture.py

Input: tests/assets/qwen3/untied/fixture.safetensors (parameters, input_ids, labels, loss_mask,
position_ids). The model is rebuilt from its config.json with those parameters in float32
(master weights), eager attention, and run under autocast: linear layers and the attention
matmuls take bf16 inputs and give bf16 outputs, RMSNorm and softmax upcast to f32 (HF's code),
the embedding and the residual adds stay f32, the loss is computed on f32 logits.

Output: tests/assets/qwen3/untied/autocast_bf16.safetensors with
    loss                 [1] f32   masked mean cross-entropy (as the f32 fixture's `loss`)
    grad.<hf name>       f32       dloss/dparam (float32 parameters, so float32 gradients)
"""
import json
import os
import sys

import safetensors.torch
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoModelForCausalLM, Qwen3Config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIR = os.path.join(REPO, "tests", "assets", "qwen3", "untied")


def main():
    torch.set_num_threads(1)
    fx = safetensors.torch.load_file(os.path.join(DIR, "fixture.safetensors"))
    with open(os.path.join(DIR, "config.json")) as f:
        cfg = Qwen3Config(**{k: v for k, v in json.load(f).items() if k != "architectures"})
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    names = [n for n, _ in model.named_parameters()]
    model.load_state_dict({n: fx[n] for n in names}, strict=True)
    model.train()
    ids, labels, mask, pos = fx["input_ids"], fx["labels"], fx["loss_mask"], fx["position_ids"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=pos,
                    use_cache=False)
    logits = out.logits.float()
    v = logits.shape[-1]
    ce = F.cross_entropy(logits.reshape(-1, v), labels.reshape(-1), reduction="none")
    loss = (ce * mask.reshape(-1)).sum() / mask.sum()
    loss.backward()
    tensors = {"loss": loss.detach().reshape(1).contiguous()}
    for n, p in model.named_parameters():
        tensors[f"grad.{n}"] = p.grad.detach().float().contiguous()
    meta = {"torch": torch.__version__, "transformers": transformers.__version__,
            "autocast": "cpu bfloat16", "attn_implementation": "eager"}
    out_path = os.path.join(DIR, "autocast_bf16.safetensors")
    safetensors.torch.save_file(tensors, out_path, metadata=meta)
    print(f"wrote {out_path}: loss {loss.item():.6f} (f32 fixture {fx['loss'].item():.6f})")


if __name__ == "__main__":
    sys.exit(main())
