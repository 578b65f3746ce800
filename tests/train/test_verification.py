"""Verification and retrieval metrics against values known independently of the code."""

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch

from mobilenets.train.verification import pair_scores, plot_roc, recall_at_k, roc_curve, tar_at_far, verify


def test_tar_at_far_matches_two_gaussians() -> None:
    """Impostor scores N(0, 1), genuine N(2, 1): TAR at FAR f is Φ(2 - Φ⁻¹(1 - f))."""
    generator = torch.Generator().manual_seed(0)
    impostor = torch.randn(2_000_000, generator=generator, dtype=torch.float64)
    genuine = 2 + torch.randn(200_000, generator=generator, dtype=torch.float64)
    normal = NormalDist()
    for far in (1e-4, 1e-3):
        expected = normal.cdf(2 - normal.inv_cdf(1 - far))
        assert tar_at_far(genuine, impostor, far) == pytest.approx(expected, abs=0.01)


def test_tar_at_far_threshold_accepts_at_most_far_of_the_impostors() -> None:
    impostor = torch.arange(1000, dtype=torch.float64) / 1000  # 0.000 ... 0.999
    genuine = torch.tensor([0.9965, 0.9975, 0.9985, 0.5], dtype=torch.float64)
    # FAR 3e-3 accepts 3 of the 1000 impostors: those above 0.996, the 4th highest
    assert tar_at_far(genuine, impostor, 3e-3) == 0.75
    assert tar_at_far(genuine, impostor, 1e-4) == 0.0  # none may pass: above 0.999
    with pytest.raises(ValueError, match="far must be in"):
        tar_at_far(genuine, impostor, 0.0)


def test_pairs_are_counted_per_class() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    genuine, impostor = pair_scores(torch.randn(6, 4), labels)
    assert len(genuine) == 3 + 1  # C(3, 2) + C(2, 2)
    assert len(impostor) == 15 - 4


def _on_circle(degrees: list[float]) -> torch.Tensor:
    radians = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([radians.cos(), radians.sin()], dim=1)


def test_recall_at_k_on_a_hand_made_example() -> None:
    # a0 at 0°, a1 at 10° (class A); b0 at 4°, b1 at 90° (class B). Nearest others, in order:
    # a0: b0 a1 b1; a1: b0 a0 b1; b0: a0 a1 b1; b1: a1 b0 a0. First hit at rank 2, 2, 3, 2.
    embeddings = _on_circle([0, 10, 4, 90])
    labels = torch.tensor([0, 0, 1, 1])
    assert recall_at_k(embeddings, labels, (1, 2, 3)) == {1: 0.0, 2: 0.75, 3: 1.0}


def test_recall_leaves_out_queries_alone_in_their_class() -> None:
    embeddings = _on_circle([0, 5, 60])
    assert recall_at_k(embeddings, torch.tensor([0, 0, 1]), (1,)) == {1: 1.0}


def test_verify_separated_classes_and_roc(tmp_path) -> None:
    embeddings = torch.cat([_on_circle([0, 1, 2]), _on_circle([90, 91, 92]), _on_circle([180, 181])])
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    result = verify(embeddings, labels)
    assert (result.genuine_pairs, result.impostor_pairs) == (7, 21)
    assert result.tar == {1e-4: 1.0, 1e-3: 1.0}
    assert not result.resolved(1e-4)  # 21 impostor pairs cannot resolve a FAR of 1e-4
    assert result.recall == {1: 1.0, 5: 1.0}
    far, tar = result.roc
    assert far[0] == tar[0] == 0 and far[-1] == tar[-1] == 1
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0)
    plot_roc({"model": result}, tmp_path / "roc.png")
    assert (tmp_path / "roc.png").read_bytes().startswith(b"\x89PNG")


def test_roc_groups_tied_scores() -> None:
    far, tar = roc_curve(torch.tensor([0.5, 0.9]), torch.tensor([0.5, 0.1]))
    assert far.tolist() == [0.0, 0.0, 0.5, 1.0]
    assert tar.tolist() == [0.0, 0.5, 1.0, 1.0]


def test_verify_refuses_non_finite_embeddings() -> None:
    embeddings = torch.ones(4, 3)
    embeddings[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        verify(embeddings, torch.tensor([0, 0, 1, 1]))


def test_roc_agrees_with_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is not installed")
    generator = torch.Generator().manual_seed(1)
    genuine = (1 + torch.randn(300, generator=generator, dtype=torch.float64)).round(decimals=1)  # with ties
    impostor = torch.randn(700, generator=generator, dtype=torch.float64).round(decimals=1)
    far, tar = roc_curve(genuine, impostor)
    labels = np.r_[np.ones(300), np.zeros(700)]
    their_far, their_tar, _ = metrics.roc_curve(labels, torch.cat([genuine, impostor]).numpy(), drop_intermediate=False)
    assert np.allclose(far, their_far) and np.allclose(tar, their_tar)
