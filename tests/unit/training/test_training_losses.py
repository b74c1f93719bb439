"""Losses: ignore_index pixels never count, class weights act as documented, the variants agree where they must.

Hard-pixel mining (top-k cross-entropy) and Lovasz-softmax are checked on tiny tensors by hand and by brute force.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from seglab.errors import ConfigError
from seglab.training.config import make_config
from seglab.training.losses import (
    LOSSES,
    LovaszSoftmaxLoss,
    TopKCrossEntropyLoss,
    build_loss,
    class_weights_from_frequencies,
)


def _batch(seed=0, classes=3, ignore_share=0.3):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, classes, 6, 7, generator=generator)
    target = torch.randint(0, classes, (2, 6, 7), generator=generator)
    ignored = torch.rand(2, 6, 7, generator=generator) < ignore_share
    return logits, torch.where(ignored, 255, target), ignored


@pytest.mark.parametrize("name", LOSSES)
def test_ignored_pixels_change_neither_loss_nor_gradient(name):
    loss_fn = build_loss(name, ignore_index=255)
    logits, target, ignored = _batch()
    logits.requires_grad_(True)
    loss = loss_fn(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert logits.grad[ignored.unsqueeze(1).expand_as(logits)].abs().max() == 0
    scrambled = torch.where(ignored.unsqueeze(1), torch.randn_like(logits) * 50, logits.detach())
    assert torch.allclose(loss_fn(scrambled, target), loss.detach(), atol=1e-6)


def test_cross_entropy_equals_the_mean_over_labelled_pixels():
    logits, target, ignored = _batch()
    valid = ~ignored
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], target[valid])
    assert torch.allclose(build_loss("ce")(logits, target), expected, atol=1e-6)


def test_class_weights_reweight_pixels_as_expected():
    logits, target, _ = _batch(ignore_share=0.0)
    per_pixel = F.cross_entropy(logits, target, reduction="none")
    # Weight 0 on classes 1 and 2: only class-0 pixels remain, averaged among themselves.
    only_zero = build_loss("ce", class_weights=[1.0, 0.0, 0.0])(logits, target)
    assert torch.allclose(only_zero, per_pixel[target == 0].mean(), atol=1e-6)
    # Weighted mean: sum(w_c * l) / sum(w_c) over pixels.
    weights = torch.tensor([1.0, 3.0, 0.5])
    expected = (weights[target] * per_pixel).sum() / weights[target].sum()
    assert torch.allclose(build_loss("ce", class_weights=weights.tolist())(logits, target), expected, atol=1e-6)
    for name in ("focal", "dice"):
        plain = build_loss(name)(logits, target)
        assert not torch.allclose(build_loss(name, class_weights=[1.0, 0.0, 0.0])(logits, target), plain)


def test_focal_with_gamma_zero_is_cross_entropy_and_down_weights_easy_pixels():
    logits, target, _ = _batch()
    assert torch.allclose(build_loss("focal", focal_gamma=0.0)(logits, target), build_loss("ce")(logits, target),
                          atol=1e-6)
    assert build_loss("focal", focal_gamma=2.0)(logits, target) < build_loss("ce")(logits, target)


def test_dice_is_near_zero_for_a_confident_correct_prediction_and_ce_dice_adds():
    _, target, _ = _batch()
    perfect = F.one_hot(torch.where(target == 255, 0, target), 3).permute(0, 3, 1, 2).float() * 40
    assert build_loss("dice")(perfect, target) < 1e-3
    logits, target, _ = _batch(seed=1)
    total = build_loss("ce_dice")(logits, target)
    assert torch.allclose(total, build_loss("ce")(logits, target) + build_loss("dice")(logits, target))


def test_median_frequency_weights():
    masks = [torch.tensor([[0, 0, 0, 0], [0, 0, 1, 1]]), torch.tensor([[0, 0, 1, 255], [255, 255, 255, 255]])]
    # Counts: class 0 -> 8, class 1 -> 3, class 2 -> 0 (absent); median of present frequencies (8/11, 3/11).
    weights = class_weights_from_frequencies(masks, 3, ignore_index=255)
    median = (8 / 11 + 3 / 11) / 2
    assert weights == pytest.approx([median / (8 / 11), median / (3 / 11), 0.0], rel=1e-5)


def test_unknown_loss_and_out_of_range_labels_fail_clearly():
    with pytest.raises(ConfigError, match="valid losses: ce, dice, focal, ce_dice"):
        build_loss("hinge")
    with pytest.raises(ConfigError, match="mask holds class 5 but the model has 3 classes"):
        class_weights_from_frequencies([torch.tensor([[5]])], 3)


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "class-weights"])
@pytest.mark.parametrize("name", LOSSES)
def test_a_batch_whose_every_pixel_is_ignored_gives_zero_loss_and_zero_gradients(name, weighted):
    loss_fn = build_loss(name, ignore_index=255, class_weights=[1.0, 2.0, 0.5] if weighted else None)
    logits = torch.randn(2, 3, 6, 7, requires_grad=True)
    loss = loss_fn(logits, torch.full((2, 6, 7), 255))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))  # NaN would fail here too


class _UnlabelledShapes(torch.utils.data.Dataset):
    """Shapes images whose masks are ignore_index everywhere: every training batch is all-ignore."""

    def __init__(self, length: int) -> None:
        from seglab.data import ShapesDataset

        self.shapes = ShapesDataset("train", size=32, length=length)
        for name in ("class_names", "num_classes", "ignore_index", "palette"):
            setattr(self, name, getattr(self.shapes, name, None))

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, index):
        image, mask = self.shapes[index]
        return image, torch.full_like(mask, self.ignore_index)


def test_an_epoch_of_unlabelled_batches_logs_a_finite_train_loss(tmp_path, monkeypatch):
    from seglab.training.config import make_config
    from seglab.training.datamodule import SegmentationDataModule
    from seglab.training.run import train
    from training_helpers import TINY_MODEL, logged_metrics, register_tiny_model

    register_tiny_model(monkeypatch)
    unlabelled = _UnlabelledShapes(8)
    datamodule = SegmentationDataModule({"train": unlabelled, "val": unlabelled}, batch_size=4)
    config = make_config({"dataset": "shapes", "image_size": 32, "batch_size": 4, "model": TINY_MODEL,
                          "precision": "32-true", "progress_bar": False, "max_epochs": 1, "logger": "csv",
                          "test_after_training": False, "loss": "ce"}, runs_dir=str(tmp_path), name="unlabelled")
    train(config, datamodule=datamodule)
    [row] = logged_metrics(tmp_path / "unlabelled")
    assert row["train_loss"] == 0.0  # not NaN


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
