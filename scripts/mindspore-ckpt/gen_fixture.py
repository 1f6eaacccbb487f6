"""Generate the MindSpore `.ckpt` test fixtures in tests/assets/mindspore_ckpt/ with the real writer.

Made with: CPython 3.11.7, mindspore 2.10.0 (cp311 manylinux x86_64 wheel), numpy 2.4.6,
protobuf 7.36.2 (upb backend).

To regenerate (from the repository root; the virtual environment lives outside the repo):

    python3.11 -m venv /work/venvs/mindspore
    /work/venvs/mindspore/bin/pip install mindspore==2.10.0
    /work/venvs/mindspore/bin/python scripts/mindspore-ckpt/gen_fixture.py

It deletes and rewrites these files:

- tiny.ckpt: four float32 tensors with HF Qwen3 names, written by
  `mindspore.save_checkpoint([{"name": name, "data": Tensor(array)}, ...], path)` in list order; the values
  include -0.0, +-inf, a subnormal and a one-element tensor.
- tiny_bf16.ckpt: the same tensors cast to bfloat16 (`Tensor(array, dtype=mindspore.bfloat16)`);
  every value is exactly representable in bfloat16, so no rounding is involved.
- tiny.json: for each tensor, in file order, its name, shape and float32 values (non-finite values
  as the strings "inf", "-inf", "nan"); the Rust tests rebuild the inputs from it.

save_checkpoint writes the same bytes on every run (checked by `--check`, which writes each file
twice and compares), so the Rust writer is tested for byte identity against these files.
"""

import json
import os
import sys
import tempfile

import numpy as np
import mindspore as ms

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "tests", "assets", "mindspore_ckpt")


def tensors():
    """The fixture tensors: (name, float32 array), all exactly representable in bfloat16."""
    return [
        ("model.embed_tokens.weight", np.arange(-6, 6, dtype=np.float32).reshape(4, 3) * 0.5),
        (
            "model.layers.0.self_attn.q_proj.weight",
            np.array([[1.0, -0.0, np.inf], [-np.inf, 2.0**-130, -3.25]], dtype=np.float32),
        ),
        ("model.norm.weight", np.array([1.0, 0.0078125, 65536.0], dtype=np.float32)),
        ("lm_head.bias", np.array([-1.5], dtype=np.float32)),
    ]


def save(path, dtype):
    """Write the fixture tensors to `path` with mindspore.save_checkpoint as `dtype`."""
    params = [{"name": name, "data": ms.Tensor(arr, dtype=dtype)} for name, arr in tensors()]
    if os.path.exists(path):
        os.chmod(path, 0o644)
        os.remove(path)
    ms.save_checkpoint(params, path)
    os.chmod(path, 0o644)  # save_checkpoint leaves the file read-only (0400)


def jsonable(v):
    if np.isnan(v):
        return "nan"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    return float(v)


def main():
    os.makedirs(OUT, exist_ok=True)
    outputs = {"tiny.ckpt": ms.float32, "tiny_bf16.ckpt": ms.bfloat16}
    for name, dtype in outputs.items():
        save(os.path.join(OUT, name), dtype)
    if "--check" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            for name, dtype in outputs.items():
                again = os.path.join(tmp, name)
                save(again, dtype)
                with open(again, "rb") as a, open(os.path.join(OUT, name), "rb") as b:
                    same = a.read() == b.read()
                print(f"{name}: deterministic={same}")
                if not same:
                    sys.exit(1)
    meta = [
        {"name": n, "shape": list(a.shape), "values": [jsonable(v) for v in a.reshape(-1)]}
        for n, a in tensors()
    ]
    with open(os.path.join(OUT, "tiny.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    for name in outputs:
        loaded = ms.load_checkpoint(os.path.join(OUT, name))
        for (n, a), (ln, p) in zip(tensors(), loaded.items()):
            assert n == ln, (n, ln)
            got = p.float().asnumpy() if p.dtype == ms.bfloat16 else p.asnumpy()
            assert got.shape == a.shape and np.array_equal(got, a), (n, got, a)
        print(f"{name}: {os.path.getsize(os.path.join(OUT, name))} bytes, reloads equal")


if __name__ == "__main__":
    main()
