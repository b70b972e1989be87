"""The NumPy shortcut for eager view ops: when a view of a host tensor may be made straight
from NumPy (no trace, no checkpoint recomputing, no dual tensors) and how such a view becomes
a Tensor. eager_views.py (indexing, transposes) and layout.py (split, chunk, unbind, narrow)
use it; recording the result as a view is views.py's (mark)."""
from __future__ import annotations

import numpy as np

from .forward_ad import FWD
from .state import SPECIAL_MODES, STATE
from .tensor_base import SUBCLASSES, TensorBase as Tensor, wrap_array


def eager_host(x) -> bool:
    """x is a host tensor and its view ops may take the NumPy shortcut (no trace, no
    checkpoint recomputing, no dual tensors)."""
    if type(x) not in SUBCLASSES or type(x._data) is not np.ndarray:
        return False
    if not SPECIAL_MODES[0]:        # no trace, checkpoint or dual level in any thread
        return True
    st = STATE.__dict__
    return not st["traces"] and not st["subst"] and not FWD.levels


def host_view(arr: np.ndarray) -> Tensor:
    """A Tensor of `arr`, a NumPy view of another tensor's array: read-only (a lazy copy to
    other code, as run_impl makes a view result)."""
    # (positional: NumPy parses a keyword through a dict, ~1,000 instructions more per view;
    # reading .flags first made a flags object per view)
    arr.setflags(False)
    return wrap_array(arr)
