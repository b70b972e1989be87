"""tj.from_numpy / tj.as_tensor / Tensor.numpy() share memory as torch's do: the same writes,
made through the NumPy array and through the tensor, give torch's values on both sides."""
import warnings

import numpy as np
import pytest
import torch

import tracejit as tj

LAYOUTS = {
    "c": lambda a: a,
    "f": np.asfortranarray,
    "sliced": lambda a: a[:, ::2],
    "transposed": lambda a: a.T,
}


def _writes(t, arr, lib):
    """The same in-place writes through the tensor and through the array, and a read."""
    t.add_(1)
    arr[0] *= 3                     # through the array: the tensor sees it
    t[-1] = 7
    t.mul_(2)
    return (t * 1).sum()            # a new tensor: reads the shared values


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_from_numpy_shares_like_torch(layout):
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    a_tj, a_th = LAYOUTS[layout](base.copy()), LAYOUTS[layout](base.copy())
    t, r = tj.from_numpy(a_tj), torch.from_numpy(a_th)
    s_tj, s_th = _writes(t, a_tj, tj), _writes(r, a_th, torch)
    np.testing.assert_array_equal(a_tj, a_th)           # the array saw the tensor's writes
    np.testing.assert_array_equal(t.numpy(), r.numpy())
    assert float(s_tj) == float(s_th)
    assert t.dtype == tj.float64 and t.shape == tuple(r.shape)
    assert np.shares_memory(t.numpy(), a_tj)


@pytest.mark.parametrize("np_dtype", [np.float16, np.float32, np.int32, np.int64, np.bool_])
def test_from_numpy_dtypes(np_dtype):
    a = np.arange(6).astype(np_dtype)
    t = tj.from_numpy(a)
    assert t.dtype.np == np.dtype(np_dtype) and str(t.dtype.np) == \
        str(torch.from_numpy(a.copy()).numpy().dtype)
    a[1] = 0
    assert t.tolist() == a.tolist()


def test_from_numpy_compiled_writes_and_views():
    a = np.zeros((2, 3), np.float32)
    t = tj.from_numpy(a)

    @tj.compile
    def step(x, y):
        x.add_(y)
        return x.sum()

    step(t, tj.ones(2, 3))              # a compiled call's write-back reaches the array
    step(t, tj.ones(2, 3))
    np.testing.assert_array_equal(a, np.full((2, 3), 2, np.float32))
    v = t[1]                            # a view of the shared tensor writes into the array
    v.fill_(-1)
    assert a[1].tolist() == [-1, -1, -1]
    opt = tj.optim.SGD([p := tj.nn.Parameter(tj.from_numpy(np.ones(3)))], lr=0.5)
    (p * p).sum().backward()
    opt.step()                          # (a parameter made from an array updates it)
    np.testing.assert_array_equal(p.detach().numpy(), np.zeros(3))


def test_from_numpy_refusals():
    with pytest.raises(TypeError, match=r"from_numpy: expected np.ndarray \(got list\)"):
        tj.from_numpy([1.0, 2.0])
    with pytest.raises(TypeError, match=r"from_numpy.*complex64.*test_numpy_share.py:\d+"):
        tj.from_numpy(np.zeros(2, np.complex64))
    with pytest.raises(ValueError, match="byte order"):
        tj.from_numpy(np.zeros(2, ">f4"))
    with pytest.raises(RuntimeError, match="from_numpy.*compiled"):
        tj.compile(lambda x: x + tj.from_numpy(np.ones(2, np.float32)))(tj.ones(2))


def test_from_numpy_read_only_warns_and_copies_on_write():
    a = np.arange(3, dtype=np.float32)
    a.flags.writeable = False
    with pytest.warns(UserWarning, match="not writable"):
        t = tj.from_numpy(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.from_numpy(a).tolist() == t.tolist()
    t.add_(1)                            # torch: undefined; here the tensor copies first
    assert a.tolist() == [0, 1, 2] and t.tolist() == [1, 2, 3]


def test_as_tensor_like_torch():
    x, xr = tj.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    assert tj.as_tensor(x) is x and torch.as_tensor(xr) is xr
    y, yr = tj.as_tensor(x, dtype=tj.float64), torch.as_tensor(xr, dtype=torch.float64)
    (y * y).sum().backward()
    (yr * yr).sum().backward()
    assert y.dtype == tj.float64 and x.grad.tolist() == xr.grad.tolist()
    for a in (np.ones(3), np.arange(4, dtype=np.int32)):
        for dtype in (None, tj.float32):
            t = tj.as_tensor(a, dtype=dtype)
            r = torch.as_tensor(a, dtype=None if dtype is None else torch.float32)
            assert np.shares_memory(t.numpy(), a) == np.shares_memory(r.numpy(), a)
            assert str(t.dtype.np) == str(r.numpy().dtype)
    for data in ([1.0, 2.0], [1, 2], 3.0, np.float64(3.0), [True]):
        assert str(tj.as_tensor(data).dtype.np) == str(torch.as_tensor(data).numpy().dtype)
    a = np.ones(2, np.float32)

    @tj.compile
    def f(z):
        return z + tj.as_tensor(a)      # inside a trace: a copy (the trace cannot alias)

    assert f(tj.ones(2)).tolist() == [2.0, 2.0]


def test_numpy_shares_like_torch():
    t, r = tj.arange(6.0), torch.arange(6.0)
    n, m = t.numpy(), r.numpy()
    n[0], m[0] = 9, 9                    # writes into the array reach the tensor
    t.add_(1)
    r.add_(1)                            # and the tensor's in-place ops reach the array
    assert n.tolist() == m.tolist() == t.tolist() == r.tolist()
    v, w = t[2:4].numpy(), r[2:4].numpy()
    v[:] = -1
    w[:] = -1
    assert t.tolist() == r.tolist()
