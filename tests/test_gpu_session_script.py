"""bench/gpu_session.sh, the prepared script of a GPU session: valid bash, a dry run that
plans the four steps and runs none, and its per-test time limit plugin."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "gpu_session.sh")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def test_the_script_parses():
    subprocess.run(["bash", "-n", SCRIPT], check=True)


def test_a_dry_run_plans_every_step_and_runs_none(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(["bash", SCRIPT, "--dry-run"], env=dict(os.environ, OUT=str(out)),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    steps = [ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("== ")]
    assert steps == ["env", "pytest_gpu", "models", "gpu"]
    # every GPU test runs (no -x: one failure must not hide the others)
    assert "pytest -m gpu -q" in r.stdout and "-p tj_per_test_timeout" in r.stdout
    assert "bench/models.py --device cuda --quick" in r.stdout
    assert "bench/gpu.py --quick" in r.stdout and "dry run" in r.stdout
    assert sorted(os.listdir(out)) == ["summary.txt"]      # nothing ran


def test_the_per_test_limit_fails_a_hung_test(tmp_path):
    (tmp_path / "test_hang.py").write_text("import time\n\ndef test_hang():\n"
                                           "    time.sleep(30)\n\ndef test_quick():\n"
                                           "    pass\n")
    env = dict(os.environ, TJ_TEST_TIMEOUT="1",
               PYTHONPATH=os.path.join(ROOT, "bench", "pytest_plugins"))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                        "tj_per_test_timeout", str(tmp_path)], env=env, capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 1
    assert "TimeoutError" in r.stdout and "still running after 1 s" in r.stdout
    assert "1 failed, 1 passed" in r.stdout
