#!/usr/bin/env python3
"""Python baseline for `pretrain`'s preprocessing: what Megatron-LM's tools/preprocess_data.py does.

Pipeline (one document per JSON line, no sentence splitting, single partition):
    multiprocessing.Pool(workers, initializer=load tokenizer)
    pool.imap(encode, input_file, chunksize=25)      # json.loads(line)[key]; Tokenizer.encode(text).ids
    append EOD when --append-eod (documents without tokens are skipped)
    megatron-core IndexedDatasetBuilder(dtype=int32): add_item(ids); end_document(); finalize(idx)
Output files: <output-prefix>_<json-key>_document.{bin,idx} (preprocess_data.py naming).

Versions this was measured with: Python 3.11.7, megatron-core 0.16.1 (--no-deps),
numpy 2.4.6, tokenizers 0.23.3; torch is NOT installed: the numpy stub in
scripts/megatron-oracle/mcore_shim.py stands in for it (IndexedDatasetBuilder only calls
torch.IntTensor(...).numpy()), and the builder writes byte-identical files.
The token dtype is int32: DType.optimal_dtype(151669) for Qwen3 (uint16 only below 65500);
pass --dtype uint16 for small vocabularies.

Differences from upstream preprocess_data.py, none of which changes the output bytes:
the HF tokenizer is the `tokenizers` library's Tokenizer.from_file (Megatron wraps
transformers.AutoTokenizer over the same tokenizer.json; Qwen3 adds no special tokens either
way), and chunksize is 25 (older releases; current main uses 32 and add_document).

Run:
    /work/venvs/oracle/bin/python scripts/bench/preprocess_baseline.py \
        --input data/shakespeare.jsonl --output-prefix /tmp/shakespeare \
        --tokenizer-file .cache/tokenizers/qwen3/tokenizer.json --workers 2 --append-eod
Last line printed: `baseline: <docs> docs, <tokens> tokens, <secs> s, <tokens/s> tokens/s`
(time = pool start to finalize, i.e. the whole conversion, excluding interpreter start-up).
"""
import argparse
import json
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "megatron-oracle"))
import mcore_shim  # noqa: E402

mcore_shim.install()
mcore_shim.quiet_logs()

import numpy as np  # noqa: E402
import torch  # noqa: E402  (stub)
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder  # noqa: E402


class Encoder:
    def __init__(self, args):
        self.args = args

    def initializer(self):
        from tokenizers import Tokenizer

        Encoder.tokenizer = Tokenizer.from_file(self.args.tokenizer_file)

    def encode(self, json_line):
        data = json.loads(json_line)
        text = data[self.args.json_key]
        ids = Encoder.tokenizer.encode(text).ids
        if len(ids) > 0 and self.args.append_eod:
            ids.append(self.args.eod_id)
        return ids, len(json_line)


def main():
    ap = argparse.ArgumentParser(description="Megatron preprocess_data.py baseline")
    ap.add_argument("--input", required=True)
    ap.add_argument("--output-prefix", required=True)
    ap.add_argument("--tokenizer-file", required=True)
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--append-eod", action="store_true")
    ap.add_argument("--eod-token", default=None,
                    help="token whose id is appended (default: eos_token of the "
                         "tokenizer_config.json beside --tokenizer-file, e.g. <|im_end|>)")
    ap.add_argument("--json-key", default="text")
    ap.add_argument("--dtype", default="int32", choices=["int32", "uint16"])
    ap.add_argument("--chunksize", type=int, default=25)
    args = ap.parse_args()

    eod_token = args.eod_token
    if eod_token is None:
        cfg = os.path.join(os.path.dirname(args.tokenizer_file), "tokenizer_config.json")
        with open(cfg) as f:
            eos = json.load(f)["eos_token"]
        eod_token = eos["content"] if isinstance(eos, dict) else eos
    from tokenizers import Tokenizer

    args.eod_id = Tokenizer.from_file(args.tokenizer_file).token_to_id(eod_token)
    assert args.eod_id is not None, f"unknown EOD token {eod_token!r}"

    bin_path = f"{args.output_prefix}_{args.json_key}_document.bin"
    idx_path = f"{args.output_prefix}_{args.json_key}_document.idx"
    os.makedirs(os.path.dirname(os.path.abspath(bin_path)), exist_ok=True)

    t0 = time.perf_counter()
    encoder = Encoder(args)
    fin = open(args.input, "r", encoding="utf-8")
    pool = multiprocessing.Pool(args.workers, initializer=encoder.initializer)
    encoded = pool.imap(encoder.encode, fin, args.chunksize)
    builder = IndexedDatasetBuilder(bin_path, dtype=np.dtype(args.dtype).type)
    docs = tokens = 0
    for ids, _nbytes in encoded:
        if len(ids) == 0:
            continue
        builder.add_item(torch.IntTensor(ids))
        builder.end_document()
        docs += 1
        tokens += len(ids)
    builder.finalize(idx_path)
    fin.close()
    pool.close()
    pool.join()
    secs = time.perf_counter() - t0
    print(f"wrote {bin_path} and {idx_path} (eod {eod_token!r} = {args.eod_id})")
    print(f"baseline: {docs} docs, {tokens} tokens, {secs:.3f} s, {tokens / secs:.0f} tokens/s")


if __name__ == "__main__":
    main()
