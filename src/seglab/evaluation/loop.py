"""The evaluate loop: a predictor over a labelled dataset, every image decoded once and scored at the
dataset's resolution."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset, Subset

from seglab.data.files import FileProblem, display_path
from seglab.data.protocols import dataset_length
from seglab.data.validation import BadFiles
from seglab.evaluation.scores import Evaluation, ScoreTally
from seglab.inference.predictor import class_map, same_size_batches, stack

if TYPE_CHECKING:
    from seglab.inference import Predictor

# Called with (item index, image (3, H, W), predicted labels (H, W), true mask (H, W)) for every scored item;
# what it returns is ignored.
OnScored = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], object]


def item_names(dataset: Dataset) -> list[str]:
    """A name per item for per-image reports: the image file where the dataset has files, else split/index."""
    if isinstance(dataset, Subset):
        names = item_names(dataset.dataset)
        return [names[i] for i in dataset.indices]
    pairs = getattr(dataset, "pairs", None)
    if pairs is not None:
        return [display_path(image) for image, _ in pairs]
    names = getattr(dataset, "names", None)
    if names is not None:
        return [str(name) for name in names]
    split = getattr(dataset, "split", "item")
    return [f"{split}/{index:05d}" for index in range(dataset_length(dataset))]


def evaluate(predictor: Predictor, dataset: Dataset, *, batch_size: int | None = None, tile: int | None = None,
             overlap: float = 0.25, tta: str | None = None, scales: Sequence[float] | None = None,
             on_scored: OnScored | None = None, progress: Callable[[Iterable], Iterable] = iter) -> Evaluation:
    """Predict every `(image, mask)` of `dataset` with `predictor` and score it against the mask, at the
    dataset's resolution (`ignore_index` pixels left out). Each item is read once: a file that cannot be read
    is noted and the pass goes on, and at the end `BadFiles` lists every such file, so scores are never of a
    partial set. `on_scored` sees each scored item (the demo saves its masks from it)."""
    # A plain sum of per-image confusion matrices rather than a torchmetrics metric: it never tries to
    # synchronise with other DDP ranks (rank 0 evaluates alone after training).
    spec = predictor.spec
    tally = ScoreTally(spec.num_classes, spec.ignore_index)
    names = item_names(dataset)
    problems: list[FileProblem] = []

    def readable() -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        # Datasets that keep each file's own size cannot go through a collating DataLoader.
        for index in range(dataset_length(dataset)):
            try:
                yield index, *dataset[index]
            except FileProblem as problem:
                problems.append(problem)

    for batch in progress(same_size_batches(readable(), predictor.images_per_batch(tile, batch_size),
                                            lambda item: item[1])):
        if problems:
            continue  # no scores will be reported: only look for the other bad files
        scores, _ = predictor.scores(stack([image for _, image, _ in batch]), tile=tile, overlap=overlap, tta=tta,
                                     scales=scales)
        for (index, image, mask), label in zip(batch, class_map(scores, dim=1), strict=True):
            tally.add(names[index], label.numpy(), mask.numpy())
            if on_scored is not None:
                on_scored(index, image, label, mask)
    if problems:
        raise BadFiles(problems, "evaluation")
    return tally.result()
