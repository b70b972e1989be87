"""Sequential and ModuleList share length, iteration and deletion (nn/container.py's
_ModuleSequence): after del by index, negative index or slice, and insert, the keys and the
modules match torch.nn's."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

import tracejit as tj


def _layout(m) -> list[tuple[str, int]]:
    return [(k, v.out_features) for k, v in m._modules.items()]


def _pair(kind: str, named: bool):
    sizes = [1, 2, 3, 4, 5]
    if named:
        mine = getattr(tj.nn, kind)(OrderedDict((f"l{i}", tj.nn.Linear(1, i)) for i in sizes))
        ref = getattr(torch.nn, kind)(OrderedDict((f"l{i}", torch.nn.Linear(1, i))
                                                  for i in sizes))
    elif kind == "Sequential":
        mine = tj.nn.Sequential(*[tj.nn.Linear(1, i) for i in sizes])
        ref = torch.nn.Sequential(*[torch.nn.Linear(1, i) for i in sizes])
    else:
        mine = tj.nn.ModuleList([tj.nn.Linear(1, i) for i in sizes])
        ref = torch.nn.ModuleList([torch.nn.Linear(1, i) for i in sizes])
    return mine, ref


@pytest.mark.parametrize("kind,named", [("Sequential", False), ("Sequential", True),
                                        ("ModuleList", False)])
@pytest.mark.parametrize("key", [0, 2, -1, -5, slice(1, 3), slice(None, None, 2),
                                 slice(3, 1), slice(-2, None)])
def test_delete_renumbers_as_torch(kind, named, key):
    mine, ref = _pair(kind, named)
    del mine[key]
    del ref[key]
    assert _layout(mine) == [(k, v.out_features) for k, v in ref._modules.items()]
    assert len(mine) == len(ref)
    assert [m.out_features for m in mine] == [m.out_features for m in ref]


@pytest.mark.parametrize("kind", ["Sequential", "ModuleList"])
def test_insert_then_delete_and_out_of_range(kind):
    mine, ref = _pair(kind, False)
    mine.insert(1, tj.nn.Linear(1, 9))
    ref.insert(1, torch.nn.Linear(1, 9))
    del mine[-2]
    del ref[-2]
    assert _layout(mine) == [(k, v.out_features) for k, v in ref._modules.items()]
    with pytest.raises(IndexError):
        del mine[5]
    with pytest.raises(IndexError):
        del mine[-6]
