"""Load a `.ckpt` file with the real `mindspore.load_checkpoint` and print what it holds.

Used to check files written by the runtime's MindSpore checkpoint writer
(runtime/src/checkpoint/mindspore_ckpt.rs). Tested with CPython 3.11.7, mindspore 2.10.0,
numpy 2.4.6.

Usage (from the repository root):

    /work/venvs/mindspore/bin/python scripts/mindspore-ckpt/verify_load.py PATH.ckpt [EXPECTED]

Prints one line per parameter: name, shape, MindSpore dtype. With EXPECTED, a `.npz` file
(arrays keyed by parameter name) or a JSON file `{name: {"shape": [...], "values": [...]}}` or
`{name: [...]}` (non-finite values as "nan", "inf", "-inf"), it also checks that the checkpoint
holds exactly those names, and that shapes and values match: exactly for float32 checkpoints;
for bfloat16 ones, against the expected values rounded to bfloat16 (nearest even). Exits 1 on
any mismatch.
"""

import json
import sys

import numpy as np
import mindspore as ms


def to_f32(param):
    """A float32 numpy copy of a loaded Parameter (bfloat16 has no numpy type here)."""
    if param.dtype == ms.bfloat16:
        return param.float().asnumpy()
    return param.asnumpy()


def round_bf16(a):
    """float32 array rounded to bfloat16 (nearest even, NaN kept), returned as float32."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    out = rounded.astype(np.uint32).view(np.float32)
    return np.where(np.isnan(a), np.float32(np.nan), out).reshape(np.shape(a))


def load_expected(path):
    """{name: float32 ndarray} from a .npz or .json file."""
    if path.endswith(".npz"):
        with np.load(path) as z:
            return {k: z[k].astype(np.float32) for k in z.files}
    with open(path) as f:
        data = json.load(f)
    out = {}
    for name, entry in data.items():
        values = entry["values"] if isinstance(entry, dict) else entry
        arr = np.array([float(v) for v in np.array(values, dtype=object).reshape(-1)],
                       dtype=np.float32)
        shape = entry["shape"] if isinstance(entry, dict) else np.shape(values)
        out[name] = arr.reshape(shape)
    return out


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    params = ms.load_checkpoint(sys.argv[1])
    print(f"mindspore {ms.__version__}: {len(params)} parameters in {sys.argv[1]}")
    for name, p in params.items():
        print(f"  {name}  shape={tuple(p.shape)}  dtype={p.dtype}")
    if len(sys.argv) == 2:
        return
    expected = load_expected(sys.argv[2])
    failures = []
    if set(expected) != set(params):
        failures.append(f"names differ: missing {sorted(set(expected) - set(params))}, "
                        f"extra {sorted(set(params) - set(expected))}")
    for name in sorted(set(expected) & set(params)):
        got, want = to_f32(params[name]), expected[name]
        if params[name].dtype == ms.bfloat16:
            want = round_bf16(want)
        if got.shape != want.shape:
            failures.append(f"{name}: shape {got.shape} != {want.shape}")
        elif not np.array_equal(got, want, equal_nan=True):
            bad = int(np.sum(~((got == want) | (np.isnan(got) & np.isnan(want)))))
            failures.append(f"{name}: {bad} of {want.size} values differ")
        elif not np.array_equal(np.signbit(got), np.signbit(want)):
            failures.append(f"{name}: signs of zeros differ")
    for f in failures:
        print("MISMATCH", f)
    if failures:
        sys.exit(1)
    print(f"OK: {len(expected)} tensors match {sys.argv[2]}")


if __name__ == "__main__":
    main()
