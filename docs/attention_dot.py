"""Renders the README's picture of a fusion plan: nanoGPT's CausalSelfAttention block
(tests/nn/nanogpt_model.py, the explicit masked-softmax path), compiled for the CPU, drawn by
`.lower(x).dot()` and Graphviz. Run from the repository root:

    python docs/attention_dot.py          # writes docs/attention.dot and docs/attention.svg
"""
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import tracejit as tj  # noqa: E402
from nanogpt_helpers import load_nanogpt  # noqa: E402


def main() -> None:
    mod = load_nanogpt("tracejit", "nanogpt_docs")
    mod.FLASH = False
    cfg = mod.GPTConfig(block_size=16, vocab_size=64, n_layer=1, n_head=2, n_embd=32,
                        dropout=0.0, bias=True)
    attn = mod.CausalSelfAttention(cfg).eval()
    x = np.random.default_rng(0).standard_normal((2, 16, 32)).astype(np.float32)
    text = tj.compile(attn).lower(x).dot()
    with open(os.path.join(HERE, "attention.dot"), "w") as f:
        f.write(text + "\n")
    if shutil.which("dot") is None:
        print("Graphviz's dot is not installed: wrote docs/attention.dot only")
        return
    subprocess.run(["dot", "-Tsvg", "-o", os.path.join(HERE, "attention.svg")], input=text,
                   text=True, check=True)
    print("wrote docs/attention.dot and docs/attention.svg")


if __name__ == "__main__":
    main()
