import torch

from trianflow.geometry.epipolar import (decompose_essential, eight_point, essential_from_fundamental,
                                         essential_from_pose, fundamental_from_essential, normalize_points,
                                         point_line_distance, pose_from_essential, refine_relative_pose,
                                         sampson_distance, symmetric_epipolar_distance)
from trianflow.geometry.pose import axis_angle_to_matrix, rotation_error_deg, translation_angle_deg

from .conftest import make_scene


def test_essential_and_fundamental_satisfy_constraint():
    s = make_scene()
    E = essential_from_pose(s["R"], s["t"])
    F = fundamental_from_essential(E, s["K"], s["K"])
    assert sampson_distance(F, s["x1"], s["x2"]).max() < 1e-8
    assert symmetric_epipolar_distance(F, s["x1"], s["x2"]).max() < 1e-8
    assert point_line_distance(F, s["x1"], s["x2"]).max() < 1e-8
    E2 = essential_from_fundamental(F, s["K"], s["K"])
    assert torch.allclose(E2 / E2.norm(dim=(1, 2), keepdim=True) * torch.sign(E2[:, 0, 1:2, None] * E[:, 0, 1:2, None]),
                          E / E.norm(dim=(1, 2), keepdim=True), atol=1e-10)


def test_point_line_distance_known_value():
    # pure x-translation: epipolar lines are horizontal rows; a 2 px vertical offset is 2 px away
    E = essential_from_pose(torch.eye(3, dtype=torch.float64)[None], torch.tensor([[1.0, 0, 0]], dtype=torch.float64))
    K = torch.eye(3, dtype=torch.float64)[None]
    F = fundamental_from_essential(E, K, K)
    x1 = torch.tensor([[[0.3, 0.1]]], dtype=torch.float64)
    x2 = torch.tensor([[[0.9, 2.1]]], dtype=torch.float64)
    assert torch.allclose(point_line_distance(F, x1, x2), torch.tensor([[2.0]], dtype=torch.float64))
    # Sampson distance halves it (error shared by both points) and squares on request
    assert torch.allclose(sampson_distance(F, x1, x2, squared=True), torch.tensor([[2.0]], dtype=torch.float64))


def test_eight_point_exact_on_clean_data():
    s = make_scene(n=50)
    x1n, x2n = normalize_points(s["x1"], s["K"]), normalize_points(s["x2"], s["K"])
    E = eight_point(x1n, x2n, essential=True)
    R, t, front, n = pose_from_essential(E, x1n, x2n)
    assert (rotation_error_deg(R, s["R"]) < 1e-6).all()
    assert (translation_angle_deg(t, s["t"]) < 1e-5).all()
    assert front.all()
    F = eight_point(s["x1"], s["x2"])
    assert sampson_distance(F, s["x1"], s["x2"]).max() < 1e-6
    assert torch.linalg.matrix_rank(F).eq(2).all()


def test_eight_point_weights_drop_points():
    s = make_scene(n=60)
    x1n, x2n = normalize_points(s["x1"], s["K"]), normalize_points(s["x2"], s["K"])
    x2bad = x2n.clone()
    x2bad[:, :10] += 0.2
    w = torch.ones(2, 60, dtype=torch.float64)
    w[:, :10] = 0
    E = eight_point(x1n, x2bad, weights=w, essential=True)
    R, t, _, _ = pose_from_essential(E, x1n, x2n)
    assert (rotation_error_deg(R, s["R"]) < 1e-6).all()


def test_decompose_gives_four_hypotheses_one_passes_cheirality():
    s = make_scene(n=100)
    E = essential_from_pose(s["R"], s["t"])
    R1, R2, t = decompose_essential(E)
    for R in (R1, R2):
        assert torch.allclose(torch.det(R), torch.ones(2, dtype=torch.float64))
    x1n, x2n = normalize_points(s["x1"], s["K"]), normalize_points(s["x2"], s["K"])
    R, tt, front, n = pose_from_essential(E, x1n, x2n)
    assert n.eq(100).all()
    assert (translation_angle_deg(tt, s["t"]) < 1e-6).all(), "sign of t fixed by cheirality"


def test_refinement_reduces_error_from_perturbed_start():
    s = make_scene(n=800, noise=0.3, seed=3)
    x1n, x2n = normalize_points(s["x1"], s["K"]), normalize_points(s["x2"], s["K"])
    R0 = s["R"] @ axis_angle_to_matrix(torch.tensor([0.004, -0.003, 0.002], dtype=torch.float64)).expand(2, 3, 3)
    t0 = s["t"] + torch.tensor([0.03, -0.02, 0.0], dtype=torch.float64)
    R, t = refine_relative_pose(R0, t0, x1n, x2n, iters=20)
    assert (rotation_error_deg(R, s["R"]) < 0.02).all()
    assert (translation_angle_deg(t, s["t"]) < 0.3).all()
    assert (rotation_error_deg(R, s["R"]) < rotation_error_deg(R0, s["R"]) / 5).all()


def test_analytic_sampson_jacobian_matches_finite_differences():
    """The LM refinement's analytic Jacobian equals central differences of the residual under the
    same update (R exp([w]x), normalize(t + Bt tau))."""
    from trianflow.geometry.epipolar import _exp_so3, _generators, _sampson_hom, _sampson_jacobian, _tangent_basis
    from trianflow.geometry.pose import skew

    s = make_scene(n=300, noise=0.5, seed=5)
    x1n, x2n = normalize_points(s["x1"], s["K"]), normalize_points(s["x2"], s["K"])
    X1 = torch.cat([x1n, torch.ones_like(x1n[..., :1])], -1).transpose(1, 2)
    X2 = torch.cat([x2n, torch.ones_like(x2n[..., :1])], -1).transpose(1, 2)
    R = s["R"] @ axis_angle_to_matrix(torch.tensor([0.01, -0.02, 0.005], dtype=torch.float64)).expand(2, 3, 3)
    t = s["t"] + torch.tensor([0.1, -0.05, 0.02], dtype=torch.float64)
    t = t / t.norm(dim=-1, keepdim=True)
    Bt, gens = _tangent_basis(t), _generators(R)
    r, J = _sampson_jacobian(R, t, Bt, X1, X2)
    assert torch.allclose(r, _sampson_hom(skew(t) @ R, X1, X2)[0])
    h = 1e-6
    for k in range(5):
        cols = []
        for sign in (1, -1):
            d = torch.zeros(2, 5, dtype=torch.float64)
            d[:, k] = sign * h
            Rk = R @ _exp_so3(d[:, :3], gens)
            tk = t + (Bt @ d[:, 3:].unsqueeze(-1)).squeeze(-1)
            cols.append(_sampson_hom(skew(tk / tk.norm(dim=-1, keepdim=True)) @ Rk, X1, X2)[0])
        numeric = (cols[0] - cols[1]) / (2 * h)
        assert torch.allclose(J[:, k], numeric, rtol=1e-5, atol=1e-9 * float(numeric.abs().max())), k
