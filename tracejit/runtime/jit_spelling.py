"""torch.jit's names: `tj.jit` (tj.compile's other spelling) and TorchScript's helpers."""
from __future__ import annotations

import typing

from .compile import compile


def jit(fn=None, **kw):
    return compile(fn, **kw)


# TorchScript's helpers, so model code written against torch.jit runs (timm's Attention has
# `fused_attn: torch.jit.Final[bool]`, `@torch.jit.ignore def no_weight_decay`, `if not
# torch.jit.is_scripting()`): tracejit never scripts, so they change nothing / say False.
def _jit_ignore(fn=None, **_kw):
    """`@tj.jit.ignore`, `@tj.jit.ignore(drop=True)`, `@tj.jit.unused`, `@tj.jit.export`."""
    return fn if fn is not None else (lambda f: f)


jit.ignore = jit.unused = jit.export = _jit_ignore
jit.Final = typing.Final
jit.is_scripting = jit.is_tracing = lambda: False

