"""Tests for trianflow.data.toy (the dataset of the ``toy`` training task)."""

from __future__ import annotations

import torch

from trianflow.data.toy import ToyDataset


def test_toy_dataset_targets_are_exact_and_fixed():
    a, b = ToyDataset(5, 4), ToyDataset(5, 4)
    assert len(a) == 5
    s = a[2]
    assert s["x"].shape == (4,) and s["y"].shape == (4,) and s["z"].shape == (1,) and s["frame_id"] == "toy/2"
    torch.testing.assert_close(s["y"], a.A @ s["x"] + a.b)
    torch.testing.assert_close(s["z"], (s["y"] * a.w).sum().reshape(1))
    torch.testing.assert_close(b[2]["x"], s["x"])  # the same data in every instance (fixed data seed)


def test_toy_dataset_noise_jitters_the_input_only():
    clean, noisy = ToyDataset(3, 4), ToyDataset(3, 4, noise=0.1)
    torch.manual_seed(0)
    s = noisy[1]
    assert not torch.equal(s["x"], clean[1]["x"]) and (s["x"] - clean[1]["x"]).abs().max() < 1.0
    torch.testing.assert_close(s["y"], clean[1]["y"])
    torch.manual_seed(0)
    torch.testing.assert_close(noisy[1]["x"], s["x"])  # the jitter follows the global torch RNG


def test_toy_task_reexports_the_dataset():
    from trianflow.training import toy

    assert toy.ToyDataset is ToyDataset
