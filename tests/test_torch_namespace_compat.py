"""Names that model code reaches through `import tracejit as torch` besides the ops: tj.dtype,
tj.empty_like, tj.get_default_dtype, and TorchScript's helpers (timm's `torch.jit.Final[bool]`
class annotations, `@torch.jit.ignore`, `torch.jit.is_scripting()`), which change nothing here."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")


def test_dtype_empty_like_and_default_dtype_as_torch():
    x = tj.ones(2, 3, dtype=tj.float64)
    assert isinstance(x.dtype, tj.dtype) and not isinstance(tj.float64, str)
    e = tj.empty_like(x)
    te = torch.empty_like(torch.ones(2, 3, dtype=torch.float64))
    assert e.shape == tuple(te.shape) and str(e.dtype) == "f64" and not e.requires_grad
    assert tj.empty_like(x, dtype=tj.int64).dtype is tj.int64
    assert str(tj.get_default_dtype()) == "f32" and str(torch.get_default_dtype()) == "torch.float32"
    assert tj.zeros(1).dtype is tj.get_default_dtype() is tj.tensor(1.5).dtype


def test_torchscript_helpers_leave_a_module_as_written():
    for lib in (torch, tj):
        class Attention(lib.nn.Module):
            fused_attn: lib.jit.Final[bool]

            def __init__(self):
                super().__init__()
                self.fused_attn = True

            @lib.jit.ignore
            def no_weight_decay(self):
                return {"pos_embed"}

            @lib.jit.ignore()
            def dropped(self):
                return 3

            @lib.jit.unused
            def unused(self):
                return 4

            def forward(self, x):
                return x * 2 if not lib.jit.is_scripting() else x
        m = Attention()
        assert m.no_weight_decay() == {"pos_embed"} and m.dropped() == 3 and m.unused() == 4
        assert lib.jit.is_scripting() is False and lib.jit.is_tracing() is False
        np.testing.assert_array_equal(m(lib.ones(2)).numpy(), [2.0, 2.0])
    np.testing.assert_array_equal(tj.compile(m)(tj.ones(2)).numpy(), [2.0, 2.0])
    np.testing.assert_array_equal(tj.jit(lambda x: x + 1)(tj.ones(2)).numpy(), [2.0, 2.0])
