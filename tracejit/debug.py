"""TRACEJIT_DUMP (stage dumps) and TRACEJIT_LOG (recompile reasons).

A leaf module (environment variables and printing only), below the tracer and the runtime,
which both dump stages."""
from __future__ import annotations

import itertools
import logging
import os
import sys

logger = logging.getLogger("tracejit")
_counter = itertools.count()
# The one list of dump stages: a new stage is added here, and TRACEJIT_DUMP accepts it.
STAGES = ("ir", "grad", "jvp", "kernels", "dot", "loops", "program", "llvm", "asm", "cuda",
          "vmap")
SUFFIXES = {"dot": ".dot"}      # dump files are NAME.STAGE.txt, Graphviz text NAME.dot
LOGS = ("recompiles",)          # what TRACEJIT_LOG can name


def _names(var: str, valid: tuple[str, ...], allow_all: bool) -> set[str]:
    """The comma-separated names in environment variable `var`; a name that is not in `valid`
    raises ValueError listing the valid ones (a typo must not silently dump nothing)."""
    raw = os.environ.get(var, "")
    names = {s.strip() for s in raw.split(",") if s.strip()}
    bad = names - set(valid) - ({"all"} if allow_all else set())
    if bad:
        choices = ", ".join(valid) + (", or all" if allow_all else "")
        raise ValueError(f"{var}={raw!r}: unknown name{'s' if len(bad) > 1 else ''} "
                         f"{', '.join(sorted(bad))}; valid names are {choices} "
                         f"(comma-separated)")
    return names


def dump_stages() -> set[str]:
    stages = _names("TRACEJIT_DUMP", STAGES, allow_all=True)
    return set(STAGES) if "all" in stages else stages


def dump(stage: str, name: str, text) -> None:
    """Print (or, with TRACEJIT_DUMP_DIR, write) one stage of a compilation if asked for.
    `text` may be a function, so nothing is formatted unless the stage is dumped."""
    if stage not in STAGES:
        raise AssertionError(f"tracejit internal error: dump stage {stage!r} is not in "
                             f"debug.STAGES")
    if stage not in dump_stages():
        return
    if callable(text):
        text = text()
    out_dir = os.environ.get("TRACEJIT_DUMP_DIR")
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        suffix = SUFFIXES.get(stage, f".{stage}.txt")
        path = os.path.join(out_dir, f"{next(_counter):04d}_{name}{suffix}")
        with open(path, "w") as f:
            f.write(text + "\n")
    else:
        print(f"===== tracejit {stage}: {name} =====\n{text}", file=sys.stderr)


def log_enabled(what: str) -> bool:
    return what in _names("TRACEJIT_LOG", LOGS, allow_all=False)


def log_recompile(fn_name: str, reason: str) -> None:
    """One line per recompilation: through logging when the application configured a handler
    for it, else straight to stderr (not both: that printed every message twice)."""
    if not log_enabled("recompiles"):
        return
    msg = f"tracejit: recompiling {fn_name}: {reason}"
    if logger.hasHandlers():
        logger.warning(msg)
    else:
        print(msg, file=sys.stderr)
