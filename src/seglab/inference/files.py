"""`seglab predict` on files: collect inputs, predict them in batches, write masks, overlays and probabilities.

A bad input never stops the others: it is recorded with its path and a tag and reported at the end. Outputs
never go into an input folder and never replace an existing file without `overwrite`.
"""

from __future__ import annotations

import contextlib
import glob
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seglab.data.classes import indexed_image
from seglab.data.files import FileProblem, natural_key
from seglab.data.pairing import list_images
from seglab.errors import ConfigError, DataError, OutputError, describe_os_error
from seglab.inference.predictor import Predictor, image_tensor, same_size_batches, stack

OVERLAY_ALPHA = 0.5
# Called with (input file, image (3, H, W) in [0, 1], predicted labels (H, W)) after its outputs are written.
OnWritten = Callable[[Path, torch.Tensor, np.ndarray], None]


@dataclass(frozen=True)
class InputImage:
    """An input file and its output name: the path under `--out` without suffix (sub-folders mirrored)."""

    path: Path
    name: Path


@dataclass
class PredictionSummary:
    """What `predict_files` did: how many images were predicted and which inputs failed, and why."""

    predicted: int = 0
    failures: list[FileProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def report(self, out: Path) -> str:
        lines = [f"predicted {self.predicted} image(s) into {out}"]
        if self.failures:
            lines.append(f"{len(self.failures)} input(s) failed:")
            lines += [f"  [{problem.kind}] {problem}" for problem in self.failures]
        return "\n".join(lines)


def collect_inputs(inputs: Sequence[str | Path], *, recursive: bool = False
                   ) -> tuple[list[InputImage], list[FileProblem]]:
    """Files, folders (`recursive`: with sub-folders, mirrored in the output names) and glob patterns, in a
    natural order; paths that name nothing come back as problems. Two inputs with one output name are an error
    that lists them, before anything is predicted."""
    found: list[InputImage] = []
    problems: list[FileProblem] = []
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            files = sorted(list_images(path, recursive=recursive), key=lambda p: natural_key(str(p.relative_to(path))))
            found += [InputImage(file, file.relative_to(path).with_suffix("")) for file in files]
            if not files:
                problems.append(FileProblem(path, "no-images", "the folder holds no image files"
                                            + ("" if recursive else " (use --recursive for sub-folders)")))
        elif path.is_file():
            found.append(InputImage(path, Path(path.stem)))
        elif glob.has_magic(str(entry)):
            matches = sorted((Path(p) for p in glob.glob(str(entry), recursive=recursive)
                              if Path(p).is_file()), key=lambda p: natural_key(str(p)))
            found += [InputImage(match, Path(match.stem)) for match in matches]
            if not matches:
                problems.append(FileProblem(path, "no-match", "the pattern matches no file"))
        else:
            problems.append(FileProblem(path, "missing", "no such file or folder"))
    by_name: dict[str, list[Path]] = {}
    for item in found:
        by_name.setdefault(item.name.as_posix().lower(), []).append(item.path)
    clashes = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    if clashes:
        listing = "; ".join(f"{name}: {', '.join(str(p) for p in paths)}" for name, paths in sorted(clashes.items()))
        raise DataError(f"{len(clashes)} output name(s) would be written twice, by inputs with the same stem: "
                        f"{listing}. Predict them in separate runs or rename them")
    return found, problems


def output_paths(item: InputImage, out: Path, *, overlay: bool, save_probs: bool) -> list[Path]:
    base = out / item.name
    paths = [base.with_name(base.name + ".png")]
    if overlay:
        paths.append(base.with_name(base.name + "_overlay.png"))
    if save_probs:
        paths.append(base.with_name(base.name + "_probs.npy"))
    return paths


def check_output_folder(out: Path, inputs: Sequence[str | Path], items: Sequence[InputImage]) -> None:
    """Refuses an output folder that is, or lies inside, an input folder, or that holds an input file."""
    target = out.resolve()
    for folder in sorted({Path(entry).resolve() for entry in inputs if Path(entry).is_dir()}):
        if target == folder or folder in target.parents:
            raise ConfigError(f"--out {out} is inside the input folder {folder}; seglab never writes into an input "
                              "folder: choose an --out outside it")
    for item in items:
        if item.path.parent.resolve() == target:
            raise ConfigError(f"--out {out} holds the input {item.path}; seglab never writes into an input folder: "
                              "choose another --out")


def save_mask_png(mask: np.ndarray | torch.Tensor, path: str | Path,
                  palette: Sequence[Sequence[int]]) -> None:
    """A class map as an indexed PNG: pixel values are class indices, `palette` only colours them (others white)."""
    array = np.asarray(mask)
    if array.max(initial=0) > 255:
        raise DataError(f"cannot store class indices above 255 in a PNG mask ({path})")
    indexed_image(array, palette).save(path)


def overlay_image(image: torch.Tensor, mask: np.ndarray, palette: Sequence[Sequence[int]],
                  alpha: float = OVERLAY_ALPHA) -> Image.Image:
    """The image `(3, H, W)` in [0, 1] with each pixel's class colour blended over it."""
    rgb = image.permute(1, 2, 0).numpy() * 255.0
    colours = np.asarray(palette, dtype=np.float32)[mask]
    return Image.fromarray(np.clip((1 - alpha) * rgb + alpha * colours + 0.5, 0, 255).astype(np.uint8))


def predict_files(predictor: Predictor, items: Sequence[InputImage], out: str | Path, *, overlay: bool = False,
                  save_probs: bool = False, overwrite: bool = False, tile: int | None = None,
                  overlap: float = 0.25, tta: str | None = None, scales: Sequence[float] | None = None,
                  on_written: OnWritten | None = None, progress: Callable[[Iterable], Iterable] = iter
                  ) -> PredictionSummary:
    """Predict every input and write `OUT/<name>.png` (plus overlays / float16 probabilities when asked);
    `on_written` sees each prediction after its files are written (`predict --masks` scores it there)."""
    out = Path(out)
    spec = predictor.spec
    if not overwrite:
        existing = [p for item in items for p in output_paths(item, out, overlay=overlay, save_probs=save_probs)
                    if p.exists()]
        if existing:
            shown = ", ".join(str(p) for p in existing[:5]) + (f" (+{len(existing) - 5} more)" if len(existing) > 5
                                                                 else "")
            raise ConfigError(f"{len(existing)} output file(s) already exist: {shown}; pass --overwrite to replace "
                              "them or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_failed(out, error, 0) from error
    summary = PredictionSummary()

    def write(item: InputImage, image: torch.Tensor, scores: torch.Tensor, are_probabilities: bool) -> None:
        prediction = scores.argmax(dim=0).numpy()
        paths = output_paths(item, out, overlay=overlay, save_probs=save_probs)
        writing = paths[0]
        try:
            paths[0].parent.mkdir(parents=True, exist_ok=True)
            save_mask_png(prediction, paths[0], spec.palette)
            if overlay:
                writing = paths[1]
                overlay_image(image, prediction, spec.palette).save(paths[1])
            if save_probs:
                writing = paths[-1]
                probabilities = scores if are_probabilities else scores.softmax(dim=0)
                np.save(paths[-1], probabilities.numpy().astype(np.float16))
        except OSError as error:
            raise write_failed(writing, error, summary.predicted) from error
        summary.predicted += 1
        if on_written is not None:
            on_written(item.path, image, prediction)

    def readable() -> Iterator[tuple[InputImage, torch.Tensor]]:
        for item in progress(items):
            try:
                yield item, image_tensor(item.path)
            except FileProblem as problem:
                summary.failures.append(problem)

    for batch in same_size_batches(readable(), predictor.images_per_batch(tile), lambda pair: pair[1]):
        scores, are_probabilities = predictor.scores(stack([image for _, image in batch]), tile=tile,
                                                     overlap=overlap, tta=tta, scales=scales)
        for (item, image), item_scores in zip(batch, scores, strict=True):
            write(item, image, item_scores, are_probabilities)
    return summary


def write_failed(path: Path, error: OSError, predicted: int) -> OutputError:
    """The error for an output that could not be written (full disk, read-only folder); a partly written file
    is removed first, so no truncated mask is left to pass for a prediction. Every other image would fail the
    same way, so prediction stops here."""
    if path.is_file():
        with contextlib.suppress(OSError):
            path.unlink()
    return OutputError(f"cannot write {path}: {describe_os_error(error)}; {predicted} image(s) were predicted and "
                       "written before it. Free space on that disk or choose a writable --out, then run again "
                       "(with --overwrite to replace the ones written)")
