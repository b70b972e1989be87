"""`tj.save(obj, f)` / `tj.load(f, map_location=None)`: tensors, state dicts and nested
containers of them, in a format that never runs code when read.

The file is a zip archive (stored, not compressed) holding `tracejit.json`, a JSON description
of the object tree, and one member `data/<i>` per distinct tensor or array: its raw bytes in
C order, little-endian, with dtype and shape in the JSON. Nothing is pickled, so loading a file
cannot execute anything: a member can only become a numeric array of an allowed dtype, and the
JSON only builds None, bools, ints, floats, strings, lists, tuples, dicts, OrderedDicts, tensors,
Parameters, NumPy arrays, dtypes and devices. A tensor object that appears twice, or tensors
sharing one storage (tied weights in a state_dict, whose entries are detached tensors of their
own), are stored once and load as one object. Python floats are stored as float.hex(), exactly.

What goes wrong is said plainly: an unsupported object is a TypeError naming its type and where
it sits (`obj['layers'][0]`); a truncated, corrupted or foreign file (e.g. one torch.save wrote)
is a ValueError naming the file."""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import struct
import sys
import zipfile
import zlib
from collections import OrderedDict
from typing import Any, Iterator

import numpy as np

from .ir import dtypes as dt
from .nn.parameter import Parameter
from .devices import CPU, Device, cuda_available, device as as_device
from .tracer.tensor import Tensor

__all__ = ["save", "load"]

INDEX = "tracejit.json"
FORMAT = "tracejit.save"
VERSION = 1
_DT_BY_NAME = {d.name: d for d in dt.ALL}
# NumPy arrays may also hold these plain numeric types (no objects, no structured dtypes)
_NP_KINDS = "biuf"
_MAX_DEPTH = 200       # nesting a loaded file may have (well inside Python's recursion limit)
_MAX_INDEX = 64 << 20  # bytes the JSON index may hold (read whole into memory)
_KEY_ITEM_TYPES = (bool, int, float, str)   # what a tuple dict key may hold


# -- saving -------------------------------------------------------------------------------------
class _Writer:
    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []
        self.entries: list[dict] = []
        self.memo: dict[Any, int] = {}        # id(tensor or array) -> entry index; also
        # (id(tensor storage), kind, requires_grad) -> entry index, so that tensors sharing one
        # storage (a tied state_dict: state_dict() detaches each name anew) are stored once
        self.keep: list[Any] = []             # keeps memoized objects alive while saving
        self.open: set[int] = set()           # containers being written (cycle check)

    def node(self, x: Any, where: str) -> dict:
        if x is None:
            return {"t": "none"}
        if isinstance(x, (bool, np.bool_)) and not isinstance(x, np.ndarray):
            return {"t": "bool", "v": bool(x)}
        if type(x) is int:
            return {"t": "int", "v": x}
        if type(x) is float:
            return {"t": "float", "v": x.hex()}
        if type(x) is str:
            return {"t": "str", "v": x}
        if type(x) is bytes:
            return {"t": "bytes", "v": base64.b64encode(x).decode("ascii")}
        if isinstance(x, Tensor):
            return {"t": "tensor", "i": self.array_entry(x, where)}
        if isinstance(x, np.ndarray):
            return {"t": "ndarray", "i": self.array_entry(x, where)}
        if isinstance(x, np.generic):
            return {"t": "npscalar", "i": self.array_entry(np.asarray(x), where)}
        if isinstance(x, dt.DType):
            return {"t": "dtype", "v": x.name}
        if isinstance(x, Device):
            return {"t": "device", "v": str(x)}
        if type(x) in (list, tuple, dict, OrderedDict):
            if id(x) in self.open:
                raise TypeError(f"tj.save: {where} contains itself; a recursive structure "
                                f"cannot be saved")
            self.open.add(id(x))
            try:
                if type(x) in (list, tuple):
                    items = [self.node(v, f"{where}[{i}]") for i, v in enumerate(x)]
                    return {"t": type(x).__name__, "v": items}
                pairs = [[self.key(k, where), self.node(v, f"{where}[{k!r}]")]
                         for k, v in x.items()]
                return {"t": "odict" if type(x) is OrderedDict else "dict", "v": pairs}
            finally:
                self.open.discard(id(x))
        hint = ""
        if hasattr(x, "state_dict"):
            hint = "; save its state_dict() instead"
        raise TypeError(f"tj.save: cannot save an object of type {type(x).__module__}."
                        f"{type(x).__qualname__} at {where} (tj.save stores tensors, NumPy "
                        f"arrays, numbers, strings, None, and lists, tuples and dicts of "
                        f"them){hint}")

    def key(self, k: Any, where: str) -> dict:
        if k is None or type(k) in (bool, int, float, str) or \
                (type(k) is tuple and all(type(v) in _KEY_ITEM_TYPES for v in k)):
            return self.node(k, where)
        raise TypeError(f"tj.save: cannot save the dict key {k!r} of type "
                        f"{type(k).__name__} in {where} (keys must be None, bool, int, float, "
                        f"str or tuples of them)")

    def array_entry(self, x: Any, where: str) -> int:
        got = self.memo.get(id(x))
        if got is not None:
            return got
        entry: dict[str, Any] = {}
        storage_key = None
        if isinstance(x, Tensor):
            if x._traced:
                raise TypeError(f"tj.save: the tensor at {where} is traced inside a compiled "
                                f"function and has no value yet; return it and save it outside")
            storage_key = (id(x._data), isinstance(x, Parameter), bool(x._requires_grad))
            got = self.memo.get(storage_key)
            if got is not None:
                self.memo[id(x)] = got
                self.keep.append(x)
                return got
            arr = x._data if isinstance(x._data, np.ndarray) else x._host("tj.save")
            entry["kind"] = "parameter" if isinstance(x, Parameter) else "tensor"
            entry["requires_grad"] = bool(x._requires_grad)
            entry["device"] = str(x.device)
            entry["dtype"] = x.dtype.name
        else:
            arr = x
            entry["kind"] = "ndarray"
            d = dt.from_numpy(arr.dtype)
            if d is not None:
                entry["dtype"] = d.name
            elif arr.dtype.kind in _NP_KINDS and arr.dtype.fields is None:
                entry["dtype"] = arr.dtype.newbyteorder("<").str
            else:
                raise TypeError(f"tj.save: cannot save a NumPy array of dtype {arr.dtype} at "
                                f"{where} (numeric dtypes only)")
        if not arr.flags.c_contiguous:      # (np.ascontiguousarray would make 0-d arrays 1-d)
            arr = arr.copy(order="C")
        arr = _to_little(arr)
        entry["shape"] = list(arr.shape)
        entry["member"] = f"data/{len(self.entries)}"
        self.entries.append(entry)
        self.arrays.append(arr)
        self.memo[id(x)] = len(self.entries) - 1
        self.keep.append(x)
        if storage_key is not None:
            self.memo[storage_key] = len(self.entries) - 1
            self.keep.append(x._data)         # its id stays unique while saving
        return len(self.entries) - 1


def _to_little(arr: np.ndarray) -> np.ndarray:
    """`arr` with little-endian bytes (a copy only where its bytes are not already so)."""
    le = arr.dtype.newbyteorder("<")
    return arr if arr.dtype == le else arr.astype(le)


def _from_little(buf: Any, d: np.dtype, shape: list, byteorder: str = sys.byteorder) -> np.ndarray:
    """The array of dtype `d` (native byte order) and `shape` whose little-endian bytes are
    `buf`. `byteorder` is the host's (a parameter so the big-endian path can be tested)."""
    arr = np.frombuffer(buf, d.newbyteorder("<")).reshape(shape)
    if byteorder != "little":
        arr = arr.astype(d.newbyteorder("="))
    return arr


def save(obj: Any, f: Any) -> None:
    """Save `obj` (a tensor, a state dict, nested lists/tuples/dicts of tensors, NumPy arrays
    and plain Python values) to `f`, a path or a writable binary file object."""
    w = _Writer()
    root = w.node(obj, "obj")
    index = {"format": FORMAT, "version": VERSION, "root": root, "arrays": w.entries}
    with _binary_file(f, "wb", "tj.save") as fh, \
            zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr(INDEX, json.dumps(index, separators=(",", ":")))
        for entry, arr in zip(w.entries, w.arrays):
            with zf.open(entry["member"], "w", force_zip64=arr.nbytes >= 2 ** 31) as out:
                out.write(memoryview(arr.reshape(-1).view(np.uint8)))


@contextlib.contextmanager
def _binary_file(f: Any, mode: str, op: str) -> Iterator[Any]:
    """The file at path `f` opened in `mode` (closed after), or `f` itself, a binary file
    object that must have the method the mode needs (left open: it is the caller's)."""
    if isinstance(f, (str, os.PathLike)):
        with open(f, mode) as fh:
            yield fh
        return
    method, kind = ("write", "writable") if "w" in mode else ("read", "readable")
    if not hasattr(f, method):
        raise TypeError(f"{op}: f must be a path or a {kind} binary file object, got "
                        f"{type(f).__name__}")
    yield f


# -- loading ------------------------------------------------------------------------------------
class _Corrupt(Exception):
    pass


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise _Corrupt(what)


def _np_dtype(name: Any) -> np.dtype:
    _need(isinstance(name, str), f"bad dtype {name!r}")
    if name in _DT_BY_NAME:
        return np.dtype(_DT_BY_NAME[name].np)
    try:
        d = np.dtype(name)
    except TypeError:
        raise _Corrupt(f"unknown dtype {name!r}") from None
    _need(d.kind in _NP_KINDS and d.fields is None and not d.hasobject,
          f"dtype {name!r} is not a plain numeric type")
    return d


class _Reader:
    def __init__(self, zf: zipfile.ZipFile, index: Any, map_location: Any,
                 size: int | None) -> None:
        self.zf = zf
        self.size = size                      # the archive's length in bytes, if known
        _need(isinstance(index, dict) and index.get("format") == FORMAT, "no tracejit index")
        _need(index.get("version") == VERSION,
              f"format version {index.get('version')!r} is not supported (expected {VERSION})")
        self.entries = index.get("arrays")
        _need(isinstance(self.entries, list), "bad array table")
        self.loaded: dict[int, Any] = {}
        self.map_location = map_location
        self.index = index

    def node(self, n: Any, depth: int = 0) -> Any:
        _need(isinstance(n, dict) and isinstance(n.get("t"), str), "bad node")
        _need(depth < _MAX_DEPTH, "structure nested too deeply")
        t, v = n["t"], n.get("v")
        if t == "none":
            return None
        if t == "bool":
            _need(type(v) is bool, "bad bool")
            return v
        if t == "int":
            _need(type(v) is int, "bad int")
            return v
        if t == "float":
            _need(isinstance(v, str), "bad float")
            try:
                return float.fromhex(v)
            except ValueError:
                raise _Corrupt(f"bad float {v!r}") from None
        if t == "str":
            _need(isinstance(v, str), "bad str")
            return v
        if t == "bytes":
            _need(isinstance(v, str), "bad bytes")
            try:
                return base64.b64decode(v.encode("ascii"), validate=True)
            except ValueError:
                raise _Corrupt("bad bytes") from None
        if t in ("list", "tuple"):
            _need(isinstance(v, list), f"bad {t}")
            items = [self.node(x, depth + 1) for x in v]
            return items if t == "list" else tuple(items)
        if t in ("dict", "odict"):
            _need(isinstance(v, list) and all(isinstance(p, list) and len(p) == 2 for p in v),
                  f"bad {t}")
            out = OrderedDict() if t == "odict" else {}
            for k, x in v:
                key = self.node(k, depth + 1)
                _need(key is None or type(key) in _KEY_ITEM_TYPES or
                      (type(key) is tuple and all(type(y) in _KEY_ITEM_TYPES for y in key)),
                      "bad key")
                out[key] = self.node(x, depth + 1)
            return out
        if t in ("tensor", "ndarray", "npscalar"):
            i = n.get("i")
            _need(type(i) is int and 0 <= i < len(self.entries), "bad array reference")
            if i not in self.loaded:
                self.loaded[i] = self.array(i, t)
            return self.loaded[i]
        if t == "dtype":
            _need(v in _DT_BY_NAME, f"unknown dtype {v!r}")
            return _DT_BY_NAME[v]
        if t == "device":
            try:
                return as_device(v)
            except (ValueError, TypeError):
                raise _Corrupt(f"bad device {v!r}") from None
        raise _Corrupt(f"unknown node type {t!r}")

    def array(self, i: int, node_type: str) -> Any:
        e = self.entries[i]
        _need(isinstance(e, dict), "bad array entry")
        kind = e.get("kind")
        _need(kind in ("tensor", "parameter", "ndarray"), f"bad array kind {kind!r}")
        _need((kind == "ndarray") == (node_type != "tensor"), "array kind mismatch")
        d = _np_dtype(e.get("dtype"))
        if kind != "ndarray":
            _need(e["dtype"] in _DT_BY_NAME, f"bad tensor dtype {e['dtype']!r}")
        shape = e.get("shape")
        _need(isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape),
              f"bad shape {shape!r}")
        nbytes = int(np.prod(shape, dtype=object)) * d.itemsize
        member = e.get("member")
        _need(isinstance(member, str), "bad member name")
        try:
            info = self.zf.getinfo(member)
        except KeyError:
            raise _Corrupt(f"member {member!r} is missing") from None
        _need(info.file_size == nbytes, f"member {member!r} holds {info.file_size} bytes, "
              f"expected {nbytes} for {d.name}{shape}")
        # stored uncompressed, inside the archive: a forged size cannot make us allocate more
        # than the file holds
        _need(info.compress_type == zipfile.ZIP_STORED and info.compress_size == nbytes and
              (self.size is None or info.header_offset + nbytes <= self.size),
              f"member {member!r} is not {nbytes} stored bytes")
        buf = bytearray(nbytes)
        with self.zf.open(info) as fh:
            got = fh.readinto(buf) if nbytes else 0
            _need(got == nbytes and fh.read(1) == b"", f"member {member!r} is truncated")
        arr = _from_little(buf, d, shape) if nbytes else np.zeros(shape, d.newbyteorder("="))
        if kind == "ndarray":
            return arr[()] if node_type == "npscalar" else arr
        rg = e.get("requires_grad", False)
        _need(type(rg) is bool, "bad requires_grad")
        _need(not rg or d.kind == "f", "requires_grad on a non-float tensor")
        t = Tensor(arr)
        dev = self.target_device(e.get("device"))
        if dev != CPU:
            t = t.to(dev)
        if kind == "parameter":
            return Parameter(t, requires_grad=rg)
        if rg:
            t.requires_grad_(True)
        return t

    def target_device(self, saved: Any) -> Device:
        _need(isinstance(saved, str), "bad device")
        try:
            dev = as_device(saved)
        except ValueError:
            raise _Corrupt(f"bad device {saved!r}") from None
        ml = self.map_location
        if isinstance(ml, dict):
            ml = ml.get(saved, ml.get(dev.type))
        if ml is not None:
            return as_device(ml)
        if dev.type == "cuda" and not cuda_available():
            raise RuntimeError("tj.load: attempting to load a tensor saved on a CUDA device, "
                               "but CUDA is not available here; pass map_location='cpu' to "
                               "load it to the CPU")
        return dev


def _name(f: Any) -> str:
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f)
    return getattr(f, "name", None) or f"<{type(f).__name__}>"


def load(f: Any, map_location: Any = None, *, weights_only: bool = True) -> Any:
    """Load what `tj.save` wrote to `f` (a path or a readable, seekable binary file object).
    map_location moves tensors: 'cpu', 'cuda', a Device, or a dict from the saved device
    ('cuda:0', or a type 'cuda') to the target. `weights_only` is accepted for torch's
    signature; loading never unpickles, whatever its value."""
    if not (map_location is None or isinstance(map_location, (str, Device, dict))):
        raise TypeError(f"tj.load: map_location must be None, a device string, a Device or a "
                        f"dict, got {type(map_location).__name__}")
    targets = map_location.values() if isinstance(map_location, dict) else [map_location]
    for target in targets:
        if target is not None:
            as_device(target)              # a bad spelling is the caller's error, said now
    name = _name(f)
    with _binary_file(f, "rb", "tj.load") as fh:
        size = None
        if hasattr(fh, "seek") and hasattr(fh, "tell"):
            start = fh.tell()
            size = fh.seek(0, io.SEEK_END)
            fh.seek(start)
        try:
            with zipfile.ZipFile(fh, "r") as zf:
                names = zf.namelist()
                if INDEX not in names:
                    pickled = any(n.endswith(".pkl") for n in names)
                    raise _Corrupt("it has no tracejit index" + (
                        " (it holds pickled data, e.g. a torch.save file; tj.load never "
                        "unpickles: load it with torch and convert the tensors)"
                        if pickled else ""))
                info = zf.getinfo(INDEX)
                _need(info.compress_type == zipfile.ZIP_STORED and
                      info.compress_size == info.file_size,
                      f"the index {INDEX!r} is not stored uncompressed")
                _need(info.file_size <= _MAX_INDEX,
                      f"the index {INDEX!r} holds {info.file_size} bytes, more than the "
                      f"{_MAX_INDEX} allowed")
                _need(size is None or info.header_offset + info.file_size <= size,
                      f"the index {INDEX!r} is truncated")
                index = json.loads(zf.read(info).decode("utf-8"))
                reader = _Reader(zf, index, map_location, size)
                return reader.node(index.get("root"))
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, ValueError,
                struct.error, OverflowError, NotImplementedError, io.UnsupportedOperation,
                RecursionError) as e:          # (JSON and Unicode errors are ValueErrors)
            raise ValueError(f"tj.load: {name} is not a readable tracejit save file (truncated "
                             f"or corrupted?): {type(e).__name__}: {e}") from None
        except _Corrupt as e:
            raise ValueError(f"tj.load: {name} is not a valid tracejit save file (corrupted?): "
                             f"{e}") from None
