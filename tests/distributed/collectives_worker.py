"""Run under mpiexec by test_distributed_collectives.py: every collective, for every op and
dtype, against NumPy (each rank knows every rank's input, so each computes the expected result
itself). Prints "ok <check>" per passed check."""
import sys

import ml_dtypes
import numpy as np

import tracejit as tj
import tracejit.distributed as dist
from tracejit.distributed import ReduceOp

dist.init_process_group(timeout=60)
RANK, W = dist.get_rank(), dist.get_world_size()
DTYPES = {"f16": np.float16, "bf16": ml_dtypes.bfloat16, "f32": np.float32,
          "f64": np.float64, "u8": np.uint8, "i8": np.int8, "i16": np.int16, "i32": np.int32,
          "i64": np.int64, "bool": np.bool_}
INTS = ("u8", "i8", "i16", "i32", "i64")
OPS = [ReduceOp.SUM, ReduceOp.AVG, ReduceOp.PRODUCT, ReduceOp.MIN, ReduceOp.MAX]


def data(rank, name, shape=(3, 5)):
    rng = np.random.default_rng(rank * 7 + len(name))
    if name == "bool":
        return rng.random(shape) < 0.5
    if name in INTS:        # (negatives wrap in uint8: sums and products then wrap too)
        return rng.integers(-4, 5, shape).astype(DTYPES[name])
    # small halves of integers: sums and products stay exact in every float type
    return (rng.integers(-4, 5, shape) / 2).astype(DTYPES[name])


def expected(name, op, xs):
    if name == "bool":
        return (np.any if op in (ReduceOp.SUM, ReduceOp.MAX) else np.all)(xs, axis=0)
    # (integers in int64, whose low bits are the wrapped result of every narrower type)
    wide = np.stack([x.astype(np.int64 if name in INTS else np.float64) for x in xs])
    r = {ReduceOp.SUM: wide.sum(0), ReduceOp.AVG: wide.mean(0), ReduceOp.PRODUCT: wide.prod(0),
         ReduceOp.MIN: wide.min(0), ReduceOp.MAX: wide.max(0)}[op]
    return r.astype(DTYPES[name])


def as_np(t):
    a = t.numpy()
    return a.astype(np.float32) if a.dtype == ml_dtypes.bfloat16 else a


def check_all_reduce():
    for name in DTYPES:
        for op in OPS:
            if op is ReduceOp.AVG and name in (*INTS, "bool"):
                continue
            t = tj.tensor(data(RANK, name))
            dist.all_reduce(t, op=op)
            want = expected(name, op, [data(r, name) for r in range(W)])
            np.testing.assert_allclose(as_np(t), as_np(tj.tensor(want)), rtol=1e-6,
                                       err_msg=f"all_reduce {name} {op}")
    print("ok all_reduce", flush=True)


def check_all_reduce_noncontiguous_and_async():
    base = data(RANK, "f64", (5, 3))
    t = tj.Tensor(base.T)                       # a non-contiguous view
    w = dist.all_reduce(t, op=ReduceOp.SUM, async_op=True)
    assert isinstance(w, dist.Work)
    assert w.wait() is True and w.is_completed()
    want = sum(data(r, "f64", (5, 3)) for r in range(W)).T
    np.testing.assert_array_equal(t.numpy(), want)
    print("ok noncontiguous_async", flush=True)


def check_broadcast():
    for name in DTYPES:
        for src in range(W):
            t = tj.tensor(data(RANK, name))
            dist.broadcast(t, src=src)
            np.testing.assert_array_equal(as_np(t), as_np(tj.tensor(data(src, name))))
    print("ok broadcast", flush=True)


def check_gathers():
    for name in DTYPES:
        x = data(RANK, name, (2, 3))
        outs = [tj.tensor(np.zeros((2, 3), DTYPES[name])) for _ in range(W)]
        dist.all_gather(outs, tj.tensor(x))
        for r in range(W):
            np.testing.assert_array_equal(as_np(outs[r]), as_np(tj.tensor(data(r, name, (2, 3)))))
        want = np.concatenate([data(r, name, (2, 3)) for r in range(W)])
        for shape in [(2 * W, 3), (W, 2, 3)]:
            out = tj.tensor(np.zeros(shape, DTYPES[name]))
            dist.all_gather_into_tensor(out, tj.tensor(x))
            np.testing.assert_array_equal(as_np(out).reshape(want.shape),
                                          as_np(tj.tensor(want)))
    print("ok gathers", flush=True)


def check_reduce_scatter():
    for name in DTYPES:
        for op in OPS:
            if op is ReduceOp.AVG and name in (*INTS, "bool"):
                continue
            xs = [data(r, name, (W * 2, 3)) for r in range(W)]
            out = tj.tensor(np.zeros((2, 3), DTYPES[name]))
            dist.reduce_scatter_tensor(out, tj.tensor(xs[RANK]), op=op)
            want = expected(name, op, xs)[RANK * 2:(RANK + 1) * 2]
            np.testing.assert_allclose(as_np(out), as_np(tj.tensor(want)), rtol=1e-6,
                                       err_msg=f"reduce_scatter_tensor {name} {op}")
    out = tj.zeros(4, dtype=tj.float64)
    dist.reduce_scatter(out, [tj.full((4,), float(RANK + r), dtype=tj.float64)
                              for r in range(W)])
    np.testing.assert_array_equal(out.numpy(), np.full(4, float(sum(range(W)) + W * RANK)))
    print("ok reduce_scatter", flush=True)


def check_objects_and_barrier():
    objs = [{"rank": RANK}, "x" * RANK, None]
    dist.broadcast_object_list(objs, src=W - 1)
    assert objs == [{"rank": W - 1}, "x" * (W - 1), None], objs
    got = [None] * W
    dist.all_gather_object(got, (RANK, [RANK] * RANK))
    assert got == [(r, [r] * r) for r in range(W)], got
    dist.barrier()
    dist.barrier(async_op=True).wait()
    print("ok objects_barrier", flush=True)


def check_in_compiled_function():
    """all_reduce and broadcast inside tj.compile run at every call, not once at trace time."""
    @tj.compile
    def f(x, y):
        s = x * 2
        dist.all_reduce(s, op=ReduceOp.AVG)
        dist.broadcast(y, src=W - 1)
        return s + 1, y

    for call in range(3):
        x = tj.tensor(np.arange(4.0) + RANK + call)
        y = tj.tensor(np.full(3, float(RANK * 10 + call)))
        s, y2 = f(x, y)
        want = np.mean([2 * (np.arange(4.0) + r + call) for r in range(W)], axis=0) + 1
        np.testing.assert_allclose(s.numpy(), want)
        np.testing.assert_array_equal(y2.numpy(), np.full(3, float((W - 1) * 10 + call)))
    assert f.cache_info().misses == 1, f.cache_info()
    print("ok compiled", flush=True)


def check_rank_info():
    assert dist.is_initialized() and dist.get_backend() == "cpu:mpi,cuda:nccl"
    assert 0 <= dist.get_local_rank() < W
    print("ok rank_info", flush=True)


CHECKS = {"all_reduce": check_all_reduce, "noncontiguous_async":
          check_all_reduce_noncontiguous_and_async, "broadcast": check_broadcast,
          "gathers": check_gathers, "reduce_scatter": check_reduce_scatter,
          "objects_barrier": check_objects_and_barrier, "compiled": check_in_compiled_function,
          "rank_info": check_rank_info}

for name in sys.argv[1:] or list(CHECKS):
    CHECKS[name]()
dist.destroy_process_group()
