"""Tests of the plain image-folder reader and the shared image helpers."""

import cv2
import numpy as np
import pytest

from trianflow.data import open_sequence
from trianflow.data.image_folder import (
    list_images,
    natural_key,
    open_image_folder,
    read_image,
    read_intrinsics_file,
)
from trianflow.errors import InputError


def _write(folder, names, size=(20, 30), colour=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    out = {}
    for n in names:
        img = rng.integers(0, 255, size + ((3,) if colour else ()), dtype=np.uint8)
        cv2.imwrite(str(folder / n), img)
        out[n] = img
    return out


def test_natural_order_and_reading(tmp_path):
    names = ["frame10.png", "frame2.png", "frame1.jpg", "Frame3.PNG", "frame11.bmp", "frame4.tiff"]
    imgs = _write(tmp_path / "f", names)
    (tmp_path / "f" / "notes.txt").write_text("x")
    (tmp_path / "f" / "intrinsics.txt").write_text("# fx fy cx cy\n100, 101, 14.5, 9.5\n")
    assert [p.name for p in list_images(tmp_path / "f")] == [
        "frame1.jpg", "frame2.png", "Frame3.PNG", "frame4.tiff", "frame10.png", "frame11.bmp"]
    assert sorted(["a10", "a2", "a1"], key=natural_key) == ["a1", "a2", "a10"]
    seq = open_sequence(tmp_path / "f", fps=5)
    assert seq.kind == "image_folder" and len(seq) == 6 and seq.size == (20, 30)
    np.testing.assert_allclose(seq.K, [[100, 0, 14.5], [0, 101, 9.5], [0, 0, 1]])
    np.testing.assert_allclose(seq.timestamps, np.arange(6) / 5)
    np.testing.assert_array_equal(seq.read(1), imgs["frame2.png"][..., ::-1])  # BGR on disk -> RGB
    default = open_image_folder(tmp_path / "f", K=np.eye(3) * [50, 50, 1], max_frames=3)
    assert len(default) == 3 and default.K[0, 0] == 50
    np.testing.assert_allclose(default.timestamps, [0, 0.1, 0.2])  # 10 fps default


def test_grey_16bit_alpha(tmp_path):
    g = np.arange(200, dtype=np.uint8).reshape(10, 20)
    cv2.imwrite(str(tmp_path / "g.png"), g)
    assert read_image(tmp_path / "g.png").shape == (10, 20)
    cv2.imwrite(str(tmp_path / "h.png"), g.astype(np.uint16) * 256)
    np.testing.assert_array_equal(read_image(tmp_path / "h.png"), g)
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 2] = 200  # red in BGRA
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    out = read_image(tmp_path / "a.png")
    assert out.shape == (4, 5, 3) and out[0, 0, 0] == 200 and out[0, 0, 2] == 0


def test_intrinsics_files(tmp_path):
    f = tmp_path / "k.txt"
    f.write_text("500 0 320\n0 510 240\n0 0 1\n")
    np.testing.assert_allclose(read_intrinsics_file(f), [[500, 0, 320], [0, 510, 240], [0, 0, 1]])
    f.write_text("P0: 700 0 600 0 0 700 180 0 0 0 1 0\n")
    assert read_intrinsics_file(f)[1, 2] == 180
    f.write_text("500 500 320\n")
    with pytest.raises(InputError, match=r"k.txt:1: expected"):
        read_intrinsics_file(f)
    f.write_text("fx fy cx cy\n")
    with pytest.raises(InputError, match=r"k.txt:1"):
        read_intrinsics_file(f)
    f.write_text("-5 500 320 240\n")
    with pytest.raises(InputError, match="fx, fy > 0"):
        read_intrinsics_file(f)


def test_errors(tmp_path):
    with pytest.raises(InputError, match="no such"):
        open_sequence(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found"):
        open_sequence(tmp_path / "empty", intrinsics="1,1,0,0")
    _write(tmp_path / "noK", ["a.png", "b.png"])
    with pytest.raises(InputError, match="--intrinsics"):
        open_sequence(tmp_path / "noK")
    _write(tmp_path / "one", ["a.png"])
    with pytest.raises(InputError, match="at least 2"):
        open_sequence(tmp_path / "one", intrinsics="1,1,0,0")
    _write(tmp_path / "mixed", ["a.png", "b.png"])
    _write(tmp_path / "mixed", ["c.jpg"], size=(21, 30))
    (tmp_path / "mixed" / "d.png").write_bytes(b"\x89PNG garbage")
    seq = open_sequence(tmp_path / "mixed", intrinsics="1,1,0,0")
    seq.read(1)
    with pytest.raises(InputError, match=r"c.jpg: image is 30x21"):  # JPEG: found when decoded
        seq.read(2)
    with pytest.raises(InputError, match=r"d.png: cannot read"):
        seq.read(3)
    _write(tmp_path / "mixed", ["e.png"], size=(20, 31))
    with pytest.raises(InputError, match=r"e.png: image is 31x20"):  # PNG: found at open from the header
        open_sequence(tmp_path / "mixed", intrinsics="1,1,0,0")
    (tmp_path / "badK").mkdir()
    _write(tmp_path / "badK", ["a.png", "b.png"])
    (tmp_path / "badK" / "calib.txt").write_text("1 2\n")
    with pytest.raises(InputError, match=r"calib.txt:1"):
        open_sequence(tmp_path / "badK")
