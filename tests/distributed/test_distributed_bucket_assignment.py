"""DDP's bucket assignment (nn/parallel/reducer.py's make_buckets) against PyTorch's own
(`_compute_bucket_assignment_by_size`, which torch's DDP runs on the parameters in the order
their gradients become ready, with a 1 MiB first bucket): a bucket is closed once it reaches
its limit, so the first bucket of a wide model holds its last layer (about 1 MiB), whose
all-reduce can then travel while the rest of backward runs."""
import numpy as np
import pytest

import tracejit as tj
from tracejit.nn.parallel.reducer import FIRST_BUCKET_BYTES, make_buckets

torch = pytest.importorskip("torch")
c10d = pytest.importorskip("torch._C._distributed_c10d")


def torch_assignment(params, cap_bytes):
    """torch's buckets over the gradients in ready order (the reverse of registration)."""
    tensors = [torch.from_numpy(np.zeros(p.shape, p._data.dtype)) for p in params[::-1]]
    limits = [min(cap_bytes, FIRST_BUCKET_BYTES), cap_bytes]
    buckets, _ = c10d._compute_bucket_assignment_by_size(tensors, limits)
    return [[len(params) - 1 - i for i in b] for b in buckets]


def mlp(widths, dtype=tj.float32):
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [tj.nn.Linear(a, b, dtype=dtype), tj.nn.ReLU()]
    return tj.nn.Sequential(*layers[:-1])


MODELS = {
    "wide mlp": lambda: mlp((256, 1024, 1024, 1024, 256)),
    "narrow mlp": lambda: mlp((6, 40, 40, 1), tj.float64),
    "deep mlp": lambda: mlp((64,) + (512,) * 8 + (10,)),
    "embedding and layer norm": lambda: tj.nn.Sequential(
        tj.nn.Embedding(5000, 128), tj.nn.LayerNorm(128), tj.nn.Linear(128, 600),
        tj.nn.Linear(600, 5000)),
}


@pytest.mark.parametrize("cap_mb", [25, 2, 1 / 1024])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_buckets_are_torchs(model, cap_mb):
    named = list(MODELS[model]().named_parameters())
    params = [p for _, p in named]
    cap = int(cap_mb * (1 << 20))
    ours = [[next(i for i, q in enumerate(params) if q is p) for p in b.params]
            for b in make_buckets(named, cap)]
    assert ours == torch_assignment(params, cap)


def test_first_bucket_of_the_wide_mlp_is_its_last_layer():
    named = list(MODELS["wide mlp"]().named_parameters())
    buckets = make_buckets(named, 25 << 20)
    assert [b.names for b in buckets] == [["6.bias", "6.weight"],
                                          ["4.bias", "4.weight", "2.bias", "2.weight",
                                           "0.bias", "0.weight"]]
    assert sum(b.numels[0] for b in buckets[:1]) == 256
    assert int(np.sum(buckets[0].numels)) * 4 >= FIRST_BUCKET_BYTES
