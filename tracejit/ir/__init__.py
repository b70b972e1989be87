"""The SSA IR: dtypes, the primitive registry, graphs, text form, passes, interpreter."""
from . import dtypes
from .core import Aval, Graph, Instr, Value, user_location
from .primitives import P, Primitive, bind, const_like
from .replay import replay
from . import prims_elementwise as _prims_elementwise  # noqa: F401  (registers primitives)
from . import prims_structural as _prims_structural    # noqa: F401
from . import prims_gather as _prims_gather            # noqa: F401
from . import prims_division as _prims_division        # noqa: F401
from . import prims_bitwise as _prims_bitwise          # noqa: F401
from . import prims_select as _prims_select            # noqa: F401
from . import prims_random as _prims_random            # noqa: F401
from . import prims_special as _prims_special          # noqa: F401
from . import prims_libm as _prims_libm                # noqa: F401
from . import prims_gamma as _prims_gamma              # noqa: F401
from . import prims_scan as _prims_scan                # noqa: F401
from . import prims_sort as _prims_sort                # noqa: F401
from . import prims_collective as _prims_collective    # noqa: F401
from . import prims_windows as _prims_windows          # noqa: F401
from . import prims_conv as _prims_conv                # noqa: F401
from . import prims_linalg as _prims_linalg            # noqa: F401
from . import prims_linalg_spectral as _prims_linalg_spectral  # noqa: F401

__all__ = ["dtypes", "Aval", "Graph", "Instr", "Value", "replay", "user_location", "P",
           "Primitive", "bind", "const_like"]
