"""A world of 1 (a plain `python` run, no MPI launcher): every collective is the identity on
the data it is given, so single-process code written for a group runs unchanged."""
from __future__ import annotations

from typing import Any

from .base import ProcessGroup, ReduceOp, Work, done_work


class LocalBackend:
    # a one-rank group's collectives change nothing (traced.py then skips them entirely)
    identity_on_one_rank = True

    def __init__(self, pg: ProcessGroup) -> None:
        self.pg = pg

    def progress(self) -> None:
        pass

    def all_reduce(self, a: Any, op: ReduceOp, desc: str) -> Work:
        return done_work(desc)

    def broadcast(self, a: Any, src: int, desc: str) -> Work:
        return done_work(desc)

    def all_gather(self, out: Any, a: Any, desc: str) -> Work:
        out.reshape(-1)[...] = a.reshape(-1)
        return done_work(desc)

    def reduce_scatter(self, out: Any, a: Any, op: ReduceOp, desc: str) -> Work:
        out.reshape(-1)[...] = a.reshape(-1)
        return done_work(desc)

    def barrier(self, desc: str) -> Work:
        return done_work(desc)

    def broadcast_object(self, obj: Any, src: int, desc: str) -> Any:
        return obj

    def all_gather_object(self, obj: Any, desc: str) -> list:
        return [obj]

    def close(self) -> None:
        pass

