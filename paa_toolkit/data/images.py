"""Image files → float32 RGB in ``[0, 1]``, whatever their bit depth, mode, orientation or transparency.

One reader for the dataset (:class:`~paa_toolkit.data.CocoDetection`) and for ``detect``, so both
see the same pixels. The rules (``docs/robustness.md`` has them as a table):

* **Bit depth.** 8-bit channels are divided by 255. 16-bit greyscale (Pillow's ``I;16`` modes, and
  ``I``, the mode Pillow gives 16-bit PNG, PGM and TIFF files) is divided by 65535; ``I`` values
  outside 0..65535 (true 32-bit integers) are refused. Float images (``F``) must already lie in
  ``[0, 1]``. Pillow reads 16-bit RGB(A) PNGs as 8-bit RGB(A), which loads correctly at 8-bit precision.
* **Mode.** ``1``, ``L``, ``P``, ``RGB``, ``RGBX``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` go through
  Pillow's conversion to RGB; greyscale is repeated over the three channels. Any other mode is refused.
* **Transparency** (an alpha channel, a palette with transparent entries, or a colour key) is
  composited onto ``background`` (white unless stated): the colour hidden under a transparent pixel
  is never used. Premultiplied ``RGBa``/``La`` are un-premultiplied first.
* **Orientation.** The EXIF Orientation tag is applied, so pixels — and the width and height that the
  dataset checks against its annotation file — are the image *as displayed* (by image viewers,
  browsers and annotation tools such as CVAT and Label Studio, and as detectron2's ``read_image``
  reads it); annotations must refer to that orientation.
* **Size.** At most ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (Pillow's decompression-bomb guard,
  89,478,485 by default; set it to ``None`` to lift the limit for trusted files), given as a clear
  error rather than Pillow's warning; the longer side at most :data:`MAX_ASPECT_RATIO` times the
  shorter one, so that every model size the config allows resizes the shorter side to at least 1 px.
* Animated or multi-page files: the first frame.

Every failure is an :class:`ImageReadError` (a ``ValueError`` and an ``OSError``) whose one-line
message names the file; Pillow's own exceptions, of whatever type, never escape.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

#: the longest side may be at most this many times the shortest (config: model.max_size >= 32)
MAX_ASPECT_RATIO = 32
#: what transparent pixels are composited onto, RGB in 0..255
WHITE = (255, 255, 255)
ORIENTATION = 0x0112  # the EXIF tag
#: EXIF orientation → the transpose that displays the image (as ``PIL.ImageOps.exif_transpose``)
DISPLAY_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SIXTEEN_BIT_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
CONVERTIBLE = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
SUPPORTED_MODES = SIXTEEN_BIT_GREY + ("F",) + ALPHA_MODES + CONVERTIBLE


class ImageReadError(ValueError, OSError):
    """An image file that cannot be read, or is refused (mode, values, size); the message names it.

    ``reason`` is the message without the file name, for callers that name the file their own way.
    """

    reason: str = ""


class ImageNotFoundError(ImageReadError, FileNotFoundError):
    """An image file that does not exist."""


def shown(path: str | Path) -> str:
    """A path for a one-line message: as it is, or quoted with escapes if it holds a line break or
    another control character."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def _error(path: Path, reason: str, cls: type[ImageReadError] = ImageReadError) -> ImageReadError:
    reason = " ".join(reason.split())  # one line, whatever Pillow wrote
    error = cls(f"cannot read image {shown(path)}: {reason}")
    error.reason = reason
    return error


def check_background(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """``background`` as a tuple of three ints in 0..255, or ``ValueError``."""
    values = tuple(background) if isinstance(background, (tuple, list)) else ()
    if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in values):
        raise ValueError(f"background must be three integers in 0..255 (RGB), got {background!r}")
    return values


def _open(path: Path) -> Image.Image:
    """``Image.open`` with the size limits and the mode as clear errors."""
    try:
        im = Image.open(path)
    except FileNotFoundError:
        raise _error(path, "no such file", ImageNotFoundError) from None
    except Image.DecompressionBombError as e:
        raise _error(path, f"{e} (the limit is PIL.Image.MAX_IMAGE_PIXELS; raise it for trusted images)") from None
    width, height = im.size
    limit = Image.MAX_IMAGE_PIXELS
    reason = None
    if width < 1 or height < 1:
        reason = f"image has no pixels ({width}x{height})"
    elif limit is not None and width * height > limit:
        reason = (
            f"{width}x{height} = {width * height:,} pixels is above the limit of {limit:,} "
            f"(PIL.Image.MAX_IMAGE_PIXELS, a guard against decompression bombs; raise it for trusted images)"
        )
    elif max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        reason = (
            f"{width}x{height} has an aspect ratio above {MAX_ASPECT_RATIO}:1 "
            f"(paa_toolkit.data.images.MAX_ASPECT_RATIO); crop or pad it"
        )
    elif im.mode not in SUPPORTED_MODES:
        reason = f"unsupported image mode {im.mode!r} (supported: {', '.join(SUPPORTED_MODES)})"
    if reason:
        im.close()
        raise _error(path, reason)
    return im


def _orientation(im: Image.Image) -> int:
    # Pillow's base reader of EXIF (and XMP) metadata: PNG's own override decodes the whole image to
    # look for an eXIf chunk after the pixels, where the PNG specification does not allow one.
    value = Image.Image.getexif(im).get(ORIENTATION, 1)
    return value if value in DISPLAY_TRANSPOSE else 1


def _guarded(path: Path, read):
    """``read(image)`` on the opened file; any failure becomes an :class:`ImageReadError` naming it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # _open raises a clear error instead
        try:
            with _open(path) as im:
                return read(im)
        except ImageReadError:
            raise
        except Exception as e:  # noqa: BLE001 — a decoder of untrusted files raises anything (SyntaxError, struct.error, …)
            raise _error(path, f"{type(e).__name__}: {e}" if not isinstance(e, OSError) else str(e)) from None


class ImageHeader(NamedTuple):
    width: int  # as displayed: EXIF orientation applied
    height: int
    orientation: int  # the file's EXIF Orientation, 1 (none) to 8; 5-8 swap width and height


def image_header(path: str | Path) -> ImageHeader:
    """Size and orientation from the file header, without decoding the pixels.

    Checks what the header tells: a known format, a supported mode, the size limits.
    """

    def header(im: Image.Image) -> ImageHeader:
        width, height = im.size
        orientation = _orientation(im)
        return ImageHeader(*((height, width) if orientation in (5, 6, 7, 8) else (width, height)), orientation)

    return _guarded(Path(path), header)


def read_rgb(path: str | Path, background: tuple[int, int, int] = WHITE) -> np.ndarray:
    """The whole image decoded, as displayed: float32 ``[H, W, 3]`` in ``[0, 1]`` (see the module rules)."""
    path, background = Path(path), check_background(background)

    def decode(im: Image.Image) -> np.ndarray:
        method = DISPLAY_TRANSPOSE.get(_orientation(im))
        im.load()
        if method is not None:
            im = im.transpose(method)
        return to_rgb(im, background, path)

    return _guarded(path, decode)


def read_image(path: str | Path, background: tuple[int, int, int] = WHITE) -> Tensor:
    """The image as float32 ``[3, H, W]`` in ``[0, 1]``, as displayed (see the module rules)."""
    return torch.from_numpy(np.ascontiguousarray(read_rgb(path, background).transpose(2, 0, 1)))


def to_rgb(im: Image.Image, background: tuple[int, int, int] = WHITE, path: str | Path = "<image>") -> np.ndarray:
    """A decoded PIL image → float32 ``[H, W, 3]`` in ``[0, 1]``; transparency composited onto ``background``."""
    mode, key = im.mode, im.info.get("transparency")
    if mode in SIXTEEN_BIT_GREY:
        grey = np.asarray(im).astype(np.int64)
        if grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise _error(
                Path(path),
                f"mode {mode} values {grey.min()}..{grey.max()} are outside 0..65535; "
                f"only 16-bit integer images are supported",
            )
        alpha = (grey != key).astype(np.float32) if isinstance(key, int) else None
        rgb = np.repeat((grey.astype(np.float32) / np.float32(65535))[..., None], 3, axis=2)
    elif mode == "F":
        grey = np.asarray(im, dtype=np.float32)
        if not np.isfinite(grey).all() or (grey.size and (grey.min() < 0 or grey.max() > 1)):
            raise _error(Path(path), "float (mode F) pixel values must be finite and in [0, 1]")
        alpha, rgb = None, np.repeat(grey[..., None], 3, axis=2)
    else:
        if key is not None and mode in ("L", "RGB") and max(np.atleast_1d(key).tolist()) > 255:
            raise _error(
                Path(path), f"16-bit colour-key transparency {key!r} on an 8-bit {mode} image is not supported"
            )
        transparent = mode in ALPHA_MODES or key is not None
        if mode == "La":  # Pillow converts La only to LA
            im = im.convert("LA")
        target = "RGBA" if transparent else "RGB"
        pixels = np.asarray(im if im.mode == target else im.convert(target)).astype(np.float32) / np.float32(255)
        rgb, alpha = pixels[..., :3], (pixels[..., 3] if transparent else None)
    if alpha is None:
        return np.ascontiguousarray(rgb, dtype=np.float32)
    fill = np.asarray(background, np.float32) / np.float32(255)
    return (rgb * alpha[..., None] + fill * (1 - alpha[..., None])).astype(np.float32)


__all__ = [
    "ImageNotFoundError",
    "ImageReadError",
    "MAX_ASPECT_RATIO",
    "WHITE",
    "ImageHeader",
    "check_background",
    "image_header",
    "read_image",
    "read_rgb",
    "to_rgb",
]
