"""user_location remembers tracejit's own code objects and the users' file names; the location
it reports stays the innermost user frame's file:line however often it is asked, from any
number of user files (two functions sharing tracejit's frames, each reporting its own line)."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj


def _call_in(filename: str, line: int):
    src = "\n" * (line - 1) + "def bad(x):\n    return x @ x\n"
    env: dict = {"tj": tj}
    exec(compile(src, filename, "exec"), env)
    return env["bad"]


@pytest.mark.parametrize("compiled", [False, True])
def test_locations_name_each_users_line(compiled):
    x = tj.tensor(np.ones(3, np.float32))
    for filename, line in [("first_user.py", 10), ("second_user.py", 20),
                           ("first_user.py", 30)] * 2:
        fn = _call_in(filename, line)
        fn = tj.compile(fn) if compiled else fn
        with pytest.raises(Exception, match=rf"{filename}:{line + 1}"):
            fn(tj.tensor(np.ones((2, 3), np.float32)))
    assert x.shape == (3,)


def test_traced_instructions_carry_the_users_lines():
    def f(x):
        y = x * 2.0
        return y + 1.0
    g = tj.compile(f).lower(np.ones(3, np.float32)).graph
    here = f.__code__.co_firstlineno
    locs = {ins.loc for ins in g.instrs}
    assert f"test_user_location_memo.py:{here + 1}" in locs or \
        f"test_user_location_memo.py:{here + 2}" in locs, locs
