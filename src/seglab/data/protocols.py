"""What seglab reads from a dataset beyond torch's `Dataset`, which declares only `__getitem__`: every seglab
dataset, `Subset` and wrapper also has a length (and says what its classes are), and these helpers let the type
checker see it."""

from __future__ import annotations

from collections.abc import Sized
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.utils.data import Dataset


def dataset_length(dataset: Dataset[Any]) -> int:
    """`len(dataset)`; a `TypeError` that says why for a dataset without one (its items are read by index)."""
    if not isinstance(dataset, Sized):
        raise TypeError(f"{type(dataset).__name__} has no len(): seglab reads a dataset's items by index, "
                        "0 .. len(dataset) - 1, so a dataset needs a __len__")
    return len(dataset)
