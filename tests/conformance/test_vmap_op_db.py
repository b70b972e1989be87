"""tj.vmap over PyTorch's OpInfo samples for every op of op_table.TABLE: each sample's tensors
stacked into a batch of two examples (the second perturbed) and mapped over, against a Python
loop of the same op on each example. An op whose result depends on the data in a way vmap
cannot batch (its result shape, a value read into Python) must say so clearly instead."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")      # torch.testing._internal imports it
from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

from conformance.op_table import TABLE  # noqa: E402

OPINFOS = {o.name + (f".{o.variant_test_name}" if o.variant_test_name else ""): o for o in op_db}
SAMPLES = 3                     # per op: the first OpInfo samples tracejit takes
CLEAR = ("inside tj.vmap",)     # what a refusal to batch a data-dependent op says


def _map(x, f):
    if isinstance(x, torch.Size):
        return x
    if isinstance(x, (list, tuple)):
        return type(x)(_map(v, f) for v in x)
    if isinstance(x, dict):
        return {k: _map(v, f) for k, v in x.items()}
    return f(x)


def _to_np(x):
    if isinstance(x, torch.Tensor):
        return x.detach().numpy().copy()
    if isinstance(x, torch.dtype):
        return {torch.float32: tj.float32, torch.float64: tj.float64,
                torch.int64: tj.int64, torch.bool: tj.bool_}[x]
    return x


def _second(a: np.ndarray) -> np.ndarray:
    """The second example: floats scaled (signs and zeros kept, so domains hold), others
    unchanged (indices, masks and counts must stay valid)."""
    return a * 1.25 if a.dtype.kind == "f" else a.copy()


def _outs(out) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _check_sample(entry, sample, clear=CLEAR) -> str | None:
    args = _map((sample.input, sample.args, sample.kwargs), _to_np)
    leaves: list[np.ndarray] = []
    _map(args, lambda v: leaves.append(v) if isinstance(v, np.ndarray) else None)
    if not leaves:
        return None

    def call(*vals):
        it = iter(vals)
        x, a, kw = _map(args, lambda v: next(it) if isinstance(v, np.ndarray) else v)
        return tuple(_outs(entry.fn(x, *a, **kw)))

    examples = [leaves, [_second(a) for a in leaves]]
    try:
        want = [call(*[tj.tensor(a) for a in ex]) for ex in examples]
    except Exception:            # noqa: BLE001  (the eager op refuses the perturbed example)
        examples = [leaves, [a.copy() for a in leaves]]
        want = [call(*[tj.tensor(a) for a in ex]) for ex in examples]
    batch = [tj.tensor(np.stack([e[k] for e in examples])) for k in range(len(leaves))]
    try:
        got = tj.vmap(call)(*batch)
    except RuntimeError as e:
        if not clear:
            raise
        if any(c in str(e) for c in clear):
            return None
        return f"vmap raised {type(e).__name__}: {str(e)[:300]}"
    except Exception as e:       # noqa: BLE001
        return f"vmap raised {type(e).__name__}: {str(e)[:300]}"
    for k, g in enumerate(got):
        w = np.stack([np.asarray(o[k].numpy() if isinstance(o[k], tj.Tensor) else o[k])
                      for o in want])
        g = g.numpy()
        if g.shape != w.shape or g.dtype != w.dtype:
            return f"result {k}: {g.dtype}{list(g.shape)} != the loop's {w.dtype}{list(w.shape)}"
        if w.dtype.kind in "biu":
            ok = np.array_equal(g, w)
        else:
            ok = np.allclose(g, w, rtol=1e-9, atol=1e-9, equal_nan=True)
        if not ok:
            return f"result {k} differs from the loop by {np.nanmax(np.abs(g - w))}"
    return None


@pytest.mark.parametrize("name", sorted(TABLE))
def test_vmap_matches_a_loop(name):
    entry, opinfo = TABLE[name], OPINFOS[name]
    dtype = torch.float64 if torch.float64 in opinfo.dtypes else torch.int64
    if dtype not in opinfo.dtypes:
        dtype = next(iter(opinfo.dtypes))
    torch.manual_seed(0)
    failures, checked, data_dependent = [], 0, None
    for i, sample in enumerate(opinfo.sample_inputs_func(opinfo, "cpu", dtype, False)):
        if entry.unsupported(sample):
            continue
        if entry.not_compilable(sample):
            data_dependent = data_dependent or sample
            continue
        if checked == SAMPLES:
            break
        checked += 1
        msg = _check_sample(entry, sample)
        if msg:
            failures.append(f"sample {i}: {msg}")
    if not checked:              # only data-dependent samples: vmap must refuse them clearly
        assert data_dependent is not None, f"{name}: no sample"
        with pytest.raises(RuntimeError, match="inside tj.vmap"):
            _check_sample(entry, data_dependent, clear=())
    assert not failures, f"{name}: " + "\n".join(failures)
