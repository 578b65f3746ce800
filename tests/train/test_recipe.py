import itertools
import math

import pytest
import torch
from torch import nn

from mobilenets import create_model
from mobilenets.train import ModelEma, RMSpropTF, build_scheduler, lr_factor, param_groups


def rmsprop_tf_by_hand(p: float, grads: list[float], lr: float, decay: float, momentum: float, eps: float, wd: float):
    """TensorFlow 1's RMSProp on one scalar, written out: ms starts at 1, eps inside the root."""
    ms, mom = 1.0, 0.0
    for g in grads:
        g = g + wd * p
        ms = decay * ms + (1 - decay) * g * g
        mom = momentum * mom + lr * g / math.sqrt(ms + eps)
        p -= mom
    return p


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_rmsprop_tf_matches_a_hand_computed_step(weight_decay: float) -> None:
    w = nn.Parameter(torch.tensor([2.0], dtype=torch.float64))
    opt = RMSpropTF([w], lr=0.1, decay=0.9, momentum=0.9, eps=1e-3, weight_decay=weight_decay)
    grads = [0.5, -0.25, 1.5]
    for g in grads:
        w.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
    expected = rmsprop_tf_by_hand(2.0, grads, 0.1, 0.9, 0.9, 1e-3, weight_decay)
    assert w.item() == pytest.approx(expected, rel=1e-12)
    # First step, by hand: ms = 0.9 + 0.1·0.25 = 0.925; step = 0.1·0.5 / √0.926.
    first = nn.Parameter(torch.tensor([2.0], dtype=torch.float64))
    first.grad = torch.tensor([0.5], dtype=torch.float64)
    RMSpropTF([first], lr=0.1, eps=1e-3).step()
    assert first.item() == pytest.approx(2.0 - 0.05 / math.sqrt(0.926), rel=1e-12)


def test_rmsprop_tf_differs_from_torch_rmsprop() -> None:
    # Same hyper-parameters, different arithmetic: this is why the TF variant exists here.
    a, b = (nn.Parameter(torch.ones(3)) for _ in range(2))
    for p in (a, b):
        p.grad = torch.full((3,), 0.01)
    RMSpropTF([a], lr=0.01, decay=0.9, momentum=0.9, eps=1e-3).step()
    torch.optim.RMSprop([b], lr=0.01, alpha=0.9, momentum=0.9, eps=1e-3).step()
    assert not torch.allclose(a, b)


def test_rmsprop_tf_rejects_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="momentum must be in"):
        RMSpropTF([nn.Parameter(torch.ones(1))], momentum=1.0)


def test_param_groups_spare_depthwise_bn_and_biases() -> None:
    model = create_model("mobilenet_v1_0.25_128", num_classes=3)
    groups = {g["name"]: g for g in param_groups(model, weight_decay=4e-5, depthwise_weight_decay=1e-6)}
    assert {k: g["weight_decay"] for k, g in groups.items()} == {"weights": 4e-5, "depthwise": 1e-6, "no_decay": 0.0}
    dw = model.features.block1.dw.conv.weight
    pw = model.features.block1.pw.conv.weight
    assert any(p is dw for p in groups["depthwise"]["params"])
    assert any(p is pw for p in groups["weights"]["params"])
    assert any(p is model.classifier.bias for p in groups["no_decay"]["params"])
    assert all(p.ndim == 1 for p in groups["no_decay"]["params"])
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


def test_schedules() -> None:
    steps, epochs = 10, 5
    exp = [
        lr_factor(s, steps_per_epoch=steps, epochs=epochs, warmup_epochs=1.0, schedule="exponential", decay=0.5)
        for s in range(steps * epochs)
    ]
    assert exp[0] == pytest.approx(0.1) and exp[9] == pytest.approx(1.0)  # warm-up ends as epoch 1 ends
    assert exp[10:20] == [0.5] * 10 and exp[20] == pytest.approx(0.25)  # ×0.5 per whole epoch
    cos = [
        lr_factor(s, steps_per_epoch=steps, epochs=epochs, warmup_epochs=1.0, schedule="cosine", decay=0.0)
        for s in range(steps * epochs + 1)
    ]
    assert cos[10] == pytest.approx(1.0) and cos[30] == pytest.approx(0.5) and cos[-1] == pytest.approx(0.0)
    assert all(a >= b for a, b in itertools.pairwise(cos[10:]))
    opt = RMSpropTF([nn.Parameter(torch.ones(1))], lr=0.2)
    scheduler = build_scheduler(
        opt, steps_per_epoch=steps, epochs=epochs, warmup_epochs=1.0, schedule="cosine", decay=0.98
    )
    for _ in range(30):
        opt.step()
        scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="schedule must be one of"):
        build_scheduler(opt, steps_per_epoch=steps, epochs=epochs, warmup_epochs=0.0, schedule="linear", decay=0.98)


def test_ema_warms_up_then_averages() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEma(model, decay=0.99)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].num_batches_tracked.fill_(7)
    before = ema.module[0].weight.clone()
    ema.update(model)
    # First update: decay min(0.99, 2/11); the average moves most of the way to the model.
    expected = before * (2 / 11) + 1.0 * (9 / 11)
    torch.testing.assert_close(ema.module[0].weight, expected)
    assert int(ema.module[1].num_batches_tracked) == 7
    for _ in range(2000):
        ema.update(model)
    assert ema.current_decay() == 0.99
    torch.testing.assert_close(ema.module[0].weight, torch.ones(2, 2))
    assert not any(p.requires_grad for p in ema.module.parameters())
