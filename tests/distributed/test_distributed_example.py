"""examples/gpt.py --ddp trains data-parallel on 2 ranks (tiny settings), through the launcher."""
import os
import subprocess
import sys

from dist_launch import mpiexec, report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_gpt_example_trains_data_parallel():
    mpiexec()
    proc = subprocess.run(
        [sys.executable, "-m", "tracejit.distributed.run", "--nproc", "2", "--timeout", "120",
         os.path.join(ROOT, "examples", "gpt.py"), "--ddp", "--steps", "3", "--log-interval",
         "1", "--n-layer", "1", "--n-embd", "16", "--batch-size", "2", "--block-size", "8",
         "--sample-tokens", "5"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, report(proc)
    out = proc.stdout
    assert "data-parallel over 2 ranks" in out, report(proc)
    assert out.count("val loss") == 1, report(proc)       # only rank 0 prints
    losses = [float(ln.split()[3]) for ln in out.splitlines() if ln.startswith("step")]
    assert len(losses) == 3 and all(x == x for x in losses), report(proc)
