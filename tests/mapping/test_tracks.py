"""FlowTracks: exact advection under known flows, forward-backward rejection, grid spawning,
Lucas-Kanade refinement of a biased flow prediction, brightness matching."""

import cv2
import numpy as np
import pytest

from trianflow.flow_backends import to_gray
from trianflow.mapping.tracks import FlowTracks, TrackObservations, bilinear_sample, image_stats, match_brightness


def test_bilinear_sample_is_exact_on_affine_fields():
    h, w = 20, 30
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    field = np.stack([2 * xx + 3 * yy + 1, -xx + 0.5 * yy], axis=2)
    xy = np.array([[0.0, 0.0], [3.25, 7.5], [28.9, 18.1], [29.0, 19.0], [-1.0, 5.0], [31.0, 2.0]])
    v, inside = bilinear_sample(field, xy)
    expect = np.stack([2 * xy[:, 0] + 3 * xy[:, 1] + 1, -xy[:, 0] + 0.5 * xy[:, 1]], 1)
    assert np.allclose(v[inside], expect[inside], atol=1e-4)
    assert inside.tolist() == [True, True, True, True, False, False]


def test_advance_follows_a_constant_flow_and_drops_leaving_points():
    tr = FlowTracks((40, 60), border=2.0, cell_px=4)
    ids = tr.spawn(np.array([[10.0, 10.0], [50.0, 20.0], [30.0, 30.0]]))
    assert ids.tolist() == [0, 1, 2]
    fwd = np.zeros((40, 60, 2), np.float32)
    fwd[..., 0] = 6.5
    fwd[..., 1] = -1.25
    bwd = -fwd
    keep = tr.advance(fwd, bwd)
    assert keep.tolist() == [True, True, True]
    assert np.allclose(tr.xy, [[16.5, 8.75], [56.5, 18.75], [36.5, 28.75]])
    keep = tr.advance(fwd, bwd)  # track 1 reaches x = 63 > 60 - 1 - 2: dropped
    assert keep.tolist() == [True, False, True]
    assert tr.ids.tolist() == [0, 2]


def test_forward_backward_check_rejects_inconsistent_flow():
    tr = FlowTracks((40, 60), max_fb_px=1.0, cell_px=4)
    tr.spawn(np.array([[10.0, 10.0], [40.0, 10.0]]))
    fwd = np.zeros((40, 60, 2), np.float32)
    fwd[..., 0] = 3.0
    bwd = -fwd.copy()
    bwd[:, 35:, 0] = -1.0  # wrong backward flow on the right: |3 - 1| = 2 px > 1 px
    keep = tr.advance(fwd, bwd)
    assert keep.tolist() == [True, False]


def test_spawn_one_track_per_free_cell_best_first():
    tr = FlowTracks((64, 64), cell_px=16)
    first = tr.spawn(np.array([[5.0, 5.0], [6.0, 6.0], [20.0, 5.0], [40.0, 40.0]]))
    assert first.tolist() == [0, 1, 2]  # (6,6) shares the cell of (5,5)
    assert np.allclose(tr.xy, [[5, 5], [20, 5], [40, 40]])
    more = tr.spawn(np.array([[8.0, 8.0], [60.0, 60.0]]), max_new=5)
    assert more.tolist() == [3]  # (8,8) lies in an occupied cell
    xy, found = tr.positions(np.array([3, 1, 99]))
    assert found.tolist() == [True, True, False] and np.allclose(xy[:2], [[60, 60], [20, 5]])


def test_observations_are_recorded_per_call():
    tr = FlowTracks((32, 32), cell_px=8)
    tr.spawn(np.array([[4.0, 4.0], [20.0, 20.0]]))
    o0 = tr.observe(0)
    fwd = np.full((32, 32, 2), 1.0, np.float32)
    tr.advance(fwd, -fwd)
    tr.observe(3)
    tr.observe(3)  # observing the same frame twice keeps one copy
    obs = tr.observations()
    assert isinstance(o0, TrackObservations) and len(obs) == 4
    assert obs.frame.tolist() == [0, 0, 3, 3] and obs.track.tolist() == [0, 1, 0, 1]
    assert np.allclose(obs.xy[2:], [[5, 5], [21, 21]])
    assert len(obs.select(obs.frame == 3)) == 2


def _texture(h, w, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.uniform(0, 255, (h // 4, w // 4)).astype(np.float32)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(img, (0, 0), 1.0)


def test_lucas_kanade_refines_a_biased_flow_prediction():
    h, w = 120, 160
    base = _texture(h, w)
    shift = np.array([2.3, -1.6])
    M = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
    img1 = np.clip(base, 0, 255).astype(np.uint8)
    img2 = np.clip(cv2.warpAffine(base, M, (w, h), flags=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)
    pts = np.stack(np.meshgrid(np.arange(30, 130, 20.0), np.arange(30, 90, 20.0)), -1).reshape(-1, 2)
    fwd = np.zeros((h, w, 2), np.float32)
    fwd[...] = shift + np.array([0.7, -0.6])  # the dense flow is off by ~0.9 px
    plain = FlowTracks((h, w), cell_px=4)
    plain.spawn(pts)
    plain.advance(fwd, None)
    refined = FlowTracks((h, w), cell_px=4)
    refined.spawn(pts)
    keep = refined.advance(fwd, None, img1, img2)
    assert keep.mean() > 0.9
    err_plain = np.linalg.norm(plain.xy - (pts + shift), axis=1)
    err_lk = np.linalg.norm(refined.xy - (pts[keep] + shift), axis=1)
    assert np.median(err_plain) > 0.8 and np.median(err_lk) < 0.1


def test_lucas_kanade_survives_an_exposure_change():
    h, w = 120, 160
    base = _texture(h, w, seed=1)
    img1 = np.clip(base, 0, 255).astype(np.uint8)
    img2 = np.clip(base * 0.4 + 10, 0, 255).astype(np.uint8)  # darker, same geometry
    pts = np.stack(np.meshgrid(np.arange(30, 130, 20.0), np.arange(30, 90, 20.0)), -1).reshape(-1, 2)
    tr = FlowTracks((h, w), cell_px=4)
    tr.spawn(pts)
    keep = tr.advance(np.zeros((h, w, 2), np.float32), None, img1, img2)
    assert keep.mean() > 0.9
    assert np.abs(tr.xy - pts[keep]).max() < 0.1


def test_match_brightness_maps_mean_and_std():
    rng = np.random.default_rng(0)
    ref = rng.integers(50, 200, (40, 40)).astype(np.uint8)
    dark = (ref * 0.5).astype(np.uint8)
    out = match_brightness(dark, ref)
    assert abs(out.mean() - ref.mean()) < 1.0 and abs(out.std() - ref.std()) < 1.5
    assert match_brightness(ref, ref) is ref  # nothing to do


def test_lucas_kanade_reuses_the_reference_statistics_and_matches_a_fresh_tracker():
    """The chained LK caches the previous frame's brightness statistics: the same tracks as a tracker
    that computes them anew at every step (exposure changing along the way)."""
    h, w = 120, 160
    base = _texture(h, w, seed=2)
    frames = [np.clip(np.roll(base, k, axis=1) * g + o, 0, 255).astype(np.uint8)
              for k, g, o in [(0, 1.0, 0), (1, 0.6, 5), (2, 0.6, 5), (3, 1.2, -10)]]
    pts = np.stack(np.meshgrid(np.arange(30, 130, 20.0), np.arange(30, 90, 20.0)), -1).reshape(-1, 2)
    flow = np.zeros((h, w, 2), np.float32)
    flow[..., 0] = 1.0
    cached, fresh = FlowTracks((h, w), cell_px=4), FlowTracks((h, w), cell_px=4)
    cached.spawn(pts)
    fresh.spawn(pts)
    for a, b in zip(frames[:-1], frames[1:]):
        cached.advance(flow, None, a, b)
        fresh._stats = (None, None)  # forget the cache: statistics computed from the images
        fresh.advance(flow, None, a, b)
        assert np.array_equal(cached.ids, fresh.ids) and np.array_equal(cached.xy, fresh.xy)
    assert len(cached) > 0.8 * len(pts)
    assert cached._stats[0] is frames[-1]
    ref, img = frames[0], frames[1]
    assert np.array_equal(match_brightness(img, ref, image_stats(img), image_stats(ref)), match_brightness(img, ref))


def test_to_gray_takes_the_channel_of_grey_rgb_and_converts_colour():
    rng = np.random.default_rng(3)
    g = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    grey_rgb = np.repeat(g[:, :, None], 3, axis=2)
    out = to_gray(grey_rgb)
    assert out.flags["C_CONTIGUOUS"] and np.array_equal(out, g)
    colour = grey_rgb.copy()
    colour[5, 7, 2] ^= 1  # one blue value differs: a colour image
    assert np.array_equal(to_gray(colour), cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY))
    assert np.array_equal(to_gray(grey_rgb[::-1]), g[::-1])  # a view with negative strides
    assert to_gray(g) is g


@pytest.mark.parametrize("bad", [np.array([[np.nan, 3.0]]), np.array([[-5.0, 3.0]])])
def test_spawn_ignores_invalid_candidates(bad):
    tr = FlowTracks((32, 32))
    assert len(tr.spawn(bad)) == 0 and len(tr) == 0
