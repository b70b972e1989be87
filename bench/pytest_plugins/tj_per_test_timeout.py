"""A pytest plugin: each test's call fails with TimeoutError after TJ_TEST_TIMEOUT seconds
(default 120), so one hung test cannot eat a GPU session (bench/gpu_session.sh loads it with
`-p tj_per_test_timeout`; pytest-timeout may not be installed there). Main thread, POSIX only."""
from __future__ import annotations

import os
import signal

import pytest

LIMIT = int(os.environ.get("TJ_TEST_TIMEOUT", "120"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    def expire(signum, frame):
        raise TimeoutError(f"{item.nodeid}: still running after {LIMIT} s (TJ_TEST_TIMEOUT)")
    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(LIMIT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
