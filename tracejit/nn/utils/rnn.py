"""`tracejit.nn.utils.rnn`: variable-length batches as torch.nn.utils.rnn has them
(PackedSequence, pack_padded_sequence, pad_packed_sequence, pad_sequence, pack_sequence,
unpack_sequence, unpad_sequence).

Every move of rows is one gather by a NumPy index array computed from the lengths, so the
gradient flows back through packing and padding (repeated padding rows add up), eagerly and
inside tj.compile. The lengths decide shapes, so they must be concrete Python values: inside a
compiled function a PackedSequence passed in as an argument has a traced batch_sizes, which
raises a clear error; packing inside the compiled function from lengths that are a static
argument (or a constant) works, and the trace is kept per lengths (static_argnums guard)."""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from ...ir import dtypes as dt
from ...tracer import ops
from ...tracer.creation import full
from ...tracer.ops import _err, _fmt
from ...tracer.shape_ops import concatenate, swapaxes
from ...tracer.tensor import Tensor

__all__ = ["PackedSequence", "invert_permutation", "pack_padded_sequence",
           "pad_packed_sequence", "pad_sequence", "unpad_sequence", "pack_sequence",
           "unpack_sequence"]


def _ints(op: str, what: str, v: Any) -> list[int]:
    """Concrete Python ints from a list, NumPy array or eager tensor (a traced one raises)."""
    if isinstance(v, Tensor):
        if v._traced:
            raise _err(op, f"{what} is a traced tensor {_fmt(v)} inside a compiled function; "
                       f"the lengths decide the shapes, so they must be known when tracing: "
                       f"pass them as a static argument (tj.compile(..., static_argnums=...)) "
                       f"as a tuple of ints and pack inside the compiled function", TypeError)
        v = v.numpy()
    a = np.asarray(v)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        raise _err(op, f"{what} must be a 1-D sequence of integers, got {a.dtype}{list(a.shape)}",
                   TypeError)
    return [int(i) for i in a]


def _index_tensor(v: list[int] | np.ndarray) -> Tensor:
    return ops.as_tensor(np.asarray(v, dtype=np.int64))


def invert_permutation(permutation: Tensor | None) -> Tensor | None:
    """The permutation p' with p'[p[i]] = i."""
    if permutation is None:
        return None
    p = np.asarray(_ints("invert_permutation", "permutation", permutation))
    out = np.empty_like(p)
    out[p] = np.arange(p.size, dtype=np.int64)
    return _index_tensor(out)


class _Fields(NamedTuple):
    data: Tensor
    batch_sizes: Tensor
    sorted_indices: Tensor | None
    unsorted_indices: Tensor | None


class PackedSequence(_Fields):
    """The time-major rows of a batch of sequences sorted by decreasing length: data [N, *],
    batch_sizes [T] (int64; how many sequences are still running at step t),
    sorted_indices / unsorted_indices (the sort permutation and its inverse, or None when the
    batch was already sorted). Accepted by nn.RNN, nn.LSTM and nn.GRU."""

    def __new__(cls, data: Tensor, batch_sizes: Tensor | None = None,
                sorted_indices: Tensor | None = None,
                unsorted_indices: Tensor | None = None) -> "PackedSequence":
        if unsorted_indices is None:
            unsorted_indices = invert_permutation(sorted_indices) \
                if isinstance(sorted_indices, Tensor) and not sorted_indices._traced else None
        if batch_sizes is None:
            raise TypeError("PackedSequence: batch_sizes is required (build one with "
                            "pack_padded_sequence or pack_sequence)")
        return super().__new__(cls, data, batch_sizes, sorted_indices, unsorted_indices)

    def to(self, *args: Any, **kwargs: Any) -> "PackedSequence":
        """The data moved/cast by Tensor.to; the index tensors stay as they are."""
        data = self.data.to(*args, **kwargs)
        return self if data is self.data else type(self)(data, *self[1:])

    def float(self) -> "PackedSequence":
        return self.to(dtype=dt.float32)

    def double(self) -> "PackedSequence":
        return self.to(dtype=dt.float64)

    @property
    def is_cuda(self) -> bool:
        return self.data.is_cuda

    def sizes(self) -> list[int]:
        """batch_sizes as Python ints (raises clearly where it is traced)."""
        return _ints("PackedSequence", "batch_sizes", self.batch_sizes)

    def order(self, n: int) -> np.ndarray:
        """sorted_indices as an array (the identity where the batch came sorted)."""
        if self.sorted_indices is None:
            return np.arange(n, dtype=np.int64)
        return np.asarray(_ints("PackedSequence", "sorted_indices", self.sorted_indices))


def _offsets(sizes: list[int]) -> np.ndarray:
    """Where each step's rows start in data."""
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if sizes else \
        np.zeros(0, np.int64)


def _lengths_of(sizes: list[int]) -> np.ndarray:
    """Each sorted sequence's length, from batch_sizes."""
    b = sizes[0] if sizes else 0
    return np.array([sum(1 for s in sizes if s > i) for i in range(b)], dtype=np.int64)


def pack_padded_sequence(input: Tensor, lengths: Any, batch_first: bool = False,  # noqa: A002
                         enforce_sorted: bool = True) -> PackedSequence:
    """Pack a padded batch [T, B, *] ([B, T, *] if batch_first) of sequences of `lengths`."""
    op = "pack_padded_sequence"
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    lens = np.asarray(_ints(op, "lengths", lengths), dtype=np.int64)
    if input.ndim < 2:
        raise _err(op, f"input must have at least 2 dimensions (time and batch), got "
                   f"{_fmt(input)}")
    t_max, b = (input.shape[1], input.shape[0]) if batch_first else input.shape[:2]
    if lens.size != b:
        raise _err(op, f"Expected `len(lengths)` to be equal to batch_size, but got {lens.size} "
                   f"(batch_size={b})", RuntimeError)
    if b and lens.min() <= 0:
        raise _err(op, "Length of all samples has to be greater than 0, but found an element "
                   "in 'lengths' that is <= 0", RuntimeError)
    if b and lens.max() > t_max:
        raise _err(op, f"a length {int(lens.max())} is longer than the input's time dimension "
                   f"{t_max} ({_fmt(input)}, batch_first={batch_first})", RuntimeError)
    if enforce_sorted:
        if np.any(np.diff(lens) > 0):
            raise _err(op, "`lengths` array must be sorted in decreasing order when "
                       "`enforce_sorted` is True. You can pass `enforce_sorted=False` to "
                       "pack_padded_sequence and/or pack_sequence to sidestep this requirement "
                       "if you do not need ONNX exportability.", RuntimeError)
        order, sorted_indices = np.arange(b, dtype=np.int64), None
    else:
        order = np.argsort(-lens, kind="stable").astype(np.int64)
        sorted_indices = _index_tensor(order)
    slens = lens[order]
    steps = int(slens[0]) if b else 0
    sizes = [int(np.count_nonzero(slens > t)) for t in range(steps)]
    # row of step t, sorted position s, in the input viewed as [T*B, *] or [B*T, *]
    rows = [(order[:n] * t_max + t) if batch_first else (t * b + order[:n])
            for t, n in enumerate(sizes)]
    idx = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    flat = ops.reshape(input, (-1, *input.shape[2:]))
    data = flat[idx]
    return PackedSequence(data, _index_tensor(sizes), sorted_indices,
                          invert_permutation(sorted_indices))


def pad_packed_sequence(sequence: PackedSequence, batch_first: bool = False,
                        padding_value: float = 0.0, total_length: int | None = None
                        ) -> tuple[Tensor, Tensor]:
    """The inverse of pack_padded_sequence: (padded [T, B, *] or [B, T, *], lengths), in the
    batch's original order."""
    op = "pad_packed_sequence"
    if not isinstance(sequence, PackedSequence):
        raise TypeError(f"{op}: expected a PackedSequence, got {type(sequence).__name__}")
    sizes = sequence.sizes()
    data = sequence.data
    steps, b = len(sizes), (sizes[0] if sizes else 0)
    t_out = steps
    if total_length is not None:
        if total_length < steps:
            raise _err(op, f"Expected total_length to be at least the length of the longest "
                       f"sequence in input, but got total_length={total_length} and max "
                       f"sequence length being {steps}")
        t_out = int(total_length)
    order = sequence.order(b)
    slens = _lengths_of(sizes)
    pos = np.empty(b, np.int64)               # each original sequence's sorted position
    pos[order] = np.arange(b, dtype=np.int64)
    offsets = _offsets(sizes)
    pad = int(data.shape[0])                  # the padding row appended below
    t = np.arange(t_out, dtype=np.int64)[:, None]
    inside = t < slens[pos][None, :]
    step_start = offsets[np.minimum(t, steps - 1)] if steps else np.zeros_like(t)
    rows = np.where(inside, step_start + pos[None, :], pad)          # [T, B]
    if batch_first:
        rows = rows.T
    filler = full((1, *data.shape[1:]), padding_value, dtype=data.dtype, device=data.device)
    ext = concatenate([data, filler], 0)
    out = ops.reshape(ext[rows.reshape(-1)], (*rows.shape, *data.shape[1:]))
    return out, _index_tensor(slens[pos])


def pad_sequence(sequences: Sequence[Tensor] | Tensor, batch_first: bool = False,
                 padding_value: float = 0.0, padding_side: str = "right") -> Tensor:
    """Stack sequences [L_i, *] into [L_max, B, *] ([B, L_max, *] if batch_first), padded with
    padding_value on padding_side ("right" or "left")."""
    op = "pad_sequence"
    if padding_side not in ("left", "right"):
        raise ValueError(f"{op}: Expected padding_side to be one of left or right, but got "
                         f"{padding_side}.")
    seqs = list(sequences.unbind(0)) if isinstance(sequences, Tensor) else list(sequences)
    if not seqs:
        raise _err(op, "received an empty list of sequences", RuntimeError)
    for s in seqs:
        if not isinstance(s, Tensor):
            raise TypeError(f"{op}: expected a sequence of Tensors, got {type(s).__name__}")
        if s.ndim < 1 or s.shape[1:] != seqs[0].shape[1:] or s.dtype is not seqs[0].dtype:
            raise _err(op, f"the sequences must share their trailing dimensions and dtype, got "
                       f"{_fmt(seqs[0])} and {_fmt(s)}", RuntimeError)
    lens = np.array([s.shape[0] for s in seqs], dtype=np.int64)
    b, t_max, rest = len(seqs), int(lens.max()), seqs[0].shape[1:]
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    pad = int(lens.sum())
    t = np.arange(t_max, dtype=np.int64)[:, None]
    shift = (t_max - lens)[None, :] if padding_side == "left" else np.zeros((1, b), np.int64)
    k = t - shift                               # the step of sequence b shown at row t
    rows = np.where((k >= 0) & (k < lens[None, :]), starts[None, :] + k, pad)    # [T, B]
    if batch_first:
        rows = rows.T
    first = seqs[0]
    filler = full((1, *rest), padding_value, dtype=first.dtype, device=first.device)
    ext = concatenate([*seqs, filler], 0)
    return ops.reshape(ext[rows.reshape(-1)], (*rows.shape, *rest))


def unpad_sequence(padded_sequences: Tensor, lengths: Any, batch_first: bool = False
                   ) -> list[Tensor]:
    """The sequences of a padded batch, each cut to its length."""
    lens = _ints("unpad_sequence", "lengths", lengths)
    x = padded_sequences if batch_first else swapaxes(padded_sequences, 0, 1)
    return [x[i, :n] for i, n in enumerate(lens)]


def pack_sequence(sequences: Sequence[Tensor], enforce_sorted: bool = True) -> PackedSequence:
    """Pack a list of sequences [L_i, *] (pad_sequence, then pack_padded_sequence)."""
    lens = [s.shape[0] for s in sequences]
    return pack_padded_sequence(pad_sequence(sequences), lens, enforce_sorted=enforce_sorted)


def unpack_sequence(packed_sequences: PackedSequence) -> list[Tensor]:
    """The list of sequences a PackedSequence holds, in the original order."""
    padded, lens = pad_packed_sequence(packed_sequences, batch_first=True)
    return unpad_sequence(padded, lens, batch_first=True)
