"""Tests for trianflow.losses.objective."""

import pytest
import torch

from trianflow.errors import InputError
from trianflow.losses.objective import LossResult, valid_mean, weighted_sum


def test_weighted_sum_values_and_gradient():
    a = torch.tensor(2.0, requires_grad=True)
    b = torch.tensor(3.0, requires_grad=True)
    total, named = weighted_sum({"a": a, "b": b, "c": torch.tensor(7.0)}, {"a": 0.5, "b": 2.0})
    assert total.item() == pytest.approx(7.0)
    assert named == {"a": 2.0, "b": 3.0, "c": 7.0, "total": 7.0}
    total.backward()
    assert a.grad.item() == 0.5 and b.grad.item() == 2.0


def test_weighted_sum_rejects_unknown_and_nan_weights():
    with pytest.raises(InputError, match="smoth"):
        weighted_sum({"smooth": torch.tensor(1.0)}, {"smoth": 1.0})
    with pytest.raises(InputError, match="finite"):
        weighted_sum({"smooth": torch.tensor(1.0)}, {"smooth": float("nan")})


def test_weighted_sum_non_strict_skips_other_stages():
    total, named = weighted_sum({"tri": torch.tensor(2.0)}, {"tri": 3.0, "flow": 1.0}, strict=False)
    assert total.item() == 6.0 and named == {"tri": 2.0, "total": 6.0}
    with pytest.raises(InputError):
        weighted_sum({"tri": torch.tensor(2.0)}, {"tri": 3.0, "flow": 1.0})


def test_weighted_sum_averages_per_sample_terms():
    total, _ = weighted_sum({"x": torch.tensor([1.0, 3.0])}, {"x": 2.0})
    assert total.item() == pytest.approx(4.0)


def test_valid_mean_skips_invalid_and_nan():
    v = torch.tensor([1.0, float("nan"), 3.0], requires_grad=True)
    out = valid_mean(v, torch.tensor([True, False, True]))
    assert out.item() == pytest.approx(2.0)
    out.backward()
    assert torch.isfinite(v.grad).all() and v.grad[1] == 0
    none = valid_mean(torch.tensor([5.0, 6.0], requires_grad=True), torch.tensor([False, False]))
    assert none.item() == 0 and none.requires_grad


def test_loss_result_unpacks():
    r = LossResult(torch.tensor(1.0), {"a": torch.tensor(1.0)}, {"total": torch.ones(2)})
    total, terms, per_sample = r
    assert total.item() == 1.0 and "a" in terms and per_sample["total"].shape == (2,)
