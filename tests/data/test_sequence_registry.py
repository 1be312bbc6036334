"""Tests for the reader registry of trianflow.data.sequence (open_sequence dispatch)."""

import numpy as np
import pytest

from trianflow.data import FrameSequence, open_sequence, register_reader, registered_readers
from trianflow.data import sequence as seqmod
from trianflow.errors import InputError


def test_builtin_readers_in_dispatch_order():
    kinds = [r.kind for r in registered_readers()]
    assert kinds[:4] == ["video", "kitti_odometry", "tum", "image_folder"]


def test_a_registered_reader_is_used_and_options_reach_it(tmp_path, monkeypatch):
    monkeypatch.setattr(seqmod, "_READERS", dict(seqmod._READERS))
    (tmp_path / "seq.custom").write_text("x")
    seen = {}

    class Custom(FrameSequence):
        def _read(self, i):
            return np.zeros((4, 6, 3), np.uint8)

    def _open(p, K=None, stereo=False, max_frames=None, fps=None):
        seen.update(K=K, max_frames=max_frames)
        return Custom(name="c", source=str(p), K=np.eye(3), timestamps=np.arange(3.0), size=(4, 6), kind="custom")

    register_reader("custom", lambda p: p.suffix == ".custom", _open, priority=100)
    seq = open_sequence(tmp_path / "seq.custom", intrinsics="1,1,2,2", max_frames=3)
    assert seq.kind == "custom" and seen["max_frames"] == 3 and seen["K"][0, 0] == 1.0
    assert seq.read(2).shape == (4, 6, 3)
    monkeypatch.setattr(seqmod, "_READERS", {})
    with pytest.raises(InputError, match="no sequence reader"):
        open_sequence(tmp_path)
