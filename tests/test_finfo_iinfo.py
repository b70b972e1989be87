"""tj.finfo / tj.iinfo report what torch.finfo / torch.iinfo report, field by field, and refuse
the other kind of dtype with a TypeError as torch does."""
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

FLOATS = ["float16", "bfloat16", "float32", "float64"]


@pytest.mark.parametrize("name", FLOATS + [None])
def test_finfo_is_torchs(name):
    got = tj.finfo(getattr(tj, name)) if name else tj.finfo()
    want = torch.finfo(getattr(torch, name)) if name else torch.finfo()
    for field in ("bits", "eps", "max", "min", "tiny", "smallest_normal", "resolution",
                  "dtype"):
        assert getattr(got, field) == getattr(want, field), field
        assert type(getattr(got, field)) is type(getattr(want, field)), field


@pytest.mark.parametrize("name", ["int32", "int64"])
def test_iinfo_is_torchs(name):
    got, want = tj.iinfo(getattr(tj, name)), torch.iinfo(getattr(torch, name))
    for field in ("bits", "max", "min", "dtype"):
        assert getattr(got, field) == getattr(want, field), field


def test_finfo_of_a_tensor_dtype_and_the_wrong_kinds():
    assert tj.finfo(tj.zeros(2, dtype=tj.float64).dtype).min == torch.finfo(torch.float64).min
    with pytest.raises(TypeError, match="finfo"):
        tj.finfo(tj.int64)
    with pytest.raises(TypeError, match="iinfo"):
        tj.iinfo(tj.float32)
    with pytest.raises(TypeError, match="iinfo"):
        tj.iinfo(tj.bool)
