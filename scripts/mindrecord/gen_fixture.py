"""Generate the MindRecord test fixtures in tests/assets/mindrecord/ with the real MindSpore writer.

Made with: CPython 3.11.7, mindspore 2.10.0 (cp311 manylinux x86_64 wheel from PyPI), numpy 2.4.6.

To regenerate (from the repository root; the virtual environment lives outside the repo):

    python3.11 -m venv /work/venvs/mindspore
    /work/venvs/mindspore/bin/pip install mindspore==2.10.0
    /work/venvs/mindspore/bin/python scripts/mindrecord/gen_fixture.py

It deletes and rewrites these files (and their `.db` sqlite index files):

- tokens_int32.mindrecord: schema {"input_ids": int32 [-1]}, 40 records of lengths 1 to 3000,
  written in three batches with a 32 KiB page size so the data spans two blob pages.
- mixed_int64.mindrecord: int64 token field plus fields a reader must skip (int32 array with
  -100 labels, float32 array, bytes, string, scalar int64/int32/float64), one record with ids
  beyond the int32 range.
- sharded.mindrecord0 / sharded.mindrecord1: a 2-shard dataset written by
  FileWriter(..., shard_num=2); which shard gets the odd record is chosen at random by MindSpore.
- expected.json: for each dataset (keyed by the file name to open), the integer fields of every
  record in the order mindspore.dataset.MindDataset(..., shuffle=False) returns them, cross-checked
  against mindspore.mindrecord.FileReader.

Ids come from numpy.random.RandomState(0), so reruns give the same records (except the shard split
of sharded.mindrecord*, and the page layout is deterministic given the same MindSpore version).
"""

import json
import os
import sys

import numpy as np

import mindspore
import mindspore.dataset as ds
from mindspore.mindrecord import FileReader, FileWriter

VOCAB = 151936  # Qwen vocabulary size: ids 0..151935
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "assets",
                   "mindrecord")


def clean(names):
    for name in names:
        for suffix in ("", ".db"):
            path = os.path.join(OUT, name + suffix)
            if os.path.exists(path):
                os.remove(path)


def token_lengths(rng, n):
    lengths = [1, 2, 1, 3000, 7] + list(rng.randint(1, 500, size=n - 5))
    return [int(x) for x in lengths]


def write_int32(rng):
    name = "tokens_int32.mindrecord"
    clean([name])
    records = []
    for length in token_lengths(rng, 40):
        ids = rng.randint(0, VOCAB, size=length).astype(np.int32)
        records.append({"input_ids": ids})
    # Values at the edges of the 1/2/4-byte integer compression buckets.
    records[2] = {"input_ids": np.array([0, 127, 128, 255, 32767, 32768, 65535, 65536, VOCAB - 1,
                                         -1, -128, -129, 2**31 - 1, -2**31], dtype=np.int32)}
    writer = FileWriter(os.path.join(OUT, name), shard_num=1, overwrite=True)
    writer.set_header_size(1 << 14)
    writer.set_page_size(1 << 15)
    writer.add_schema({"input_ids": {"type": "int32", "shape": [-1]}}, "int32 token ids")
    writer.write_raw_data(records[:10])
    writer.write_raw_data(records[10:25])
    writer.write_raw_data(records[25:])
    writer.commit()
    return name, ["input_ids"]


def write_mixed(rng):
    name = "mixed_int64.mindrecord"
    clean([name])
    schema = {
        "doc_id": {"type": "int64"},
        "input_ids": {"type": "int64", "shape": [-1]},
        "labels": {"type": "int32", "shape": [-1]},
        "loss_mask": {"type": "float32", "shape": [-1]},
        "raw": {"type": "bytes"},
        "score": {"type": "float64"},
        "seq_len": {"type": "int32"},
        "text": {"type": "string"},
        "window": {"type": "int32", "shape": [2, 3]},
    }
    records = []
    for i, length in enumerate([5, 1, 300, 2, 64, 17, 1, 128]):
        ids = rng.randint(0, VOCAB, size=length).astype(np.int64)
        if i == 3:
            ids = np.array([2**40, -(2**33)], dtype=np.int64)
        labels = np.concatenate([ids[1:], [-100]]).astype(np.int64)
        labels = np.where(labels > 2**31 - 1, -100, labels)
        labels = np.where(labels < -2**31, -100, labels).astype(np.int32)
        records.append({
            "doc_id": 1000 + i,
            "input_ids": ids,
            "labels": labels,
            "loss_mask": rng.rand(length).astype(np.float32),
            "raw": bytes(rng.randint(0, 256, size=i * 3).astype(np.uint8)),
            "score": float(rng.rand()),
            "seq_len": length,
            "text": "document {} \u00e9\u4e2d".format(i),
            "window": rng.randint(-5, 5, size=(2, 3)).astype(np.int32),
        })
    writer = FileWriter(os.path.join(OUT, name), shard_num=1, overwrite=True)
    writer.set_header_size(1 << 14)
    writer.set_page_size(1 << 15)
    writer.add_schema(schema, "mixed fields")
    writer.add_index(["doc_id", "text"])
    writer.write_raw_data(records)
    writer.commit()
    return name, ["doc_id", "input_ids", "labels", "seq_len", "window"]


def write_sharded(rng):
    base = "sharded.mindrecord"
    clean([base + "0", base + "1"])
    records = []
    for length in [3, 1, 250, 40, 9, 1, 77, 500, 2, 31, 12]:
        records.append({"input_ids": rng.randint(0, VOCAB, size=length).astype(np.int32)})
    writer = FileWriter(os.path.join(OUT, base), shard_num=2, overwrite=True)
    writer.set_header_size(1 << 14)
    writer.set_page_size(1 << 15)
    writer.add_schema({"input_ids": {"type": "int32", "shape": [-1]}}, "sharded tokens")
    writer.write_raw_data(records)
    writer.commit()
    return base + "0", ["input_ids"]


def read_back(name, fields):
    path = os.path.join(OUT, name)
    via_dataset = []
    dataset = ds.MindDataset(path, columns_list=fields, shuffle=False, num_parallel_workers=1)
    for row in dataset.create_dict_iterator(output_numpy=True, num_epochs=1):
        via_dataset.append({f: np.asarray(row[f]).reshape(-1).tolist() for f in fields})
    via_reader = []
    reader = FileReader(path, num_consumer=1, columns=fields)
    for row in reader.get_next():
        via_reader.append({f: np.asarray(row[f]).reshape(-1).tolist() for f in fields})
    reader.close()
    if via_dataset != via_reader:
        sys.exit("{}: MindDataset(shuffle=False) and FileReader disagree on record order"
                 .format(name))
    return {f: [rec[f] for rec in via_dataset] for f in fields}


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.RandomState(0)
    expected = {
        "generator": "scripts/mindrecord/gen_fixture.py",
        "mindspore": mindspore.__version__,
        "numpy": np.__version__,
        "datasets": {},
    }
    for write in (write_int32, write_mixed, write_sharded):
        name, fields = write(rng)
        expected["datasets"][name] = read_back(name, fields)
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, separators=(",", ":"))
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print("wrote {} ({} bytes in all)".format(OUT, total))


if __name__ == "__main__":
    main()
