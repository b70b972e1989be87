"""`generator=` on the random constructors (rand, randn, randint, bernoulli), as diffusion
samplers pass one (`torch.randn(shape, generator=g)`), and `tj.Generator()` without a device
(torch's default, the CPU): a generator of one's own gives reproducible numbers and leaves the
default generator's stream where it was; inside @tj.compile only the default one can be read."""
import numpy as np
import pytest

import tracejit as tj


def _draws(g):
    return [tj.randn(2, 3, generator=g).numpy(), tj.rand(4, generator=g).numpy(),
            tj.randint(0, 10, (5,), generator=g).numpy(),
            tj.bernoulli(tj.full((6,), 0.5), generator=g).numpy()]


def test_own_generator_is_reproducible_and_leaves_the_default_stream_alone():
    g = tj.Generator()
    assert g.device == tj.device("cpu") and tj.Generator("cpu").device == g.device
    tj.manual_seed(0)
    plain = tj.randn(3).numpy()
    tj.manual_seed(0)
    first = _draws(g.manual_seed(5))
    np.testing.assert_array_equal(tj.randn(3).numpy(), plain)   # default stream not advanced
    second = _draws(tj.Generator().manual_seed(5))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    again = _draws(g)                                            # g moved on
    assert not np.array_equal(again[0], first[0])
    assert first[1].dtype == np.float32 and first[2].dtype == np.int64
    many = tj.bernoulli(tj.full((4000,), 0.25), generator=g).numpy()
    assert set(np.unique(many)) <= {0.0, 1.0} and abs(many.mean() - 0.25) < 0.03


def test_default_generator_passed_explicitly_draws_from_the_default_stream():
    tj.manual_seed(1)
    want = tj.randn(4).numpy()
    tj.manual_seed(1)
    np.testing.assert_array_equal(tj.randn(4, generator=tj.default_generator()).numpy(), want)


def test_own_generator_inside_compile_is_a_clear_error_and_default_is_fine():
    g = tj.Generator().manual_seed(0)
    f = tj.compile(lambda x: x + tj.randn(3, generator=g))
    with pytest.raises(RuntimeError, match=r"randn\(generator=\.\.\.\) inside a @tj.compile"):
        f(tj.ones(3))
    h = tj.compile(lambda x: x + tj.rand(3, generator=tj.default_generator()))
    out = h(tj.zeros(3)).numpy()
    assert ((0 <= out) & (out < 1)).all()
    with pytest.raises(TypeError, match="randn: generator must be a tj.Generator"):
        tj.randn(3, generator=123)
