"""examples/gpt.py and examples/cnn.py run end to end with tiny settings, eagerly and with the
whole step compiled, in a fresh interpreter as a user would start them."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)


def _run(script: str, *args: str) -> str:
    env = dict(os.environ)
    # one BLAS thread: on a loaded machine OpenBLAS's spinning threads make small matmuls 100x
    # slower, and the examples' matmuls are small
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), *args],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _losses(out: str) -> list[float]:
    return [float(v) for v in re.findall(r"loss (\S+)", out)]


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_gpt_example_trains_and_samples(compiled):
    out = _run("gpt.py", "--steps", "4", "--log-interval", "1", "--n-layer", "1",
               "--n-embd", "32", "--batch-size", "4", "--block-size", "16",
               "--sample-tokens", "20", *(["--compile"] if compiled else []))
    assert ("compiled step" if compiled else "eager") in out
    losses = _losses(out)
    assert len(losses) == 5 and all(0 < v < 10 for v in losses)    # 4 steps and the val loss
    assert re.search(r"after it [\d,]+ tokens/s", out)
    sample = out.split("sample:\n", 1)[1]
    assert len(sample.rstrip("\n")) == 21          # the first character and 20 generated ones


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_cnn_example_trains_and_evaluates(compiled):
    out = _run("cnn.py", "--steps", "4", "--log-interval", "1", "--batch-size", "8",
               "--test-size", "30", *(["--compile"] if compiled else []))
    losses = _losses(out)
    assert len(losses) == 4 and all(0 < v < 10 for v in losses)
    accuracy = float(re.search(r"eval accuracy (\S+) on 30 new images", out).group(1))
    assert 0.0 <= accuracy <= 1.0


@pytest.fixture
def fake_gpu(monkeypatch):
    """A "cuda" device through the strict CuPy stand-in; compiled graphs are lowered to CUDA C
    as for a GPU, then run by the reference interpreter on the stand-in's host data."""
    import fakecupy
    import numpy as np
    from tracejit.ir.interpret import interpret
    from tracejit import devices
    from tracejit.runtime.cuda_backend import CudaExecutable
    fake = fakecupy.module()

    def run(self, args):
        host = [a.get() if isinstance(a, fake.ndarray) else np.asarray(a) for a in args]
        return [fake.asarray(o) for o in interpret(self.graph, host)]
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(devices, "_cupy", None)
    monkeypatch.setattr(CudaExecutable, "run", run)


def _example(name: str):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"example_{name}",
                                                  os.path.join(ROOT, "examples", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name,args", [
    ("gpt", ["--n-layer", "1", "--n-embd", "16", "--batch-size", "2", "--block-size", "8",
             "--sample-tokens", "10"]),
    ("cnn", ["--batch-size", "4", "--test-size", "12"])])
def test_examples_on_cuda_train_as_on_the_cpu(fake_gpu, capsys, name, args, compiled):
    # the strict CuPy stand-in raises on any silent host/device mix (batches, positions,
    # generate's masked write, the accuracy read-back); CUDA kernels themselves run in gpu tests
    example, outs = _example(name), {}
    for device in ("cpu", "cuda"):
        example.main(["--device", device, "--steps", "3", "--log-interval", "1", *args,
                      *(["--compile"] if compiled else [])])
        outs[device] = capsys.readouterr().out
    assert "on cuda" in outs["cuda"]
    assert len(_losses(outs["cuda"])) >= 3
    assert _losses(outs["cuda"]) == pytest.approx(_losses(outs["cpu"]), abs=2e-4), outs
    if name == "cnn":
        assert outs["cuda"].split("eval accuracy")[1] == outs["cpu"].split("eval accuracy")[1]
