"""nn.RNN, nn.LSTM and nn.GRU over a PackedSequence (nn/utils/rnn.py), as torch runs them: at
step t only the first batch_sizes[t] sequences (sorted by decreasing length) advance, the
others keep their state, so each sequence's h_n (and c_n) is taken at its own last step; the
reverse direction starts each sequence at its own last step from the initial state. hx comes
and h_n goes in the batch's original order (permuted by sorted_indices / unsorted_indices).

The step sizes are Python ints (the recurrence is unrolled into the graph, as in rnn.py), so a
compiled function must pack from static lengths; a traced batch_sizes raises (utils/rnn.py)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..tracer.creation import zeros
from ..tracer.ops import _err, _fmt
from ..tracer.shape_ops import concatenate, stack
from ..tracer.tensor import Tensor
from . import functional as F
from .utils.rnn import PackedSequence


def _rows(h: Tensor, idx: np.ndarray) -> Tensor:
    """h [S, B, H] with its batch permuted."""
    return h[:, idx]


def _hidden(layer: Any, op: str, hx: Any, shape: tuple, c_shape: tuple, like: Tensor,
            order: np.ndarray) -> tuple[Tensor, Tensor | None]:
    lstm = layer.mode == "LSTM"
    if hx is None:
        h0 = zeros(*shape, dtype=like.dtype, device=like.device)
        return h0, (zeros(*c_shape, dtype=like.dtype, device=like.device) if lstm else None)
    h0, c0 = hx if lstm else (hx, None)
    for t, want, which in ((h0, shape, "hidden[0]" if lstm else "hidden"),
                           (c0, c_shape, "hidden[1]")):
        if t is None and not lstm:
            continue
        if not isinstance(t, Tensor) or tuple(t.shape) != want:
            raise _err(op, f"expected {which} of size {list(want)}, got "
                       f"{_fmt(t)}", RuntimeError)
    return _rows(h0, order), (_rows(c0, order) if lstm else None)


def run_packed(layer: Any, packed: PackedSequence, hx: Any) -> tuple[PackedSequence, Any]:
    """layer (an RNNBase) over a PackedSequence; returns (PackedSequence output, h_n or
    (h_n, c_n))."""
    op = "LSTM" if layer.mode == "LSTM" else layer.mode.split("_")[0]
    data = packed.data
    if not isinstance(data, Tensor) or data.ndim != 2 or data.shape[1] != layer.input_size:
        raise _err(op, f"a PackedSequence's data must be [N, input_size={layer.input_size}], "
                   f"got {_fmt(data)}", RuntimeError)
    sizes = packed.sizes()
    if not sizes:
        raise _err(op, "expected sequence length to be larger than 0 (an empty "
                   "PackedSequence)", RuntimeError)
    batch = sizes[0]
    if sum(sizes) != data.shape[0] or any(a < b for a, b in zip(sizes, sizes[1:])):
        raise _err(op, f"batch_sizes {sizes} do not describe the data {_fmt(data)} "
                   f"(they must not increase and must sum to its rows)", RuntimeError)
    order = packed.order(batch)
    back = np.empty_like(order)
    back[order] = np.arange(batch, dtype=np.int64)
    directions = 2 if layer.bidirectional else 1
    n_states = layer.num_layers * directions
    shape = (n_states, batch, layer.proj_size or layer.hidden_size)
    c_shape = (n_states, batch, layer.hidden_size)
    h0, c0 = _hidden(layer, op, hx, shape, c_shape, data, order)
    lstm = layer.mode == "LSTM"
    x, h_n, c_n = data, [], []
    for lay in range(layer.num_layers):
        outs = []
        for d in range(directions):
            k = lay * directions + d
            out, h, c = _direction(layer, x, sizes, h0[k], c0[k] if lstm else None,
                                   layer._all_weights[k], reverse=d == 1)
            outs.append(out)
            h_n.append(h)
            c_n.append(c)
        x = outs[0] if directions == 1 else concatenate(outs, -1)
        if layer.dropout and layer.training and lay < layer.num_layers - 1:
            x = F.dropout(x, layer.dropout, True)
    hn = _rows(stack(h_n), back)
    out = PackedSequence(x, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
    return out, ((hn, _rows(stack(c_n), back)) if lstm else hn)


def _direction(layer: Any, x: Tensor, sizes: list[int], h0: Tensor, c0: Tensor | None,
               names: list[str], reverse: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """One layer in one direction over packed rows x [N, features]."""
    w = [getattr(layer, n) for n in names]
    w_ih, w_hh = w[0], w[1]
    b_ih, b_hh = (w[2], w[3]) if layer.bias else (None, None)
    w_hr = w[-1] if layer.proj_size else None
    gi = F.linear(x, w_ih, b_ih)                       # every row's input projection at once
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
    outs: list[Tensor] = [None] * len(sizes)           # type: ignore[list-item]
    lstm = c0 is not None
    if not reverse:
        h, c = h0, c0
        for t, n in enumerate(sizes):
            hh, cc = (h, c) if n == h.shape[0] else (h[:n], c[:n] if lstm else None)
            hh, cc = layer._cell(gi[starts[t]:starts[t] + n], hh, cc, w_hh, b_hh, w_hr)
            outs[t] = hh
            # the sequences that ended keep their last state
            h = hh if n == h.shape[0] else concatenate([hh, h[n:]], 0)
            c = (cc if n == c.shape[0] else concatenate([cc, c[n:]], 0)) if lstm else None
        return concatenate(outs, 0), h, c
    h, c = h0[:0], (c0[:0] if lstm else None)
    for t in range(len(sizes) - 1, -1, -1):
        n, m = sizes[t], h.shape[0]
        if n > m:                                      # sequences whose last step is t start
            h = concatenate([h, h0[m:n]], 0)
            c = concatenate([c, c0[m:n]], 0) if lstm else None
        h, c = layer._cell(gi[starts[t]:starts[t] + n], h, c, w_hh, b_hh, w_hr)
        outs[t] = h
    return concatenate(outs, 0), h, c
