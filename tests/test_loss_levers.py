"""Hard-pixel mining (top-k cross-entropy) and Lovasz-softmax on tiny tensors, checked by hand and by brute force."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from seglab.errors import ConfigError
from seglab.training.config import make_config
from seglab.training.losses import LovaszSoftmaxLoss, TopKCrossEntropyLoss, build_loss

IGNORE = 255


def test_top_k_cross_entropy_averages_the_hardest_labelled_pixels():
    # Four labelled pixels of two classes, one ignored; logits 0 for class 0 and x for class 1.
    x = torch.tensor([[0.0, 1.0, -2.0, 3.0, 9.0]])
    logits = torch.stack([torch.zeros_like(x), x], dim=1)[..., None]  # (1, 2, 5, 1)
    target = torch.tensor([[0, 0, 1, 1, IGNORE]])[..., None]
    per_pixel = [math.log(2), math.log(1 + math.e), math.log(1 + math.exp(2)), math.log(1 + math.exp(-3))]
    # Half of the 4 labelled pixels: the two largest losses (pixel 2, then pixel 1); the ignored one never counts.
    half = TopKCrossEntropyLoss(ignore_index=IGNORE, top_fraction=0.5)(logits, target)
    assert half.item() == pytest.approx((per_pixel[2] + per_pixel[1]) / 2, abs=1e-6)
    # A fraction of 1 is plain cross-entropy; 0.1 keeps at least one pixel (the hardest).
    assert TopKCrossEntropyLoss(top_fraction=1.0)(logits, target).item() == pytest.approx(
        F.cross_entropy(logits, target, ignore_index=IGNORE).item(), abs=1e-6)
    assert TopKCrossEntropyLoss(top_fraction=0.1)(logits, target).item() == pytest.approx(per_pixel[2], abs=1e-6)
    with pytest.raises(ConfigError, match="ohem_top_fraction"):
        make_config({"loss": "ohem_ce", "ohem_top_fraction": 0})


def brute_force_lovasz(errors: list[float], truth: list[bool]) -> float:
    """The Lovasz extension of the Jaccard loss of one class, from its definition with explicit sets: pixels in
    decreasing error order, each weighted by how much adding it grows Delta(S) = |S| / |truth u S|."""
    foreground = {i for i, t in enumerate(truth) if t}
    order = sorted(range(len(errors)), key=lambda i: -errors[i])

    def delta(chosen: set[int]) -> float:
        return len(chosen) / len(foreground | chosen) if chosen else 0.0

    return sum(errors[i] * (delta(set(order[:k + 1])) - delta(set(order[:k]))) for k, i in enumerate(order))


def test_lovasz_softmax_matches_the_definition_and_iou():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 3, 4)
    target = torch.randint(0, 3, (2, 3, 4))
    target[0, 0, :2] = IGNORE
    target[:, :, 3] = torch.where(target[:, :, 3] == 2, 0, target[:, :, 3])  # keep class 2 rarer
    probabilities = logits.softmax(1)

    def expected(images) -> float:
        # Mean over the classes present in the labelled truth of each pixel set, brute force per class.
        losses = []
        for probs, truth in images:
            keep = truth != IGNORE
            labels, probs = truth[keep].tolist(), probs.permute(1, 2, 0)[keep]
            per_class = [brute_force_lovasz([abs((lab == c) - p) for lab, p in zip(labels, probs[:, c].tolist(),
                                                                                    strict=True)],
                                            [lab == c for lab in labels]) for c in sorted(set(labels))]
            losses.append(sum(per_class) / len(per_class))
        return sum(losses) / len(losses)

    batch = LovaszSoftmaxLoss(ignore_index=IGNORE)(logits, target)
    flat = [(probabilities.permute(1, 0, 2, 3).reshape(3, 1, -1), target.reshape(1, -1))]
    assert batch.item() == pytest.approx(expected(flat), abs=1e-5)  # the batch as one set of pixels
    per_image = LovaszSoftmaxLoss(ignore_index=IGNORE, per_image=True)(logits, target)
    assert per_image.item() == pytest.approx(expected(zip(probabilities, target, strict=True)), abs=1e-5)
    # On (near) one-hot predictions the loss is 1 - IoU of each class, averaged over the classes present.
    predicted = torch.tensor([[0, 0, 1, 1, 2, 2]])
    truth = torch.tensor([[0, 0, 0, 1, 1, IGNORE]])
    hard = 60.0 * F.one_hot(predicted, 3).permute(0, 2, 1)[..., None].float()
    ious = {0: 2 / 3, 1: 1 / 3}  # class 0: 2 of 3; class 1: 1 of 3 (pixel 5 is ignored); class 2 absent in truth
    assert LovaszSoftmaxLoss(ignore_index=IGNORE)(hard, truth[..., None]).item() == pytest.approx(
        sum(1 - iou for iou in ious.values()) / 2, abs=1e-6)


@pytest.mark.parametrize("name", ["ohem_ce", "lovasz", "ce_lovasz"])
def test_levers_give_a_finite_zero_on_an_all_ignore_batch(name):
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = build_loss(name, ignore_index=IGNORE, lovasz_per_image=name == "lovasz")(
        logits, torch.full((2, 4, 4), IGNORE))
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_levers_learn_and_are_config_choices():
    # A few steps on one tiny image drive every lever's loss down, and each is a valid config value.
    for name in ("ohem_ce", "lovasz", "ce_lovasz"):
        assert make_config({"loss": name}).loss == name
        torch.manual_seed(0)
        logits = torch.zeros(1, 3, 4, 4, requires_grad=True)
        target = torch.tensor(list(itertools.islice(itertools.cycle([0, 1, 2, IGNORE]), 16))).view(1, 4, 4)
        loss_fn = build_loss(name, ignore_index=IGNORE, ohem_top_fraction=0.5)
        optimizer = torch.optim.SGD([logits], lr=10.0)
        first = loss_fn(logits, target).item()
        for _ in range(20):
            optimizer.zero_grad()
            loss = loss_fn(logits, target)
            loss.backward()
            optimizer.step()
        assert loss.item() < 0.5 * first
