"""Structural and type checks of a Graph."""
from __future__ import annotations

from .core import Graph


class VerifyError(ValueError):
    pass


def verify(g: Graph) -> Graph:
    defined = set(g.inputs)
    for ins in g.instrs:
        for v in ins.inputs:
            if v not in defined:
                raise VerifyError(f"{ins.prim.name}: operand used before its definition ({ins.loc})")
            if v.graph is not g:
                raise VerifyError(f"{ins.prim.name}: operand belongs to another graph ({ins.loc})")
        if ins.out in defined:
            raise VerifyError(f"{ins.prim.name}: value defined twice ({ins.loc})")
        if ins.out.producer is not ins:
            raise VerifyError(f"{ins.prim.name}: result does not point back at its instruction")
        want = ins.prim.infer([v.aval for v in ins.inputs], ins.params)
        if want != ins.out.aval:
            raise VerifyError(f"{ins.prim.name}: result typed {ins.out.aval}, inference says "
                              f"{want} ({ins.loc})")
        defined.add(ins.out)
    for v in g.outputs:
        if v not in defined:
            raise VerifyError("graph output is not defined in the graph")
    return g
