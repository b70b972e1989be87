"""index_select and embedding refuse negative indices, as torch does, eagerly and compiled
(the gather primitive under them accepts [-n, 0) and counts from the end, so a compiled lookup
used to return the last rows where torch and tracejit's eager mode raise)."""
import numpy as np
import pytest
import torch

import tracejit as tj
import tracejit.nn.functional as F

W = np.arange(12.0).reshape(3, 4)


def _lookups():
    return {
        "index_select": (lambda w, i: tj.index_select(w, 0, i),
                         lambda w, i: torch.index_select(w, 0, i), np.array([2, 0, 2])),
        "embedding": (lambda w, i: F.embedding(i, w),
                      lambda w, i: torch.nn.functional.embedding(i, w), np.array([[0, 2], [1, 1]])),
    }


@pytest.mark.parametrize("name", ["index_select", "embedding"])
@pytest.mark.parametrize("compiled", [False, True])
def test_negative_index_raises_like_torch(name, compiled):
    ours, theirs, good = _lookups()[name]
    bad = good.copy()
    bad.flat[1] = -1
    with pytest.raises(IndexError):
        theirs(torch.tensor(W), torch.tensor(bad))
    f = tj.compile(ours) if compiled else ours
    with pytest.raises(IndexError, match=rf"{name}: index out of range in self.*\(at .*test_negative_lookup_indices.py:\d+\)"):
        f(tj.tensor(W), tj.tensor(bad))
    if compiled:                      # the same compiled function still runs on valid indices
        np.testing.assert_array_equal(f(tj.tensor(W), tj.tensor(good)).numpy(),
                                      theirs(torch.tensor(W), torch.tensor(good)).numpy())


@pytest.mark.parametrize("name", ["index_select", "embedding"])
def test_valid_lookups_and_gradients_match_torch(name):
    ours, theirs, good = _lookups()[name]
    g = tj.compile(tj.grad(lambda w, i: (ours(w, i) ** 2).sum()))
    tw = torch.tensor(W, requires_grad=True)
    (theirs(tw, torch.tensor(good)) ** 2).sum().backward()
    np.testing.assert_allclose(g(tj.tensor(W), tj.tensor(good)).numpy(), tw.grad.numpy())
    w = tj.tensor(W, requires_grad=True)
    (ours(w, tj.tensor(good)) ** 2).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy())


def test_embedding_module_refuses_a_negative_index_compiled():
    emb = tj.nn.Embedding(5, 3)
    f = tj.compile(emb)
    with pytest.raises(IndexError, match="embedding: index out of range"):
        f(tj.tensor(np.array([1, -2])))
    np.testing.assert_array_equal(f(tj.tensor(np.array([4, 0]))).detach().numpy(),
                                  emb.weight.detach().numpy()[[4, 0]])
