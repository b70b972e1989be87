"""tj.save / tj.load: round trips (every dtype, bfloat16 bits, nested containers, tied tensors,
Parameters, state dicts of modules and optimizers, file objects), map_location, and the errors:
truncated or corrupted files, unsupported objects, and archives that carry pickled code."""
import io
import json
import os
import pickle
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch

import tracejit as tj
import tracejit.nn as nn

DTYPES = [tj.float16, tj.bfloat16, tj.float32, tj.float64, tj.int32, tj.int64, tj.bool_]


def _roundtrip(obj, **kw):
    buf = io.BytesIO()
    tj.save(obj, buf)
    buf.seek(0)
    return tj.load(buf, **kw)


def _bits(t):
    a = t.detach().numpy()
    return a.reshape(-1).view(np.uint8)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("shape", [(), (0,), (1,), (3, 4), (2, 0, 5)])
def test_tensor_round_trip_is_bit_exact(dtype, shape):
    rs = np.random.RandomState(0)
    a = rs.randn(*shape) * 100
    if dtype is tj.bool_:
        a = a > 0
    t = tj.tensor(np.asarray(a).astype(dtype.np))
    if dtype.is_float and shape == (3, 4):
        t = tj.tensor(np.array([[np.nan, np.inf, -np.inf, -0.0]] * 3, dtype.np))
    r = _roundtrip(t)
    assert type(r) is tj.Tensor and r.dtype is dtype and r.shape == t.shape
    np.testing.assert_array_equal(_bits(r), _bits(t))


def test_non_contiguous_and_requires_grad(tmp_path):
    base = tj.tensor(np.arange(24, dtype=np.float32).reshape(4, 6))
    t = base.T[::2]
    g = tj.randn(3, requires_grad=True)
    path = tmp_path / "x.tj"
    tj.save({"t": t, "g": g, "h": g * 2}, path)
    r = tj.load(str(path))
    np.testing.assert_array_equal(r["t"].numpy(), t.numpy())
    assert r["g"].requires_grad and r["g"].is_leaf and r["h"].requires_grad
    np.testing.assert_array_equal(r["g"].detach().numpy(), g.detach().numpy())


def test_nested_structures_scalars_and_tied_tensors():
    w = nn.Parameter(tj.randn(3, 4))
    frozen = nn.Parameter(tj.randn(2), requires_grad=False)
    arr = np.arange(6, dtype=np.uint16).reshape(2, 3)
    obj = {
        "sd": OrderedDict([("emb.weight", w), ("head.weight", w), ("f", frozen)]),
        "nums": [0, -7, 2 ** 70, 1.5, float("inf"), float("nan"), 0.1, True, None],
        "tup": (1, ("a", b"\x00\xff"), [tj.tensor(3)]),
        "keys": {0: "int", 1.5: "float", ("a", 1): "tuple", None: "none", True: "bool"},
        "np": arr, "np_scalar": np.float32(2.5), "dtype": tj.bfloat16, "dev": tj.device("cpu"),
        "empty": {}, "empty_list": [],
    }
    r = _roundtrip(obj)
    assert type(r["sd"]) is OrderedDict and list(r["sd"]) == ["emb.weight", "head.weight", "f"]
    assert r["sd"]["emb.weight"] is r["sd"]["head.weight"]          # tied: one object
    assert isinstance(r["sd"]["emb.weight"], nn.Parameter) and r["sd"]["emb.weight"].requires_grad
    assert isinstance(r["sd"]["f"], nn.Parameter) and not r["sd"]["f"].requires_grad
    nums = r["nums"]
    assert nums[:5] == [0, -7, 2 ** 70, 1.5, float("inf")] and np.isnan(nums[5])
    assert nums[6] == 0.1 and nums[7] is True and nums[8] is None
    assert r["tup"][:2] == (1, ("a", b"\x00\xff")) and type(r["tup"]) is tuple
    assert r["tup"][2][0].shape == () and r["tup"][2][0].item() == 3
    assert r["keys"] == obj["keys"]
    np.testing.assert_array_equal(r["np"], arr)
    assert r["np"].dtype == np.uint16
    assert r["np_scalar"] == np.float32(2.5) and r["np_scalar"].dtype == np.float32
    assert r["dtype"] is tj.bfloat16 and r["dev"] == "cpu"
    assert r["empty"] == {} and r["empty_list"] == []


def test_module_and_optimizer_state_dicts(tmp_path):
    tj.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    opt = tj.optim.AdamW(m.parameters(), lr=1e-3)
    m(tj.randn(5, 4)).sum().backward()
    opt.step()
    tj.save({"model": m.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.tj")
    ck = tj.load(tmp_path / "ckpt.tj")
    m2 = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    m2.load_state_dict(ck["model"])
    for (n1, p1), (n2, p2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert n1 == n2
        np.testing.assert_array_equal(p1.detach().numpy(), p2.detach().numpy())
    opt2 = tj.optim.AdamW(m2.parameters(), lr=1e-3)
    opt2.load_state_dict(ck["opt"])
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


def test_map_location(tmp_path):
    path = tmp_path / "c.tj"
    tj.save({"a": tj.ones(2), "b": [tj.zeros(1)]}, path)
    _retag_device(path, "cuda:0")               # as if saved on a GPU
    for ml in ("cpu", tj.device("cpu"), {"cuda:0": "cpu"}, {"cuda": "cpu"}):
        r = tj.load(path, map_location=ml)
        assert r["a"].device == "cpu" and r["b"][0].device == "cpu"
    if not tj.cuda_available():
        with pytest.raises(RuntimeError, match="map_location='cpu'"):
            tj.load(path)
    with pytest.raises(ValueError, match="unknown device"):
        tj.load(path, map_location="tpu")
    with pytest.raises(TypeError, match="map_location"):
        tj.load(path, map_location=lambda s, loc: s)


def _retag_device(path, dev):
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    index = json.loads(members["tracejit.json"])
    for e in index["arrays"]:
        e["device"] = dev
    members["tracejit.json"] = json.dumps(index).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)


def test_truncated_and_corrupted_files_name_the_path(tmp_path):
    path = tmp_path / "model.tj"
    tj.save({"w": tj.randn(64, 64), "b": tj.randn(64)}, path)
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 30):
        bad = tmp_path / f"cut{cut}.tj"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=f"cut{cut}.tj") as ei:
            tj.load(bad)
        assert "truncated or corrupted" in str(ei.value) or "corrupted" in str(ei.value)
    # one flipped byte inside a tensor's data: the zip checksum catches it
    flipped = bytearray(data)
    at = data.index(b"data/0") + 200
    flipped[at] ^= 0xFF
    bad = tmp_path / "flipped.tj"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="flipped.tj"):
        tj.load(bad)
    # an index that lies about a shape
    _edit_index(path, lambda ix: ix["arrays"][0].__setitem__("shape", [65, 64]))
    with pytest.raises(ValueError, match="expected"):
        tj.load(path)
    # not a zip at all, from a file object without a name
    with pytest.raises(ValueError, match="BytesIO"):
        tj.load(io.BytesIO(b"hello world"))
    with pytest.raises(FileNotFoundError):
        tj.load(tmp_path / "missing.tj")


def _edit_index(path, fn):
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    index = json.loads(members["tracejit.json"])
    fn(index)
    members["tracejit.json"] = json.dumps(index).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)


class _Custom:
    pass


def test_unsupported_objects_name_their_type_and_place():
    with pytest.raises(TypeError, match=r"_Custom at obj\['a'\]\[1\]"):
        _roundtrip({"a": [1, _Custom()]})
    with pytest.raises(TypeError, match="Linear.*state_dict"):
        _roundtrip({"model": nn.Linear(2, 2)})
    with pytest.raises(TypeError, match="set"):
        _roundtrip([{1, 2}])
    with pytest.raises(TypeError, match="dict key"):
        _roundtrip({_Custom(): 1})
    loop = []
    loop.append(loop)
    with pytest.raises(TypeError, match="contains itself"):
        _roundtrip(loop)
    with pytest.raises(TypeError, match="object"):
        _roundtrip(np.array([1, "a"], dtype=object))

    @tj.compile
    def f(x):
        tj.save(x, io.BytesIO())
        return x
    with pytest.raises(TypeError, match="traced"):
        f(tj.ones(2))


class _Boom:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Boom(str(marker)))
    pickle.loads(payload)                    # the payload works...
    assert marker.exists()
    marker.unlink()
    # ...planted as a tensor's data with an object dtype
    path = tmp_path / "planted.tj"
    tj.save({"w": tj.ones(4)}, path)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    index = json.loads(members["tracejit.json"])
    for dtype in ("object", "|O", "O8", "V8", [["a", "O"]]):
        index["arrays"][0].update(dtype=dtype, kind="ndarray", shape=[len(payload)])
        index["root"] = {"t": "ndarray", "i": 0}
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("tracejit.json", json.dumps(index))
            zf.writestr("data/0", payload)
        with pytest.raises(ValueError, match="planted.tj"):
            tj.load(path)
        assert not marker.exists()
    # ...or as a node type the loader does not know
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("tracejit.json", json.dumps({"format": "tracejit.save", "version": 1,
                                                  "arrays": [],
                                                  "root": {"t": "pickle", "v": "data.pkl"}}))
        zf.writestr("data.pkl", payload)
    with pytest.raises(ValueError, match="unknown node type"):
        tj.load(path)
    assert not marker.exists()
    # a torch.save file (pickled): refused, with what to do instead, and nothing runs
    tpath = tmp_path / "torch.pt"
    torch.save({"w": torch.ones(2), "boom": _Boom(str(marker))}, tpath)
    with pytest.raises(ValueError, match="never unpickles"):
        tj.load(tpath)
    assert not marker.exists()
    assert os.path.getsize(tpath) > 0


def test_forged_index_is_refused(tmp_path):
    path = tmp_path / "forged.tj"
    for depth in (300, 100000):          # deeper than the loader allows, than JSON parses
        deep = '{"t":"list","v":[' * depth + '{"t":"none"}' + ']}' * depth
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("tracejit.json", '{"format":"tracejit.save","version":1,"arrays":[],'
                                         '"root":' + deep + '}')
        with pytest.raises(ValueError, match="forged.tj"):
            tj.load(path)
    # an array entry claiming a huge shape: refused before anything is allocated
    tj.save(tj.ones(2), path)
    _edit_index(path, lambda ix: ix["arrays"][0].__setitem__("shape", [2 ** 40, 2 ** 20]))
    with pytest.raises(ValueError, match="forged.tj"):
        tj.load(path)
    with pytest.raises(ValueError, match="unknown device"):
        tj.load(path, map_location={"cuda:0": "tpu"})
