"""tj.save / tj.load take a path (opened and closed by them, also when loading fails) or a
binary file object (used as it is and left open); anything else is a TypeError naming the
call."""
from __future__ import annotations

import io

import numpy as np
import pytest

import tracejit as tj
from tracejit import serialization


@pytest.fixture
def opened(monkeypatch):
    """The files tj.save/tj.load open by path."""
    files = []

    def tracking_open(*args, **kwargs):
        fh = open(*args, **kwargs)
        files.append(fh)
        return fh
    monkeypatch.setattr(serialization, "open", tracking_open, raising=False)
    return files


def test_paths_are_closed_after_save_and_load(tmp_path, opened):
    path = tmp_path / "t.tj"
    tj.save({"w": tj.tensor(np.arange(3.0))}, path)
    got = tj.load(str(path))
    np.testing.assert_array_equal(got["w"].numpy(), np.arange(3.0))
    assert len(opened) == 2 and all(fh.closed for fh in opened)


def test_a_path_is_closed_when_loading_fails(tmp_path, opened):
    path = tmp_path / "bad.tj"
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="tj.load: .* is not a readable tracejit save file"):
        tj.load(path)
    assert len(opened) == 1 and opened[0].closed


def test_file_objects_are_left_open():
    buf = io.BytesIO()
    tj.save([tj.tensor([1.0, 2.0]), 3], buf)
    assert not buf.closed
    buf.seek(0)
    t, n = tj.load(buf)
    assert not buf.closed and n == 3 and t.tolist() == [1.0, 2.0]


def test_other_objects_are_type_errors():
    with pytest.raises(TypeError, match="tj.save: f must be a path or a writable binary file "
                                        "object, got object"):
        tj.save(tj.ones(2), object())
    with pytest.raises(TypeError, match="tj.load: f must be a path or a readable binary file "
                                        "object, got int"):
        tj.load(3)
