"""nn.EmbeddingBag / F.embedding_bag against torch: modes sum/mean/max, 2-D input or 1-D
input with offsets (include_last_offset, empty bags, a single bag), padding_idx (left out of
the mean), per_sample_weights (mode sum), values and gradients of weight and
per_sample_weights, float64 and float32, eager and under tj.compile (offsets as data), reprs
and torch's errors (also when a compiled call runs)."""
import numpy as np
import pytest
import torch

import tracejit as tj
import tracejit.nn.functional as F

TOL = {"float64": (1e-12, 1e-13), "float32": (1e-5, 1e-6)}

CASES = {
    "2d": (np.array([[1, 2, 4], [4, 3, 9], [0, 0, 5]]), None, {}),
    "offsets": (np.array([1, 2, 4, 5, 4, 3, 2, 9]), np.array([0, 2, 2, 5]), {}),
    "last_offset": (np.array([1, 2, 4, 5, 4, 3]), np.array([0, 1, 1, 6]),
                    {"include_last_offset": True}),
    "padding": (np.array([1, 2, 4, 2, 2, 3, 7, 2]), np.array([0, 3, 5, 6]),
                {"padding_idx": 2}),
    "one_bag": (np.array([6, 1, 8]), np.array([0]), {}),
    "batch1_2d": (np.array([[3, 1]]), None, {}),
    "empty_2d": (np.zeros((0, 3), np.int64), None, {}),
}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("mode", ["sum", "mean", "max", "sum_psw"])
@pytest.mark.parametrize("case", list(CASES))
def test_embedding_bag_matches_torch(case, mode, dtype, compiled):
    idx, off, kw = CASES[case]
    rng = np.random.default_rng(0)
    w = rng.standard_normal((10, 3))
    psw = rng.uniform(0.5, 2.0, idx.shape) if mode == "sum_psw" else None
    res = []
    for lib, lf in ((torch, torch.nn.functional), (tj, F)):
        wt = lib.tensor(w, dtype=getattr(lib, dtype), requires_grad=True)
        pt = None if psw is None else lib.tensor(psw, dtype=getattr(lib, dtype),
                                                   requires_grad=True)
        args = [lib.tensor(idx)] + ([] if off is None else [lib.tensor(off)])

        def fn(weight, p, i, *o):
            return lf.embedding_bag(i, weight, *(o or [None]), mode=mode[:4].rstrip("_"),
                                    per_sample_weights=p, **kw)
        out = (tj.compile(fn) if compiled and lib is tj else fn)(wt, pt, *args)
        up = np.linspace(0.5, 1.5, out.numel()).reshape(tuple(out.shape))
        (out * lib.tensor(up, dtype=getattr(lib, dtype))).sum().backward()
        res.append([out.detach().numpy(), wt.grad.numpy()] +
                   ([] if pt is None else [pt.grad.numpy()]))
    for got, want in zip(*res[::-1]):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, *TOL[dtype])


def test_module_repr_state_and_call():
    for kw in ({}, {"mode": "max", "padding_idx": 2}, {"mode": "sum",
                                                       "include_last_offset": True}):
        torch.manual_seed(0)
        tm, m = torch.nn.EmbeddingBag(10, 3, **kw), tj.nn.EmbeddingBag(10, 3, **kw)
        assert repr(m) == repr(tm)
        assert list(m.state_dict()) == list(tm.state_dict())
        m.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
        idx, off = np.array([1, 2, 4, 5, 4]), np.array([0, 2, 5])
        want = tm(torch.tensor(idx), torch.tensor(off)).detach().numpy()
        np.testing.assert_allclose(m(tj.tensor(idx), tj.tensor(off)).detach().numpy(), want,
                                   1e-6)
    m = tj.nn.EmbeddingBag(10, 3, padding_idx=2)
    np.testing.assert_array_equal(m.weight.detach().numpy()[2], 0.0)


def test_errors():
    w = tj.randn(10, 3)
    with pytest.raises(ValueError, match=r"embedding_bag: offsets has to be a 1D Tensor but "
                       r"got None"):
        F.embedding_bag(tj.tensor([1, 2]), w)
    with pytest.raises(ValueError, match=r"if input is 2D, then offsets has to be None"):
        F.embedding_bag(tj.tensor([[1, 2]]), w, tj.tensor([0]))
    with pytest.raises(NotImplementedError, match=r"per_sample_weights is only supported for "
                       r"mode='sum' \(got mode='mean'\)"):
        F.embedding_bag(tj.tensor([[1, 2]]), w, per_sample_weights=tj.ones(1, 2))
    with pytest.raises(RuntimeError, match=r"offsets\[0\] has to be 0.*got 1"):
        F.embedding_bag(tj.tensor([1, 2]), w, tj.tensor([1]))
    with pytest.raises(RuntimeError, match=r"offsets\[0\] has to be 0"):
        tj.compile(lambda i, o: F.embedding_bag(i, w, o))(tj.tensor([1, 2]), tj.tensor([1]))
    with pytest.raises(IndexError, match=r"embedding_bag: index out of range"):
        F.embedding_bag(tj.tensor([1, 12]), w, tj.tensor([0]))
    with pytest.raises(IndexError, match=r"embedding_bag: index out of range"):
        tj.compile(lambda i, o: F.embedding_bag(i, w, o))(tj.tensor([1, 12]), tj.tensor([0]))
    with pytest.raises(NotImplementedError, match=r"max_norm"):
        F.embedding_bag(tj.tensor([[1]]), w, max_norm=1.0)
    with pytest.raises(RuntimeError):                     # torch refuses the same offsets
        torch.nn.functional.embedding_bag(torch.tensor([1, 2]), torch.randn(10, 3),
                                          torch.tensor([1]))
