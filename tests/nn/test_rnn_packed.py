"""tj.nn.utils.rnn against torch.nn.utils.rnn: pack_padded_sequence / pad_packed_sequence /
pad_sequence / pack_sequence / unpack_sequence / unpad_sequence give the same tensors, and
the same gradients back through them; nn.LSTM, GRU and RNN take a PackedSequence (unsorted
lengths, bidirectional, two layers, proj_size, an initial state) and give torch's packed
output, h_n / c_n and gradients for the input, the state and every parameter; under
tj.compile packing from static lengths works, and a PackedSequence argument (traced
batch_sizes) raises a clear error."""
import numpy as np
import pytest

import tracejit as tj
from tracejit.nn.utils import rnn as J

torch = pytest.importorskip("torch")
R = torch.nn.utils.rnn

IN, HID = 3, 4


def _np(t):
    return t.detach().numpy()


def test_pack_pad_round_trip_and_gradients():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 2))
    for bf in (False, True):
        for sorted_, lens in ((True, [5, 3, 2]), (False, [2, 5, 3])):
            xi = np.ascontiguousarray(x.transpose(1, 0, 2)) if bf else x
            tx, jx = torch.tensor(xi, requires_grad=True), tj.tensor(xi, requires_grad=True)
            tp = R.pack_padded_sequence(tx, torch.tensor(lens), bf, sorted_)
            jp = J.pack_padded_sequence(jx, tj.tensor(lens), bf, sorted_)
            np.testing.assert_array_equal(_np(jp.data), _np(tp.data))
            assert jp.batch_sizes.tolist() == tp.batch_sizes.tolist()
            for a, b in ((jp.sorted_indices, tp.sorted_indices),
                         (jp.unsorted_indices, tp.unsorted_indices)):
                assert (a is None) == (b is None) and (a is None or a.tolist() == b.tolist())
            to, tl = R.pad_packed_sequence(tp, bf, -1.0, total_length=7)
            jo, jl = J.pad_packed_sequence(jp, bf, -1.0, total_length=7)
            np.testing.assert_array_equal(_np(jo), _np(to))
            assert jl.tolist() == tl.tolist() and jl.dtype == tj.int64
            w = rng.standard_normal(tuple(to.shape))
            (to * torch.tensor(w)).sum().backward()
            (jo * tj.tensor(w)).sum().backward()
            np.testing.assert_allclose(jx.grad.numpy(), tx.grad.numpy())
    # a non-contiguous (transposed) input packs the same
    xt = np.ascontiguousarray(x.transpose(1, 0, 2))
    a = J.pack_padded_sequence(tj.tensor(xt).transpose(0, 1), [5, 3, 2])
    np.testing.assert_array_equal(_np(a.data), _np(R.pack_padded_sequence(torch.tensor(x),
                                                                          [5, 3, 2]).data))


def test_pad_sequence_pack_sequence_unpack():
    rng = np.random.default_rng(1)
    seqs = [rng.standard_normal((n, 2)) for n in (3, 0, 4, 1)]
    for bf in (False, True):
        for side in ("left", "right"):
            ts = [torch.tensor(s, requires_grad=True) for s in seqs]
            js = [tj.tensor(s, requires_grad=True) for s in seqs]
            a = R.pad_sequence(ts, batch_first=bf, padding_value=9.0, padding_side=side)
            b = J.pad_sequence(js, batch_first=bf, padding_value=9.0, padding_side=side)
            np.testing.assert_array_equal(_np(b), _np(a))
            w = rng.standard_normal(tuple(a.shape))
            (a * torch.tensor(w)).sum().backward()
            (b * tj.tensor(w)).sum().backward()
            for t, j in zip(ts, js):
                np.testing.assert_allclose(j.grad.numpy(), t.grad.numpy())
    one = [rng.standard_normal((1, 2))]        # a batch of one sequence of one step
    np.testing.assert_array_equal(_np(J.pack_sequence([tj.tensor(s) for s in one]).data),
                                  _np(R.pack_sequence([torch.tensor(s) for s in one]).data))
    live = [s for s in seqs if len(s)]
    tp = R.pack_sequence([torch.tensor(s) for s in live], enforce_sorted=False)
    jp = J.pack_sequence([tj.tensor(s) for s in live], enforce_sorted=False)
    np.testing.assert_array_equal(_np(jp.data), _np(tp.data))
    for a, b in zip(R.unpack_sequence(tp), J.unpack_sequence(jp)):
        np.testing.assert_array_equal(_np(b), _np(a))
    padded = rng.standard_normal((4, 3, 2))
    for a, b in zip(R.unpad_sequence(torch.tensor(padded), torch.tensor([4, 1, 2])),
                    J.unpad_sequence(tj.tensor(padded), [4, 1, 2])):
        np.testing.assert_array_equal(_np(b), _np(a))


def test_bad_input_raises_clearly():
    x = tj.zeros(4, 2, 3)
    with pytest.raises(RuntimeError, match="sorted in decreasing order"):
        J.pack_padded_sequence(x, [2, 3])
    with pytest.raises(RuntimeError, match="greater than 0"):
        J.pack_padded_sequence(x, [3, 0])
    with pytest.raises(RuntimeError, match=r"len\(lengths\)"):
        J.pack_padded_sequence(x, [3, 2, 1])
    with pytest.raises(RuntimeError, match="longer than"):
        J.pack_padded_sequence(x, [5, 1])
    with pytest.raises(ValueError, match="total_length"):
        J.pad_packed_sequence(J.pack_padded_sequence(x, [3, 2]), total_length=2)
    with pytest.raises(ValueError, match="padding_side"):
        J.pad_sequence([x], padding_side="middle")
    with pytest.raises(RuntimeError, match="input_size"):
        tj.nn.LSTM(5, 2)(J.pack_padded_sequence(x, [3, 2]))


def _pair(cls, **kw):
    t = getattr(torch.nn, cls)(IN, HID, dtype=torch.float64, **kw)
    j = getattr(tj.nn, cls)(IN, HID, dtype=tj.float64, **kw)
    j.load_state_dict({k: v.detach().numpy().copy() for k, v in t.state_dict().items()})
    return t, j


@pytest.mark.parametrize("cls,kw", [("LSTM", dict(num_layers=2, bidirectional=True)),
                                    ("LSTM", dict(proj_size=2, batch_first=True)),
                                    ("GRU", dict(bidirectional=True)),
                                    ("RNN", dict(num_layers=2, nonlinearity="relu"))])
def test_recurrent_layers_take_packed_sequences(cls, kw):
    rng = np.random.default_rng(2)
    lens, steps, batch = [2, 5, 1, 3], 5, 4
    bf = kw.get("batch_first", False)
    x = rng.standard_normal((batch, steps, IN) if bf else (steps, batch, IN))
    t, j = _pair(cls, **kw)
    n = (2 if kw.get("bidirectional") else 1) * kw.get("num_layers", 1)
    hs = [rng.standard_normal((n, batch, kw.get("proj_size") or HID))]
    hs += [rng.standard_normal((n, batch, HID))] if cls == "LSTM" else []
    res = []
    for lib, m, P in ((torch, t, R), (tj, j, J)):
        xx = lib.tensor(x, requires_grad=True)
        hh = [lib.tensor(h, requires_grad=True) for h in hs]
        out, st = m(P.pack_padded_sequence(xx, lens, bf, enforce_sorted=False),
                    tuple(hh) if cls == "LSTM" else hh[0])
        assert isinstance(out, P.PackedSequence)
        outs = [out.data, *(st if cls == "LSTM" else [st])]
        loss = sum((o * lib.tensor(np.cos(np.arange(o.numel())).reshape(tuple(o.shape)))).sum()
                   for o in outs)
        loss.backward()
        res.append([_np(o) for o in outs] + [xx.grad.numpy()] +
                   [h.grad.numpy() for h in hh] + [p.grad.numpy() for p in m.parameters()])
    for a, b in zip(*res):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)


def test_packed_lstm_under_compile():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 4, IN))
    t, j = _pair("LSTM")

    @tj.compile(static_argnums=(1,))
    def f(x, lens):
        out, (h, c) = j(J.pack_padded_sequence(x, lens, enforce_sorted=False))
        return J.pad_packed_sequence(out)[0], h

    for lens in ((2, 5, 1, 3), (5, 5, 4, 1)):
        want_out, (want_h, _) = t(R.pack_padded_sequence(torch.tensor(x), lens,
                                                         enforce_sorted=False))
        out, h = f(tj.tensor(x), lens)
        np.testing.assert_allclose(_np(out), _np(R.pad_packed_sequence(want_out)[0]),
                                   rtol=1e-10)
        np.testing.assert_allclose(_np(h), _np(want_h), rtol=1e-10)
    g = tj.compile(lambda p: j(p)[1][0])
    with pytest.raises(TypeError, match="batch_sizes is a traced tensor.*static argument"):
        g(J.pack_padded_sequence(tj.tensor(x), [2, 5, 1, 3], enforce_sorted=False))
