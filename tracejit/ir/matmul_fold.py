"""Matmul rewrites the backends run before fusion, so that BLAS and cuBLAS get the few large 2-D
GEMMs that PyTorch gives them instead of batched GEMMs over a broadcast weight.

Three rules, one job each:

- `fold_batch`: `matmul(a[..., M, K], b)` where every batch of `b` is the same [K, N] matrix (a
  weight broadcast over the batch, possibly transposed) is one GEMM with the batch folded into
  M: `reshape(matmul(reshape(a, [B*M, K]), w), [..., M, N])`.
- `weight_grad`: `sum(matmul(a[..., K, M], g[..., M, N]), axes=batch)` (the gradient of such a
  weight: a batched GEMM followed by a sum over the batch) is one GEMM with K = B*M:
  `matmul(transpose(reshape(swap(a), [B*M, K])), reshape(g, [B*M, N]))`.
- `transpose_product`: `transpose(matmul(a, b))` of 2-D operands, when the transpose is the
  product's only use, is `matmul(b^T, a^T)`: a weight gradient of `x @ W.T` comes out in W's
  layout without a transposing loop.
- `product_sum`: a sum of thin 2-D products `a_1 @ b_1 + a_2 @ b_2 + ...` (the gradient of a
  weight used at every step of an unrolled RNN) is one GEMM of the concatenated operands,
  `[a_1 | a_2 | ...] @ [b_1; b_2; ...]`, instead of one small GEMM per step and a chain of adds.
- `shared_transpose`: an operand `transpose(x, P)` that moves batch axes, where the graph also
  has `transpose(x, Q)` with Q = P with its last two axes swapped, becomes a swap of the latter
  (a BLAS flag): attention's `k.transpose(-2, -1)` of `k = x.view(B, T, h, d).transpose(1, 2)`
  folds into one permutation, and with k itself needed by the backward both layouts were
  written by a kernel.

Operands stay views where BLAS takes views: a reshape of a buffer and a transpose of its last
two axes are free (fusion and the runtime's `view_chain` know both). The weight-gradient GEMM
accumulates in the GEMM's precision, as BLAS does for every matmul, where the batched form
accumulated the batch sum per the reduction rule; the difference is rounding.
`fold_matmuls(g)` returns `g` itself when no rule applies, else a new graph, so the graph IR
dumps keep showing the traced ops."""
from __future__ import annotations

import math

from .core import Graph, Instr, Value
from .passes import cse, dce, optimize
from .primitives import P, bind, broadcast, matmul, reshape, transpose

MAX_ROUNDS = 3      # a weight gradient's GEMM is transposed by the round after it appears
SMALL_K = 64        # product_sum joins GEMMs only this thin: launches, not flops, dominate them


def _is_swap(ins: Instr | None) -> bool:
    """Whether ins transposes exactly the last two axes."""
    if ins is None or ins.prim.name != "transpose":
        return False
    perm = list(ins.params["perm"])
    n = len(perm)
    return n >= 2 and perm == list(range(n - 2)) + [n - 1, n - 2]


def _shared_matrix(b: Value, nb: int) -> list[tuple[str, object]] | None:
    """If every batch of b (its first nb axes) is the same matrix: how to build that matrix
    from the value at the root of b's producer chain, as (op, arg) steps after ("root", v).
    Follows transposes that keep the batch axes in place and a broadcast that adds them."""
    steps: list[tuple[str, object]] = []
    v = b
    while True:
        p = v.producer
        if p is None:
            return None
        if p.prim.name == "transpose":
            perm = tuple(p.params["perm"])
            if perm[:nb] != tuple(range(nb)):
                return None
            if perm[nb:] == (nb + 1, nb):
                steps.append(("swap", None))
            v = p.inputs[0]
            continue
        if p.prim.name != "broadcast":
            return None
        x = p.inputs[0]
        lead = x.ndim - 2
        if lead > 0 and any(d != 1 for d in x.shape[:lead]):
            return None                  # the batch is not broadcast: a real batched operand
        mat = tuple(v.shape[-2:])
        steps.append(("broadcast", mat))
        if lead > 0:
            steps.append(("reshape", tuple(x.shape[lead:])))
        steps.append(("root", x))
        return steps[::-1]


def _build_matrix(steps, env: dict[Value, Value]) -> Value:
    w = env[steps[0][1]]
    for op, arg in steps[1:]:
        if op == "reshape":
            w = reshape(w, arg)
        elif op == "broadcast":
            w = broadcast(w, arg)
        else:
            w = transpose(w, (1, 0))
    return w


def _a_reshapes_freely(a: Value) -> bool:
    """Whether reshaping a (folding its batch into M) costs no copy a batched GEMM avoids: a is
    a buffer or an expression fusion materializes anyway, not a transposed/broadcast view."""
    p = a.producer
    return p is None or p.prim.name not in ("transpose", "broadcast")


def _weight_grad_sums(g: Graph, uses: dict[Value, list[Instr]]) -> dict[Instr, Instr]:
    """sum instructions of rule `weight_grad` -> the batched matmul each replaces."""
    outs = set(g.outputs)
    found = {}
    for ins in g.instrs:
        if ins.prim.name != "sum":
            continue
        m = ins.inputs[0].producer
        if m is None or m.prim.name != "matmul" or m.out in outs or len(uses[m.out]) != 1:
            continue
        nb = m.out.ndim - 2
        if nb >= 1 and tuple(ins.params["axes"]) == tuple(range(nb)):
            found[ins] = m
    return found


def _product_sums(g: Graph, uses: dict[Value, list[Instr]]) -> dict[Instr, list[Instr]]:
    """Rule `product_sum`: add trees (each node used once) whose leaves are all 2-D matmuls
    used once, with contractions of at most SMALL_K: the root add -> its matmuls in order."""
    outs = set(g.outputs)
    found: dict[Instr, list[Instr]] = {}
    inner: set[Instr] = set()
    for root in reversed(g.instrs):                 # roots before their inner adds
        if root.prim.name != "add" or root in inner or root.out.ndim != 2:
            continue
        leaves, adds, ok, stack = [], [], True, [root]
        while stack and ok:
            a = stack.pop()
            adds.append(a)
            for v in a.inputs[::-1]:
                p = v.producer
                once = v not in outs and len(uses.get(v, ())) == 1 and \
                    v.aval == root.out.aval and p is not None      # (not a graph input)
                if once and p.prim.name == "add":
                    stack.append(p)
                elif once and p.prim.name == "matmul" and p.inputs[0].shape[1] <= SMALL_K:
                    leaves.append(p)
                else:
                    ok = False
                    break
        if ok and len(leaves) >= 2:
            found[root] = leaves
            inner.update(adds)
    return found


def _product_sum(leaves: list[Instr], env: dict[Value, Value]) -> Value:
    """sum_i a_i @ b_i = [a_1 | a_2 | ...] @ [b_1; b_2; ...]: one GEMM, K = sum of the K_i."""
    a_parts = [m.inputs[0] for m in leaves]
    b = bind(P.concatenate, *[env[m.inputs[1]] for m in leaves], axis=0)
    if all(_is_swap(x.producer) for x in a_parts):     # x_i^T side by side = (x_1; x_2; ...)^T
        a = _swap(bind(P.concatenate, *[env[x.producer.inputs[0]] for x in a_parts], axis=0))
    else:
        a = bind(P.concatenate, *[env[x] for x in a_parts], axis=1)
    return matmul(a, b)


def fold_matmuls(g: Graph) -> Graph:
    g = _without_stop_gradients(g)
    for _ in range(MAX_ROUNDS):
        new = _fold_once(g)
        if new is g:
            break
        g = new
    return g


def _without_stop_gradients(g: Graph) -> Graph:
    """The graph with each stop_gradient replaced by its operand, simplified again; `g` itself
    when it has none. A stop_gradient only marks a value as a constant for differentiation (a
    compiled step's backward and optimizer, traced under no_grad, are full of them), and the
    graph a backend runs is never differentiated; left in, it hid the transposes of GEMM
    operands from the rules here and from fusion (nanoGPT small: 122 -> 145 kernels, the
    transposes copied)."""
    if not any(ins.prim.name == "stop_gradient" for ins in g.instrs):
        return g
    new = Graph(g.name)
    env = {v: new.add_input(v.aval, v.name) for v in g.inputs}
    for ins in g.instrs:
        if ins.prim.name == "stop_gradient":
            env[ins.out] = env[ins.inputs[0]]
        else:
            env[ins.out] = new.emit_copy(ins, [env[v] for v in ins.inputs])
    new.outputs = [env[v] for v in g.outputs]
    return optimize(new)


def _fold_once(g: Graph) -> Graph:
    uses = g.users()
    sums = _weight_grad_sums(g, uses)
    psums = _product_sums(g, uses)
    replaced = set(sums.values())
    folds: dict[Instr, list] = {}
    for ins in g.instrs:
        # a graph output keeps its batched GEMM, which writes it in place: folded, a loop
        # would copy the 2-D product into the output's shape
        if ins.prim.name == "matmul" and ins not in replaced and ins.out.ndim > 2 and \
                ins.out not in g.outputs:
            steps = _shared_matrix(ins.inputs[1], ins.out.ndim - 2)
            if steps is not None and _a_reshapes_freely(ins.inputs[0]):
                folds[ins] = steps
    swaps = {ins for ins in g.instrs if _is_swap(ins) and ins.out.ndim == 2
             and ins.inputs[0].producer is not None
             and ins.inputs[0].producer.prim.name == "matmul"
             and len(uses[ins.inputs[0]]) == 1 and ins.inputs[0] not in g.outputs}
    shared = _shared_transposes(g, set(sums) | set(folds) | replaced)
    if not (sums or folds or swaps or psums or shared):
        return g

    new = Graph(g.name)
    env = {v: new.add_input(v.aval, v.name) for v in g.inputs}
    for ins in g.instrs:
        if ins in replaced:
            continue                      # its sum below computes it as one GEMM
        new.loc_override = ins.loc
        if ins in sums:
            env[ins.out] = _weight_grad(sums[ins], env)
        elif ins in psums:
            env[ins.out] = _product_sum(psums[ins], env)
        elif ins in folds:
            env[ins.out] = _fold_batch(ins, folds[ins], env)
        elif ins in swaps:
            a, b = ins.inputs[0].producer.inputs
            env[ins.out] = matmul(_swap(env[b]), _swap(env[a]))
        elif ins in shared:
            ops = [env[v] for v in ins.inputs]
            for k, (x, q) in shared[ins].items():      # cse merges it with the existing one
                ops[k] = _swap(transpose(env[x], q))
            env[ins.out] = matmul(*ops)
        else:
            env[ins.out] = new.emit_copy(ins, [env[v] for v in ins.inputs])
        new.loc_override = None
    new.outputs = [env[v] for v in g.outputs]
    # the same reshape made twice (a saved activation folded for its forward and its weight
    # gradient's GEMM) is written once; dead: swaps whose only users were rewritten
    return dce(cse(new))


def _shared_transposes(g: Graph, skip: set) -> dict[Instr, dict[int, tuple[Value, tuple]]]:
    """Matmuls with an operand transpose(x, P) (P moving batch axes and x's last axis) for
    which the graph has transpose(x, Q), Q = P with its last two entries swapped, keeping x's
    last axis last: {matmul: {operand: (x, Q)}}."""
    have = {(ins.inputs[0], tuple(ins.params["perm"])) for ins in g.instrs
            if ins.prim.name == "transpose"}
    out: dict[Instr, dict[int, tuple[Value, tuple]]] = {}
    for ins in g.instrs:
        if ins.prim.name != "matmul" or ins in skip:
            continue
        for k, v in enumerate(ins.inputs):
            p = v.producer
            if p is None or p.prim.name != "transpose" or _is_swap(p):
                continue
            perm = tuple(p.params["perm"])
            n = len(perm)
            q = perm[:-2] + (perm[-1], perm[-2])
            # the kept layout is the one that leaves x's last axis last (a contiguous copy)
            if n > 2 and perm[:-2] != tuple(range(n - 2)) and q[-1] == n - 1 and \
                    perm[-1] != n - 1 and (p.inputs[0], q) in have:
                out.setdefault(ins, {})[k] = (p.inputs[0], q)
    return out


def _swap(x: Value) -> Value:
    """x with its last two axes swapped; a swap of a swap is its input (no instruction)."""
    p = x.producer
    if _is_swap(p):
        return p.inputs[0]
    perm = list(range(x.ndim))
    perm[-2:] = perm[-1], perm[-2]
    return transpose(x, tuple(perm))


def _reshape(x: Value, shape: tuple[int, ...]) -> Value:
    """reshape, looking through a reshape producer: a reshape of a buffer stays a view."""
    p = x.producer
    if p is not None and p.prim.name == "reshape":
        x = p.inputs[0]
    return reshape(x, shape)


def _fold_batch(ins: Instr, steps, env: dict[Value, Value]) -> Value:
    a = env[ins.inputs[0]]
    *batch, m, k = a.shape
    w = _build_matrix(steps, env)
    rows = math.prod(batch) * m
    return reshape(matmul(_reshape(a, (rows, k)), w), tuple(batch) + (m, w.shape[1]))


def _weight_grad(m: Instr, env: dict[Value, Value]) -> Value:
    a, gr = (env[v] for v in m.inputs)
    *batch, k, mm = a.shape
    n = gr.shape[-1]
    rows = math.prod(batch) * mm
    x = _swap(a)                                           # [..., M, K]
    return matmul(transpose(_reshape(x, (rows, k)), (1, 0)), _reshape(gr, (rows, n)))
