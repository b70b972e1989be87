"""Run a test's Python snippet in a new process with its own disk cache: the way the disk-cache
tests see what a fresh process loads."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_child(code: str, cache_dir, **env) -> dict:
    """Run `code` with TRACEJIT_CACHE_DIR=cache_dir (plus env) and return the JSON object its
    last line of output prints."""
    env = dict(os.environ, TRACEJIT_CACHE_DIR=str(cache_dir), PYTHONPATH=ROOT, **env)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])
