#!/usr/bin/env python3
"""Python baseline for `pretrain`'s sample fetch: megatron-core GPTDataset.__getitem__.

Builds the train split of a GPTDataset over one prefix the way a training run does
(BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, GPTDatasetConfig(...)).build()
with a bare prefix, so the builder returns the GPTDataset itself), then times __getitem__ over
N random indices (numpy RandomState(--index-seed).randint(0, len, N)). Index building is NOT
timed (it is printed separately).

Versions: Python 3.11.7, megatron-core 0.16.1 (--no-deps), numpy 2.4.6. torch is NOT
installed: scripts/megatron-oracle/mcore_shim.py's numpy stub stands in for it, so the items
are numpy arrays and the torch per-op overhead of a real run (from_numpy/long/tril/...) is not
in these numbers; the file reads (np.memmap slices + concatenate) and the mask/position logic
are megatron's own code.

Run:
    /work/venvs/oracle/bin/python scripts/bench/sample_fetch_baseline.py \
        --prefix /work/scratch/shakespeare_qwen3_text_document --seq-length 512 \
        --sizes 2000 0 0 --split 1,0,0 --seed 1234 --eod 151645 -n 20000
Beware: a split that is non-empty in the split string but rounds to zero sequences (e.g.
969,30,1 on the 301-document Shakespeare set: test = [301, 301)) makes megatron-core loop
forever; this script refuses such a configuration up front.
Last line printed: `baseline: <n> samples, <secs> s, <samples/s> samples/s`.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "megatron-oracle"))
import mcore_shim  # noqa: E402

mcore_shim.install()
mcore_shim.quiet_logs()

import numpy as np  # noqa: E402
from megatron.core.datasets.blended_megatron_dataset_builder import (  # noqa: E402
    BlendedMegatronDatasetBuilder,
)
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description="megatron-core GPTDataset.__getitem__ baseline")
    ap.add_argument("--prefix", required=True, help="dataset prefix (without .bin/.idx)")
    ap.add_argument("--seq-length", type=int, default=512)
    ap.add_argument("--sizes", type=int, nargs=3, default=[2000, 0, 0],
                    metavar=("TRAIN", "VALID", "TEST"))
    ap.add_argument("--split", default="1,0,0",
                    help="split string; every non-empty split needs >= 1 sequence")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--eod", type=int, default=151645)
    ap.add_argument("--pad", type=int, default=-1)
    ap.add_argument("-n", "--num", type=int, default=20000, help="random indices to fetch")
    ap.add_argument("--index-seed", type=int, default=0)
    ap.add_argument("--reset-position-ids", action="store_true")
    ap.add_argument("--reset-attention-mask", action="store_true")
    ap.add_argument("--eod-mask-loss", action="store_true")
    ap.add_argument("--create-attention-mask", action="store_true",
                    help="build the [1,S,S] mask per item (megatron's config default is True; "
                         "training usually disables it for fused attention)")
    ap.add_argument("--path-to-cache", default=None,
                    help="index cache dir (default: a fresh temp dir, removed afterwards)")
    args = ap.parse_args()

    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megatron.core.datasets.blended_megatron_dataset_config import parse_and_normalize_split

    m = len(IndexedDataset(args.prefix).index.sequence_lengths)
    bounds = np.cumsum([0.0] + parse_and_normalize_split(args.split))
    for k, name in enumerate(("train", "valid", "test")):
        beg, end = int(round(bounds[k] * m)), int(round(bounds[k + 1] * m))
        if bounds[k + 1] > bounds[k] and beg == end:
            sys.exit(f"split {args.split!r}: {name} = [{beg}, {end}) is empty for {m} "
                     f"sequences; megatron-core would loop forever")

    cache = args.path_to_cache or tempfile.mkdtemp(prefix="mcore_idx_")
    cfg = GPTDatasetConfig(
        random_seed=args.seed,
        sequence_length=args.seq_length,
        blend=([args.prefix], None),
        split=args.split,
        path_to_cache=cache,
        tokenizer=mcore_shim.OracleTokenizer(eod=args.eod, pad=args.pad),
        reset_position_ids=args.reset_position_ids,
        reset_attention_mask=args.reset_attention_mask,
        eod_mask_loss=args.eod_mask_loss,
        create_attention_mask=args.create_attention_mask,
    )
    t0 = time.perf_counter()
    train = BlendedMegatronDatasetBuilder(GPTDataset, args.sizes, lambda: True, cfg).build()[0]
    t_build = time.perf_counter() - t0
    assert isinstance(train, GPTDataset)
    n_len = len(train)
    idx = np.random.RandomState(args.index_seed).randint(0, n_len, size=args.num).tolist()
    train[idx[0]]  # warm the memmaps

    checksum = 0
    t0 = time.perf_counter()
    for i in idx:
        item = train[i]
        checksum += int(item["tokens"][0])
    secs = time.perf_counter() - t0
    if args.path_to_cache is None:
        shutil.rmtree(cache, ignore_errors=True)
    print(f"dataset: {args.prefix} S={args.seq_length} len={n_len} "
          f"index build {t_build:.3f} s (not timed below); token checksum {checksum}")
    print(f"baseline: {args.num} samples, {secs:.3f} s, {args.num / secs:.0f} samples/s")


if __name__ == "__main__":
    main()
