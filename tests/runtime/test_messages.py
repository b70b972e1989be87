"""What tracejit tells the user: recompile logs (once), TRACEJIT_DUMP/TRACEJIT_LOG names, the
names and source lines in gradient IR, and no LLVM remarks on stderr."""
import inspect
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tracejit as tj
from tracejit.debug import STAGES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RECOMPILE_SCRIPT = textwrap.dedent("""
    import logging, sys
    import numpy as np
    import tracejit as tj
    if sys.argv[1] == "handler":
        logging.basicConfig(format="LOGGED %(name)s: %(message)s")
    f = tj.compile(lambda x: x * 2.0)
    f(np.ones(3, np.float32))
    f(np.ones(4, np.float32))
""")


@pytest.mark.parametrize("setup", ["plain", "handler"])
def test_recompile_log_is_printed_once(setup, tmp_path):
    env = dict(os.environ, TRACEJIT_LOG="recompiles", TRACEJIT_CACHE_DIR=str(tmp_path),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", RECOMPILE_SCRIPT, setup], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "recompiling" in ln]
    assert len(lines) == 1, r.stderr
    assert "x: f32[3] -> f32[4]" in lines[0]
    assert lines[0].startswith("LOGGED tracejit: ") == (setup == "handler")


def test_unknown_dump_stage_names_the_valid_ones(monkeypatch):
    monkeypatch.setenv("TRACEJIT_DUMP", "ir,bogus")
    f = tj.compile(lambda x: x + 1.0)
    with pytest.raises(ValueError) as e:
        f(np.ones(2, np.float32))
    msg = str(e.value)
    assert "TRACEJIT_DUMP" in msg and "bogus" in msg
    assert all(s in msg for s in STAGES) and "all" in msg


def test_known_dump_stages_and_all_are_accepted(monkeypatch, capsys):
    monkeypatch.setenv("TRACEJIT_DUMP", " kernels , ir")
    tj.compile(lambda x: x + 1.0)(np.ones(2, np.float32))
    err = capsys.readouterr().err
    assert "===== tracejit ir" in err and "===== tracejit kernels" in err
    monkeypatch.setenv("TRACEJIT_DUMP", "all")
    tj.compile(lambda x: x + 2.0)(np.ones(2, np.float32))
    assert "===== tracejit llvm" in capsys.readouterr().err


def test_unknown_log_name_names_the_valid_ones(monkeypatch):
    monkeypatch.setenv("TRACEJIT_LOG", "recompile")          # the plural is the name
    f = tj.compile(lambda x: x + 1.0)
    with pytest.raises(ValueError, match=r"TRACEJIT_LOG.*recompile.*valid names are recompiles"):
        f(np.ones(2, np.float32))


def _loss(x, w):
    h = tj.tanh(x @ w)
    return (h * h).sum()


def _lines(fn):
    src, start = inspect.getsourcelines(fn)
    return {f"test_messages.py:{start + i}" for i, ln in enumerate(src) if "tj." in ln or "*" in ln}


def _instr_locs(text):
    return [m.group(1) for m in re.finditer(r"#\s*(\S+:\d+)\s*$", text, re.M)]


@pytest.mark.parametrize("order", ["compile(grad(f))", "grad(compile(f))"])
def test_gradient_ir_names_and_lines(order):
    x = np.ones((2, 3), np.float32)
    w = np.ones((3, 4), np.float32)
    g = tj.compile(tj.grad(_loss, argnums=1)) if order == "compile(grad(f))" else \
        tj.grad(tj.compile(_loss), argnums=1)
    text = g.lower(x, w).as_text()
    lower_line = f"test_messages.py:{inspect.currentframe().f_lineno - 1}"
    assert text.startswith("graph @grad__loss(")
    locs = _instr_locs(text)
    ops = _lines(_loss)
    # the backward of tanh and matmul (sub, mul, transpose, the second matmul) carries the
    # forward line, as the reverse-mode IR transform writes it
    backward = [ln for ln in text.splitlines() if re.search(r"= (transpose|sub) ", ln)]
    assert backward and all(_instr_locs(ln)[0] in ops for ln in backward), text
    assert sum(loc in ops for loc in locs) >= len(locs) - 2, text    # seed and accumulation
    assert locs.count(lower_line) <= 2, text


@pytest.mark.parametrize("op", ["exp", "log", "tanh", "sin", "cos", "pow"])
def test_no_llvm_remarks_on_stderr(op, capfd, tmp_path, monkeypatch):
    """float64 transcendentals call the C library, so their loops cannot vectorize; a
    vectorize-width hint on such a loop made LLVM print 'remark: loop not vectorized' on fd 2."""
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path))      # really compile
    x = np.linspace(0.5, 1.5, 512 * 128).reshape(512, 128)       # large: built for speed
    fn = (lambda a: a ** 1.5) if op == "pow" else getattr(tj, op)
    f = tj.compile(lambda a: fn(a).sum(axis=1))
    y = f(x)
    err = capfd.readouterr().err
    assert "remark" not in err and "not vectorized" not in err, err
    want = (x ** 1.5 if op == "pow" else getattr(np, op)(x)).sum(axis=1)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-12)


def test_vectorizable_loops_keep_their_width_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path))
    big = np.ones((512, 128), np.float32)
    f = tj.compile(lambda a: tj.exp(a).sum(axis=1))       # reductions carry the hint
    assert "llvm.loop.vectorize.width" in f.lower(big).llvm_ir
    text = f.lower(big.astype(np.float64)).llvm_ir
    assert "call double @exp" in text and "llvm.loop.vectorize.width" not in text


def test_no_llvm_remarks_for_a_causal_attention_softmax(capfd, tmp_path, monkeypatch):
    """A masked softmax row (causal attention, as in nanoGPT): its NaN-propagating row max was
    not recognised as a reduction, and the width hint on that loop printed a remark on fd 2."""
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path))
    rng = np.random.default_rng(0)
    att = rng.standard_normal((8, 4, 64, 64)).astype(np.float32)
    mask = np.tril(np.ones((64, 64), bool))
    f = tj.compile(lambda a: tj.softmax(tj.where(tj.tensor(mask), a, float("-inf")), -1))
    y = f(att)
    err = capfd.readouterr().err
    assert "remark" not in err and "not vectorized" not in err, err
    z = np.where(mask, att, -np.inf)
    want = np.exp(z - z.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-7)
