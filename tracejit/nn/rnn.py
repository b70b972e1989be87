"""Recurrent layers as torch.nn has them: RNN, LSTM, GRU (num_layers, bias, batch_first,
dropout between layers, bidirectional, LSTM's proj_size) and the cells RNNCell, LSTMCell,
GRUCell, with torch's parameter names, shapes, U(+-1/sqrt(hidden_size)) initialisation, gate
order (LSTM i, f, g, o; GRU r, z, n) and hidden-state layout. Built from existing ops: the
input projection of a layer is one matmul over all time steps, then the recurrence is unrolled
in Python (inside @tj.compile, into the graph), so eager mode, tj.compile and tj.grad all work."""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

from ..tracer import composites as C
from ..tracer import ops
from ..tracer.creation import zeros
from ..tracer.layout import chunk
from ..tracer.ops import _err, _fmt
from ..tracer.shape_ops import concatenate, squeeze, stack, swapaxes, unsqueeze
from ..tracer.tensor import Tensor
from . import functional as F
from . import init
from .linear import new_parameter
from .module import Module
from .rnn_packed import run_packed
from .utils.rnn import PackedSequence

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


# -- one time step: gi is the input's projection x W_ih^T + b_ih, computed beforehand ---------
def _rnn_step(gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None, relu: bool) -> Tensor:
    pre = ops.add(F.linear(h, w_hh, b_hh), gi)
    return C.relu(pre) if relu else ops.tanh(pre)


def _lstm_step(gi: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor | None,
               w_hr: Tensor | None) -> tuple[Tensor, Tensor]:
    # torch's order of operations (aten's LSTMCell), so float32 results round as torch's do
    i, f, g, o = chunk(ops.add(F.linear(h, w_hh, b_hh), gi), 4, -1)
    c = ops.add(ops.mul(C.sigmoid(f), c), ops.mul(C.sigmoid(i), ops.tanh(g)))
    h = ops.mul(C.sigmoid(o), ops.tanh(c))
    return (h if w_hr is None else F.linear(h, w_hr)), c


def _gru_step(gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> Tensor:
    i_r, i_z, i_n = chunk(gi, 3, -1)
    h_r, h_z, h_n = chunk(F.linear(h, w_hh, b_hh), 3, -1)
    r = C.sigmoid(ops.add(h_r, i_r))
    z = C.sigmoid(ops.add(h_z, i_z))
    n = ops.tanh(ops.add(i_n, ops.mul(h_n, r)))
    return ops.add(ops.mul(ops.sub(h, n), z), n)          # (1 - z) n + z h, as aten writes it


def _check_hidden(op: str, h: Tensor, want: tuple[int, ...], which: str) -> None:
    if tuple(h.shape) != want:
        raise _err(op, f"expected {which} of size {list(want)}, got {_fmt(h)}", RuntimeError)


def _check_input(op: str, input: Tensor, batched_ndim: int, input_size: int  # noqa: A002
                 ) -> bool:
    """Whether `input` is batched; raises torch's errors (with the caller's file:line)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim not in (batched_ndim - 1, batched_ndim):
        raise _err(op, f"expected input to be {batched_ndim - 1}D or {batched_ndim}D, got "
                   f"{input.ndim}D {_fmt(input)}")
    if input.shape[-1] != input_size:
        raise _err(op, f"input.size(-1) must be equal to input_size. Expected {input_size}, "
                   f"got {input.shape[-1]} ({_fmt(input)})", RuntimeError)
    return input.ndim == batched_ndim


class _UniformInit(Module):
    """torch's initialisation of every recurrent weight and bias: U(-1/sqrt(H), 1/sqrt(H))."""
    hidden_size: int

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)


class RNNBase(_UniformInit):
    """What RNN, LSTM and GRU share: parameters, checks and the layer/direction loop."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        name = "RNN" if mode.startswith("RNN") else mode
        if (not isinstance(dropout, numbers.Number) or isinstance(dropout, bool)
                or not 0 <= dropout <= 1):
            raise ValueError("dropout should be a number in range [0, 1] representing the "
                             "probability of an element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so "
                          "non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers={num_layers}", stacklevel=3)
        for what, v in (("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name}: {what} must be a positive integer, got {v!r}")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable "
                             "projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if proj_size and mode != "LSTM":
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        self.mode = mode
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size = bidirectional, proj_size
        gate_size = _GATES[mode] * hidden_size
        real_hidden = proj_size or hidden_size
        directions = 2 if bidirectional else 1
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else real_hidden * directions
            for direction in range(directions):
                sfx = f"_l{layer}" + ("_reverse" if direction else "")
                shapes = [("weight_ih", (gate_size, layer_in)),
                          ("weight_hh", (gate_size, real_hidden))]
                if bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                if proj_size:
                    shapes.append(("weight_hr", (proj_size, hidden_size)))
                names = [n + sfx for n, _ in shapes]
                for n, (_, shape) in zip(names, shapes):
                    setattr(self, n, new_parameter(shape, device, dtype))
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    def flatten_parameters(self) -> None:
        """A no-op, as on torch's CPU (there it packs weights for cuDNN)."""

    @property
    def all_weights(self) -> list[list[Tensor]]:
        return [[getattr(self, n) for n in names] for names in self._all_weights]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s

    # -- forward ------------------------------------------------------------------------------
    def _run(self, input: Tensor, hx: Tensor | tuple[Tensor, Tensor] | None  # noqa: A002
             ) -> tuple[Tensor, Any]:
        if isinstance(input, PackedSequence):
            return run_packed(self, input, hx)
        op = "LSTM" if self.mode == "LSTM" else self.mode.split("_")[0]
        batched = _check_input(op, input, 3, self.input_size)
        x = input if batched else unsqueeze(input, 1)
        if batched and self.batch_first:
            x = swapaxes(x, 0, 1)
        seq_len, batch = x.shape[0], x.shape[1]
        if seq_len == 0:
            raise _err(op, f"expected sequence length to be larger than 0, input {_fmt(input)}",
                       RuntimeError)
        directions = 2 if self.bidirectional else 1
        n_states = self.num_layers * directions
        real_hidden = self.proj_size or self.hidden_size
        h_shape = (n_states, batch, real_hidden)
        c_shape = (n_states, batch, self.hidden_size)
        lstm = self.mode == "LSTM"
        if hx is None:
            h0 = zeros(*h_shape, dtype=x.dtype, device=x.device)
            c0 = zeros(*c_shape, dtype=x.dtype, device=x.device) if lstm else None
        else:
            h0, c0 = hx if lstm else (hx, None)
            for t in (h0, c0) if lstm else (h0,):
                if not isinstance(t, Tensor) or t.ndim != input.ndim:
                    kind = "batched 3-D" if batched else "unbatched 2-D"
                    raise _err(op, f"for {kind} input the hidden state(s) must also be "
                               f"{input.ndim}-D, got {_fmt(t)}", RuntimeError)
            if not batched:
                h0 = unsqueeze(h0, 1)
                c0 = unsqueeze(c0, 1) if lstm else None
            _check_hidden(op, h0, h_shape, "hidden[0]" if lstm else "hidden")
            if lstm:
                _check_hidden(op, c0, c_shape, "hidden[1]")
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(directions):
                k = layer * directions + d
                out, h, c = self._direction(x, h0[k], c0[k] if lstm else None,
                                            self._all_weights[k], reverse=d == 1)
                outs.append(out)
                h_n.append(h)
                c_n.append(c)
            x = outs[0] if directions == 1 else concatenate(outs, -1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        h_n = stack(h_n)
        c_n = stack(c_n) if lstm else None
        if batched and self.batch_first:
            x = swapaxes(x, 0, 1)
        if not batched:
            x, h_n = squeeze(x, 1), squeeze(h_n, 1)
            c_n = squeeze(c_n, 1) if lstm else None
        return x, ((h_n, c_n) if lstm else h_n)

    def _direction(self, x: Tensor, h: Tensor, c: Tensor | None, names: list[str],
                   reverse: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """One layer in one direction over the whole sequence x [L, N, features]."""
        w = [getattr(self, n) for n in names]
        w_ih, w_hh = w[0], w[1]
        b_ih, b_hh = (w[2], w[3]) if self.bias else (None, None)
        w_hr = w[-1] if self.proj_size else None
        gi = F.linear(x, w_ih, b_ih)                        # every step's input projection at once
        steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
        outs: list[Tensor] = [None] * x.shape[0]            # type: ignore[list-item]
        for t in steps:
            h, c = self._cell(gi[t], h, c, w_hh, b_hh, w_hr)
            outs[t] = h
        return stack(outs), h, c

    def _cell(self, gi: Tensor, h: Tensor, c: Tensor | None, w_hh: Tensor,
              b_hh: Tensor | None, w_hr: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """One step of this layer's cell; (h, c), c None but for LSTM."""
        if self.mode == "LSTM":
            return _lstm_step(gi, h, c, w_hh, b_hh, w_hr)
        if self.mode == "GRU":
            return _gru_step(gi, h, w_hh, b_hh), None
        return _rnn_step(gi, h, w_hh, b_hh, self.mode == "RNN_RELU"), None


class RNN(RNNBase):
    """Elman RNN: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or relu)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if len(args) > 3:                      # torch's positional order puts it fourth
            nonlinearity = args[3]
            args = args[:3] + args[4:]
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or "
                             "'relu'.")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", *args, **kwargs)

    def forward(self, input: Tensor, hx: Tensor | None = None  # noqa: A002
                ) -> tuple[Tensor, Tensor]:
        return self._run(input, hx)


class LSTM(RNNBase):
    """Long short-term memory; forward(input, (h_0, c_0)) -> output, (h_n, c_n)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("LSTM", *args, **kwargs)

    def forward(self, input: Tensor,  # noqa: A002
                hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        return self._run(input, hx)


class GRU(RNNBase):
    """Gated recurrent unit; forward(input, h_0) -> output, h_n."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("GRU", *args, **kwargs)

    def forward(self, input: Tensor, hx: Tensor | None = None  # noqa: A002
                ) -> tuple[Tensor, Tensor]:
        return self._run(input, hx)


# -- cells -------------------------------------------------------------------------------------
class RNNCellBase(_UniformInit):
    def __init__(self, input_size: int, hidden_size: int, bias: bool, num_chunks: int,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.weight_ih = new_parameter((num_chunks * hidden_size, input_size), device, dtype)
        self.weight_hh = new_parameter((num_chunks * hidden_size, hidden_size), device, dtype)
        if bias:
            self.bias_ih = new_parameter((num_chunks * hidden_size,), device, dtype)
            self.bias_hh = new_parameter((num_chunks * hidden_size,), device, dtype)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s

    def _prepare(self, input: Tensor, hx: Any, n_states: int  # noqa: A002
                 ) -> tuple[Tensor, list[Tensor], bool]:
        op = type(self).__name__
        batched = _check_input(op, input, 2, self.input_size)
        x = input if batched else unsqueeze(input, 0)
        want = (x.shape[0], self.hidden_size)
        if hx is None:
            states = [zeros(*want, dtype=x.dtype, device=x.device) for _ in range(n_states)]
        else:
            states = list(hx) if n_states > 1 else [hx]
            states = [s if batched else unsqueeze(s, 0) for s in states]
            for i, s in enumerate(states):
                _check_hidden(op, s, want, f"hidden[{i}]" if n_states > 1 else "hidden")
        return x, states, batched

    def _input_projection(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)


class RNNCell(RNNCellBase):
    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device: Any = None, dtype: Any = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:  # noqa: A002
        x, (h,), batched = self._prepare(input, hx, 1)
        h = _rnn_step(self._input_projection(x), h, self.weight_hh, self.bias_hh,
                      self.nonlinearity == "relu")
        return h if batched else squeeze(h, 0)


class LSTMCell(RNNCellBase):
    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(self, input: Tensor,  # noqa: A002
                hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        x, (h, c), batched = self._prepare(input, hx, 2)
        h, c = _lstm_step(self._input_projection(x), h, c, self.weight_hh, self.bias_hh, None)
        return (h, c) if batched else (squeeze(h, 0), squeeze(c, 0))


class GRUCell(RNNCellBase):
    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:  # noqa: A002
        x, (h,), batched = self._prepare(input, hx, 1)
        h = _gru_step(self._input_projection(x), h, self.weight_hh, self.bias_hh)
        return h if batched else squeeze(h, 0)
