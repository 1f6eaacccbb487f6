#!/usr/bin/env python3
"""Generate golden fixtures for `pretrain`'s Megatron data path from the REAL megatron-core.

Produced with (exact versions):
    Python        3.11.7
    megatron-core 0.16.1  (installed with --no-deps; its own dataset code runs unmodified,
                           including the prebuilt helpers_cpp extension)
    numpy         2.4.6
    tokenizers    0.23.3
    packaging     26.4
    torch         NOT installed: a numpy-backed stub (scripts/megatron-oracle/mcore_shim.py)
                  is put into sys.modules, together with bare `megatron`/`megatron.core`
                  packages and a `megatron.core.utils` holding only log_single_rank. Real torch
                  was not needed: IndexedDatasetBuilder, IndexedDataset, GPTDataset (index
                  building and __getitem__), BlendedDataset and BlendedMegatronDatasetBuilder all
                  run unmodified on the stub. torch.distributed is "not initialized", so every
                  build is the single-process path; path_to_cache=None (GPTDataset then writes its
                  .npy cache under `<prefix>/cache/GPTDataset_indices/`, inside a temp dir here).

Install and run (venv outside the repo):
    python3 -m venv /work/venvs/oracle
    /work/venvs/oracle/bin/pip install --no-deps megatron-core==0.16.1
    /work/venvs/oracle/bin/pip install numpy packaging tokenizers
    cd <repo> && /work/venvs/oracle/bin/python scripts/megatron-oracle/gen_fixtures.py

Options:
    --out DIR          fixture root (default tests/assets/megatron)
    --scratch DIR      where the full Shakespeare .bin/.idx copy goes
                       (default /work/scratch; files shakespeare_qwen3_text_document.{bin,idx})
    --tokenizer FILE   Qwen3 tokenizer.json (default .cache/tokenizers/qwen3/tokenizer.json)
    --corpus FILE      default data/shakespeare.jsonl

Outputs (see tests/assets/megatron/README.md for the schema):
    builder/<name>.{bin,idx,json}   IndexedDatasetBuilder byte-identity fixtures
    preprocess/shakespeare_qwen3.json   real-corpus preprocessing oracle (no .bin committed)
    cases/<name>.json               GPTDataset / BlendedDataset index + item oracles
                                    (unweighted*: several bare prefixes, no weights)
    cases/<name>_hang.json, cases/unweighted_empty_split_error.json
                                    configurations megatron-core never finishes / refuses
    numpy_random_state.json         np.random.RandomState(seed).shuffle oracle
"""
import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import mcore_shim  # noqa: E402

mcore_shim.install()
mcore_shim.quiet_logs()

import numpy as np  # noqa: E402
import torch  # noqa: E402  (the stub)
import tokenizers  # noqa: E402

from megatron.core.datasets import gpt_dataset as _gpt_mod  # noqa: E402
from megatron.core.datasets.blended_dataset import BlendedDataset  # noqa: E402
from megatron.core.datasets.blended_megatron_dataset_builder import (  # noqa: E402
    BlendedMegatronDatasetBuilder,
)
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig  # noqa: E402
from megatron.core.datasets.indexed_dataset import (  # noqa: E402
    DType,
    IndexedDataset,
    IndexedDatasetBuilder,
)
from megatron.core.datasets.utils import get_blend_from_list  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
FULL_LIMIT = 4096  # arrays with more elements are recorded as sha256 + head
HEAD = 64
QWEN3_EOD = 151645  # <|im_end|>, eos_token of the Qwen3 tokenizer_config.json

GENERATOR = {
    "script": "scripts/megatron-oracle/gen_fixtures.py",
    "python": platform.python_version(),
    "megatron_core": mcore_shim.megatron_core_version(),
    "numpy": np.__version__,
    "tokenizers": tokenizers.__version__,
    "torch": "numpy stub (scripts/megatron-oracle/mcore_shim.py); real torch not installed",
}


# ----------------------------------------------------------------------------------------------
# helpers


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def enc_array(a):
    """dtype, shape, sha256 of little-endian C-order bytes; data in full (nested lists) when
    numel <= 4096, otherwise head = first 64 elements of the C-order flattening."""
    a = np.asarray(a)
    le = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False)
    out = {"dtype": str(a.dtype), "shape": list(a.shape), "sha256": sha256_bytes(le.tobytes())}
    if a.size <= FULL_LIMIT:
        out["data"] = a.tolist()
    else:
        out["head"] = a.reshape(-1)[:HEAD].tolist()
    return out


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")
    return path


def compact_json_dump(path, obj):
    """JSON with one array per line where arrays are numeric (keeps files small and diffable)."""
    text = json.dumps(obj, indent=1)
    # collapse numeric lists onto one line
    import re

    def collapse(m):
        return "[" + ",".join(x.strip() for x in m.group(1).split(",")) + "]"

    text = re.sub(r"\[\s*((?:-?[0-9.eE+]+|true|false)(?:,\s*(?:-?[0-9.eE+]+|true|false))*)\s*\]",
                  collapse, text)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text + "\n")
    return path


def write_indexed(prefix, documents, dtype):
    """documents: list of documents, each a list of sequences (lists of ints). Uses megatron's
    IndexedDatasetBuilder exactly as preprocess_data.py did: add_item per sequence,
    end_document per document."""
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
    for doc in documents:
        for seq in doc:
            builder.add_item(torch.from_numpy(np.array(seq, dtype=np.int64)))
        builder.end_document()
    builder.finalize(prefix + ".idx")


def describe_indexed(prefix):
    """Facts about a written dataset, read back with megatron's own IndexedDataset."""
    ds = IndexedDataset(prefix, multimodal=False, mmap=True)
    idx = ds.index
    return {
        "dtype": np.dtype(idx.dtype).name,
        "dtype_code": DType.code_from_dtype(idx.dtype),
        "num_sequences": int(len(idx.sequence_lengths)),
        "num_documents": int(len(idx.document_indices) - 1),
        "num_tokens": int(np.sum(idx.sequence_lengths, dtype=np.int64)),
        "bin_size": os.path.getsize(prefix + ".bin"),
        "idx_size": os.path.getsize(prefix + ".idx"),
        "bin_sha256": sha256_file(prefix + ".bin"),
        "idx_sha256": sha256_file(prefix + ".idx"),
    }


# ----------------------------------------------------------------------------------------------
# (a) builder byte-identity fixtures


def gen_builder(out_dir):
    rs = np.random.RandomState(0)
    specs = []

    # uint16: 40 single-sequence documents, lengths 1..119, ids across the full u16 range
    lens = rs.randint(1, 120, size=40)
    docs = [[rs.randint(0, 65536, size=n).tolist()] for n in lens]
    specs.append(("u16_docs", np.uint16, docs,
                  "40 documents, one sequence each, lengths 1..119, ids in [0, 65535]"))

    # int32: 40 documents, Qwen3-range ids ending in EOD, plus one with extreme values
    lens = rs.randint(1, 120, size=40)
    docs = [[rs.randint(0, 151669, size=n - 1).tolist() + [QWEN3_EOD]] for n in lens]
    docs.append([[2**31 - 1, 0, 65535, 65536, QWEN3_EOD]])
    specs.append(("i32_docs", np.int32, docs,
                  "41 documents, one sequence each; ids < 151669 ending in 151645, last doc "
                  "has 2^31-1"))

    # int64: 10 documents with values beyond 32 bits
    lens = rs.randint(1, 30, size=10)
    docs = [[(rs.randint(0, 2**31, size=n).astype(np.int64) * 3 + 2**32).tolist()] for n in lens]
    docs.append([[2**63 - 1, 0, 1]])
    specs.append(("i64_docs", np.int64, docs, "11 documents, values > 2^32 and 2^63-1"))

    # uint8: 10 documents
    lens = rs.randint(1, 50, size=10)
    docs = [[rs.randint(0, 256, size=n).tolist()] for n in lens]
    specs.append(("u8_docs", np.uint8, docs, "10 documents, ids in [0, 255]"))

    # int32, several sequences per document (sentence-split style), and one empty document
    docs = []
    for d in range(12):
        nseq = int(rs.randint(1, 5))
        doc = [rs.randint(2, 1000, size=int(rs.randint(1, 20))).tolist() for _ in range(nseq)]
        doc[-1].append(1)
        docs.append(doc)
    docs.insert(5, [])  # end_document() with no add_item: a document with zero sequences
    specs.append(("i32_multiseq", np.int32, docs,
                  "13 documents of 1..4 sequences each (document 5 is empty: end_document() "
                  "without add_item, as current preprocess_data.py's add_document([], []) does "
                  "for an empty text); EOD 1 ends each non-empty document's last sequence"))

    # the worked example of megatron-data.md §1
    specs.append(("doc_example", np.int32, [[[5, 6, 7, 1]], [[8, 9, 1]], [[10, 11, 12, 13, 14, 1]]],
                  "megatron-data.md §1 example (102-byte .idx, 52-byte .bin)"))

    os.makedirs(out_dir, exist_ok=True)
    summary = {}
    for name, dtype, docs, desc in specs:
        prefix = os.path.join(out_dir, name)
        write_indexed(prefix, docs, dtype)
        facts = describe_indexed(prefix)
        ds = IndexedDataset(prefix, multimodal=False, mmap=True)
        # sanity: read back equals input
        flat = [s for d in docs for s in d]
        for i, s in enumerate(flat):
            assert ds[i].tolist() == np.array(s, dtype=dtype).tolist()
        fixture = {
            "name": name,
            "description": desc,
            "generator": GENERATOR,
            "builder_calls": "for doc in documents: for seq in doc: add_item(seq); end_document(); "
                             "then finalize(idx)",
            **facts,
            "sequence_lengths": ds.index.sequence_lengths.tolist(),
            "sequence_pointers": ds.index.sequence_pointers.tolist(),
            "document_indices": ds.index.document_indices.tolist(),
            "documents": docs,
        }
        assert facts["bin_size"] < 50_000 and facts["idx_size"] < 50_000
        compact_json_dump(prefix + ".json", fixture)
        summary[name] = facts
    return summary


# ----------------------------------------------------------------------------------------------
# (b) real-corpus preprocessing oracle


def tokenize_corpus(corpus, tokenizer_file, eod=QWEN3_EOD):
    tok = tokenizers.Tokenizer.from_file(tokenizer_file)
    docs = []
    with open(corpus, "r", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            ids = tok.encode(text).ids
            # encode() adds no special tokens for Qwen3 (ByteLevel post-processor only)
            assert ids == tok.encode(text, add_special_tokens=False).ids
            if len(ids) == 0:
                continue  # preprocess_data.py drops documents without tokens
            docs.append(ids + [eod])
    return docs


def gen_preprocess(out_dir, scratch, corpus, tokenizer_file):
    docs = tokenize_corpus(corpus, tokenizer_file)
    tmp = tempfile.mkdtemp(prefix="mcore_pre_")
    prefix = os.path.join(tmp, "shakespeare_text_document")
    write_indexed(prefix, [[d] for d in docs], np.int32)
    facts = describe_indexed(prefix)
    tok = tokenizers.Tokenizer.from_file(tokenizer_file)
    with open(corpus, "rb") as f:
        corpus_sha = sha256_bytes(f.read())
    fixture = {
        "name": "shakespeare_qwen3",
        "generator": GENERATOR,
        "input": {
            "corpus": os.path.relpath(corpus, REPO),
            "corpus_sha256": corpus_sha,
            "json_key": "text",
            "num_lines": sum(1 for _ in open(corpus, encoding="utf-8")),
            "tokenizer_file": os.path.relpath(tokenizer_file, REPO),
            "tokenizer_sha256": sha256_file(tokenizer_file),
            "tokenizer_vocab_size_with_added": tok.get_vocab_size(with_added_tokens=True),
        },
        "procedure": (
            "per JSON line: ids = tokenizers.Tokenizer.from_file(tokenizer).encode(text).ids "
            "(add_special_tokens default; Qwen3 adds none); skip if empty; append EOD; "
            "IndexedDatasetBuilder(dtype=int32).add_item(ids); end_document(); finalize. "
            "Output prefix <prefix>_text_document (preprocess_data.py --append-eod naming)."
        ),
        "eod": QWEN3_EOD,
        "eod_token": "<|im_end|>",
        **facts,
        "first_document_first_32_ids": docs[0][:32],
        "first_10_document_lengths": [len(d) for d in docs[:10]],
        "last_document_last_8_ids": docs[-1][-8:],
    }
    compact_json_dump(os.path.join(out_dir, "shakespeare_qwen3.json"), fixture)
    os.makedirs(scratch, exist_ok=True)
    for ext in (".bin", ".idx"):
        shutil.copyfile(prefix + ext, os.path.join(scratch, "shakespeare_qwen3_text_document" + ext))
    shutil.rmtree(tmp)
    return facts


# ----------------------------------------------------------------------------------------------
# (c) GPT / Blended sample-index cases

_CURRENT = threading.local()
_orig_build_indices = GPTDataset._build_document_sample_shuffle_indices
_orig_build_document_index = _gpt_mod._build_document_index


def _patched_build_indices(self):
    _CURRENT.ds = self
    _CURRENT.depth = 0
    try:
        return _orig_build_indices(self)
    finally:
        _CURRENT.ds = None


def _patched_build_document_index(documents, num_epochs, rs, separate_final_epoch):
    """Records megatron's own (num_epochs, separate_final_epoch) decision on the dataset."""
    depth = getattr(_CURRENT, "depth", 0)
    if depth == 0 and getattr(_CURRENT, "ds", None) is not None:
        _CURRENT.ds._oracle_num_epochs = int(num_epochs)
        _CURRENT.ds._oracle_separate_final_epoch = bool(separate_final_epoch)
    _CURRENT.depth = depth + 1
    try:
        return _orig_build_document_index(documents, num_epochs, rs, separate_final_epoch)
    finally:
        _CURRENT.depth = depth


GPTDataset._build_document_sample_shuffle_indices = _patched_build_indices
_gpt_mod._build_document_index = _patched_build_document_index


def formula_token(d, j, n, eod):
    return eod if j == n - 1 else 2 + (d * 131 + j * 7) % 30000


FORMULA_TEXT = ("token j (0-based) of document d (0-based) with length n: "
                "eod if j == n-1 else 2 + (d*131 + j*7) % 30000; one sequence per document")


def formula_docs(lengths, eod):
    return [[[formula_token(d, j, int(n), eod) for j in range(int(n))]] for d, n in
            enumerate(lengths)]


class DatasetPool:
    """Materialises the low-level datasets a case uses into a temp dir, under their logical
    names, and records how the Rust test can rebuild each one."""

    def __init__(self, root, scratch):
        self.root = root
        self.scratch = scratch
        self.specs = {}

    def path(self, name):
        return os.path.join(self.root, name)

    def inline(self, name, docs, dtype=np.int32):
        write_indexed(self.path(name), [[d] for d in docs], dtype)
        self.specs[name] = {"kind": "inline", "documents": docs, **self._facts(name)}

    def formula(self, name, lengths, dtype, eod):
        write_indexed(self.path(name), formula_docs(lengths, eod), dtype)
        self.specs[name] = {"kind": "formula", "formula": FORMULA_TEXT, "eod": eod,
                            "lengths": [int(x) for x in lengths], **self._facts(name)}

    def builder_fixture(self, name, fixture_name, builder_dir):
        for ext in (".bin", ".idx"):
            shutil.copyfile(os.path.join(builder_dir, fixture_name + ext), self.path(name) + ext)
        self.specs[name] = {"kind": "builder_fixture",
                            "path": "tests/assets/megatron/builder/" + fixture_name,
                            **self._facts(name)}

    def shakespeare(self, name):
        src = os.path.join(self.scratch, "shakespeare_qwen3_text_document")
        for ext in (".bin", ".idx"):
            shutil.copyfile(src + ext, self.path(name) + ext)
        self.specs[name] = {
            "kind": "shakespeare_qwen3",
            "how_to_rebuild": "preprocess data/shakespeare.jsonl with the Qwen3 tokenizer, "
                              "append EOD 151645, int32; must match "
                              "tests/assets/megatron/preprocess/shakespeare_qwen3.json",
            **self._facts(name),
        }

    def _facts(self, name):
        f = describe_indexed(self.path(name))
        return {k: f[k] for k in ("dtype", "dtype_code", "num_sequences", "num_documents",
                                  "num_tokens", "bin_sha256", "idx_sha256")}


def item_record(top, i, is_blended):
    it = top[i]
    rec = {"index": int(i)}
    if is_blended:
        rec["dataset_id"] = int(it["dataset_id"])
    for key in ("tokens", "labels", "loss_mask", "position_ids", "attention_mask"):
        if key in it:
            a = np.asarray(it[key])
            rec[key] = a.tolist()
            rec[key + "_dtype"] = str(a.dtype)
    return rec


def pick_items(n, rs, extra=3, all_below=16):
    if n == 0:
        return []
    if n <= all_below:
        return list(range(n))
    picks = [0, 1, n - 1] + sorted(rs.choice(np.arange(2, n - 1), size=min(extra, n - 3),
                                             replace=False).tolist())
    seen, out = set(), []
    for p in picks:
        if p not in seen:
            seen.add(p)
            out.append(int(p))
    return out


def gpt_record(g, name_of_path):
    beg, end = g.config.split_matrix[g.index_split.value]
    m = len(g.dataset.sequence_lengths)
    b, e = int(round(beg * float(m))), int(round(end * float(m)))  # as the builder does
    assert np.array_equal(g.indices, np.arange(b, e, dtype=np.int32))
    T = g._get_num_tokens_per_epoch()
    E = g._get_num_epochs(T)
    assert E == g._oracle_num_epochs
    return {
        "dataset": name_of_path[g.dataset_path],
        "index_split": g.index_split.name,
        "sequence_range": [b, e],
        "num_samples": None if g.num_samples is None else int(g.num_samples),
        "len": int(len(g)),
        "num_tokens_per_epoch": int(T),
        "num_epochs": int(E),
        "separate_final_epoch": g._oracle_separate_final_epoch,
        "pad_token_id": int(g._pad_token_id),
        "document_index": enc_array(g.document_index),
        "sample_index": enc_array(g.sample_index),
        "shuffle_index": enc_array(g.shuffle_index),
    }


def run_case(out_dir, name, description, pool, data_path, sizes, cfg_kwargs, eod, pad=-1,
             item_seed=0, extra_items=3, notes=None, expect=None,
             expect_field="checked_against_megatron_data_md"):
    for n in pool.specs:  # no cache hits between cases: every case builds its indices afresh
        shutil.rmtree(pool.path(n), ignore_errors=True)
    blend = get_blend_from_list([pool.path(p) if not _is_float(p) else p for p in data_path])
    tok = mcore_shim.OracleTokenizer(eod=eod, pad=pad)
    cfg = GPTDatasetConfig(blend=blend, tokenizer=tok, path_to_cache=None, **cfg_kwargs)
    built = BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, cfg).build()
    name_of_path = {pool.path(n): n for n in pool.specs}
    used = [p for p in data_path if not _is_float(p)]
    rs = np.random.RandomState(item_seed)

    splits = {}
    for si, split_name in enumerate(("train", "valid", "test")):
        top = built[si]
        if top is None:
            splits[split_name] = None
            continue
        rec = {"size_requested": sizes[si]}
        if isinstance(top, BlendedDataset):
            rec["top_level"] = "BlendedDataset"
            rec["len"] = int(len(top))
            rec["blended"] = {
                "size": None if top.size is None else int(top.size),
                # floats (normalised) when the blend has a size; the raw integer dataset
                # lengths for an unweighted blend built with size None (exhaustive indices)
                "weights": [w if isinstance(w, int) else float(w) for w in top.weights],
                "dataset_index": enc_array(top.dataset_index),
                "dataset_sample_index": enc_array(top.dataset_sample_index),
            }
            gpts = top.datasets
        else:
            rec["top_level"] = "GPTDataset"
            rec["len"] = int(len(top))
            gpts = [top]
        rec["gpt_datasets"] = [gpt_record(g, name_of_path) for g in gpts]
        rec["items"] = [item_record(top, i, isinstance(top, BlendedDataset))
                        for i in pick_items(len(top), rs, extra_items)]
        splits[split_name] = rec

    config = {
        "data_path": list(data_path),
        "blend": {"prefixes": used, "weights": blend[1]},
        "split": cfg.split,
        "split_matrix": [None if s is None else list(s) for s in cfg.split_matrix],
        "sizes": list(sizes),
        "random_seed": cfg.random_seed,
        "sequence_length": cfg.sequence_length,
        "reset_position_ids": cfg.reset_position_ids,
        "reset_attention_mask": cfg.reset_attention_mask,
        "eod_mask_loss": cfg.eod_mask_loss,
        "create_attention_mask": cfg.create_attention_mask,
        "drop_last_partial_validation_sequence": cfg.drop_last_partial_validation_sequence,
        "add_extra_token_to_sequence": cfg.add_extra_token_to_sequence,
        "mid_level_dataset_surplus": cfg.mid_level_dataset_surplus,
        "path_to_cache": None,
        "num_dataset_builder_threads": cfg.num_dataset_builder_threads,
        "tokenizer": {"eod": eod, "pad": pad},
    }
    case = {
        "name": name,
        "description": description,
        "generator": GENERATOR,
        "call": "BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, "
                "GPTDatasetConfig(blend=get_blend_from_list(data_path), ...)).build()",
        "datasets": {n: pool.specs[n] for n in dict.fromkeys(used)},
        "config": config,
        "splits": splits,
    }
    if notes:
        case["notes"] = notes
    if expect:
        for key, fn in expect.items():
            ok = fn(case)
            assert ok, f"{name}: expectation {key} failed"
        case[expect_field] = list(expect)
    path = compact_json_dump(os.path.join(out_dir, name + ".json"), case)
    return path, case


def _is_float(s):
    try:
        float(s)
        return True
    except (TypeError, ValueError):
        return False


def gen_cases(out_dir, builder_dir, scratch):
    tmp = tempfile.mkdtemp(prefix="mcore_cases_")
    pool = DatasetPool(tmp, scratch)
    results = {}

    # --- §5 reference case 1
    pool.inline("tiny3", [[5, 6, 7, 1], [8, 9, 1], [10, 11, 12, 13, 14, 1]])
    gd = lambda c: c["splits"]["train"]["gpt_datasets"][0]  # noqa: E731
    _, c = run_case(
        out_dir, "ref_tiny3_s4", "megatron-data.md §5 reference vector 1", pool,
        ["1.0", "tiny3"], [5, 0, 0],
        dict(random_seed=1234, sequence_length=4, split="1,0,0", reset_position_ids=True,
             reset_attention_mask=False, eod_mask_loss=True),
        eod=1,
        expect={
            "num_samples=6,E=2,n=6,blended_len=5": lambda c: (
                gd(c)["num_samples"] == 6 and gd(c)["num_epochs"] == 2 and gd(c)["len"] == 6
                and c["splits"]["train"]["len"] == 5),
            "document_index": lambda c: gd(c)["document_index"]["data"] == [2, 1, 2, 0, 1, 0],
            "sample_index": lambda c: gd(c)["sample_index"]["data"] == [
                [0, 0], [0, 4], [1, 2], [2, 3], [3, 1], [4, 1], [5, 2]],
            "shuffle_index": lambda c: gd(c)["shuffle_index"]["data"] == [0, 4, 3, 2, 5, 1],
            "item1": lambda c: (
                c["splits"]["train"]["items"][1]["tokens"] == [6, 7, 1, 8]
                and c["splits"]["train"]["items"][1]["labels"] == [7, 1, 8, 9]
                and c["splits"]["train"]["items"][1]["loss_mask"] == [1, 1, 0, 1]
                and c["splits"]["train"]["items"][1]["position_ids"] == [0, 1, 2, 0]),
        })
    results["ref_tiny3_s4"] = c

    # --- §5 reference case 2: separated final epoch
    pool.formula("sep8", [4, 5, 6, 7, 4, 5, 6, 7], np.int32, eod=1)
    _, c = run_case(
        out_dir, "ref_separate_final_epoch", "megatron-data.md §5 separated final epoch", pool,
        ["1.0", "sep8"], [11, 0, 0],
        dict(random_seed=7, sequence_length=4, split="1,0,0", reset_position_ids=False,
             reset_attention_mask=False, eod_mask_loss=False),
        eod=1,
        expect={
            "request12_E2_n21_separated": lambda c: (
                gd(c)["num_samples"] == 12 and gd(c)["num_epochs"] == 2 and gd(c)["len"] == 21
                and gd(c)["separate_final_epoch"] is True),
            "document_index": lambda c: gd(c)["document_index"]["data"] == [
                2, 5, 0, 6, 3, 1, 4, 7, 3, 5, 7, 4, 2, 1, 0, 6],
            "shuffle_index": lambda c: gd(c)["shuffle_index"]["data"] == [
                1, 5, 2, 9, 3, 7, 8, 0, 4, 6, 14, 12, 16, 11, 20, 17, 19, 10, 18, 15, 13],
        })
    results["ref_separate_final_epoch"] = c

    # --- two-dataset blend [0.3, 0.7], size 20
    pool.formula("blendA", [30, 25, 40, 17, 33, 21], np.int32, eod=1)
    pool.formula("blendB", [50, 12, 28, 44, 19, 36, 23], np.int32, eod=1)
    _, c = run_case(
        out_dir, "blend2_030_070", "two-dataset blend, weights [0.3, 0.7], size 20", pool,
        ["0.3", "blendA", "0.7", "blendB"], [20, 0, 0],
        dict(random_seed=1234, sequence_length=8, split="1,0,0", reset_position_ids=False,
             reset_attention_mask=False, eod_mask_loss=False),
        eod=1, extra_items=5,
        expect={
            "dataset_index": lambda c: c["splits"]["train"]["blended"]["dataset_index"]["data"]
            == [1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1],
        })
    results["blend2_030_070"] = c

    # --- synthetic ~600 docs, split 969,30,1, all three splits
    rsl = np.random.RandomState(1234)
    pool.formula("synth600", rsl.randint(1, 201, size=600), np.uint16, eod=1)
    _, c = run_case(
        out_dir, "synth600_969_30_1",
        "600 formula documents (lengths 1..200, u16), weight 1.0, split 969,30,1, S=64; "
        "600 (not 300) documents so the 0.001 test split rounds to one sequence", pool,
        ["1.0", "synth600"], [1500, 60, 20],
        dict(random_seed=1234, sequence_length=64, split="969,30,1", reset_position_ids=False,
             reset_attention_mask=False, eod_mask_loss=False, create_attention_mask=False),
        eod=1,
        notes="With 300 documents the test range is [round(0.999*300), 300) = [300, 300): "
              "empty, and megatron-core then loops forever in GPTDataset._get_num_epochs "
              "whenever a test size (even 0) is requested. 600 documents give test = [599, 600).")
    results["synth600_969_30_1"] = c

    # --- three-dataset blend, split 98,2,0
    rsl = np.random.RandomState(99)
    pool.formula("mixA", rsl.randint(1, 301, size=120), np.uint16, eod=1)
    pool.formula("mixB", rsl.randint(1, 101, size=200), np.uint16, eod=1)
    pool.formula("mixC", rsl.randint(20, 60, size=80), np.int32, eod=1)
    _, c = run_case(
        out_dir, "blend3_98_2_0", "three-dataset blend ['0.5',A,'0.3',B,'0.2',C], split 98,2,0",
        pool, ["0.5", "mixA", "0.3", "mixB", "0.2", "mixC"], [700, 40, 0],
        dict(random_seed=1234, sequence_length=32, split="98,2,0", reset_position_ids=True,
             reset_attention_mask=False, eod_mask_loss=True, create_attention_mask=False),
        eod=1)
    results["blend3_98_2_0"] = c

    # --- bare prefix, no weight: no BlendedDataset
    _, c = run_case(
        out_dir, "bare_prefix_synth600",
        "bare prefix (no weight) -> the builder returns GPTDatasets directly, sizes unchanged "
        "(no surplus)", pool,
        ["synth600"], [300, 30, 10],
        dict(random_seed=4321, sequence_length=48, split="969,30,1", reset_position_ids=False,
             reset_attention_mask=False, eod_mask_loss=True, create_attention_mask=False),
        eod=1)
    results["bare_prefix_synth600"] = c

    # --- attention mask (reset_attention_mask + create_attention_mask)
    pool.inline("attn5", [[5, 6, 1], [7, 8, 9, 10, 1], [11, 1], [12, 13, 14, 15, 16, 17, 1],
                          [18, 19, 20, 1]])
    _, c = run_case(
        out_dir, "attention_mask_reset",
        "reset_attention_mask + create_attention_mask + reset_position_ids + eod_mask_loss, "
        "S=6, every item recorded (attention_mask true = masked)", pool,
        ["1.0", "attn5"], [6, 0, 0],
        dict(random_seed=1234, sequence_length=6, split="1,0,0", reset_position_ids=True,
             reset_attention_mask=True, eod_mask_loss=True, create_attention_mask=True),
        eod=1)
    results["attention_mask_reset"] = c

    # --- multi-epoch, final epoch NOT separated
    _, c = run_case(
        out_dir, "multi_epoch_not_separated",
        "8 documents (T=44), S=4, bare prefix, 19 samples: E=2, 9 samples from the final "
        "epoch >= int(0.8*10): one global shuffle", pool,
        ["sep8"], [19, 0, 0],
        dict(random_seed=7, sequence_length=4, split="1,0,0", reset_position_ids=False,
             reset_attention_mask=False, eod_mask_loss=False, create_attention_mask=False),
        eod=1,
        expect={"E2_not_separated": lambda c: (
            c["splits"]["train"]["gpt_datasets"][0]["num_epochs"] == 2
            and c["splits"]["train"]["gpt_datasets"][0]["separate_final_epoch"] is False)})
    results["multi_epoch_not_separated"] = c

    _, c = run_case(
        out_dir, "multi_epoch_e4",
        "8 documents (T=44), S=4, 1.0 weight, 35 samples -> request 36, E=4, separated",
        pool, ["1.0", "sep8"], [35, 0, 0],
        dict(random_seed=1234, sequence_length=4, split="1,0,0", reset_position_ids=False,
             reset_attention_mask=False, eod_mask_loss=False, create_attention_mask=False),
        eod=1)
    results["multi_epoch_e4"] = c

    # --- validation split keeping its last partial sample (padding path of __getitem__)
    _, c = run_case(
        out_dir, "valid_keep_partial_pad",
        "drop_last_partial_validation_sequence=False: the last valid sample is short and "
        "padded with pad=-1 (tokens/labels -> 0, loss_mask 0 there)", pool,
        ["attn5"], [4, 3, 0],
        dict(random_seed=1234, sequence_length=4, split="60,40,0", reset_position_ids=True,
             reset_attention_mask=False, eod_mask_loss=True, create_attention_mask=False,
             drop_last_partial_validation_sequence=False),
        eod=1)
    results["valid_keep_partial_pad"] = c

    # --- builder fixture with multi-sequence documents as a GPT source
    pool.builder_fixture("i32_multiseq", "i32_multiseq", builder_dir)
    _, c = run_case(
        out_dir, "multiseq_sequences_not_documents",
        "GPTDataset over builder/i32_multiseq (documents of several sequences, one empty "
        "document): split and shuffle work on sequence ids", pool,
        ["i32_multiseq"], [40, 4, 2],
        dict(random_seed=1234, sequence_length=8, split="80,15,5", reset_position_ids=True,
             reset_attention_mask=False, eod_mask_loss=True, create_attention_mask=False),
        eod=1)
    results["multiseq_sequences_not_documents"] = c

    # --- several bare prefixes (no weights): a BlendedDataset over one-epoch GPTDatasets
    gen_unweighted_cases(out_dir, pool, results)

    # --- real Shakespeare / Qwen3
    have_sp = os.path.exists(os.path.join(scratch, "shakespeare_qwen3_text_document.bin"))
    if have_sp:
        pool.shakespeare("shakespeare_qwen3")
        _, c = run_case(
            out_dir, "shakespeare_qwen3_s512",
            "real corpus (301 docs, Qwen3, EOD 151645), weight 1.0, S=512, split 98,1,1, "
            "sizes [2000,20,20]", pool,
            ["1.0", "shakespeare_qwen3"], [2000, 20, 20],
            dict(random_seed=1234, sequence_length=512, split="98,1,1",
                 reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
                 create_attention_mask=False),
            eod=QWEN3_EOD, extra_items=2,
            notes="The requested split 969,30,1 cannot be built by megatron-core for 301 "
                  "documents: test = [round(0.999*301), 301) = [301, 301) is empty and "
                  "GPTDataset._get_num_epochs loops forever for any requested test size "
                  "(0 included). See shakespeare_qwen3_969_30_1_* for what does build.")
        results["shakespeare_qwen3_s512"] = c
        # 969,30,1 with the test split size left as None (bare prefix): builds an empty test
        _, c = run_case(
            out_dir, "shakespeare_qwen3_969_30_1_bare",
            "real corpus, bare prefix, S=512, split 969,30,1, sizes [2000,20,None]: the empty "
            "test split with num_samples None builds a 0-length GPTDataset", pool,
            ["shakespeare_qwen3"], [2000, 20, None],
            dict(random_seed=1234, sequence_length=512, split="969,30,1",
                 reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
                 create_attention_mask=False),
            eod=QWEN3_EOD, extra_items=2)
        results["shakespeare_qwen3_969_30_1_bare"] = c
        hang_timeout = 15
        try:
            import subprocess

            subprocess.run([sys.executable, os.path.abspath(__file__), "--hang-check",
                            pool.path("shakespeare_qwen3")], timeout=hang_timeout,
                           capture_output=True)
            hung = False
        except subprocess.TimeoutExpired:
            hung = True
        assert hung, "megatron-core finished the 969,30,1 build: update the hang fixture"
        write_json(os.path.join(out_dir, "shakespeare_qwen3_969_30_1_hang.json"), {
            "name": "shakespeare_qwen3_969_30_1_hang",
            "generator": GENERATOR,
            "description": "What megatron-core does for the real corpus with split 969,30,1 "
                           "and a test size: it never returns (infinite loop).",
            "datasets": {"shakespeare_qwen3": pool.specs["shakespeare_qwen3"]},
            "config": {"data_path": ["1.0", "shakespeare_qwen3"], "split": "969,30,1",
                       "sizes": [2000, 20, 20], "sequence_length": 512, "random_seed": 1234,
                       "tokenizer": {"eod": QWEN3_EOD, "pad": -1}},
            "split_sequence_ranges": {"train": [0, 292], "valid": [292, 301],
                                      "test": [301, 301]},
            "megatron_behaviour": "hangs: GPTDataset(test, num_samples=ceil(ceil(20*1.0)*1.005)"
                                  "=21)._get_num_epochs spins with 0 tokens per epoch "
                                  "(sizes [..,..,0] hang too because 0*S+1 tokens are requested)",
            "observed": f"gen_fixtures.py --hang-check was killed after {hang_timeout} s",
            "expected_pretrain_behaviour": "error naming the empty test split",
        })
    shutil.rmtree(tmp)
    return results


# ----------------------------------------------------------------------------------------------
# (c') several prefixes without weights (`--data-path A B C`)
#
# megatron-core 0.16.1, BlendedMegatronDatasetBuilder._build_blended_dataset_splits with
# blend = (prefixes, None), len(prefixes) > 1: every GPTDataset is built with num_samples None
# (one epoch of its split range), then per split a BlendedDataset with weights = the GPTDataset
# lengths and size = min(sizes[i], sum(lengths)) (None when sizes[i] is None: exhaustive
# indices). The facts below are checked on every such case.

UNWEIGHTED_FACTS_FIELD = "asserted_from_megatron_source"


def _splits_built(c):
    return [(i, c["splits"][n]) for i, n in enumerate(("train", "valid", "test"))
            if c["splits"][n] is not None]


def _lens(rec):
    return [g["len"] for g in rec["gpt_datasets"]]


def _fact_blended_for_every_share(c):
    """A split with a share is a BlendedDataset over one GPTDataset per prefix; no share: None."""
    for i, n in enumerate(("train", "valid", "test")):
        rec = c["splits"][n]
        if (rec is None) != (c["config"]["split_matrix"][i] is None):
            return False
        if rec is not None and (rec["top_level"] != "BlendedDataset"
                                or [g["dataset"] for g in rec["gpt_datasets"]]
                                != c["config"]["blend"]["prefixes"]):
            return False
    return True


def _fact_one_epoch(c):
    """num_samples None -> _get_num_epochs returns 1, no separate final epoch."""
    return all(g["num_samples"] is None and g["num_epochs"] == 1
               and g["separate_final_epoch"] is False
               for _, rec in _splits_built(c) for g in rec["gpt_datasets"])


def _fact_size(c):
    """size = min(requested, sum(lengths)), None when requested is None; len = size or sum."""
    for _, rec in _splits_built(c):
        total = sum(_lens(rec))
        want = None if rec["size_requested"] is None else min(rec["size_requested"], total)
        if rec["blended"]["size"] != want or rec["len"] != (total if want is None else want):
            return False
    return True


def _fact_weights(c):
    """size given: normalize(lengths) (float64 lengths / numpy sum); size None: raw lengths."""
    for _, rec in _splits_built(c):
        lens = _lens(rec)
        w = rec["blended"]["weights"]
        if rec["blended"]["size"] is None:
            ok = w == lens and all(isinstance(x, int) for x in w)
        else:
            a = np.array(lens, dtype=np.float64)
            ok = w == (a / np.sum(a)).tolist()
        if not ok:
            return False
    return True


def _fact_indices(c):
    """dataset_sample_index counts draws per dataset from 0; never beyond a dataset's length
    (exactly all of it when size = sum(lengths)); the exhaustive builder (size None) gives the
    same indices as build_blending_indices(normalize(lengths), sum(lengths))."""
    from megatron.core.datasets import helpers
    from megatron.core.datasets.utils import normalize

    for _, rec in _splits_built(c):
        lens = _lens(rec)
        di = rec["blended"]["dataset_index"]["data"]  # KeyError if too long to be inline
        dsi = rec["blended"]["dataset_sample_index"]["data"]
        seen = [0] * len(lens)
        for d, s in zip(di, dsi):
            if s != seen[d]:
                return False
            seen[d] += 1
        if any(n > l for n, l in zip(seen, lens)):
            return False
        if len(di) == sum(lens) and seen != lens:
            return False
        if rec["blended"]["size"] is None and sum(lens) > 0:
            a = np.zeros(sum(lens), dtype=np.int16)
            b = np.zeros(sum(lens), dtype=np.int64)
            helpers.build_blending_indices(a, b, normalize(lens), len(lens), sum(lens), False)
            if a.tolist() != di or b.tolist() != dsi:
                return False
    return True


UNWEIGHTED_FACTS = {
    "blended_dataset_for_every_split_with_a_share": _fact_blended_for_every_share,
    "gpt_num_samples_none_one_epoch_not_separated": _fact_one_epoch,
    "size_min_of_requested_and_sum_of_lengths": _fact_size,
    "weights_normalised_lengths_or_raw_lengths_when_size_none": _fact_weights,
    "indices_within_lengths_exhaustive_equals_blending": _fact_indices,
}


def run_unweighted_case(out_dir, name, description, pool, data_path, sizes, cfg_kwargs,
                        notes=None, extra=None):
    assert not any(_is_float(p) for p in data_path) and len(data_path) > 1
    expect = dict(UNWEIGHTED_FACTS)
    expect.update(extra or {})
    _, c = run_case(out_dir, name, description, pool, data_path, sizes, cfg_kwargs, eod=1,
                    notes=notes, expect=expect, expect_field=UNWEIGHTED_FACTS_FIELD)
    assert c["config"]["blend"]["weights"] is None
    return c


def gen_unweighted_cases(out_dir, pool, results):
    base = dict(random_seed=1234, sequence_length=32, reset_position_ids=False,
                reset_attention_mask=False, eod_mask_loss=False, create_attention_mask=False)
    tr = lambda c: c["splits"]["train"]  # noqa: E731

    results["unweighted3_1_0_0"] = run_unweighted_case(
        out_dir, "unweighted3_1_0_0",
        "three bare prefixes [mixA, mixB, mixC] (no weights), split 1,0,0, sizes [600,0,0], "
        "S=32: one-epoch GPTDatasets, BlendedDataset of 600 < sum of their lengths with "
        "weights = normalised lengths", pool,
        ["mixA", "mixB", "mixC"], [600, 0, 0],
        dict(base, split="1,0,0", reset_position_ids=True, eod_mask_loss=True),
        extra={"size_600_below_total": lambda c: (
            tr(c)["len"] == 600 and sum(_lens(tr(c))) > 600)})

    # a second long dataset so that 969,30,1 leaves every prefix a test sequence: 700
    # documents -> test = [round(0.999*700), 700) = [699, 700), a 192-token document
    pool.formula("synth700", np.random.RandomState(4322).randint(1, 201, size=700), np.uint16,
                 eod=1)
    results["unweighted2_969_30_1"] = run_unweighted_case(
        out_dir, "unweighted2_969_30_1",
        "two bare prefixes [synth600, synth700], split 969,30,1, sizes [1000,200,1], S=32: "
        "train 1000 < total, valid 200 > total (capped to the sum of the one-epoch lengths), "
        "test 1 < total", pool,
        ["synth600", "synth700"], [1000, 200, 1], dict(base, split="969,30,1"),
        notes="synth600's test sequence (document 599) has 55 tokens: with S=64 its one-epoch "
              "test GPTDataset would be empty and megatron-core fails (see "
              "unweighted_empty_split_error.json); S=32 gives it one sample.",
        extra={"valid_capped_test_below": lambda c: (
            c["splits"]["valid"]["len"] == sum(_lens(c["splits"]["valid"])) < 200
            and c["splits"]["test"]["len"] == 1 < sum(_lens(c["splits"]["test"])))})

    results["unweighted3_90_7_3_valid_size_0"] = run_unweighted_case(
        out_dir, "unweighted3_90_7_3_valid_size_0",
        "three bare prefixes [mixA, mixB, mixC], split 90,7,3, sizes [400,0,5], S=32: a valid "
        "size of 0 gives an empty BlendedDataset (its one-epoch GPTDatasets are still built "
        "and recorded)", pool,
        ["mixA", "mixB", "mixC"], [400, 0, 5], dict(base, split="90,7,3", random_seed=4321),
        extra={"valid_empty": lambda c: (
            c["splits"]["valid"]["len"] == 0 and c["splits"]["valid"]["blended"]["size"] == 0
            and all(n > 0 for n in _lens(c["splits"]["valid"])))})

    results["unweighted2_size_over_total"] = run_unweighted_case(
        out_dir, "unweighted2_size_over_total",
        "two bare prefixes [blendA, blendB], split 1,0,0, sizes [100,0,0], S=8: 100 is more "
        "than one epoch of both (20 + 26 = 46); megatron-core silently builds 46 samples, "
        "every sample of both datasets once, no error", pool,
        ["blendA", "blendB"], [100, 0, 0], dict(base, split="1,0,0", sequence_length=8),
        extra={"capped_at_46": lambda c: (
            _lens(tr(c)) == [20, 26] and tr(c)["len"] == 46
            and tr(c)["blended"]["size"] == 46)})

    results["unweighted2_sizes_none_exhaustive"] = run_unweighted_case(
        out_dir, "unweighted2_sizes_none_exhaustive",
        "two bare prefixes [blendA, blendB], split 80,20,0, sizes [None,None,0], S=8: size None "
        "-> BlendedDataset(size=None) with the raw integer lengths as weights and "
        "build_exhaustive_blending_indices", pool,
        ["blendA", "blendB"], [None, None, 0], dict(base, split="80,20,0", sequence_length=8))

    unweighted_error_fixture(out_dir, pool)


def _megatron_error(fn):
    """Runs fn; returns where megatron-core raised (exception type, file:line, source line)."""
    import traceback

    try:
        fn()
    except Exception as e:  # noqa: BLE001
        frame = traceback.extract_tb(e.__traceback__)[-1]
        rel = frame.filename[frame.filename.index("megatron/core/"):]
        return {"exception": type(e).__name__, "message": str(e),
                "raised_at": f"{rel}:{frame.lineno}", "source_line": frame.line}
    return None


def unweighted_error_fixture(out_dir, pool):
    """Unweighted blends megatron-core refuses: any prefix whose split range yields 0 one-epoch
    samples (empty range, or fewer than S+1 tokens) trips BlendedDataset's `weights > 0`
    assert, whatever size is requested for that split."""
    attempts = []
    for data_path, split, S, sizes_list in (
            (["mixA", "mixB", "mixC"], "969,30,1", 32, ([500, 40, 10], [500, 40, 0],
                                                        [500, 40, None])),
            (["synth600", "synth700"], "969,30,1", 64, ([1000, 100, 1], [1000, 100, 0]))):
        per_dataset = {}
        for n in data_path:
            shutil.rmtree(pool.path(n), ignore_errors=True)
            cfg1 = GPTDatasetConfig(blend=([pool.path(n)], None), split=split, sequence_length=S,
                                    random_seed=1234, tokenizer=mcore_shim.OracleTokenizer(1),
                                    path_to_cache=None, reset_position_ids=False,
                                    reset_attention_mask=False, eod_mask_loss=False,
                                    create_attention_mask=False)
            # the same one-epoch GPTDatasets the unweighted blend builds (num_samples None)
            single = BlendedMegatronDatasetBuilder(GPTDataset, [None, None, None], lambda: True,
                                                   cfg1).build()
            per_dataset[n] = {}
            for s, g in zip(("train", "valid", "test"), single):
                beg, end = g.config.split_matrix[g.index_split.value]
                m = len(g.dataset.sequence_lengths)
                b, e = int(round(beg * float(m))), int(round(end * float(m)))
                assert np.array_equal(g.indices, np.arange(b, e, dtype=np.int32))
                assert g.num_samples is None and g._oracle_num_epochs == 1
                per_dataset[n][s] = {"sequence_range": [b, e],
                                     "num_tokens": int(g._get_num_tokens_per_epoch()),
                                     "len_one_epoch": int(len(g))}
        for sizes in sizes_list:
            for n in pool.specs:
                shutil.rmtree(pool.path(n), ignore_errors=True)
            cfg = GPTDatasetConfig(
                blend=get_blend_from_list([pool.path(n) for n in data_path]), split=split,
                sequence_length=S, random_seed=1234, tokenizer=mcore_shim.OracleTokenizer(1),
                path_to_cache=None, reset_position_ids=False, reset_attention_mask=False,
                eod_mask_loss=False, create_attention_mask=False)
            err = _megatron_error(lambda: BlendedMegatronDatasetBuilder(
                GPTDataset, sizes, lambda: True, cfg).build())
            assert err is not None, f"megatron-core built {data_path} {split} {sizes}"
            assert err["exception"] == "AssertionError", err
            assert err["source_line"] == "assert all(map(lambda _: _ > 0, weights))", err
            attempts.append({"data_path": data_path, "split": split, "sequence_length": S,
                             "sizes": sizes, "megatron_error": err})
        attempts[-1]["one_epoch_gpt_datasets"] = per_dataset
    for n in pool.specs:
        shutil.rmtree(pool.path(n), ignore_errors=True)
    used = list(dict.fromkeys(n for a in attempts for n in a["data_path"]))
    write_json(os.path.join(out_dir, "unweighted_empty_split_error.json"), {
        "name": "unweighted_empty_split_error",
        "generator": GENERATOR,
        "description": "Unweighted multi-prefix blends megatron-core 0.16.1 refuses: a prefix "
                       "whose split range gives 0 one-epoch samples (an empty range, e.g. the "
                       "969,30,1 test range of a dataset with < 600 sequences, or a range with "
                       "fewer than S+1 tokens) makes that split's BlendedDataset weights "
                       "contain a 0 and its `weights > 0` assert fail, whatever size (0 and "
                       "None included) is requested for the split. No hang: num_samples is "
                       "None, so _get_num_epochs returns 1 at once.",
        "datasets": {n: pool.specs[n] for n in used},
        "config_common": {"random_seed": 1234, "tokenizer": {"eod": 1, "pad": -1},
                          "reset_position_ids": False, "reset_attention_mask": False,
                          "eod_mask_loss": False, "create_attention_mask": False,
                          "path_to_cache": None},
        "attempts": attempts,
        "expected_pretrain_behaviour": "error naming the split and the dataset with no samples",
    })


# ----------------------------------------------------------------------------------------------
# (d) numpy RandomState.shuffle


def gen_random_state(path):
    seeds = [0, 1, 42, 1234, 4294967295]
    out = {"generator": GENERATOR,
           "description": "np.random.RandomState(seed).shuffle(np.arange(n)) (int64 arange; "
                          "the element dtype does not change the permutation)",
           "cases": []}
    for seed in seeds:
        for n in (1, 2, 10, 1000):
            a = np.arange(n)
            np.random.RandomState(seed).shuffle(a)
            out["cases"].append({"seed": seed, "n": n, "result": enc_array(a)})
        rs = np.random.RandomState(seed)
        a1 = np.arange(10)
        rs.shuffle(a1)
        a2 = np.arange(1000)
        rs.shuffle(a2)
        a3 = np.arange(7, dtype=np.uint32)
        rs.shuffle(a3)
        out["cases"].append({"seed": seed, "consecutive": [10, 1000, 7],
                             "results": [enc_array(a1), enc_array(a2), enc_array(a3)]})
        a = np.arange(70000)
        np.random.RandomState(seed).shuffle(a)
        b = np.arange(70000, dtype=np.uint32)
        np.random.RandomState(seed).shuffle(b)
        assert np.array_equal(a, b)
        out["cases"].append({"seed": seed, "n": 70000, "result": enc_array(a)})
    compact_json_dump(path, out)


def hang_check(prefix):
    """Build the 969,30,1 / [2000,20,20] Shakespeare config; expected never to return."""
    cfg = GPTDatasetConfig(blend=([prefix], [1.0]), split="969,30,1", sequence_length=512,
                           random_seed=1234, tokenizer=mcore_shim.OracleTokenizer(QWEN3_EOD),
                           reset_position_ids=False, reset_attention_mask=False,
                           eod_mask_loss=False, create_attention_mask=False)
    BlendedMegatronDatasetBuilder(GPTDataset, [2000, 20, 20], lambda: True, cfg).build()


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--hang-check":
        return hang_check(sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "assets", "megatron"))
    ap.add_argument("--scratch", default="/work/scratch")
    ap.add_argument("--tokenizer",
                    default=os.path.join(REPO, ".cache", "tokenizers", "qwen3", "tokenizer.json"))
    ap.add_argument("--corpus", default=os.path.join(REPO, "data", "shakespeare.jsonl"))
    args = ap.parse_args()

    builder_dir = os.path.join(args.out, "builder")
    print("builder fixtures:", json.dumps(gen_builder(builder_dir), indent=None)[:200], "...")
    if os.path.exists(args.tokenizer) and os.path.exists(args.corpus):
        facts = gen_preprocess(os.path.join(args.out, "preprocess"), args.scratch, args.corpus,
                               args.tokenizer)
        print("shakespeare:", facts)
    else:
        print("tokenizer or corpus missing: skipping the Shakespeare fixtures")
    gen_cases(os.path.join(args.out, "cases"), builder_dir, args.scratch)
    gen_random_state(os.path.join(args.out, "numpy_random_state.json"))
    print("done:", args.out)


if __name__ == "__main__":
    main()
