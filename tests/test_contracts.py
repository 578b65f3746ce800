"""Contracts every registered classifier must keep, whatever its family (detectors: tests/models/test_detection.py)."""

from dataclasses import replace

import pytest
import torch

from mobilenets import FeatureExtractor, create_model, get_entry, list_models
from mobilenets.registry import CLASSIFICATION

RES = 64  # small inputs keep the suite fast; every model accepts any size >= 32


def representatives() -> list[str]:
    """One model per builder and architecture table: names differing only in width or resolution
    share their code paths."""
    seen: dict[object, str] = {}
    for model_name in list_models(task=CLASSIFICATION):
        entry = get_entry(model_name)
        seen.setdefault((entry.builder.__name__, entry.defaults.get("variant")), model_name)
    return sorted(seen.values())


@pytest.fixture(params=list_models(task=CLASSIFICATION), ids=str)
def name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=representatives(), ids=str)
def representative(request: pytest.FixtureRequest) -> str:
    return request.param


def test_meta(name: str) -> None:
    model = create_model(name)
    entry = get_entry(name)
    assert model.meta.name == name and model.meta.family == entry.family
    assert model.meta.resolution >= 32 and model.meta.num_classes == 1000
    assert len(model.meta.mean) == len(model.meta.std) == 3


def test_forward_backward(name: str) -> None:
    model = create_model(name, num_classes=5).train()
    x = torch.randn(2, 3, RES, RES)
    out = model(x)
    assert out.shape == (2, 5)
    out.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_export(representative: str) -> None:
    model = create_model(representative, num_classes=5).eval()
    x = torch.randn(1, 3, RES, RES)
    exported = torch.export.export(model, (x,), strict=False)
    torch.testing.assert_close(exported.module()(x), model(x))


def test_features_match_declared(name: str) -> None:
    model = create_model(name, num_classes=0).eval()
    extractor = FeatureExtractor(model)
    maps = extractor(torch.randn(1, 3, RES, RES))
    assert [info.reduction for info in extractor.info] == sorted({i.reduction for i in model.feature_info})
    for info, fmap in zip(extractor.info, maps.values(), strict=True):
        assert fmap.shape[1] == info.channels
        assert fmap.shape[-1] == RES // info.reduction
    last = model.forward_features(torch.randn(1, 3, RES, RES))
    assert last.shape[1] == model.num_features == extractor.info[-1].channels
    assert model(torch.randn(2, 3, RES, RES)).shape == (2, model.num_features)


def test_extractor_exports(representative: str) -> None:
    extractor = FeatureExtractor(create_model(representative)).eval()
    x = torch.randn(1, 3, RES, RES)
    exported = torch.export.export(extractor, (x,), strict=False).module()
    got, want = exported(x), extractor(x)
    assert list(got) == list(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key])


def test_reset_classifier_and_meta_follow(representative: str) -> None:
    model = create_model(representative).double()
    model.meta = replace(model.meta, labels=("a",) * 1000)
    model.reset_classifier(7)
    assert model.get_classifier() is model.classifier and model.classifier.out_features == 7
    assert (model.num_classes, model.meta.num_classes, model.meta.labels) == (7, 7, ())
    assert model(torch.randn(2, 3, RES, RES, dtype=torch.float64)).shape == (2, 7)
    model.reset_classifier(0)
    features = model(torch.randn(2, 3, RES, RES, dtype=torch.float64))
    assert features.shape == (2, model.num_features) and model.meta.num_classes == 0
    with pytest.raises(ValueError, match="num_classes must be"):
        model.reset_classifier(-1)


def test_batchnorm_settings_reach_every_batchnorm(representative: str) -> None:
    for choice, (momentum, eps) in {"torch": (0.1, 1e-5), "tf": (0.003, 1e-3)}.items():
        model = create_model(representative, batchnorm=choice)
        norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert norms and all((bn.momentum, bn.eps) == (momentum, eps) for bn in norms)
