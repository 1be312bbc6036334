"""trianflow.io.point_store: the pairs' points in memory, or spilled to disk on long runs."""

import io

import numpy as np
import pytest

from trianflow.io.point_store import POINT_FIELDS, PointStore, SpilledPoints, write_npz


def _chunk(rng, frame, n):
    return (np.full(n, frame, np.int32), rng.normal(size=(n, 3)).astype(np.float32),
            rng.uniform(0, 100, (n, 2)).astype(np.float32), rng.integers(0, 255, (n, 3)).astype(np.uint8),
            rng.uniform(0, 100, (n, 2)).astype(np.float32))


def _fill(store, n_pairs=30, seed=0):
    rng = np.random.default_rng(seed)
    chunks = [_chunk(rng, f, int(rng.integers(0, 400))) for f in range(n_pairs)]
    for c in chunks:
        store.append(c)
    return {k: np.concatenate([c[i] for c in chunks]) for i, k in enumerate(POINT_FIELDS)}, chunks


def _npz(points):
    buf = io.BytesIO()
    write_npz(buf, points)
    buf.seek(0)
    with np.load(buf) as z:
        return {k: z[k] for k in z.files}


def test_small_run_stays_a_dict():
    store = PointStore()
    want, chunks = _fill(store)
    assert len(store) == len(chunks)
    np.testing.assert_array_equal(store.last[1], chunks[-1][1])  # the latest pair (what a live viewer draws)
    got = store.finish()
    assert isinstance(got, dict) and list(got) == list(POINT_FIELDS)
    for k in POINT_FIELDS:
        np.testing.assert_array_equal(got[k], want[k])
        assert got[k].dtype == want[k].dtype
    back = _npz(got)
    for k in POINT_FIELDS:
        np.testing.assert_array_equal(back[k], want[k])


def test_spilled_points_read_move_and_write_like_the_dict(tmp_path):
    store = PointStore(spill_bytes=20_000, spill_dir=str(tmp_path))  # spills every few pairs
    want, _ = _fill(store, n_pairs=40, seed=1)
    got = store.finish()
    assert isinstance(got, SpilledPoints) and got.rows == len(want["frame"])
    folder = got.folder
    assert folder.parent == tmp_path and sorted(p.name for p in folder.iterdir()) == sorted(POINT_FIELDS)
    for k in POINT_FIELDS:
        np.testing.assert_array_equal(got[k], want[k])
    # chunked reads smaller than the file, and an in-place move of xyz by frame
    assert sum(len(c) for c in got.chunks("xyz", rows=333)) == got.rows
    got.move_xyz(lambda fr, xyz: xyz * 2 + fr[:, None])
    moved = want["xyz"] * 2 + want["frame"][:, None]
    np.testing.assert_allclose(got["xyz"], moved.astype(np.float32))
    back = _npz(got)
    np.testing.assert_allclose(back["xyz"], moved.astype(np.float32))
    for k in ("frame", "xy", "rgb", "xy2"):
        np.testing.assert_array_equal(back[k], want[k])
        assert back[k].dtype == np.dtype(POINT_FIELDS[k][0])
    with pytest.raises(KeyError):
        got["nope"]
    got.close()
    assert not folder.exists()


def test_empty_store():
    got = PointStore().finish()
    assert all(len(v) == 0 for v in got.values())
    assert got["xyz"].shape == (0, 3) and got["frame"].shape == (0,)
