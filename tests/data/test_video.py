"""Tests of the video reader with small MJPG videos written by OpenCV."""

import cv2
import numpy as np
import pytest

from trianflow.data import open_sequence
from trianflow.data.video import count_frames, open_video
from trianflow.errors import InputError

K = "100,100,31.5,23.5"


def _frame(i, h=48, w=64):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 1] = 40
    # a bright bar whose position encodes the frame index (robust to JPEG artefacts)
    x = 4 + 3 * i
    img[:, x:x + 3, :] = 255
    return img


def _bar_index(rgb):
    col = rgb[..., 0].astype(float).mean(0)
    xs = np.nonzero(col > 128)[0]
    return int(round((xs.mean() - 5) / 3)) if len(xs) else -1


def _write_video(path, n, fps=15.0, fourcc="MJPG"):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (64, 48))
    if not writer.isOpened():
        pytest.skip(f"this OpenCV build cannot write {fourcc} {path.suffix}")
    for i in range(n):
        writer.write(_frame(i))
    writer.release()
    return path


def test_open_and_random_access(tmp_path):
    path = _write_video(tmp_path / "clip.avi", 12)
    seq = open_sequence(path, intrinsics=K)
    assert seq.kind == "video" and len(seq) == 12 and seq.size == (48, 64)
    assert count_frames(path) == 12
    np.testing.assert_allclose(seq.timestamps, np.arange(12) / 15.0, atol=1e-9)
    assert seq.K[0, 2] == 31.5
    order = [0, 1, 2, 5, 4, 11, 3, 3, 7, 0]
    for i in order:
        img = seq.read(i)
        assert img.shape == (48, 64, 3)
        assert _bar_index(img) == i, f"frame {i} decoded as {_bar_index(img)}"
    # colour order is RGB: green channel 40, red 0 away from the bar
    assert abs(int(seq.read(0)[30, 50, 1]) - 40) < 6 and seq.read(0)[30, 50, 0] < 10
    short = open_video(path, K=np.eye(3), fps=30, max_frames=5)
    assert len(short) == 5
    np.testing.assert_allclose(short.timestamps[-1], 4 / 30)


def test_sequential_read_decodes_forward(tmp_path, monkeypatch):
    path = _write_video(tmp_path / "clip.avi", 8)
    seq = open_video(path, K=np.eye(3))
    restarts = []
    orig = seq._restart
    monkeypatch.setattr(seq, "_restart", lambda i: (restarts.append(i), orig(i)))
    for i in range(7):
        seq.read(i)
        seq.read(i + 1)
    assert restarts == [0]  # opened once, then only decoded forward
    seq.read(2)  # going back seeks
    assert restarts == [0, 2]
    import pickle

    monkeypatch.undo()
    clone = pickle.loads(pickle.dumps(seq))  # capture dropped, re-opened lazily
    assert _bar_index(clone.read(6)) == 6


def test_errors(tmp_path):
    path = _write_video(tmp_path / "clip.avi", 3)
    with pytest.raises(InputError, match="--intrinsics"):
        open_sequence(path)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="bad.mp4: cannot"):
        open_sequence(bad, intrinsics=K)
    one = _write_video(tmp_path / "one.avi", 1)
    with pytest.raises(InputError, match="at least 2"):
        open_sequence(one, intrinsics=K)


def test_mp4_and_lying_container(tmp_path, monkeypatch):
    path = _write_video(tmp_path / "clip.mp4", 10, fourcc="mp4v")
    seq = open_video(path, K=np.eye(3))
    assert len(seq) == 10
    assert [_bar_index(seq.read(i)) for i in (0, 6, 2, 9, 1)] == [0, 6, 2, 9, 1]

    import trianflow.data.video as video

    real = cv2.VideoCapture
    for reported in (25, 4, 0):  # too many, too few, unknown

        class Lying:  # a capture whose container reports a wrong frame count
            def __init__(self, *args):
                self._cap = real(*args)

            def get(self, prop, reported=reported):
                return float(reported) if prop == cv2.CAP_PROP_FRAME_COUNT else self._cap.get(prop)

            def __getattr__(self, name):
                return getattr(self._cap, name)

        monkeypatch.setattr(video.cv2, "VideoCapture", Lying)
        assert count_frames(path) == 10, reported
        assert count_frames(path, limit=7) == 7
        monkeypatch.undo()
