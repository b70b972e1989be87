"""Run the work that does not need a collective's result before waiting for it.

A compiled training step traces DDP's waits at the end of backward, in bucket order, and then
the optimizer, which walks the parameters in registration order (for a transformer, the
embedding first: the last bucket's). Run in that order, the program waits for every bucket
before any update, so the last bucket's all-reduce, started where backward's last gradient is
made, is exposed whole. This pass reorders the instructions from the first wait on by the
last wait each one depends on (its level): first those that need no wait, then wait 0 and what
needs only it, then wait 1 and what needs it, and so on. An update of bucket 0's parameters
(without gradient clipping, whose norm needs every bucket) then runs while bucket 1 is still
travelling; with clipping, the norms of bucket 0's gradients do.

The order is a valid one: an instruction's operands have a level no higher than its own, and
within a level the traced order is kept. Waits keep their order (each is chained to the
previous one by its `after` operand). Any other effectful instruction in the region (a
collective after the optimizer, a later start) is given the highest level, so that
collectives keep their traced order relative to the waits on every rank."""
from __future__ import annotations

from .core import Graph

WAITS = frozenset({"dist_bucket_wait", "dist_all_reduce_wait"})


def defer_waits(g: Graph) -> Graph:
    """Reorder g's instructions (in place) so that each wait comes as late as the work that
    does not depend on it allows; returns g."""
    first = next((i for i, ins in enumerate(g.instrs) if ins.prim.name in WAITS), None)
    if first is None:
        return g
    region = g.instrs[first:]
    n_waits = sum(ins.prim.name in WAITS for ins in region)
    level: dict = {}              # value -> index of the last wait it depends on
    waits_seen = 0
    keyed = []
    for pos, ins in enumerate(region):
        lv = max((level.get(v, -1) for v in ins.inputs), default=-1)
        if ins.prim.name in WAITS:
            lv = max(lv, waits_seen)
            waits_seen += 1
        elif getattr(ins.prim, "effectful", False):
            lv = n_waits              # after every wait, as traced
        level[ins.out] = lv
        keyed.append((lv, pos, ins))
    keyed.sort(key=lambda t: (t[0], t[1]))
    g.instrs[first:] = [ins for _, _, ins in keyed]
    return g
