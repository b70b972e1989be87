"""`.lower(...).dot()`: the fusion plan as Graphviz DOT text (issue 11 item 6), and the
`TRACEJIT_DUMP=dot` stage. The text is parsed here (no Graphviz needed): braces balance, every
op node lies in exactly one kernel cluster, every edge joins declared nodes, and the clusters
match the plan's kernels."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tracejit as tj
from tracejit.debug import STAGES

NODE = re.compile(r'^\s*"([^"]+)" \[(.*)\];$')
EDGE = re.compile(r'^\s*"([^"]+)" -> "([^"]+)";$')
CLUSTER = re.compile(r'^\s*subgraph "cluster_([^"]+)" \{$')


def parse(text: str):
    """(clusters: name -> (label, [node ids]), loose nodes: id -> attrs, edges)."""
    assert text.count("{") == text.count("}")
    lines = text.splitlines()
    assert lines[0].startswith("digraph ") and lines[-1] == "}"
    clusters: dict[str, tuple[str, list[str]]] = {}
    loose: dict[str, str] = {}
    attrs: dict[str, str] = {}
    edges = []
    current = None
    depth = 0
    for ln in lines[1:-1]:
        m = CLUSTER.match(ln)
        if m:
            assert current is None, "clusters do not nest"
            current = m.group(1)
            clusters[current] = ("", [])
            depth += 1
            continue
        if ln.strip() == "}":
            current, depth = None, depth - 1
            continue
        if current is not None and ln.strip().startswith("label="):
            clusters[current] = (re.match(r'\s*label="([^"]*)"', ln).group(1),
                                 clusters[current][1])
            continue
        m = NODE.match(ln)
        if m:
            node, a = m.groups()
            assert node not in attrs, f"node {node} declared twice"
            attrs[node] = a
            if current is not None:
                clusters[current][1].append(node)
            else:
                loose[node] = a
            continue
        m = EDGE.match(ln)
        if m:
            edges.append(m.groups())
    assert depth == 0
    for a, b in edges:
        assert a in attrs and b in attrs, (a, b)
    return clusters, loose, edges, attrs


def _mlp(x, w1, w2, b):
    h = tj.tanh(x @ w1 + b)
    return tj.softmax(h @ w2, -1).sum(), h


def _args():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((4, 8)).astype(np.float32),
            rng.standard_normal((8, 6)).astype(np.float32),
            rng.standard_normal((6, 3)).astype(np.float32),
            rng.standard_normal(6).astype(np.float32))


def test_small_graph_clusters_are_the_plans_kernels():
    low = tj.compile(_mlp).lower(*_args())
    kernels = low.kernels.splitlines()
    clusters, loose, edges, attrs = parse(low.dot())
    # one cluster per kernel, in plan order, each labelled with its kind
    assert list(clusters) == [k.split(":")[0] for k in kernels]
    for line, (name, (label, nodes)) in zip(kernels, clusters.items()):
        kind = line.split()[1]
        assert label.startswith(f"{name}: {kind}")
        assert nodes, name
        ops = re.search(r"ops\(([^)]*)\)", line).group(1).split(",")
        # every op the kernel evaluates is drawn once in it (an op recomputed by two kernels
        # is drawn in each: a node never lies in two clusters)
        drawn = [attrs[n].split('label="')[1].split("\\n")[0] for n in nodes]
        assert sorted(drawn) == sorted(ops) or kind == "rows" and set(drawn) == set(ops)
    # the two GEMMs are extern BLAS calls, drawn apart
    gemms = [c for c, (label, _) in clusters.items() if "(extern BLAS)" in label]
    assert len(gemms) == 2
    assert all("shape=component" in attrs[n] for c in gemms for n in clusters[c][1])
    assert len(clusters) == 5     # pinned: 2 GEMMs, the bias+tanh loop, the row softmax, the sum
    # inputs are boxes outside the clusters; the two outputs have a double border
    assert sorted(loose) == ["in:b", "in:w1", "in:w2", "in:x"]
    assert sum("peripheries=2" in a for a in attrs.values()) == 2
    # every cluster is reached from the inputs
    reached = set(loose)
    for _ in range(len(clusters) + 1):
        reached |= {b for a, b in edges if a in reached}
    assert all(set(nodes) & reached for _, nodes in clusters.values())


def test_materialized_buffers_are_marked():
    @tj.compile
    def f(x):
        s = x.sum(0)                 # a reduction: its result is a buffer the next loop reads
        return tj.exp(x - s)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    clusters, _, edges, attrs = parse(f.lower(x).dot())
    buffers = [n for n, a in attrs.items() if "#fff2b3" in a]
    assert len(buffers) == 1 and attrs[buffers[0]].startswith('label="sum')
    assert any(a == buffers[0] for a, b in edges)      # and a later kernel reads it


def test_dot_on_the_cuda_backend_names_cublas(fake_gpu):
    low = tj.compile(_mlp, device="cuda").lower(*_args())
    clusters, *_ = parse(low.dot())
    assert sum("(extern cuBLAS)" in label for label, _ in clusters.values()) == 2


def test_interpreter_backend_has_no_plan():
    low = tj.compile(lambda x: x + 1, backend="interpreter").lower(np.ones(3, np.float32))
    with pytest.raises(NotImplementedError, match="no kernel plan"):
        low.dot()


def test_dump_dot_writes_a_dot_file(tmp_path):
    assert "dot" in STAGES
    code = ("import numpy as np, tracejit as tj\n"
            "tj.compile(lambda x: tj.exp(x) * 2)(np.ones(5, np.float32))\n")
    env = dict(os.environ, TRACEJIT_DUMP="dot", TRACEJIT_DUMP_DIR=str(tmp_path),
               TRACEJIT_CACHE_DIR="off")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and files[0].endswith("_<lambda>.dot")
    clusters, *_ = parse((tmp_path / files[0]).read_text())
    assert len(clusters) == 1


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graphviz_renders_it(tmp_path):
    text = tj.compile(_mlp).lower(*_args()).dot()
    r = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.lstrip().startswith("<?xml") and "cluster_k0" in r.stdout
