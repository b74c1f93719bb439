"""Reading image and mask files safely: every failure becomes a `FileProblem` naming the file and what to do.

The dataset classes and `seglab data check` share these readers, so a file that `check` passes is one that the
datasets load, and the messages are the same in both places.
"""

from __future__ import annotations

import errno
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from seglab.data.options import FolderOptions
from seglab.errors import DataError

# Extensions recognised as images in users' folders (lower case). PIL reads all of them.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm", ".pbm")

# Larger images are refused before decoding: PIL's own decompression-bomb threshold (~89.5 Mpixel, a
# 9459x9459 image), far beyond any segmentation input, and what a crafted PNG header would claim.
MAX_IMAGE_PIXELS = 89_478_485


# Every tag a `FileProblem` may carry: what `seglab data check`, `predict`, `evaluate` and training print in
# brackets before the file's name. The message beside each tag says what to do about that file.
PROBLEM_TAGS = {
    "missing": "the path names no file",
    "broken-link": "a symbolic link whose target does not exist",
    "symlink-loop": "a symbolic link that points (through others) back at itself",
    "permission-denied": "the file exists but this user may not read it",
    "empty": "the file has 0 bytes",
    "unreadable": "not an image format PIL can read (e.g. text named .png)",
    "truncated": "an image cut short or corrupt inside its data",
    "too-large": "declares more pixels than MAX_IMAGE_PIXELS (a decompression bomb)",
    "size-mismatch": "a mask whose size differs from its image's",
    "mask-values": "mask values outside the classes (and not the ignore index) or not in the value map",
    "mask-colours": "colours of an RGB mask that the palette does not name",
    "mask-alpha": "a colour-coded mask with transparent pixels (alpha below 255): their class is unknown",
    "mask-16bit": "a 16/32-bit mask where 8-bit class indices are expected",
    "mask-channels": "a multi-channel (RGB) mask where single-channel class indices are expected",
    "all-ignore": "a mask whose every pixel is the ignore index: nothing to learn or score",
    "unpaired": "an image without a mask or a mask without an image",
    "duplicate-stem": "several files that would pair by the same stem",
    "no-images": "a folder that holds no image files",
    "no-match": "a glob pattern that matches no file",
    "no-mask": "an input of `predict --masks` without a mask of its stem",
    "out-of-memory": "an input whose prediction ran out of memory (the others are still predicted)",
    "unknown-label": "an annotated object whose label or category is not one of the classes",
    "bad-shape": "an annotated object whose shape cannot be drawn (a polygon with fewer than 3 points, ...)",
    "outside-image": "an annotated object with coordinates outside its image (drawn clipped)",
}


def display_path(path: Path | str) -> str:
    """`path` as printable text: bytes of a non-UTF-8 file name appear as `\\xNN` escapes instead of making
    a print or a UTF-8 report file fail."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


class FileProblem(DataError):
    """One file is unusable; `path` names it and `kind`, one of `PROBLEM_TAGS`, says what is wrong."""

    def __init__(self, path: Path | str, kind: str, message: str) -> None:
        if kind not in PROBLEM_TAGS:
            raise ValueError(f"unknown file problem tag {kind!r}; add it to PROBLEM_TAGS")
        self.path = Path(path)
        self.kind = kind
        self.detail = message
        super().__init__(f"{display_path(path)}: {message}")

    def __reduce__(self):
        # Exceptions pickle as type(self)(*self.args); ours takes three arguments (DataLoader workers pickle it).
        return type(self), (self.path, self.kind, self.detail)


def size_mismatch(
    mask_path: Path | str,
    mask_shape: tuple[int, ...],
    image_path: Path | str,
    image_shape: tuple[int, ...],
    advice: str = "masks must match their image pixel for pixel",
) -> FileProblem:
    """The one "size-mismatch" problem that the datasets, `seglab data check` and `predict --masks` report."""
    if tuple(mask_shape[:2]) == tuple(image_shape[1::-1]):
        # Typical of a photo whose EXIF orientation tag seglab applies while the mask was drawn unrotated.
        advice += (" (the mask is the image turned by 90 degrees: seglab applies the image's EXIF orientation; "
                   "rotate the mask to match, or save the image without the orientation tag)")
    return FileProblem(
        mask_path,
        "size-mismatch",
        f"the mask is {mask_shape[1]}x{mask_shape[0]} but its image {display_path(Path(image_path).name)} is "
        f"{image_shape[1]}x{image_shape[0]}; {advice}",
    )


def require_labelled(mask: np.ndarray, path: Path | str, ignore_index: int) -> np.ndarray:
    """`mask` as it is, unless every pixel is `ignore_index`: such a pair adds nothing to a score, and a training
    batch made only of such masks has no pixel to average the loss over (NaN)."""
    if mask.size and (mask == ignore_index).all():
        raise FileProblem(
            path,
            "all-ignore",
            f"every pixel is the ignore index {ignore_index}; label it or remove the pair (if {ignore_index} is "
            f"really a class, as in 0/{ignore_index} masks, pass a value map such as 0:0,{ignore_index}:1)",
        )
    return mask


def list_image_files(folder: Path | str) -> list[Path]:
    """Image files directly inside `folder`, skipping hidden files and macOS `._*` resource forks."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; pass the folder that holds the image files")
    return [
        p
        for p in folder.iterdir()
        if is_listed_file(p) and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    ]


def is_listed_file(path: Path) -> bool:
    """A file, or a symbolic link that is not a folder: broken links and link loops are listed, so that reading
    them reports the file instead of leaving it out without a word."""
    return path.is_file() or (path.is_symlink() and not path.is_dir())


def natural_key(text: str) -> tuple:
    """Sort key that puts "2" before "10", so indices follow the order a person expects."""
    # Two lines instead of natsort (not a dependency): natsort also reads signs and decimals, which would reorder
    # names like "img-1.5.png" against the order datasets ship them in.
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def open_image(path: Path | str, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open and fully decode `path`, turning every PIL failure into a `FileProblem`."""
    path = Path(path)
    try:
        size_bytes = path.stat().st_size
    except OSError as error:
        raise _os_problem(path, error) from None
    if size_bytes == 0:
        raise FileProblem(path, "empty", "the file is empty (0 bytes); re-export or remove it")
    try:
        with warnings.catch_warnings():
            # PIL only warns between its threshold and twice it; we refuse at our own limit below instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError:
        raise FileProblem(
            path, "too-large", "declares an absurd size (a decompression bomb?); it is not an image seglab will read"
        ) from None
    except PermissionError as error:
        raise _os_problem(path, error) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        if "truncated" in str(error).lower():  # a JPEG cut inside its header tables fails here, not in load()
            raise FileProblem(
                path, "truncated", f"is cut short inside its header ({error}); re-export or copy it again"
            ) from None
        raise FileProblem(path, "unreadable", f"is not a readable image ({error}); re-export or remove it") from None
    width, height = image.size
    if width <= 0 or height <= 0 or width * height > max_pixels:
        image.close()
        raise FileProblem(
            path,
            "too-large",
            f"declares {width}x{height} pixels, above the limit of {max_pixels:,} (a decompression bomb or a "
            "corrupt header); downscale or tile it first",
        )
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        image.close()
        raise FileProblem(
            path, "truncated", f"cannot be decoded, the file is truncated or corrupt ({error}); re-export it"
        ) from None
    return upright(image)


def _os_problem(path: Path, error: OSError) -> FileProblem:
    # Why the operating system would not let us read `path`, as a tagged problem with what to do.
    if isinstance(error, PermissionError) or error.errno == errno.EACCES:
        return FileProblem(path, "permission-denied", "cannot be opened: permission denied; make it readable "
                                                      "(chmod a+r) or run seglab as a user who may read it")
    if error.errno == errno.ELOOP:
        return FileProblem(path, "symlink-loop", f"is a symbolic link that leads back to itself ({error.strerror}); "
                                                 "point it at a real file or remove it")
    if path.is_symlink():
        return FileProblem(path, "broken-link", f"is a symbolic link to {os.readlink(path)}, which does not exist; "
                                                "fix or remove the link")
    return FileProblem(path, "missing", f"cannot be read ({error.strerror or error})")


# EXIF orientation 1 is "as stored"; 2..8 are mirrored and rotated views.
_EXIF_ORIENTATION = 0x0112


def upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of `image` as `upright` shows it, from the header alone (nothing decoded)."""
    turned = image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)  # the four that swap the axes
    width, height = image.size
    return (height, width) if turned else (width, height)


def upright(image: Image.Image) -> Image.Image:
    """`image` turned as its EXIF orientation tag says, as photo viewers and annotation tools show it."""
    if image.getexif().get(_EXIF_ORIENTATION, 1) in (1, None):
        return image
    return ImageOps.exif_transpose(image)


def load_rgb(path: Path | str) -> np.ndarray:
    """Read an image as uint8 RGB `(H, W, 3)` whatever its mode (greyscale, CMYK, palette, alpha, 16-bit)."""
    return _rgb(open_image(path))  # open_image has already turned it upright


def rgb_array(image: Image.Image) -> np.ndarray:
    """A decoded PIL image as uint8 RGB `(H, W, 3)`, turned and converted from any mode as `load_rgb` does."""
    return _rgb(upright(image))


def _rgb(image: Image.Image) -> np.ndarray:
    # An upright image of any mode as uint8 RGB (H, W, 3).
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # High bit-depth greyscale (microscopy, medical): stretch the full integer range to 8 bits.
        values = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode != "RGB":
        # CMYK, L, LA, RGBA, P, 1: PIL's conversion is correct for all; alpha is dropped on purpose.
        image = image.convert("RGB")
    return np.array(image)  # a writable copy: torch.from_numpy warns on read-only arrays


def load_mask_values(path: Path | str, *, channels: str = "index") -> np.ndarray:
    """Read a mask's raw values: `(H, W)` for `channels="index"` (one channel expected), `(H, W, 3)` for `"rgb"`."""
    image = open_image(path)
    if channels == "rgb":
        if image.mode not in ("RGB", "RGBA", "P", "L"):
            raise FileProblem(path, "mask-channels", f"is a {image.mode} image; a colour-coded mask must be RGB")
        if image.mode == "RGBA" or "transparency" in image.info:
            # Opaque alpha (255 everywhere, as LabelMeFacade's masks) carries nothing and is dropped. Real
            # transparency is refused rather than guessed: a tool that erased a region may mean void or "not
            # done yet", and the colour under it is arbitrary.
            alpha = np.asarray(image.convert("RGBA").getchannel("A"))
            if alpha.min() < 255:
                raise FileProblem(path, "mask-alpha", f"has {int((alpha < 255).sum())} transparent or translucent "
                                                      "pixels (alpha below 255); paint them with a palette colour "
                                                      "(a void colour mapped to the ignore index for unknown "
                                                      "pixels) and save the mask opaque")
        return np.asarray(image.convert("RGB"))
    if image.mode in ("RGB", "RGBA", "CMYK", "LA", "YCbCr", "LAB", "HSV"):
        raise FileProblem(
            path,
            "mask-channels",
            f"is a multi-channel ({image.mode}) image where a single-channel class-index mask was expected; "
            "save it as greyscale/indexed PNG, or pass a palette (class -> colour) for colour-coded masks",
        )
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise FileProblem(
            path,
            "mask-16bit",
            f"is a {image.mode} ({'16-bit' if image.mode.startswith('I;16') else '32-bit'}) image where an 8-bit "
            "class-index mask was expected; save masks as 8-bit greyscale or indexed PNG (or map its values "
            "with a value map)",
        )
    if image.mode == "1":
        return np.asarray(image).astype(np.uint8)  # bilevel as indices: classes 0 and 1
    # Palette ("P") masks: the stored indices are the classes, the palette is only for display.
    return np.asarray(image)


class MaskDecoder:
    """Turns raw mask values into int64 class indices `(H, W)`, with `ignore_index` for void.

    Exactly one encoding applies: `palette` (class -> RGB colour) for colour-coded masks, `value_map`
    (stored value -> class, e.g. `{0: 0, 255: 1}`), or neither: the stored values are the class indices.
    A palette or value map may send a colour/value to `ignore_index`. Any other value is an error that
    names the file, so mislabelled masks never train silently.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        value_map: Mapping[int, int] | None = None,
        palette: Mapping[int, tuple[int, int, int]] | None = None,
        ignore_index: int = 255,
    ) -> None:
        # The encoding's values are checked once, by `FolderOptions.check` (`from_options`); this builds the tables.
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.value_map = None if value_map is None else {int(k): int(v) for k, v in value_map.items()}
        self.palette = None if palette is None else {int(k): tuple(int(c) for c in v) for k, v in palette.items()}
        if self.value_map is not None:
            # Lookup table over every possible 8/16-bit value: -1 marks values the map does not name.
            self._lut = np.full(65536, -1, dtype=np.int64)
            for value, cls in self.value_map.items():
                self._lut[value] = cls
        if self.palette is not None:
            codes = np.array([(r << 16) | (g << 8) | b for r, g, b in self.palette.values()], dtype=np.int64)
            order = np.argsort(codes)
            self._codes = codes[order]
            self._classes = np.array(list(self.palette.keys()), dtype=np.int64)[order]

    @classmethod
    def from_options(cls, options: FolderOptions) -> MaskDecoder:
        """The decoder that reads masks as `options` describe (checked first)."""
        names = options.resolved_class_names()
        return cls(len(names), value_map=options.value_map, palette=options.palette_colours(),
                   ignore_index=options.ignore_index)

    @property
    def channels(self) -> str:
        return "rgb" if self.palette is not None else "index"

    def read(self, path: Path | str) -> np.ndarray:
        """Read and decode the mask file at `path` to int64 class indices."""
        if self.value_map is not None:
            # Value maps may address 16-bit values, so read the raw integers without the 8-bit check.
            image = open_image(path)
            if image.mode in ("RGB", "RGBA", "CMYK", "LA"):
                raise FileProblem(
                    path,
                    "mask-channels",
                    f"is a multi-channel ({image.mode}) image; a value map needs single-channel "
                    "masks (use a palette for colour-coded masks)",
                )
            if image.mode == "1":  # bilevel PNGs: read as 0/255, the values a person sees in them
                image = image.convert("L")
            return self.decode(np.asarray(image), path)
        return self.decode(load_mask_values(path, channels=self.channels), path)

    def decode(self, values: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
        """Decode an array already read from `path` (the path is only used in messages)."""
        if self.palette is not None:
            rgb = values.astype(np.int64)
            codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
            pos = np.clip(np.searchsorted(self._codes, codes), 0, len(self._codes) - 1)
            known = self._codes[pos] == codes
            if not known.all():
                unknown = np.unique(codes[~known])[:5]
                colours = ", ".join(f"#{c:06x}" for c in unknown.tolist())
                raise FileProblem(
                    path,
                    "mask-colours",
                    f"has colours not in the palette ({colours}); add them to the palette "
                    f"(map void to {self.ignore_index}) or fix the mask",
                )
            return self._classes[pos]
        if self.value_map is not None:
            if values.dtype.kind == "f" or values.min() < 0 or values.max() > 65535:
                raise FileProblem(path, "mask-values", "holds values a value map cannot address (float or negative)")
            classes = self._lut[values.astype(np.int64)]
            if (classes < 0).any():
                unknown = np.unique(values[classes < 0])[:8].tolist()
                raise FileProblem(
                    path,
                    "mask-values",
                    f"has values {unknown} that the value map {self.value_map} does not name; "
                    "add them to the value map (map void to the ignore index)",
                )
            return classes
        classes = values.astype(np.int64)
        bad = (classes >= self.num_classes) & (classes != self.ignore_index) | (classes < 0)
        if bad.any():
            unknown = np.unique(classes[bad])[:8].tolist()
            raise FileProblem(
                path,
                "mask-values",
                f"has values {unknown} outside the classes 0..{self.num_classes - 1} "
                f"(ignore index {self.ignore_index}); pass a value map (e.g. 255:1) if the values are not indices",
            )
        return classes
