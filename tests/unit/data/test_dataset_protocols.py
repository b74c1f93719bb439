"""`dataset_length` and `described`: what seglab reads from a dataset beyond torch's `Dataset` (a length, and
what its classes are), checked at run time with an error that says what is missing."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from seglab.data.datasets import DatasetPart
from seglab.data.protocols import dataset_length, described
from seglab.data.shapes import ShapesDataset


class Endless(Dataset):
    """Items by index, but no length."""

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.zeros(1)


def test_dataset_length_reads_len_and_names_a_dataset_without_one() -> None:
    assert dataset_length(TensorDataset(torch.zeros(5, 1))) == 5
    with pytest.raises(TypeError, match="Endless has no len"):
        dataset_length(Endless())


def test_described_passes_seglab_datasets_and_their_parts_through() -> None:
    shapes = ShapesDataset("val", length=4, size=32, seed=0)
    part = DatasetPart(shapes, [0, 2])
    for dataset in (shapes, part):
        assert described(dataset) is dataset
        assert (described(dataset).num_classes, described(dataset).ignore_index) == (4, 255)
        assert list(described(dataset).class_names) == list(shapes.class_names)


def test_described_refuses_a_dataset_that_does_not_say_its_classes() -> None:
    with pytest.raises(TypeError, match="TensorDataset does not say what its classes are"):
        described(TensorDataset(torch.zeros(2, 1)))
