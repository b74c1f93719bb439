"""From request bytes to an RGB array, refusing hostile input before decoding it: the pixel count is read from
the header, and a file that is not an image or is cut short is a 400 naming the problem."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from seglab.data.files import rgb_array
from seglab.serving.refusals import Refusal


def decode_image(body: bytes, *, max_pixels: int) -> np.ndarray:
    """`body` as an upright uint8 RGB `(H, W, 3)` array (any mode PIL reads, as `seglab predict` reads files).

    Refused: an empty body, bytes that are no image, an image whose header declares more than `max_pixels`
    (checked before any pixel is decoded) and an image whose data is truncated or corrupt."""
    if not body:
        raise Refusal("empty-body", "the request carries no image: send the file as the body (Content-Type: "
                                    "image/...) or as a multipart form field (curl -F image=@photo.jpg)")
    try:
        with warnings.catch_warnings():
            # PIL warns between its own bomb threshold and twice it; the pixel cap below is the rule here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(body))  # reads the header only
        # The stored size: an EXIF turn swaps the sides, not their product (and reading EXIF may read further).
        width, height = image.size
    except Image.DecompressionBombError as error:
        raise Refusal("too-many-pixels", f"the image declares an absurd size ({error}); this service takes at most "
                                         f"{max_pixels:,} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        if "truncated" in str(error).lower():  # a JPEG cut inside its header tables fails here, not in load()
            raise Refusal("truncated-image", f"the image is cut short inside its header ({error}); send the "
                                             "whole file") from None
        raise Refusal("not-an-image", f"the body is not an image PIL can read ({type(error).__name__}); send a "
                                      "PNG, JPEG, WebP, TIFF or BMP file") from None
    if width * height > max_pixels:
        image.close()
        raise Refusal("too-many-pixels", f"the image declares {width}x{height} = {width * height:,} pixels; this "
                                         f"service takes at most {max_pixels:,}: downscale it first")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
        return rgb_array(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise Refusal("truncated-image", f"the image cannot be decoded: it is truncated or corrupt ({error}); "
                                         "send the whole file") from None
    finally:
        image.close()
