"""tj.save / tj.load, fixes from a review: tied state_dict entries (one storage, detached per
name) stored once and loaded as one tensor; the JSON index must be stored, and is size-capped;
tuple dict keys holding unhashable items are a ValueError; little-endian bytes decoded right on a
big-endian host."""
import io
import json
import zipfile

import numpy as np
import pytest
import torch

import tracejit as tj
import tracejit.nn as nn
from tracejit import serialization as ser


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Linear(4, 4, bias=False)
        self.lm_head = nn.Linear(4, 4, bias=False)
        self.lm_head.weight = self.wte.weight
        self.other = nn.Linear(4, 4, bias=False)


def _saved(obj):
    buf = io.BytesIO()
    tj.save(obj, buf)
    return buf.getvalue()


def test_tied_state_dict_is_stored_once_and_loads_shared():
    m = _Tied()
    sd = m.state_dict()
    assert sd["wte.weight"] is not sd["lm_head.weight"]       # detached per name
    raw = _saved(sd)
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        members = [n for n in zf.namelist() if n.startswith("data/")]
    assert len(members) == 2                                     # wte/lm_head once, other once
    r = tj.load(io.BytesIO(raw))
    assert list(r) == list(sd)
    assert r["wte.weight"] is r["lm_head.weight"]
    assert r["other.weight"] is not r["wte.weight"]
    np.testing.assert_array_equal(r["wte.weight"].numpy(), m.wte.weight.detach().numpy())
    np.testing.assert_array_equal(r["other.weight"].numpy(), m.other.weight.detach().numpy())
    # torch keeps the sharing too (through the storage) for the same kind of state_dict
    tm = torch.nn.Linear(4, 4, bias=False)
    head = torch.nn.Linear(4, 4, bias=False)
    head.weight = tm.weight
    tsd = {"wte.weight": tm.state_dict()["weight"], "lm_head.weight": head.state_dict()["weight"]}
    tbuf = io.BytesIO()
    torch.save(tsd, tbuf)
    tbuf.seek(0)
    tr = torch.load(tbuf)
    assert tr["wte.weight"].data_ptr() == tr["lm_head.weight"].data_ptr()
    # and it loads back into a tied model
    m2 = _Tied()
    m2.load_state_dict(r)
    np.testing.assert_array_equal(m2.lm_head.weight.detach().numpy(),
                                  m.wte.weight.detach().numpy())
    assert m2.lm_head.weight is m2.wte.weight


def _rewrite(raw, index=None, index_compress=zipfile.ZIP_STORED):
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == ser.INDEX:
                if index is not None:
                    data = json.dumps(index).encode()
                dst.writestr(ser.INDEX, data, compress_type=index_compress)
            else:
                dst.writestr(info, data, compress_type=zipfile.ZIP_STORED)
    out.seek(0)
    out.name = "crafted.tj"
    return out


def test_compressed_index_is_refused():
    raw = _saved({"a": tj.tensor([1.0, 2.0])})
    assert tj.load(_rewrite(raw))["a"].numpy().tolist() == [1.0, 2.0]      # the rewrite is sane
    with pytest.raises(ValueError, match=r"crafted\.tj.*not stored uncompressed"):
        tj.load(_rewrite(raw, index_compress=zipfile.ZIP_DEFLATED))


def test_oversized_index_is_refused(monkeypatch):
    raw = _saved({"a": tj.tensor([1.0, 2.0]), "pad": "x" * 1000})
    monkeypatch.setattr(ser, "_MAX_INDEX", 500)
    with pytest.raises(ValueError, match=r"crafted\.tj.*more than the 500 allowed"):
        tj.load(_rewrite(raw))


@pytest.mark.parametrize("bad_item", [
    {"t": "list", "v": []},
    {"t": "dict", "v": []},
    {"t": "tuple", "v": [{"t": "list", "v": []}]},
])
def test_tuple_key_with_unhashable_item_is_a_value_error(bad_item):
    raw = _saved({("a", 1): 5})
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        index = json.loads(zf.read(ser.INDEX))
    key = index["root"]["v"][0][0]
    assert key["t"] == "tuple"
    key["v"][1] = bad_item
    with pytest.raises(ValueError, match=r"crafted\.tj.*bad key"):
        tj.load(_rewrite(raw, index=index))


def test_writer_and_reader_agree_on_tuple_keys():
    r = tj.load(io.BytesIO(_saved({("a", 1, 2.5, True): 1, (): 2})))
    assert r == {("a", 1, 2.5, True): 1, (): 2}
    with pytest.raises(TypeError, match="dict key"):
        tj.save({("a", ("b",)): 1}, io.BytesIO())


@pytest.mark.parametrize("dtype", ["i4", "f8", "u2", "f2", "i1"])
@pytest.mark.parametrize("host", ["little", "big"])
def test_little_endian_bytes_decode_on_either_host(dtype, host):
    want = np.array([[1, 2, 3], [-4 if dtype[0] in "if" else 4, 5, 100]], dtype="<" + dtype)
    buf = bytearray(want.tobytes())
    got = ser._from_little(buf, np.dtype(dtype), [2, 3], byteorder=host)
    assert got.shape == (2, 3) and got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, want)
    if host == "big":           # converted to the host's (native) order, not left as "<"
        assert got.dtype.byteorder in ("=", "|")


def test_arrays_are_written_little_endian_whatever_their_order():
    for arr in (np.array([1.5, -2.0], ">f4"), np.array([1.5, -2.0], "<f4"),
                np.array([1.5, -2.0], "=f4")):
        le = ser._to_little(arr)
        assert le.tobytes() == np.array([1.5, -2.0], "<f4").tobytes()
        r = tj.load(io.BytesIO(_saved({"x": arr})))["x"]
        np.testing.assert_array_equal(r, [1.5, -2.0])
