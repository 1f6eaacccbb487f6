#!/usr/bin/env python3
"""Check a TensorBoard events file written by `pretrain::metrics` with TensorBoard's own readers.

Two readers, because they fail differently:

1. ``EventAccumulator(dir, size_guidance={"scalars": 0, "tensors": 0}).Reload()``, what the
   TensorBoard UI's legacy loader uses, then ``.Tags()``, ``.Scalars(tag)`` and ``.Tensors(tag)``
   (text summaries, decoded with ``tensor_util.make_ndarray`` and rendered with the text plugin's
   ``text_array_to_html``). It silently drops records with a bad CRC, so on its own it proves
   little about framing.
2. The strict loop: ``PyRecordReader_New(path, 0, b"", None)`` and ``GetNext()`` until
   ``OutOfRangeError``; any bad CRC or truncation raises ``DataLossError``. Every record must
   parse as ``event_pb2.Event`` and the first must be ``file_version = "brain.Event:2"``.

Both readers must agree with each other and with the expectation given as JSON:

    {"scalars": {"loss": [[1, 10.5], [2, 9.25]]}, "texts": {"config/model": [[0, "..."]]},
     "exact_tags": true}

``[step, value]`` pairs in file order; scalar values are compared after rounding the expectation
to float32, as TensorBoard stores them. With ``"exact_tags": true`` no other tags may be present.
With ``--check-corruption`` the script also flips one byte in a copy of the file and requires the
strict reader to raise ``DataLossError``.

Tested with tensorboard 2.21.0 (protobuf 7.x, numpy 2.x) on Python 3.11; TensorFlow and torch are
not needed. Set up a virtual environment outside the repository and run from the repository root:

    python3 -m venv /work/venvs/tensorboard
    /work/venvs/tensorboard/bin/pip install tensorboard==2.21.0
    /work/venvs/tensorboard/bin/python scripts/tensorboard-check/verify_events.py \\
        tests/assets/tensorboard/events.out.tfevents.1700000000.fixture \\
        --expect-file tests/assets/tensorboard/expected.json --check-corruption

Exit status 0 and a final ``OK`` line mean both readers accepted the file and matched.
"""

import argparse
import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import tensorboard
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub import errors
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New
from tensorboard.plugins.text import text_plugin
from tensorboard.util import tensor_util


def f32(x):
    """`x` rounded to float32, as TensorBoard stores `simple_value`."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def strict_read(path):
    """All events of `path` via the strict record reader; raises DataLossError on damage."""
    reader = PyRecordReader_New(str(path).encode(), 0, b"", None)
    events = []
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return events
        events.append(event_pb2.Event.FromString(reader.record()))


def strict_series(events):
    """(scalars, texts) as {tag: [[step, value], ...]} from strictly read events."""
    scalars, texts = {}, {}
    for event in events:
        for value in event.summary.value:
            if value.WhichOneof("value") == "simple_value":
                scalars.setdefault(value.tag, []).append([event.step, value.simple_value])
            elif value.metadata.plugin_data.plugin_name == "text":
                text = tensor_util.make_ndarray(value.tensor).item().decode("utf-8")
                texts.setdefault(value.tag, []).append([event.step, text])
    return scalars, texts


def accumulator_series(path):
    """(scalars, texts, tags) via EventAccumulator over a directory holding only `path`."""
    with tempfile.TemporaryDirectory() as run_dir:
        shutil.copy(path, Path(run_dir) / Path(path).name)
        acc = EventAccumulator(run_dir, size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        tags = acc.Tags()
        scalars = {
            tag: [[s.step, s.value] for s in acc.Scalars(tag)] for tag in tags["scalars"]
        }
        texts = {}
        for tag in tags["tensors"]:
            plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
            if plugin != "text":
                continue
            for t in acc.Tensors(tag):
                array = tensor_util.make_ndarray(t.tensor_proto)
                # What the text dashboard would show; fails if the tensor is not a string.
                html = text_plugin.text_array_to_html(array, enable_markdown=True)
                assert html, f"text plugin rendered nothing for {tag!r}"
                texts.setdefault(tag, []).append([t.step, array.item().decode("utf-8")])
        return scalars, texts, tags


def compare(what, got, expected_scalars, expected_texts, exact_tags):
    scalars, texts = got
    problems = []
    for tag, series in expected_scalars.items():
        want = [[step, f32(v)] for step, v in series]
        have = [[step, f32(v)] for step, v in scalars.get(tag, [])]
        if have != want:
            problems.append(f"{what}: scalar {tag!r}: got {have}, expected {want}")
    for tag, series in expected_texts.items():
        if texts.get(tag, []) != series:
            problems.append(f"{what}: text {tag!r}: got {texts.get(tag)}, expected {series}")
    if exact_tags:
        extra = (set(scalars) - set(expected_scalars)) | (set(texts) - set(expected_texts))
        if extra:
            problems.append(f"{what}: unexpected tags {sorted(extra)}")
    return problems


def check_corruption(path):
    """Flip one byte in the middle of a copy; the strict reader must reject it."""
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0x40
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / Path(path).name
        bad.write_bytes(bytes(data))
        try:
            strict_read(bad)
        except errors.DataLossError as e:
            return f"corrupted copy rejected by the strict reader: {e.message}"
    raise AssertionError("strict reader accepted a corrupted copy")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("events_file", type=Path)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--expect", help="expectation as a JSON string")
    group.add_argument("--expect-file", type=Path, help="expectation as a JSON file")
    parser.add_argument("--check-corruption", action="store_true")
    args = parser.parse_args()

    if args.expect_file:
        expected = json.loads(args.expect_file.read_text())
    else:
        expected = json.loads(args.expect or "{}")
    expected_scalars = expected.get("scalars", {})
    expected_texts = expected.get("texts", {})
    exact_tags = expected.get("exact_tags", False)

    print(f"tensorboard {tensorboard.__version__}, file {args.events_file}")

    events = strict_read(args.events_file)
    print(f"strict reader: {len(events)} records, all CRCs valid")
    if not events or events[0].file_version != "brain.Event:2":
        sys.exit("FAIL: first record is not file_version = 'brain.Event:2'")
    strict = strict_series(events)

    acc_scalars, acc_texts, tags = accumulator_series(args.events_file)
    print(f"EventAccumulator tags: scalars={sorted(tags['scalars'])} tensors={sorted(tags['tensors'])}")

    problems = compare("strict", strict, expected_scalars, expected_texts, exact_tags)
    problems += compare(
        "accumulator", (acc_scalars, acc_texts), expected_scalars, expected_texts, exact_tags
    )
    if (acc_scalars, acc_texts) != strict:
        problems.append("EventAccumulator and the strict reader disagree (dropped records?)")
    for tag, series in sorted(acc_scalars.items()):
        print(f"  scalar {tag!r}: {series}")
    for tag, series in sorted(acc_texts.items()):
        print(f"  text {tag!r}: {series}")
    if args.check_corruption:
        print(check_corruption(args.events_file))
    if problems:
        sys.exit("FAIL:\n" + "\n".join(problems))
    print("OK")


if __name__ == "__main__":
    main()
