"""bench/models.py reports each step's process CPU time next to its wall time (one thread per
library: less sensitive to other processes' load), and the summary table has the CPU-time
ratio of tracejit to torch.compile."""
import importlib.util
import os

import pytest

pytest.importorskip("torch")
BENCH = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "bench")
_spec = importlib.util.spec_from_file_location("bench_models_cpu", os.path.join(BENCH, "models.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_summary_has_the_cpu_time_ratio():
    row = dict(name="w", tj_ms=2.0, eager_ms=4.0, tc_ms=2.5, ratio_vs_eager=0.5,
               ratio_vs_compile=0.8, cpu_ratio_vs_compile=0.75, tracejit_first_call_s=1.0,
               tracejit_first_call_cached_new_process_s=0.1, tc_first_call_s=3.0, kernels=7)
    lines = bench.summary([row, dict(name="broken", error="boom")], "cpu").splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert "tj/compile CPU time" in header
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert len(cells) == len(header)
    assert cells[header.index("tj/compile CPU time")] == "0.75"
    assert cells[header.index("tj/compile")] == "0.80"
    assert len(lines[3].strip("|").split("|")) == len(header)
