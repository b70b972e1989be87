"""`grad_fn.name()` against PyTorch's for common ops (indexing, views, joins and splits,
products, elementwise ops, reductions, sorting, gathering, nn.functional): the same name for
the same call. tracejit builds some ops of several primitives; the op names its last node as
torch names its one node (tracer/node_names.py). Names only: the gradients are checked too."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")
F = tj.nn.functional
TF = torch.nn.functional


def _idx(lib, a):
    return torch.tensor(a) if lib is torch else tj.tensor(np.asarray(a))


# name -> (fn(lib, F, *tensors), input shapes)
CASES = {
    "select x[0]": (lambda L, F, x: x[0], [(3, 4)]),
    "select x[:, 1]": (lambda L, F, x: x[:, 1], [(3, 4)]),
    "select x[..., 0]": (lambda L, F, x: x[..., 0], [(3, 4)]),
    "select x[-1]": (lambda L, F, x: x[-1], [(3, 4)]),
    "select 1-d": (lambda L, F, x: x[2], [(5,)]),
    "select x[0, 0]": (lambda L, F, x: x[0, 0], [(3, 4)]),
    "select x[1:, 0]": (lambda L, F, x: x[1:, 0], [(3, 4)]),
    "select x[tensor(1)]": (lambda L, F, x: x[_idx(L, 1)], [(3, 4)]),
    "select method": (lambda L, F, x: x.select(1, 2), [(3, 4)]),
    "slice x[1:]": (lambda L, F, x: x[1:], [(3, 4)]),
    "slice x[0, 1:]": (lambda L, F, x: x[0, 1:], [(3, 4)]),
    "slice x[:, ::2]": (lambda L, F, x: x[:, ::2], [(3, 4)]),
    "slice x[:]": (lambda L, F, x: x[:], [(3, 4)]),
    "alias x[:, :]": (lambda L, F, x: x[:, :], [(3, 4)]),
    "alias x[...]": (lambda L, F, x: x[...], [(3, 4)]),
    "alias x[:, 0:100]": (lambda L, F, x: x[:, 0:100], [(3, 4)]),
    "unsqueeze x[None]": (lambda L, F, x: x[None], [(3, 4)]),
    "unsqueeze x[0, None]": (lambda L, F, x: x[0, None], [(3, 4)]),
    "unsqueeze x[:, :2, None]": (lambda L, F, x: x[:, :2, None], [(3, 4)]),
    "index list": (lambda L, F, x: x[[0, 2]], [(3, 4)]),
    "index mixed": (lambda L, F, x: x[0, [0, 2]], [(3, 4)]),
    "index mask": (lambda L, F, x: x[x > 0], [(3, 4)]),
    "index tensor": (lambda L, F, x: x[_idx(L, [0, 2, 1])], [(3, 4)]),
    "narrow": (lambda L, F, x: x.narrow(0, 1, 2), [(4, 4)]),
    "transpose": (lambda L, F, x: x.transpose(0, 1), [(3, 4)]),
    "transpose 3-d": (lambda L, F, x: x.transpose(0, 2), [(2, 3, 4)]),
    "swapaxes": (lambda L, F, x: x.swapaxes(0, 1), [(3, 4)]),
    ".T": (lambda L, F, x: x.T, [(3, 4)]),
    ".t()": (lambda L, F, x: x.t(), [(3, 4)]),
    ".mT": (lambda L, F, x: x.mT, [(2, 3, 4)]),
    "permute": (lambda L, F, x: x.permute(2, 0, 1), [(2, 3, 4)]),
    "expand": (lambda L, F, x: x.expand(2, 3, 4), [(3, 4)]),
    "reshape": (lambda L, F, x: x.reshape(4, 3), [(3, 4)]),
    "view": (lambda L, F, x: x.view(12), [(3, 4)]),
    "flatten": (lambda L, F, x: x.flatten(), [(3, 4)]),
    "reshape of a transpose": (lambda L, F, x: x.t().reshape(12), [(3, 4)]),
    "flatten of a transpose": (lambda L, F, x: x.transpose(0, 1).flatten(), [(2, 3, 4)]),
    "unsqueeze": (lambda L, F, x: x.unsqueeze(1), [(3, 4)]),
    "squeeze()": (lambda L, F, x: x.squeeze(), [(3, 1)]),
    "squeeze(dim)": (lambda L, F, x: x.squeeze(1), [(3, 1)]),
    "squeeze(dims)": (lambda L, F, x: x.squeeze((1, 2)), [(3, 1, 1)]),
    "cat": (lambda L, F, x, y: L.cat([x, y]), [(3, 4), (2, 4)]),
    "stack": (lambda L, F, x, y: L.stack([x, y]), [(3, 4), (3, 4)]),
    "stack dim 1": (lambda L, F, x, y: L.stack([x, y], 1), [(3, 4), (3, 4)]),
    "chunk": (lambda L, F, x: x.chunk(2)[1], [(4, 4)]),
    "split": (lambda L, F, x: x.split(3)[0], [(4, 4)]),
    "split sizes": (lambda L, F, x: x.split([1, 3])[1], [(4, 4)]),
    "unbind": (lambda L, F, x: x.unbind(1)[2], [(4, 4)]),
    "matmul 2-d": (lambda L, F, x, y: x @ y, [(3, 4), (4, 5)]),
    "matmul dot": (lambda L, F, x, y: x @ y, [(4,), (4,)]),
    "matmul mv": (lambda L, F, x, y: x @ y, [(3, 4), (4,)]),
    "matmul vector-matrix": (lambda L, F, x, y: x @ y, [(4,), (4, 5)]),
    "matmul batched": (lambda L, F, x, y: x @ y, [(2, 3, 4), (2, 4, 5)]),
    "matmul batch @ matrix": (lambda L, F, x, y: x @ y, [(2, 3, 4), (4, 5)]),
    "matmul 4-d": (lambda L, F, x, y: x @ y, [(2, 2, 3, 4), (2, 2, 4, 5)]),
    "matmul matrix @ batch": (lambda L, F, x, y: x @ y, [(3, 4), (2, 4, 5)]),
    "mm": (lambda L, F, x, y: L.mm(x, y), [(3, 4), (4, 5)]),
    "bmm": (lambda L, F, x, y: L.bmm(x, y), [(2, 3, 4), (2, 4, 5)]),
    "dot": (lambda L, F, x, y: L.dot(x, y), [(4,), (4,)]),
    "mv": (lambda L, F, x, y: L.mv(x, y), [(3, 4), (4,)]),
    "addmm": (lambda L, F, b, x, y: L.addmm(b, x, y), [(5,), (3, 4), (4, 5)]),
    "addmm same shape": (lambda L, F, b, x, y: L.addmm(b, x, y), [(3, 5), (3, 4), (4, 5)]),
    "linear": (lambda L, F, x, w, b: F.linear(x, w, b), [(3, 4), (5, 4), (5,)]),
    "add": (lambda L, F, x, y: x + y, [(3, 4), (3, 4)]),
    "add broadcast": (lambda L, F, x, y: x + y, [(3, 4), (4,)]),
    "sub": (lambda L, F, x, y: x - y, [(3, 4), (3, 4)]),
    "rsub": (lambda L, F, x: 1 - x, [(3, 4)]),
    "mul": (lambda L, F, x, y: x * y, [(3, 4), (3, 4)]),
    "div": (lambda L, F, x, y: x / y, [(3, 4), (3, 4)]),
    "pow": (lambda L, F, x: x ** 2, [(3, 4)]),
    "neg": (lambda L, F, x: -x, [(3, 4)]),
    "exp": (lambda L, F, x: x.exp(), [(3, 4)]),
    "tanh": (lambda L, F, x: x.tanh(), [(3, 4)]),
    "sigmoid": (lambda L, F, x: x.sigmoid(), [(3, 4)]),
    "relu": (lambda L, F, x: x.relu(), [(3, 4)]),
    "where": (lambda L, F, x, y: L.where(x > 0, x, y), [(3, 4), (3, 4)]),
    "clamp": (lambda L, F, x: x.clamp(-0.5, 0.5), [(3, 4)]),
    "clamp min": (lambda L, F, x: x.clamp(min=0.0), [(3, 4)]),
    "clamp tensors": (lambda L, F, x, lo: x.clamp(lo, lo + 1), [(3, 4), (4,)]),
    "clip": (lambda L, F, x: L.clip(x, -0.5, 0.5), [(3, 4)]),
    "clone": (lambda L, F, x: x.clone(), [(3, 4)]),
    "contiguous of a transpose": (lambda L, F, x: x.t().contiguous(), [(3, 4)]),
    "sum": (lambda L, F, x: x.sum(), [(3, 4)]),
    "sum dim": (lambda L, F, x: x.sum(0), [(3, 4)]),
    "mean": (lambda L, F, x: x.mean(), [(3, 4)]),
    "max()": (lambda L, F, x: x.max(), [(3, 4)]),
    "min()": (lambda L, F, x: x.min(), [(3, 4)]),
    "max(dim)": (lambda L, F, x: x.max(1)[0], [(3, 4)]),
    "amax": (lambda L, F, x: x.amax(1), [(3, 4)]),
    "logsumexp": (lambda L, F, x: x.logsumexp(1), [(3, 4)]),
    "softmax": (lambda L, F, x: x.softmax(1), [(3, 4)]),
    "sort": (lambda L, F, x: x.sort(1)[0], [(3, 4)]),
    "sort descending": (lambda L, F, x: x.sort(0, descending=True)[0], [(3, 4)]),
    "topk": (lambda L, F, x: x.topk(2)[0], [(3, 4)]),
    "topk k=1": (lambda L, F, x: x.topk(1, dim=0)[0], [(3, 4)]),
    "gather": (lambda L, F, x: x.gather(1, _idx(L, [[0], [3], [2]])), [(3, 4)]),
    "gather wide": (lambda L, F, x: x.gather(1, _idx(L, [[0, 1], [3, 3], [2, 0]])), [(3, 4)]),
    "take_along_dim": (lambda L, F, x: L.take_along_dim(x, _idx(L, [[0], [1], [2]]), 1),
                       [(3, 4)]),
    "index_select": (lambda L, F, x: x.index_select(0, _idx(L, [2, 0])), [(3, 4)]),
    "cumsum": (lambda L, F, x: x.cumsum(0), [(3, 4)]),
    "float": (lambda L, F, x: x.float(), [(3, 4)]),
    "cross_entropy": (lambda L, F, x: F.cross_entropy(x, _idx(L, [0, 1, 2])), [(3, 4)]),
    "layer_norm": (lambda L, F, x: F.layer_norm(x, (4,)), [(3, 4)]),
    "einsum": (lambda L, F, x, y: L.einsum("ij,jk->ik", x, y), [(3, 4), (4, 5)]),
    "sum keepdim": (lambda L, F, x: x.sum(0, keepdim=True), [(3, 4)]),
    "sum of all dims named": (lambda L, F, x: x.sum((0, 1)), [(3, 4)]),
    "square": (lambda L, F, x: x.square(), [(3, 4)]),
    "rsqrt": (lambda L, F, x: (x * x + 1).rsqrt(), [(3, 4)]),
    "roll flat": (lambda L, F, x: x.roll(1), [(3, 4)]),
    "roll dim": (lambda L, F, x: x.roll(1, 0), [(3, 4)]),
    "diagonal": (lambda L, F, x: x.diagonal(), [(3, 4)]),
    "diagonal of dims 1, 2": (lambda L, F, x: L.diagonal(x, 0, 1, 2), [(2, 3, 4)]),
    "baddbmm": (lambda L, F, b, x, y: L.baddbmm(b, x, y), [(2, 3, 5), (2, 3, 4), (2, 4, 5)]),
    "addbmm": (lambda L, F, b, x, y: L.addbmm(b, x, y), [(3, 5), (2, 3, 4), (2, 4, 5)]),
    "kron": (lambda L, F, x, y: L.kron(x, y), [(2, 2), (2, 3)]),
    "embedding": (lambda L, F, w: F.embedding(_idx(L, [0, 2, 2]), w), [(4, 3)]),
    "embedding padding": (lambda L, F, w: F.embedding(_idx(L, [[0, 2]]), w, padding_idx=0),
                          [(4, 3)]),
    "bce with logits": (lambda L, F, x, y: F.binary_cross_entropy_with_logits(x, y.sigmoid()),
                        [(3, 4), (3, 4)]),
    "bce with logits none": (lambda L, F, x, y: F.binary_cross_entropy_with_logits(
        x, y.sigmoid(), reduction="none"), [(3, 4), (3, 4)]),
    "pad reflect 1-d": (lambda L, F, x: F.pad(x, (1, 2), mode="reflect"), [(2, 3, 4)]),
    "pad replicate 2-d": (lambda L, F, x: F.pad(x, (1, 1, 2, 0), mode="replicate"),
                          [(1, 2, 3, 4)]),
}


def _run(lib, fn, arrays):
    if lib is torch:
        xs = [torch.tensor(a, requires_grad=True) for a in arrays]
        return xs, fn(torch, TF, *xs)
    xs = [tj.tensor(a, requires_grad=True) for a in arrays]
    return xs, fn(tj, F, *xs)


@pytest.mark.parametrize("case", list(CASES), ids=str)
def test_grad_fn_name_matches_torch(case):
    fn, shapes = CASES[case]
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s) for s in shapes]
    xs, y = _run(tj, fn, arrays)
    xts, yt = _run(torch, fn, arrays)
    assert y.grad_fn.name() == yt.grad_fn.name()
    assert repr(y.grad_fn) == f"<{yt.grad_fn.name()} object>"
    # names only: the values and gradients are torch's
    np.testing.assert_allclose(y.detach().numpy(), yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    w = rng.standard_normal(tuple(yt.shape))
    (y * tj.tensor(w)).sum().backward()
    (yt * torch.tensor(w)).sum().backward()
    for x, xt in zip(xs, xts):
        np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-12, atol=1e-12)


def _keys(rng, n: int) -> list:
    """Random basic keys (ints, slices, None, ...) for a (3, 4, 5) tensor."""
    keys = []
    for _ in range(n):
        key = []
        axis = 0
        ellipsis = False
        for _ in range(rng.integers(1, 5)):
            r = rng.random()
            if r < 0.15:
                key.append(None)
            elif r < 0.22 and not ellipsis:
                key.append(Ellipsis)
                ellipsis = True
                axis = 3 - sum(1 for k in key if k is not None and k is not Ellipsis) + axis
            elif axis < 3:
                size = (3, 4, 5)[axis]
                if r < 0.5:
                    key.append(int(rng.integers(-size, size)))
                else:
                    start = [None, 0, 1, -2][rng.integers(4)]
                    stop = [None, size, 100, 2][rng.integers(4)]
                    step = [None, 1, 2][rng.integers(3)]
                    key.append(slice(start, stop, step))
                axis += 1
        keys.append(tuple(key) if rng.random() < 0.8 or len(key) != 1 else key[0])
    return keys


def test_basic_index_names_match_torch_for_many_keys():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 4, 5))
    x = tj.tensor(a, requires_grad=True)
    xt = torch.tensor(a, requires_grad=True)
    seen = set()
    for key in _keys(rng, 400):
        try:
            yt = xt[key]
        except IndexError:
            continue
        y = x[key]
        assert y.grad_fn.name() == yt.grad_fn.name(), key
        np.testing.assert_array_equal(y.detach().numpy(), yt.detach().numpy())
        seen.add(yt.grad_fn.name())
    assert seen == {"SelectBackward0", "SliceBackward0", "UnsqueezeBackward0", "AliasBackward0"}


def test_a_view_of_a_view_keeps_its_base_node():
    """An op that made no node of its own (a whole tensor's squeeze, a 1-d t()) renames
    nothing: the base's node keeps its name."""
    x = tj.tensor(np.ones((3, 4)), requires_grad=True)
    y = x * 2
    y.squeeze()
    y.t().t()
    assert y.grad_fn.name() == "MulBackward0"
    v = tj.tensor(np.ones(3), requires_grad=True) * 2
    v.t()
    assert v.grad_fn.name() == "MulBackward0"


def test_mm_checks_its_operands():
    a = tj.ones((2, 3))
    with pytest.raises(RuntimeError, match=r"mm: mat2 must be 2-d, got f32\[3\]"):
        tj.mm(a, tj.ones(3))
    with pytest.raises(RuntimeError, match=r"mm: .*cannot be multiplied \(3 != 2\)"):
        tj.mm(a, tj.ones((2, 3)))
    np.testing.assert_allclose(tj.mm(a, tj.ones((3, 4))).numpy(), np.full((2, 4), 3.0))
