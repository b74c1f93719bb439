"""`seglab predict` on files: collect inputs, predict them in batches, write masks, overlays and probabilities.

A bad input never stops the others, nor does one that runs out of memory: it is recorded with its path and a tag
and reported at the end. Every output goes to a temporary file beside it and is renamed into place
(`seglab.atomic.atomic_path`).
Outputs never go into an input folder and never replace an existing file without `overwrite`.
"""

from __future__ import annotations

import collections
import contextlib
import fnmatch
import glob
import io
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from seglab.atomic import atomic_path
from seglab.data.classes import indexed_image
from seglab.data.files import IMAGE_EXTENSIONS, FileProblem, is_listed_file, list_image_files, natural_key
from seglab.errors import ConfigError, DataError, OutputError, describe_os_error
from seglab.inference.predictor import (
    Predictor,
    class_map,
    image_tensor,
    same_size_batches,
    stack,
    threads_per_call,
)
from seglab.inference.spec import InferenceSpec

OVERLAY_ALPHA = 0.5
OVERLAY_ROWS = 512  # rows blended at a time: float copies of a band, never of a whole large image
# Called with (input file, image (3, H, W) in [0, 1], predicted labels (H, W)) after its outputs are written; with
# `predict_files(confidence=True)` also with each pixel's probability of its predicted class (H, W) float32.
OnWritten = Callable[..., None]


@dataclass(frozen=True)
class InputImage:
    """An input file and its output name: the path under `--out` without suffix (sub-folders mirrored)."""

    path: Path
    name: Path


@dataclass
class StageTimes:
    """Seconds spent in each stage of `predict_files`, summed over its threads (decoding and writing overlap
    the engine, so the stages add up to more than the wall time when the pipeline keeps the engine busy)."""

    decode: float = 0.0
    engine: float = 0.0
    encode: float = 0.0  # the mask PNG (overlays and probabilities count as write)
    write: float = 0.0
    wall: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **seconds: float) -> None:
        with self.lock:
            for stage, value in seconds.items():
                setattr(self, stage, getattr(self, stage) + value)

    def report(self, images: int) -> str:
        per_image = f" ({1000 * self.wall / images:.1f} ms/image, {images / self.wall:.2f} images/s)" if (
            images and self.wall) else ""
        return (f"time: decode {self.decode:.2f} s, engine {self.engine:.2f} s, encode {self.encode:.2f} s, write "
                f"{self.write:.2f} s (busy time per stage, threads overlapping); wall {self.wall:.2f} s{per_image}")


@dataclass
class PredictionSummary:
    """What `predict_files` did: how many images were predicted and which inputs failed, and why."""

    predicted: int = 0
    failures: list[FileProblem] = field(default_factory=list)
    times: StageTimes = field(default_factory=StageTimes)

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
    natural order; paths that name nothing come back as problems, and so do links skipped because they lead
    back into a folder already walked (`walk_files`). Two inputs with one output name are an error that lists
    them, before anything is predicted."""
    found: list[InputImage] = []
    problems: list[FileProblem] = []
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            files = ([file for file in walk_files(path, problems) if file.suffix.lower() in IMAGE_EXTENSIONS
                      and is_listed_file(file)] if recursive else list_image_files(path))
            files.sort(key=lambda p: natural_key(str(p.relative_to(path))))
            found += [InputImage(file, file.relative_to(path).with_suffix("")) for file in files]
            if not files:
                problems.append(FileProblem(path, "no-images", "the folder holds no image files"
                                            + ("" if recursive else " (use --recursive for sub-folders)")))
        elif path.is_file():
            found.append(InputImage(path, Path(path.stem)))
        elif glob.has_magic(str(entry)):
            matches = sorted((p for p in glob_files(str(entry), problems, recursive=recursive) if p.is_file()),
                             key=lambda p: natural_key(str(p)))
            found += [InputImage(match, Path(match.stem)) for match in matches]
            if not matches:
                problems.append(FileProblem(path, "no-match", "the pattern matches no file"))
        else:
            problems.append(FileProblem(path, "missing", "no such file or folder"))
    escaping = [item.path for item in found if not is_plain_name(item.name)]
    if escaping:
        raise DataError(f"{len(escaping)} input(s) have a name that would put the output outside --out (a stem "
                        f"of '.' or '..', as in '..png'): {', '.join(str(p) for p in escaping)}; rename them")
    by_name: dict[str, list[Path]] = {}
    for item in found:
        by_name.setdefault(item.name.as_posix().lower(), []).append(item.path)
    clashes = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    if clashes:
        listing = "; ".join(f"{name}: {', '.join(str(p) for p in paths)}" for name, paths in sorted(clashes.items()))
        raise DataError(f"{len(clashes)} output name(s) would be written twice, by inputs with the same stem: "
                        f"{listing}. Predict them in separate runs or rename them")
    return found, problems


def is_plain_name(name: Path) -> bool:
    """An output name that stays inside `--out`: relative, and no part of it empty, '.' or '..' (`Path` drops a
    '.' part, so the stem of `..png` leaves no part at all and would become `<out>.png`)."""
    return bool(name.parts) and not name.is_absolute() and all(part not in ("", ".", "..") for part in name.parts)


def walk_files(folder: Path, problems: list[FileProblem], *, hidden: bool = False) -> Iterator[Path]:
    """Every file under `folder`, sub-folders included, in a stable order. Links to folders are followed, but
    never into a folder already walked (known by device and inode, whatever the path): a link back to an ancestor
    (`ln -s . loop`) or a second link to one folder is skipped and recorded in `problems`, naming the folder it
    leads to. Hidden files and folders (`.name`) are left out unless `hidden`."""
    def identity(path: Path) -> tuple[int, int]:
        status = os.stat(path)
        return status.st_dev, status.st_ino

    walked = {identity(folder): folder}
    for top, folders, files in os.walk(folder, followlinks=True):
        kept = []
        for name in sorted(folders):
            path = Path(top) / name
            if name.startswith(".") and not hidden:
                continue
            try:
                key = identity(path)
            except OSError:  # vanished meanwhile: nothing to walk
                continue
            if key in walked:
                problems.append(FileProblem(path, "symlink-loop", f"skipped: it leads to {walked[key]}, a folder "
                                            "already walked (a link loop, or a second link to one folder)"))
                continue
            walked[key] = path
            kept.append(name)
        folders[:] = kept  # os.walk descends only into these
        yield from (Path(top) / name for name in sorted(files) if hidden or not name.startswith("."))


def glob_files(pattern: str, problems: list[FileProblem], *, recursive: bool) -> list[Path]:
    """The paths `glob.glob(pattern, recursive=recursive)` gives, except that a recursive `**` walks with
    `walk_files` (the glob module follows links to folders into loops, without end)."""
    parts = Path(pattern).parts
    if not (recursive and "**" in parts):
        return [Path(match) for match in glob.glob(pattern, recursive=recursive)]
    fixed = next(index for index, part in enumerate(parts) if glob.has_magic(part))
    root, wanted = Path(*parts[:fixed]) if fixed else Path("."), parts[fixed:]
    if not root.is_dir():
        return []
    hidden = any(part.startswith(".") for part in wanted)
    return [path for path in walk_files(root, problems, hidden=hidden)
            if _matches(path.relative_to(root).parts, wanted)]


def _matches(names: Sequence[str], patterns: Sequence[str]) -> bool:
    """Glob matching of path components: `**` stands for any number of folders, other patterns for one name."""
    if not patterns:
        return not names
    if patterns[0] == "**":
        return any(_matches(names[skip:], patterns[1:]) for skip in range(len(names) + 1))
    return bool(names) and fnmatch.fnmatchcase(names[0], patterns[0]) and _matches(names[1:], patterns[1:])


def output_paths(item: InputImage, out: Path, *, overlay: bool, save_probs: bool) -> list[Path]:
    base = out / item.name
    paths = [base.with_name(base.name + ".png")]
    if overlay:
        paths.append(base.with_name(base.name + "_overlay.png"))
    if save_probs:
        paths.append(base.with_name(base.name + "_probs.npy"))
    return paths


def _real_path(path: str | Path) -> Path:
    # os.path.realpath, unlike Path.resolve on Python < 3.13, does not raise on a symbolic-link loop: a looping
    # input is reported as a bad file by the reading step, not here.
    return Path(os.path.realpath(path))


def first_paths(paths: Sequence[Path], shown: int = 5) -> str:
    """The first `shown` paths, and how many more there are, for a message."""
    more = f" (+{len(paths) - shown} more)" if len(paths) > shown else ""
    return ", ".join(str(path) for path in paths[:shown]) + more


def make_output_folder(out: Path) -> None:
    """Creates `out` (and its parents), or raises the `OutputError` that names it and why."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_failed(out, error, 0) from error


def check_output_folder(out: Path, inputs: Sequence[str | Path], items: Sequence[InputImage], *,
                        masks: str | Path | None = None, overlay: bool = False, save_probs: bool = False) -> None:
    """Refuses an output folder that would put any output on an input or on the ground truth: `out` equal to or
    inside an input folder or the `masks` folder, holding an input file, or an output file that would land in one
    of those folders or on an input file. Checked on resolved paths, before the model is loaded."""
    target = _real_path(out)
    protected = [(_real_path(entry), f"the input folder {entry}") for entry in inputs if Path(entry).is_dir()]
    if masks is not None:
        protected.append((_real_path(masks), f"the ground-truth folder --masks {masks}"))
    for folder, what in protected:
        if target == folder or folder in target.parents:
            raise ConfigError(f"--out {out} is {'' if target == folder else 'inside '}{what}; seglab never writes "
                              "into an input folder or the ground truth: choose an --out outside it")
    inputs_resolved = {_real_path(item.path) for item in items}
    # A folder of a million images has a handful of parent folders: each is resolved once.
    real_parents = {parent: _real_path(parent) for parent in {item.path.parent for item in items}}
    for item in items:
        if real_parents[item.path.parent] == target:
            raise ConfigError(f"--out {out} holds the input {item.path}; seglab never writes into an input folder: "
                              "choose another --out")
        for path in output_paths(item, target, overlay=overlay, save_probs=save_probs):
            landing = [what for folder, what in protected if folder in path.parents]
            if landing or path in inputs_resolved:
                where = landing[0] if landing else "an input file"
                raise ConfigError(f"predicting {item.path} would write {path}, which lies in {where}; seglab never "
                                  "writes onto an input or ground-truth file: choose another --out")


def save_mask_png(mask: np.ndarray | torch.Tensor, path: str | Path,
                  palette: Sequence[Sequence[int]]) -> tuple[float, float]:
    """A class map as an indexed PNG: pixel values are class indices, `palette` only colours them (others white).
    Encoded in memory, then written atomically; returns (seconds encoding, seconds writing)."""
    array = np.asarray(mask)
    if array.max(initial=0) > 255:
        raise DataError(f"cannot store class indices above 255 in a PNG mask ({path})")
    started = time.perf_counter()
    encoded = io.BytesIO()
    indexed_image(array, palette).save(encoded, format="PNG")
    written = time.perf_counter()
    with atomic_path(path) as temporary:
        temporary.write_bytes(encoded.getbuffer())
    return written - started, time.perf_counter() - written


def overlay_image(image: torch.Tensor, mask: np.ndarray, palette: Sequence[Sequence[int]],
                  alpha: float = OVERLAY_ALPHA) -> Image.Image:
    """The image `(3, H, W)` in [0, 1] with each pixel's class colour blended over it."""
    colours = np.asarray(palette, dtype=np.float32)
    blended = np.empty((*mask.shape, 3), dtype=np.uint8)
    for top in range(0, mask.shape[0], OVERLAY_ROWS):
        rows = slice(top, top + OVERLAY_ROWS)
        rgb = image[:, rows].permute(1, 2, 0).numpy() * 255.0
        blended[rows] = np.clip((1 - alpha) * rgb + alpha * colours[mask[rows]] + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(blended)


class Float16Npy:
    """A float16 `(C, H, W)` .npy file written band by band (`write(top, values)`) with plain writes: the
    dirty pages of a memory map would count as the process's memory until the kernel wrote them out."""

    def __init__(self, file: BinaryIO, shape: tuple[int, int, int]) -> None:
        np.lib.format.write_array_header_1_0(file, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)),
                                                    "fortran_order": False, "shape": shape})
        self.file, self.start, self.shape = file, file.tell(), shape

    def write(self, top: int, values: np.ndarray) -> None:
        _, height, width = self.shape
        for channel, plane in enumerate(values.astype(np.float16)):  # each class's rows lie together in the file
            self.file.seek(self.start + 2 * (channel * height + top) * width)
            self.file.write(np.ascontiguousarray(plane).tobytes())


def is_out_of_memory(error: BaseException) -> bool:
    """A failed allocation: Python's MemoryError, torch's CPU allocator ("can't allocate memory") or a GPU's."""
    text = str(error).lower()
    return isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text))


def label_map(height: int, width: int, num_classes: int) -> np.ndarray:
    """An empty class map: uint8 where the classes fit (an eighth of int64's memory on a large image)."""
    return np.empty((height, width), dtype=np.uint8 if num_classes <= 256 else np.int64)


# Scores of an image as bands: (top row, bottom row, scores (C, rows, W), whether they are probabilities already).
Bands = Iterable[tuple[int, int, torch.Tensor, bool]]


class OutputWriteError(Exception):
    """An output of one input could not be written: `path` and the `cause` (an OSError or OutputError)."""

    def __init__(self, path: Path, cause: OSError | OutputError) -> None:
        super().__init__(f"cannot write {path}: {cause}")
        self.path, self.cause = path, cause


def write_outputs(item: InputImage, out: Path, image: torch.Tensor, bands: Bands, spec: InferenceSpec, *,
                  overlay: bool = False, save_probs: bool = False, times: StageTimes | None = None,
                  confidence: np.ndarray | None = None) -> np.ndarray:
    """The one place an input's outputs are written, each renamed into place whole (`atomic_path`):
    `OUT/<name>.png` (palette PNG of class indices), with `overlay` `<name>_overlay.png`, with `save_probs`
    `<name>_probs.npy` (float16 probabilities, written band by band, never whole in float32). Returns the class
    map; a failed write raises `OutputWriteError` naming the file. `times` gets the mask's encode and write
    seconds. `confidence`, an (H, W) float32 array, receives each pixel's probability of its predicted class, band
    by band (what annotation writers score objects with)."""
    paths = output_paths(item, out, overlay=overlay, save_probs=save_probs)
    height, width = image.shape[-2:]
    prediction = label_map(height, width, spec.num_classes)
    writing = paths[-1] if save_probs else paths[0]
    try:
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            file = (stack.enter_context(open(stack.enter_context(atomic_path(paths[-1])), "wb"))
                    if save_probs else None)
            probabilities = None
            for top, bottom, scores, are_probabilities in bands:
                prediction[top:bottom] = class_map(scores).numpy()
                if file is None and confidence is None:
                    continue
                band = scores if are_probabilities else scores.softmax(dim=0)
                if confidence is not None:
                    confidence[top:bottom] = band.amax(dim=0).numpy()
                if file is not None:
                    probabilities = probabilities or Float16Npy(file, (scores.shape[0], height, width))
                    probabilities.write(top, band.numpy())
        writing = paths[0]
        encode_s, write_s = save_mask_png(prediction, paths[0], spec.palette) or (0.0, 0.0)
        if times is not None:
            times.add(encode=encode_s, write=write_s)
        if overlay:
            writing = paths[1]
            with atomic_path(paths[1]) as temporary_overlay:
                overlay_image(image, prediction, spec.palette).save(temporary_overlay)
    except (OSError, OutputError) as error:
        raise OutputWriteError(writing, error) from error
    return prediction


def predict_files(predictor: Predictor, items: Sequence[InputImage], out: str | Path, *, overlay: bool = False,
                  save_probs: bool = False, overwrite: bool = False, tile: int | None = None,
                  overlap: float = 0.25, tta: str | None = None, scales: Sequence[float] | None = None,
                  on_written: OnWritten | None = None, progress: Callable[[Iterable], Iterable] = iter,
                  workers: int = 2, confidence: bool = False) -> PredictionSummary:
    """Predict every input and write `OUT/<name>.png` (plus overlays / float16 probabilities when asked);
    `on_written` sees each prediction after its files are written (`predict --masks` scores it there), with
    `confidence` also each pixel's probability of its predicted class, (H, W) float32, computed only then
    (`predict --format` scores the objects it writes with it).

    `workers` threads decode the next images and as many encode and write the last ones while the engine runs
    (PIL's decoders and zlib release the GIL), so the engine waits for neither; the engine itself runs in
    `predictor.concurrent_calls` threads, each on a batch of its own. Outputs are written and reported in input
    order whatever order the engine finishes in. `summary.times` says where the time went."""
    out = Path(out)
    spec = predictor.spec
    if not overwrite:
        existing = [p for item in items for p in output_paths(item, out, overlay=overlay, save_probs=save_probs)
                    if p.exists()]
        if existing:
            raise ConfigError(f"{len(existing)} output file(s) already exist: {first_paths(existing)}; pass "
                              "--overwrite to replace them or choose another --out")
    make_output_folder(out)
    summary = PredictionSummary()
    times = summary.times
    started = time.perf_counter()
    batch_size = predictor.images_per_batch(tile)
    readers = ThreadPoolExecutor(max(1, workers), thread_name_prefix="seglab-decode")
    writers = ThreadPoolExecutor(max(1, workers), thread_name_prefix="seglab-write")
    engine_calls = predictor.concurrent_calls
    threads, share = torch.get_num_threads(), threads_per_call(engine_calls)

    def share_of_the_cores() -> None:
        # Each engine thread's torch operators on its share, so that the calls do not oversubscribe the cores.
        torch.set_num_threads(share)

    engines = ThreadPoolExecutor(engine_calls, thread_name_prefix="seglab-engine",
                                 initializer=share_of_the_cores if engine_calls > 1 else None)
    writing: collections.deque[tuple[InputImage, torch.Tensor, Future]] = collections.deque()
    predicting: collections.deque[tuple[list[tuple[InputImage, torch.Tensor]], Future]] = collections.deque()

    def outputs(item: InputImage, image: torch.Tensor, bands: Bands,
                stage_times: StageTimes | None) -> tuple[np.ndarray, np.ndarray | None]:
        held = np.empty(image.shape[-2:], dtype=np.float32) if confidence else None
        return write_outputs(item, out, image, bands, spec, overlay=overlay, save_probs=save_probs,
                             times=stage_times, confidence=held), held

    def written(item: InputImage, image: torch.Tensor, prediction: np.ndarray, held: np.ndarray | None) -> None:
        summary.predicted += 1
        if on_written is not None:
            on_written(item.path, image, prediction, *(() if held is None else (held,)))

    def finish_writes(keep: int) -> None:
        """Waits for the oldest writes until at most `keep` are in flight; counts and reports them in order."""
        while len(writing) > keep:
            item, image, future = writing.popleft()
            try:
                prediction, held = future.result()
            except OutputWriteError as error:
                raise write_failed(error.path, error.cause, summary.predicted) from error.cause
            written(item, image, prediction, held)

    def write(item: InputImage, image: torch.Tensor, bands: Bands) -> None:
        writing.append((item, image, writers.submit(outputs, item, image, bands, times)))
        finish_writes(keep=2 * batch_size)  # a bounded number of class maps waits in memory

    def ran_out_of_memory(item: InputImage, error: BaseException) -> None:
        """Records the input as a failure of its own; the other inputs are still predicted."""
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        summary.failures.append(FileProblem(item.path, "out-of-memory", (
            f"ran out of memory while predicting it ({first_line}); the other inputs were still predicted. "
            "Predict it with --tile (a smaller one if given) and --tile-batch 1, or on a machine with more "
            "memory")))

    def guarded(item: InputImage, predict: Callable[..., None], *args: object) -> None:
        """Runs `predict(*args)`; an input that runs out of memory is recorded as a failure of that input alone."""
        try:
            predict(*args)
        except (MemoryError, RuntimeError) as error:
            if not is_out_of_memory(error):
                raise
            ran_out_of_memory(item, error)

    def scores_of(images: torch.Tensor) -> tuple[torch.Tensor, bool]:
        engine_started = time.perf_counter()
        result = predictor.scores(images, tile=tile, overlap=overlap, tta=tta, scales=scales)
        times.add(engine=time.perf_counter() - engine_started)
        return result

    def streamed(image: torch.Tensor) -> bool:
        return tile is not None and predictor.streams(*image.shape[-2:], tile=tile, tta=tta, scales=scales)

    def predict_streamed(item: InputImage, image: torch.Tensor) -> None:
        """Streamed band by band into the files: engine and writing interleave in this thread."""
        assert tile is not None  # only an image that `streamed` comes here
        finish_writes(keep=0)
        bands: Bands = ((top, bottom, scores, False) for top, bottom, scores in
                        predictor.logit_bands(image, tile=tile, overlap=overlap))
        engine_started = time.perf_counter()
        try:
            prediction, held = outputs(item, image, bands, None)
        except OutputWriteError as error:
            raise write_failed(error.path, error.cause, summary.predicted) from error.cause
        times.add(engine=time.perf_counter() - engine_started)
        written(item, image, prediction, held)

    def start(batch: list[tuple[InputImage, torch.Tensor]]) -> None:
        """The batch's scores computing in an engine thread; a streamed image is predicted here, in order."""
        if len(batch) == 1 and streamed(batch[0][1]):
            finish_predictions(keep=0)
            guarded(batch[0][0], predict_streamed, *batch[0])
            return
        predicting.append((batch, engines.submit(scores_of, stack([image for _, image in batch]))))
        # One more batch than the engine runs waits ready, so no engine thread idles while this one writes.
        finish_predictions(keep=engine_calls)

    def finish_predictions(keep: int) -> None:
        """Writes the oldest batches whose scores are being computed until at most `keep` are in flight."""
        while len(predicting) > keep:
            batch, future = predicting.popleft()
            try:
                scores, are_probabilities = future.result()
            except (MemoryError, RuntimeError) as error:
                if not is_out_of_memory(error):
                    raise
                if len(batch) == 1:
                    ran_out_of_memory(batch[0][0], error)
                else:  # the batch did not fit in memory: each image alone may, one at a time
                    for item, image in batch:
                        guarded(item, predict_alone, item, image)
                continue
            for (item, image), item_scores in zip(batch, scores, strict=True):
                guarded(item, write, item, image, [(0, image.shape[-2], item_scores, are_probabilities)])

    def predict_alone(item: InputImage, image: torch.Tensor) -> None:
        scores, are_probabilities = scores_of(image[None])
        write(item, image, [(0, image.shape[-2], scores[0], are_probabilities)])

    def decode(item: InputImage) -> torch.Tensor | FileProblem:
        decode_started = time.perf_counter()
        try:
            return image_tensor(item.path)
        except FileProblem as problem:
            return problem
        finally:
            times.add(decode=time.perf_counter() - decode_started)

    def readable() -> Iterator[tuple[InputImage, torch.Tensor]]:
        """The inputs decoded ahead by the reader threads, in order; unreadable ones become failures."""
        upcoming = iter(progress(items))
        decoding = collections.deque((item, readers.submit(decode, item))
                                     for item in itertools.islice(upcoming, 2 * max(batch_size, workers)))
        while decoding:
            item, future = decoding.popleft()
            following = next(upcoming, None)
            if following is not None:
                decoding.append((following, readers.submit(decode, following)))
            image = future.result()
            if isinstance(image, FileProblem):
                summary.failures.append(image)
            else:
                yield item, image

    try:
        for batch in same_size_batches(readable(), batch_size, lambda pair: pair[1]):
            start(batch)
        finish_predictions(keep=0)
        finish_writes(keep=0)
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        engines.shutdown(wait=True, cancel_futures=True)
        writers.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)  # torch's thread count is the process's
    times.wall = time.perf_counter() - started
    return summary


def write_failed(path: Path, error: OSError | OutputError, predicted: int) -> OutputError:
    """The error for an output that could not be written (full disk, read-only folder), with how many images
    were written before it. Outputs are renamed into place (`atomic_path`), so no truncated file is left to
    pass for a prediction. Every other image would fail the same way, so prediction stops here."""
    cause = error.__cause__ if isinstance(error, OutputError) and isinstance(error.__cause__, OSError) else error
    reason = describe_os_error(cause) if isinstance(cause, OSError) else str(cause)
    return OutputError(f"cannot write {path}: {reason}; {predicted} image(s) were predicted and "
                       "written before it. Free space on that disk or choose a writable --out, then run again "
                       "(with --overwrite to replace the ones written)")
