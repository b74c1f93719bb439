"""Losses: ignore_index pixels never count, class weights act as documented, the variants agree where they must."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seglab.errors import ConfigError
from seglab.training.losses import LOSSES, build_loss, class_weights_from_frequencies


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
