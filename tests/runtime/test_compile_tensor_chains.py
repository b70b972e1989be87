"""A compiled function reading a tensor through a global or closure object (`cfg.w`, `m.c` of a
module kept in a global, `TABLES["w"]`) reads that very tensor: rebinding the path to another
tensor between calls traces again (it computed with the old tensor silently before); an
in-place update of the same tensor is read by the kept trace."""
import numpy as np

import tracejit as tj


class Cfg:
    pass


CFG = Cfg()
CFG.w = tj.ones(2)
TABLES = {"w": tj.ones(2)}


class Shift(tj.nn.Module):
    def __init__(self):
        super().__init__()
        self.c = tj.ones(2)


MOD = Shift()


def by_attr(x):
    return x * CFG.w


def by_item(x):
    return x * TABLES["w"]


def by_module(x):
    return x + MOD.c


def _check(f, rebind, bump, expect):
    """Three calls: as is, after `rebind()`, after `bump()` (in place)."""
    f = tj.compile(f)
    x = tj.ones(2)
    for step, want in zip((None, rebind, bump), expect):
        if step is not None:
            step()
        np.testing.assert_array_equal(f(x).numpy(), np.full(2, want, np.float32))
    assert f.cache_info().misses == 2        # the rebinding traced again, the update did not


def test_a_tensor_read_through_a_global_object_attribute_is_guarded():
    _check(by_attr, lambda: setattr(CFG, "w", tj.full((2,), 3.0)), lambda: CFG.w.add_(1),
           (1.0, 3.0, 4.0))


def test_a_tensor_read_through_a_global_dict_item_is_guarded():
    _check(by_item, lambda: TABLES.__setitem__("w", tj.full((2,), 5.0)),
           lambda: TABLES["w"].mul_(2), (1.0, 5.0, 10.0))


def test_a_plain_tensor_attribute_of_a_global_module_is_guarded():
    _check(by_module, lambda: setattr(MOD, "c", tj.full((2,), 7.0)), lambda: MOD.c.add_(1),
           (2.0, 8.0, 9.0))


def test_a_tensor_read_through_a_closure_object_is_guarded():
    cfg = Cfg()
    cfg.w = tj.full((2,), 2.0)

    def f(x):
        return x - cfg.w
    _check(f, lambda: setattr(cfg, "w", tj.zeros(2)), lambda: cfg.w.sub_(1), (-1.0, 1.0, 2.0))
