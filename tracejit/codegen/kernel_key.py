"""Structural keys of plan kernels: equal keys mean the kernels generate the same code.

Every transformer layer of a model fuses into the same kernels, on values of its own. Rendering
each of them (schedule, loop IR, LLVM text, module, hash) only to find the text of the layer
before costs most of a deep model's code generation, so llvm_program renders one kernel per key
and gives the others its code with their own buffers.

The key is the kernel with the identity of its values left out: its kind, loop shape, row
axes and stages, and the expression the code generators walk. That walk is the one of
codegen.expr (and of the schedule, which reads the same kernel): from the kernel's outputs and
ops through producers, stopping at the kernel's inputs, which are loaded from memory. So the
key holds every value reached that way, numbered in order of first sight (inputs first, then
outputs, then each op's operands and result), with its shape and dtype, and every producer
reached, with its primitive (the registry's object), its parameters (exactly: ir/exact_params.py, as the disk cache
keys them) and its operands' numbers. A value two places share gets one number, so aliasing (an
output that is also an input, an operand read twice) is part of the key too. A parameter of a
kind not known here gives no key: that kernel is rendered on its own, which is only slower.

`check_keys` (TRACEJIT_CHECK_KERNEL_KEYS=1, and the tests) renders every kernel anyway and
fails loudly if two kernels with one key ever differ in code."""
from __future__ import annotations

import os

from ..ir.core import Instr, Value
from ..ir.exact_params import Inexact, exact_param
from .fusion import Kernel


def kernel_key(k: Kernel) -> tuple[tuple, list[Value]] | None:
    """(key, values): the structural key of plan kernel k and its values in key order (a value's
    number is its position there), or None if k has a parameter this module cannot key."""
    num: dict[Value, int] = {}
    vals: list[Value] = []
    ops: dict[Instr, int] = {}
    op_recs: list[tuple] = []
    ins = set(k.inputs)

    def ref(v: Value) -> int:
        n = num.get(v)
        if n is None:
            n = num[v] = len(vals)
            vals.append(v)
        return n

    def op_ref(p: Instr) -> int:
        n = ops.get(p)
        if n is None:
            params = tuple([(k, exact_param(p.params[k])) for k in sorted(p.params)])
            rec = (p.prim, params, tuple(map(ref, p.inputs)), ref(p.out))
            n = ops[p] = len(op_recs)
            op_recs.append(rec)
        return n

    def kernel_part(kk: Kernel) -> tuple:
        return (kk.kind, kk.shape, kk.outer, tuple(map(ref, kk.inputs)),
                tuple(map(ref, kk.outputs)), tuple(map(op_ref, kk.ops)))

    try:
        head = [kernel_part(k)]
        todo = list(k.stages)
        while todo:                     # stages (and theirs), iteratively
            st = todo.pop(0)
            head.append(kernel_part(st))
            todo[:0] = st.stages
        # every value reached, in number order, with the producer the code evaluates: every
        # value's but an input's (loaded), unless the kernel itself computes that input (a
        # rows kernel's stage output)
        nodes = []
        i = 0
        while i < len(vals):
            v = vals[i]
            p = v.producer
            own = p is not None and (v not in ins or p in ops)
            nodes.append((v.shape, v.dtype.name, v in ins, op_ref(p) if own else -1))
            i += 1
    except Inexact:
        return None
    return (tuple(head), tuple(nodes), tuple(op_recs)), vals


def check_keys_enabled() -> bool:
    """TRACEJIT_CHECK_KERNEL_KEYS=1: render every kernel and compare within each key."""
    return os.environ.get("TRACEJIT_CHECK_KERNEL_KEYS", "").lower() in ("1", "on", "yes", "true")


__all__ = ["kernel_key", "check_keys_enabled"]
