"""Parse the text form printed by printer.py back into a Graph (exact round trip)."""
from __future__ import annotations

import base64
import re

import numpy as np

from . import dtypes as dt
from .core import Aval, Graph, Instr, Value
from .primitives import P

_TYPE = r"([a-z0-9]+)\[([0-9,]*)\]"
_HEADER = re.compile(r"^graph @([^\s(]+)\((.*)\) -> \((.*)\) \{$")
_INSTR = re.compile(r"^%([A-Za-z0-9_.]+) = ([a-z_][a-z0-9_]*)(.*?)\s*:\s*" + _TYPE + r"\s*(?:#\s*(.*))?$")
_TOKEN = re.compile(r"\s*(-?inf|nan|true|false|-?[0-9.eE+\-]+|\[|\]|,)")


class ParseError(ValueError):
    pass


def _aval(dtype: str, dims: str) -> Aval:
    return Aval([int(d) for d in dims.split(",") if d], dt.dtype_from_name(dtype))


def _parse_nested(text: str):
    toks = [t for t in _TOKEN.findall(text)]
    pos = 0

    def atom(t: str):
        if t in ("true", "false"):
            return t == "true"
        if t in ("inf", "-inf", "nan"):
            return float(t)
        return float(t) if any(c in t for c in ".eE") else int(t)

    def parse():  # iterative over a stack of open lists
        nonlocal pos
        stack: list[list] = []
        result = None
        while pos < len(toks):
            t = toks[pos]
            pos += 1
            if t == "[":
                stack.append([])
            elif t == "]":
                done = stack.pop()
                if not stack:
                    return done
                stack[-1].append(done)
            elif t == ",":
                continue
            else:
                if not stack:
                    return atom(t)
                stack[-1].append(atom(t))
        return result
    return parse()


def _split_params(text: str) -> list[tuple[str, str]]:
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    pairs = []
    for item in out:
        k, _, v = item.partition("=")
        pairs.append((k.strip(), v.strip()))
    return pairs


def _param(kind: str, text: str, aval: Aval):
    if kind == "ints":
        return tuple(int(x) for x in text.strip("[]").split(",") if x.strip())
    if kind == "int":
        return int(text)
    if kind == "bool":
        return text == "true"
    if kind == "float":
        return float(text)
    if kind == "dtype":
        return dt.dtype_from_name(text)
    if kind == "array":
        if text.startswith("b64:"):
            raw = base64.b64decode(text[4:])
            return np.frombuffer(raw, dtype=aval.dtype.np).reshape(aval.shape).copy()
        return np.array(_parse_nested(text), dtype=aval.dtype.np).reshape(aval.shape)
    raise ParseError(f"unknown parameter kind {kind}")


def parse_graph(text: str) -> Graph:
    lines = [ln.rstrip() for ln in text.strip().splitlines() if ln.strip()]
    m = _HEADER.match(lines[0].strip()) if lines else None
    if not m:
        raise ParseError(f"expected 'graph @name(...) -> (...) {{', got {lines[:1]}")
    g = Graph(m.group(1))
    env: dict[str, Value] = {}
    for arg in filter(None, (a.strip() for a in m.group(2).split("], "))):
        am = re.match(r"^%([A-Za-z0-9_.]+): " + _TYPE.replace(r"\]", r"\]?"), arg)
        if not am:
            raise ParseError(f"bad argument {arg!r}")
        env[am.group(1)] = g.add_input(_aval(am.group(2), am.group(3)), am.group(1))
    for ln in lines[1:]:
        s = ln.strip()
        if s == "}":
            break
        if s.startswith("return"):
            names = [n.strip().lstrip("%") for n in s[len("return"):].split(",") if n.strip()]
            g.outputs = [env[n] for n in names]
            continue
        im = _INSTR.match(s)
        if not im:
            raise ParseError(f"cannot parse line: {s!r}")
        name, op, rest, tdt, tdims, loc = im.groups()
        prim = P.get(op)
        aval = _aval(tdt, tdims)
        rest = rest.strip()
        params = {}
        if "{" in rest:
            rest, _, ptext = rest.partition("{")
            for k, v in _split_params(ptext.rstrip("}")):
                params[k] = _param(prim.param_types[k], v, aval)
        try:
            inputs = [env[a.strip().lstrip("%")] for a in rest.split(",") if a.strip()]
        except KeyError as e:
            raise ParseError(f"use of undefined value %{e.args[0]} in {s!r}") from None
        out = Value(aval, g, None, None)
        ins = Instr(prim, inputs, params, out, (loc or "").strip())
        out.producer = ins
        g.instrs.append(ins)
        env[name] = out
    return g
