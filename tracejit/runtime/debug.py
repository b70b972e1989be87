"""TRACEJIT_DUMP (stage dumps) and TRACEJIT_LOG (recompile reasons)."""
from __future__ import annotations

import itertools
import logging
import os
import sys

logger = logging.getLogger("tracejit")
_counter = itertools.count()
STAGES = ("ir", "grad", "kernels", "llvm", "asm", "cuda")


def dump_stages() -> set[str]:
    raw = os.environ.get("TRACEJIT_DUMP", "")
    stages = {s.strip() for s in raw.split(",") if s.strip()}
    return set(STAGES) if "all" in stages else stages


def dump(stage: str, name: str, text) -> None:
    """Print (or, with TRACEJIT_DUMP_DIR, write) one stage of a compilation if asked for.
    `text` may be a function, so nothing is formatted unless the stage is dumped."""
    if stage not in dump_stages():
        return
    if callable(text):
        text = text()
    out_dir = os.environ.get("TRACEJIT_DUMP_DIR")
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, f"{next(_counter):04d}_{name}.{stage}.txt")
        with open(path, "w") as f:
            f.write(text + "\n")
    else:
        print(f"===== tracejit {stage}: {name} =====\n{text}", file=sys.stderr)


def log_enabled(what: str) -> bool:
    return what in {s.strip() for s in os.environ.get("TRACEJIT_LOG", "").split(",")}


def log_recompile(fn_name: str, reason: str) -> None:
    if not log_enabled("recompiles"):
        return
    msg = f"tracejit: recompiling {fn_name}: {reason}"
    logger.warning(msg)
    if not logger.handlers and not logging.getLogger().handlers:
        print(msg, file=sys.stderr)
