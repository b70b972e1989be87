"""Random eager programs with the op families of tests/fuzz_ops_ext.py (tests/eager_fuzz_ext.py:
reductions over dim tuples, elementwise math, integer/bool arithmetic and casts, shape ops,
in-place ops on views, nn.functional ops; int32 and bool programs too) against torch with fixed
seeds. Run thousands by hand (in tests/):
`python -c "import eager_fuzz_ext as X; [X.run(s) for s in range(90000, 93000)]"`."""
import pytest

pytest.importorskip("torch")

import eager_fuzz_ext as X  # noqa: E402

SEEDS = range(90000, 90120)


def test_random_eager_programs_ext_ops_match_torch():
    outcomes: dict = {}
    for seed in SEEDS:
        r = X.run(seed)          # a difference raises Mismatch (an AssertionError)
        outcomes[r] = outcomes.get(r, 0) + 1
    assert outcomes.get("ok", 0) >= 0.8 * len(SEEDS), outcomes
