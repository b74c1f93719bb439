"""The bad-input corpus: every kind of messy file a user's dataset holds, generated into a temporary folder.

Each `Case` writes one kind of bad (or merely unusual) file beside a good image/mask pair and says what seglab
must do with it: report it under a tag of `seglab.data.files.PROBLEM_TAGS`, naming the file, or repair it (read
it as the RGB array `expected` holds). tests/test_bad_inputs.py runs every case through `seglab data check`,
training's data loading, `seglab predict` and `seglab evaluate`. Nothing binary is committed: the files are made
here, by PIL and by hand.
"""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from data_fixtures import png_header_only
from seglab.data.files import display_path

HEIGHT, WIDTH = 24, 32  # not square, so that an EXIF rotation changes the shape
CLASS_NAMES = ("background", "object")
IGNORE = 255
PALETTE = {0: (0, 0, 0), 1: (255, 0, 0)}  # the colour-coded case's classes


@dataclass(frozen=True)
class Built:
    """What a case wrote: the file (or folder) that seglab must name, the folders to read, and for a repaired
    image the RGB array seglab must read from it."""

    named: Path
    images: Path
    masks: Path
    expected: np.ndarray | None = None


@dataclass(frozen=True)
class Case:
    """One kind of bad input. `tag` is the problem seglab reports, None where it repairs or accepts the file
    (`repair` says how). `predict_tag` is what `seglab predict --masks` reports ("" where it is the same as
    `tag`, None where the case is no input of predict). `options` are folder options the case needs."""

    id: str
    build: Callable[[Path], Built]
    tag: str | None = None
    repair: str = ""
    predict_tag: str | None = ""
    options: dict = field(default_factory=dict)
    recursive: bool = False
    unreadable: bool = False  # the named file must be made unreadable while seglab reads it (`unreadable_files`)
    keeps_good_pair: bool = True  # the good pair is read in the same run (False: the case replaces the folder)
    tolerance: float = 0.0  # mean absolute difference allowed from `expected` (lossy formats)

    @property
    def tag_in_predict(self) -> str | None:
        return self.tag if self.predict_tag == "" else self.predict_tag


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def noise(height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> np.ndarray:
    """Incompressible RGB noise: a file long enough to cut inside its pixel data."""
    return rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def halves_mask(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Class 0 on the left half, class 1 on the right: both classes present."""
    mask = np.zeros((height, width), np.uint8)
    mask[:, width // 2:] = 1
    return mask


def folders(root: Path, *, palette: dict | None = None) -> tuple[Path, Path]:
    """`root/images` and `root/masks` holding the good pair `good.png` (its mask colour-coded with `palette`)."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noise(seed=1)).save(images / "good.png")
    write_mask(masks / "good.png", halves_mask(), palette=palette)
    return images, masks


def write_mask(path: Path, mask: np.ndarray, *, palette: dict | None = None) -> Path:
    if palette is not None:
        mask = np.array([palette[int(v)] for v in range(len(palette))], np.uint8)[mask]
    Image.fromarray(mask).save(path)
    return path


def _with_mask(stem: str, image: Callable[[Path], Path | None], mask: np.ndarray | None = None, *,
               expected: Callable[[], np.ndarray] | None = None) -> Callable[[Path], Built]:
    # A case that writes an image (by `image(images_dir)`) and a good mask of the same stem.
    def build(root: Path) -> Built:
        images, masks = folders(root)
        named = image(images)
        write_mask(masks / f"{stem}.png", halves_mask() if mask is None else mask)
        return Built(named, images, masks, None if expected is None else expected())

    return build


def _with_image(stem: str, mask: Callable[[Path], Path], *, palette: dict | None = None) -> Callable[[Path], Built]:
    # A case that writes a good image and a mask (by `mask(masks_dir)`) of the same stem.
    def build(root: Path) -> Built:
        images, masks = folders(root, palette=palette)
        Image.fromarray(noise(seed=2)).save(images / f"{stem}.png")
        return Built(mask(masks), images, masks)

    return build


def _cut(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _saved_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _saved(path: Path, image: Image.Image, **options) -> Path:
    image.save(path, **options)
    return path


def _link(path: Path, target: str) -> Path:
    os.symlink(target, path)
    return path


# Pixel values a 16-bit image holds (k * 257 for k = 0..255 reads back exactly as 8-bit k).
DEEP_LEVELS = (np.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH) % 256).astype(np.uint16)
# The stored (unrotated) pixels of the EXIF case: WIDTH x HEIGHT, shown turned 90 degrees clockwise.
EXIF_STORED = noise(WIDTH, HEIGHT, seed=5)
# The bytes of a non-UTF-8 file name (Latin-1 "e acute"), as Linux keeps it.
LATIN1_NAME = os.fsdecode(b"caf\xe9.png")
LATIN1_BAD_NAME = os.fsdecode(b"d\xe9fectueux.png")


def _exif_rotated(images: Path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    return _saved(images / "exif_rotated.png", Image.fromarray(EXIF_STORED), exif=exif.tobytes())


def _rgba(images: Path) -> Path:
    alpha = rng(6).integers(0, 256, (HEIGHT, WIDTH, 1), dtype=np.uint8)
    alpha[:4] = 0  # fully transparent rows keep their colour too
    return _saved(images / "rgba.png", Image.fromarray(np.concatenate([noise(seed=6), alpha], axis=2), "RGBA"))


def _transparent_palette_mask() -> Image.Image:
    # Colours all in the palette, but one corner erased to transparent: alpha carries meaning, so it is refused.
    rgba = np.concatenate([np.array([PALETTE[int(v)] for v in range(len(PALETTE))], np.uint8)[halves_mask()],
                           np.full((HEIGHT, WIDTH, 1), 255, np.uint8)], axis=2)
    rgba[:3, :3, 3] = 0
    return Image.fromarray(rgba, "RGBA")


def _palette_image(images: Path) -> Path:
    return _saved(images / "palette_image.png", Image.fromarray(noise(seed=7)).quantize(colors=8))


def _palette_expected() -> np.ndarray:
    quantized = Image.fromarray(noise(seed=7)).quantize(colors=8)
    table = np.array(quantized.getpalette(), np.uint8).reshape(-1, 3)
    return table[np.asarray(quantized)]


def _no_images(root: Path) -> Built:
    _, masks = folders(root)
    empty = root / "no_images"
    empty.mkdir()
    return Built(empty, empty, masks)


def _unpaired_mask(root: Path) -> Built:
    images, masks = folders(root)
    return Built(write_mask(masks / "unpaired_mask.png", halves_mask()), images, masks)


def _unpaired_image(root: Path) -> Built:
    images, masks = folders(root)
    return Built(_saved(images / "unpaired_image.png", Image.fromarray(noise(seed=8))), images, masks)


def _duplicate_stem(root: Path) -> Built:
    images, masks = folders(root)
    Image.fromarray(noise(seed=9)).save(images / "duplicate.png")
    Image.fromarray(noise(seed=9)).save(images / "duplicate.jpg")
    write_mask(masks / "duplicate.png", halves_mask())
    return Built(images / "duplicate.jpg", images, masks)


def _directory_loop(root: Path) -> Built:
    images, masks = folders(root)
    (images / "sub").mkdir()
    (masks / "sub").mkdir()
    Image.fromarray(noise(seed=16)).save(images / "sub" / "deep.png")
    write_mask(masks / "sub" / "deep.png", halves_mask())
    _link(images / "sub" / "again", "..")  # images/sub/again -> images: a walk that followed it would not end
    return Built(images / "sub" / "deep.png", images, masks, noise(seed=16))


def _ignore_value(root: Path) -> Built:
    images, masks = folders(root)
    Image.fromarray(noise(seed=10)).save(images / "ignore_value.png")
    mask = halves_mask()
    mask[:6] = IGNORE
    return Built(write_mask(masks / "ignore_value.png", mask), images, masks)


def _named(name: str, seed: int) -> Callable[[Path], Built]:
    def build(root: Path) -> Built:
        images, masks = folders(root)
        image = _saved(images / name, Image.fromarray(noise(seed=seed)))
        write_mask(masks / name, halves_mask())
        return Built(image, images, masks, noise(seed=seed))

    return build


def _mask_case(stem: str, write: Callable[[Path], None]) -> Callable[[Path], Built]:
    def mask(masks: Path) -> Path:
        write(masks / f"{stem}.png")
        return masks / f"{stem}.png"

    return _with_image(stem, mask)


CASES: tuple[Case, ...] = (
    # Files that are not usable images: reported, never read as something else.
    Case("zero_byte", _with_mask("zero_byte", lambda d: _saved_bytes(d / "zero_byte.png", b"")), tag="empty"),
    Case("truncated_png", _with_mask("truncated_png", lambda d: _cut(
        _saved(d / "truncated_png.png", Image.fromarray(noise(seed=3))), 0.5)), tag="truncated"),
    Case("truncated_jpeg", _with_mask("truncated_jpeg", lambda d: _cut(
        _saved(d / "truncated_jpeg.jpg", Image.fromarray(noise(seed=4)), quality=95), 0.6)), tag="truncated"),
    Case("text_named_png", _with_mask("text_named_png", lambda d: _saved_bytes(
        d / "text_named_png.png", b"label,count\ncat,3\n")), tag="unreadable"),
    Case("decompression_bomb", _with_mask("decompression_bomb", lambda d: _saved_bytes(
        d / "decompression_bomb.png", png_header_only(100_000, 100_000))), tag="too-large"),
    Case("symlink_loop", _with_mask("symlink_loop", lambda d: _link(d / "symlink_loop.png", "symlink_loop.png")),
         tag="symlink-loop"),
    Case("broken_link", _with_mask("broken_link", lambda d: _link(d / "broken_link.png", "gone.png")),
         tag="broken-link"),
    Case("permission_denied", _with_mask("permission_denied", lambda d: _saved(
        d / "permission_denied.png", Image.fromarray(noise(seed=11)))), tag="permission-denied", unreadable=True),
    Case("non_utf8_name_bad", _with_mask(LATIN1_BAD_NAME.removesuffix(".png"), lambda d: _saved_bytes(
        d / LATIN1_BAD_NAME, b"")), tag="empty"),
    # Masks that do not fit their image or the classes.
    Case("mask_size_mismatch", _mask_case("mask_size_mismatch", lambda p: write_mask(
        p, halves_mask(HEIGHT, WIDTH + 4))), tag="size-mismatch"),
    Case("mask_values_outside", _mask_case("mask_values_outside", lambda p: write_mask(p, halves_mask() * 7)),
         tag="mask-values"),
    Case("rgb_mask_for_indices", _mask_case("rgb_mask_for_indices", lambda p: write_mask(
        p, np.repeat(halves_mask()[:, :, None], 3, axis=2))), tag="mask-channels"),
    Case("mask_16bit", _mask_case("mask_16bit", lambda p: Image.fromarray(halves_mask().astype(np.uint16)).save(p)),
         tag="mask-16bit"),
    Case("mask_all_ignore", _mask_case("mask_all_ignore", lambda p: write_mask(
        p, np.full((HEIGHT, WIDTH), IGNORE, np.uint8))), tag="all-ignore"),
    Case("palette_colour_missing", _with_image("palette_colour_missing", lambda d: _saved(
        d / "palette_colour_missing.png", Image.fromarray(np.full((HEIGHT, WIDTH, 3), (0, 255, 0), np.uint8))),
        palette=PALETTE), tag="mask-colours", options={"palette": PALETTE}, predict_tag=None),
    Case("palette_mask_transparent", _with_image("palette_mask_transparent", lambda d: _saved(
        d / "palette_mask_transparent.png", _transparent_palette_mask()), palette=PALETTE),
        tag="mask-alpha", options={"palette": PALETTE}, predict_tag=None),
    # Files that do not pair up.
    Case("unpaired_image", _unpaired_image, tag="unpaired", predict_tag="no-mask"),
    Case("unpaired_mask", _unpaired_mask, tag="unpaired", predict_tag=None),
    Case("duplicate_stem", _duplicate_stem, tag="duplicate-stem", predict_tag=None),
    Case("no_images", _no_images, tag="no-images", keeps_good_pair=False),
    # Unusual but usable: repaired as documented, or read as they are.
    Case("cmyk_jpeg", _with_mask("cmyk_jpeg", lambda d: _saved(
        d / "cmyk_jpeg.jpg", Image.fromarray(noise(seed=12)).convert("CMYK"), quality=98),
        expected=lambda: noise(seed=12)), repair="CMYK converted to RGB", tolerance=2.0),
    Case("greyscale", _with_mask("greyscale", lambda d: _saved(
        d / "greyscale.png", Image.fromarray(noise(seed=13)[:, :, 0])),
        expected=lambda: np.repeat(noise(seed=13)[:, :, :1], 3, axis=2)), repair="grey copied to R, G and B"),
    Case("rgba", _with_mask("rgba", _rgba, expected=lambda: noise(seed=6)), repair="alpha dropped, colours kept"),
    Case("palette_image", _with_mask("palette_image", _palette_image, expected=_palette_expected),
         repair="palette indices looked up to their colours"),
    Case("image_16bit", _with_mask("image_16bit", lambda d: _saved(
        d / "image_16bit.png", Image.fromarray(DEEP_LEVELS * 257)),
        expected=lambda: np.repeat(DEEP_LEVELS.astype(np.uint8)[:, :, None], 3, axis=2)),
        repair="0..65535 scaled to 0..255, grey to RGB"),
    Case("exif_rotated", _with_mask("exif_rotated", _exif_rotated, expected=lambda: np.rot90(EXIF_STORED, -1)),
         repair="EXIF orientation applied (the mask is drawn on the upright image)"),
    Case("ignore_value_in_mask", _ignore_value, repair="pixels equal to ignore_index are void, left out of loss and "
                                                         "scores"),
    Case("non_utf8_name", _named(LATIN1_NAME, 14), repair="read as any file; printed with \\xNN escapes"),
    Case("space_in_name", _named("with space.png", 15), repair="read as any file"),
    Case("directory_symlink_loop", _directory_loop, recursive=True,
         repair="links to folders are not followed (recursive), so a loop neither hangs nor repeats files"),
)

ERRORS = tuple(case for case in CASES if case.tag is not None)
REPAIRS = tuple(case for case in CASES if case.tag is None)


def shown(path: Path) -> str:
    """A file name as seglab prints it (non-UTF-8 bytes escaped)."""
    return display_path(path.name)


def option_flags(case: Case, *, recursive: bool = True) -> list[str]:
    """The command-line flags of `seglab data check` and `predict` (`evaluate`: `recursive=False`, it has no
    such flag) for the case's folder options."""
    flags = ["--recursive"] if case.recursive and recursive else []
    if "palette" in case.options:
        colours = ",".join(f"{cls}:#{r:02x}{g:02x}{b:02x}" for cls, (r, g, b) in case.options["palette"].items())
        flags += ["--palette", colours]
    return flags


def build(case: Case, root: Path) -> Built:
    root.mkdir(parents=True, exist_ok=True)
    return case.build(root)


def chmod_blocks_reading(folder: Path) -> bool:
    """Whether taking every permission away stops this user reading a file (not for root, nor for some
    file systems)."""
    probe = folder / ".permission_probe"
    probe.write_bytes(b"x")
    probe.chmod(0)
    try:
        probe.read_bytes()
    except PermissionError:
        return True
    finally:
        probe.chmod(0o600)
        probe.unlink()
    return False


@contextlib.contextmanager
def unreadable_files(paths: list[Path]) -> Iterator[str]:
    """Make `paths` unreadable for the `with` block: `chmod 000` where that stops this user reading them, else
    (as root) an `open` that raises PermissionError for them, as the operating system would. Yields which."""
    paths = [Path(p) for p in paths]
    if not paths:
        yield "none"
        return
    if chmod_blocks_reading(paths[0].parent):
        for path in paths:
            path.chmod(0)
        try:
            yield "chmod"
        finally:
            for path in paths:
                path.chmod(0o644)
        return
    denied = {os.path.abspath(p) for p in paths}
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(file) in denied:
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    builtins.open = guarded_open
    try:
        yield "open"
    finally:
        builtins.open = real_open
