"""What seglab reads from a dataset beyond torch's `Dataset`, which declares only `__getitem__`: every seglab
dataset, `Subset` and wrapper also has a length, and says what its classes are. These helpers check it at run
time, so that the type checker may rely on it."""

from __future__ import annotations

from collections.abc import Sequence, Sized
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch.utils.data import Dataset

@runtime_checkable
class DescribedDataset(Protocol):
    """A dataset that says what its classes are (wrappers copy it from the dataset they wrap)."""

    @property
    def class_names(self) -> Sequence[str]: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def ignore_index(self) -> int: ...


def dataset_length(dataset: Dataset[Any]) -> int:
    """`len(dataset)`; a `TypeError` that says why for a dataset without one (its items are read by index)."""
    if not isinstance(dataset, Sized):
        raise TypeError(f"{type(dataset).__name__} has no len(): seglab reads a dataset's items by index, "
                        "0 .. len(dataset) - 1, so a dataset needs a __len__")
    return len(dataset)


def described(dataset: Dataset[Any]) -> DescribedDataset:
    """`dataset`, typed as saying what its classes are; a `TypeError` naming what it leaves out otherwise."""
    if not isinstance(dataset, DescribedDataset):
        raise TypeError(f"{type(dataset).__name__} does not say what its classes are: seglab's datasets carry "
                        "class_names, num_classes and ignore_index")
    return dataset
