"""tracejit.utils.data against torch.utils.data: TensorDataset, Subset, ConcatDataset,
default_collate / default_convert (tensors, NumPy, numbers, bools, strings, dicts,
namedtuples, tuples, lists) give torch's structure, dtypes and values as tracejit tensors;
sequential DataLoader batches (batch_size, drop_last, batch_size=None, custom samplers and
batch samplers, iterable datasets) equal torch's; shuffled ones are each epoch a partition of
the dataset into torch's batch sizes, new each epoch and fixed by a seed; random_split's
lengths and errors are torch's; a compiled training step over the batches trains as torch's."""
import collections
import warnings

import numpy as np
import pytest

import tracejit as tj
import tracejit.utils.data as D

torch = pytest.importorskip("torch")
TD = torch.utils.data

Point = collections.namedtuple("Point", "x y")


def _same(got, want):
    """A collated tracejit structure equals torch's: same container types and keys, tensors of
    the same shape, dtype and values."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, tj.Tensor), (type(got), want)
        w = want.detach().numpy()
        g = np.asarray(got.detach().numpy())
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, w.dtype, g.shape, w.shape)
        np.testing.assert_array_equal(g, w)
    elif isinstance(want, dict):
        assert type(got) is type(want) and list(got) == list(want)
        for k in want:
            _same(got[k], want[k])
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want), (type(got), type(want))
        for g, w in zip(got, want):
            _same(g, w)
    else:
        assert type(got) is type(want) and got == want


def _both(x):
    """(tracejit, torch) versions of a sample made of NumPy arrays and Python values."""
    if isinstance(x, np.ndarray):
        return tj.tensor(x), torch.tensor(x)
    if isinstance(x, dict):
        pairs = {k: _both(v) for k, v in x.items()}
        return {k: p[0] for k, p in pairs.items()}, {k: p[1] for k, p in pairs.items()}
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        pairs = [_both(v) for v in x]
        return type(x)(*(p[0] for p in pairs)), type(x)(*(p[1] for p in pairs))
    if isinstance(x, (list, tuple)):
        pairs = [_both(v) for v in x]
        return type(x)(p[0] for p in pairs), type(x)(p[1] for p in pairs)
    return x, x


def _samples(n=7):
    rng = np.random.default_rng(0)
    return [{"img": rng.standard_normal((2, 3)).astype(np.float32), "label": i % 3,
             "w": float(i) / 3, "flag": i % 2 == 0, "name": f"s{i}",
             "pt": Point(np.int64(i), np.float32(i / 2)),
             "pair": (np.arange(i, i + 2), [i, -i]), "raw": rng.standard_normal(4)}
            for i in range(n)]


class _MapDS:
    """A plain map-style dataset (not a Dataset subclass) of samples as given."""

    def __init__(self, samples):
        self.samples = samples

    def __getitem__(self, i):
        return self.samples[i]

    def __len__(self):
        return len(self.samples)


@pytest.mark.parametrize("tensors", [False, True], ids=["numpy_samples", "tensor_samples"])
def test_default_collate_matches_torch(tensors):
    samples = _samples()
    if tensors:
        pairs = [_both(s) for s in samples]
        mine, theirs = [p[0] for p in pairs], [p[1] for p in pairs]
    else:
        mine = theirs = samples
    _same(D.default_collate(mine), TD.default_collate(theirs))
    for s in samples[:3]:
        _same(D.default_convert(s), TD.default_convert(s))


def test_collate_errors_match_torch():
    for batch in ([object(), object()], [np.array(["a"]), np.array(["b"])]):
        with pytest.raises(TypeError) as want:
            TD.default_collate(batch)
        with pytest.raises(TypeError) as got:
            D.default_collate(batch)
        assert str(got.value) == str(want.value)
    with pytest.raises(RuntimeError, match="equal size"):
        D.default_collate([[1, 2], [3]])
    with pytest.raises(RuntimeError, match=r"equal size, but got \[2\] at entry 0 and \[3\]"):
        D.default_collate([np.zeros(2), np.zeros(3)])


LOADERS = {
    "b3": dict(batch_size=3),
    "b3_drop": dict(batch_size=3, drop_last=True),
    "b1": {},
    "b10": dict(batch_size=10),
    "none": dict(batch_size=None),
    "sampler": dict(batch_size=2, sampler=[6, 0, 0, 3, 5]),
    "batch_sampler": dict(batch_sampler=[[1, 2], [6], [0, 5, 4]]),
    "collate_fn": dict(batch_size=4, collate_fn=lambda b: [s["label"] for s in b]),
}


@pytest.mark.parametrize("kw", list(LOADERS.values()), ids=list(LOADERS))
def test_sequential_batches_match_torch(kw):
    samples = _samples()
    want = list(TD.DataLoader(_MapDS(samples), **kw))
    loader = D.DataLoader(_MapDS(samples), **kw)
    got = list(loader)
    assert len(got) == len(want) == len(loader) == len(TD.DataLoader(_MapDS(samples), **kw))
    for g, w in zip(got, want):
        _same(g, w)


def _tensor_ds(lib, n=10):
    x = np.arange(n * 3, dtype=np.float64).reshape(n, 3)
    return lib.utils.data.TensorDataset(lib.tensor(x), lib.tensor(np.arange(n) % 4))


@pytest.mark.parametrize("kw", [dict(batch_size=4), dict(batch_size=4, drop_last=True),
                                dict(batch_size=None), dict(batch_size=3, sampler=[9, 2, 2, 0])])
def test_tensor_dataset_and_subsets_match_torch(kw):
    ds, tds = _tensor_ds(tj), _tensor_ds(torch)
    assert len(ds) == len(tds)
    _same(list(ds[4]), list(tds[4]))
    idx = [7, 1, 8, 3, 0]
    for mine, theirs in ((ds, tds), (D.Subset(ds, idx), TD.Subset(tds, idx)),
                         (D.Subset(D.Subset(ds, idx), [4, 2, 1, 0]),
                          TD.Subset(TD.Subset(tds, idx), [4, 2, 1, 0])),
                         (ds + D.Subset(ds, idx), tds + TD.Subset(tds, idx))):
        kw2 = dict(kw)
        if "sampler" in kw2:
            kw2["sampler"] = [i % len(theirs) for i in kw2["sampler"]]
        want = list(TD.DataLoader(theirs, **kw2))
        got = list(D.DataLoader(mine, **kw2))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            _same(g, w)
        if kw2.get("batch_size", 1) is None:
            continue
        # the one-gather batches equal the per-sample collate
        slow = list(D.DataLoader(mine, collate_fn=lambda b: D.default_collate(b), **kw2))
        assert len(slow) == len(got)
        for g, s in zip(got, slow):
            _same(g, [torch.tensor(np.asarray(t.numpy())) for t in s])


def test_tensor_dataset_errors():
    with pytest.raises(AssertionError, match="Size mismatch between tensors"):
        D.TensorDataset(tj.zeros(3, 2), tj.zeros(4))
    with pytest.raises(AssertionError, match="Size mismatch between tensors"):
        TD.TensorDataset(torch.zeros(3, 2), torch.zeros(4))
    with pytest.raises(IndexError, match="index 10 is out of range"):
        list(D.DataLoader(_tensor_ds(tj), sampler=[0, 10], batch_size=2))


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("n,bs", [(10, 3), (12, 4), (5, 8), (1, 1)])
def test_shuffled_epochs_partition_the_dataset(n, bs, drop_last):
    ds = _tensor_ds(tj, n)
    loader = D.DataLoader(ds, batch_size=bs, shuffle=True, drop_last=drop_last)
    tloader = TD.DataLoader(_tensor_ds(torch, n), batch_size=bs, shuffle=True,
                            drop_last=drop_last)
    assert len(loader) == len(tloader)
    epochs = []
    for _ in range(4):
        batches = list(loader)
        want_sizes = [len(b[0]) for b in tloader]
        assert [len(b[0]) for b in batches] == want_sizes
        rows = [int(r) // 3 for b in batches for r in b[0][:, 0].numpy()]
        labels = [int(v) for b in batches for v in b[1].numpy()]
        assert labels == [r % 4 for r in rows]          # the fields stay paired
        assert len(set(rows)) == len(rows)              # no sample twice in an epoch
        if not drop_last:
            assert sorted(rows) == list(range(n))
        else:
            assert len(rows) == (n // bs) * bs
        epochs.append(rows)
    if n >= 5 and not (drop_last and n < bs):
        assert len({tuple(e) for e in epochs}) > 1      # a new order each epoch


def test_shuffle_is_fixed_by_a_seed_and_a_generator():
    ds = _tensor_ds(tj, 20)

    def order(loader):
        return [[int(v) for v in b[0][:, 0].numpy()] for b in loader]
    tj.manual_seed(3)
    a = [order(D.DataLoader(ds, batch_size=6, shuffle=True)) for _ in range(2)]
    tj.manual_seed(3)
    b = [order(D.DataLoader(ds, batch_size=6, shuffle=True)) for _ in range(2)]
    assert a == b and a[0] != a[1]
    g1 = tj.Generator(tj.device("cpu")).manual_seed(7)
    g2 = tj.Generator(tj.device("cpu")).manual_seed(7)
    g3 = tj.Generator(tj.device("cpu")).manual_seed(8)
    runs = [order(D.DataLoader(ds, batch_size=6, shuffle=True, generator=g))
            for g in (g1, g2, g3)]
    assert runs[0] == runs[1] != runs[2]
    with pytest.raises(TypeError, match="must be a tracejit Generator"):
        list(D.DataLoader(ds, shuffle=True, generator=torch.Generator()))


def test_random_sampler_with_replacement_and_num_samples():
    ds = _tensor_ds(tj, 6)
    s = D.RandomSampler(ds, replacement=True, num_samples=50)
    drawn = list(s)
    assert len(drawn) == len(s) == 50 and set(drawn) <= set(range(6)) and len(set(drawn)) > 1
    s = D.RandomSampler(ds, num_samples=14)
    drawn = list(s)
    assert len(drawn) == 14 and sorted(drawn[:12]) == sorted(list(range(6)) * 2)
    for kw in (dict(num_samples=0), dict(replacement=1)):
        with pytest.raises((ValueError, TypeError)) as want:
            TD.RandomSampler(range(6), **kw)
        with pytest.raises(type(want.value)) as got:
            D.RandomSampler(range(6), **kw)
        assert str(got.value) == str(want.value)
    sub = list(D.SubsetRandomSampler([3, 5, 9]))
    assert sorted(sub) == [3, 5, 9]


class _Stream(D.IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter([{"v": np.float64(i), "i": i} for i in range(self.n)])

    def __len__(self):
        return self.n


class _TStream(TD.IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter([{"v": np.float64(i), "i": i} for i in range(self.n)])

    def __len__(self):
        return self.n


@pytest.mark.parametrize("kw", [dict(batch_size=3), dict(batch_size=3, drop_last=True),
                                dict(batch_size=None), dict(batch_size=7)])
def test_iterable_dataset_batches_match_torch(kw):
    got, want = list(D.DataLoader(_Stream(7), **kw)), list(TD.DataLoader(_TStream(7), **kw))
    assert len(got) == len(want) == len(D.DataLoader(_Stream(7), **kw))
    for g, w in zip(got, want):
        _same(g, w)


def test_loader_errors_match_torch():
    ds, tds = _tensor_ds(tj), _tensor_ds(torch)
    cases = [dict(sampler=[0, 1], shuffle=True), dict(batch_sampler=[[0]], batch_size=2),
             dict(batch_sampler=[[0]], drop_last=True), dict(batch_size=None, drop_last=True),
             dict(num_workers=-1), dict(timeout=-1), dict(persistent_workers=True),
             dict(batch_size=0), dict(batch_size=2, drop_last=1)]
    for kw in cases:
        with pytest.raises(ValueError) as want:
            TD.DataLoader(tds, **kw)
        with pytest.raises(ValueError) as got:
            D.DataLoader(ds, **kw)
        assert str(got.value) == str(want.value)
    for kw in (dict(shuffle=True), dict(sampler=[0])):
        with pytest.raises(ValueError) as want:
            TD.DataLoader(_TStream(3), **kw)
        with pytest.raises(ValueError) as got:
            D.DataLoader(_Stream(3), **kw)
        assert str(got.value) == str(want.value)
    loader = D.DataLoader(ds)
    with pytest.raises(ValueError, match="batch_size attribute should not be set"):
        loader.batch_size = 4
    with pytest.raises(NotImplementedError, match="num_workers=2"):
        D.DataLoader(ds, num_workers=2)


@pytest.mark.parametrize("lengths", [[3, 7], [0.3, 0.3, 0.4], [0.5, 0.5], [0.1, 0.9], [10]])
def test_random_split_lengths_match_torch(lengths):
    ds = _tensor_ds(tj)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = [len(s) for s in TD.random_split(range(10), lengths)]
        parts = D.random_split(ds, lengths, generator=tj.Generator(tj.device("cpu")))
    assert [len(p) for p in parts] == want
    seen = [int(i) for p in parts for i in p.indices]
    assert sorted(seen) == list(range(10))
    again = D.random_split(ds, lengths, generator=tj.Generator(tj.device("cpu")))
    assert [list(p.indices) for p in again] == [list(p.indices) for p in parts]
    for p in parts:                               # a Subset yields its dataset's rows
        if len(p):
            np.testing.assert_array_equal(p[0][0].numpy(), ds[p.indices[0]][0].numpy())


def test_random_split_errors_match_torch():
    for lengths in ([3, 3], [0.5, -0.5, 1.0], [1.5, -0.5]):
        with pytest.raises(ValueError) as want:
            TD.random_split(range(10), lengths)
        with pytest.raises(ValueError) as got:
            D.random_split(range(10), lengths)
        assert str(got.value) == str(want.value)
    with pytest.warns(UserWarning, match="Length of split at index 1 is 0"):
        D.random_split(range(3), [0.9, 0.05, 0.05])


def test_compiled_training_over_loader_batches_trains_as_torch():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((20, 4)), rng.standard_normal((20, 2))
    torch.manual_seed(0)
    tmodel = torch.nn.Linear(4, 2).double()
    model = tj.nn.Linear(4, 2).double()
    model.load_state_dict({k: v.detach().numpy() for k, v in tmodel.state_dict().items()})
    runs = []
    for lib, m in ((torch, tmodel), (tj, model)):
        data = lib.utils.data if lib is torch else D
        loader = data.DataLoader(data.TensorDataset(lib.tensor(x), lib.tensor(y)),
                                 batch_size=6, drop_last=True)
        opt = lib.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)

        def step(xb, yb):
            loss = lib.nn.functional.mse_loss(m(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss
        if lib is tj:
            step = tj.compile(step)
        losses = [step(xb, yb).item() for _ in range(2) for xb, yb in loader]
        runs.append(losses)
    assert len(runs[1]) == 6
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-12)


def test_tj_utils_data_is_there_after_import_tracejit(tmp_path):
    # as torch.utils.data after `import torch`: no import of the subpackage needed
    from child_process import run_child
    out = run_child("import json, tracejit as tj\n"
                    "print(json.dumps(tj.utils.data.DataLoader.__module__))", tmp_path)
    assert out == "tracejit.utils.data.dataloader"
