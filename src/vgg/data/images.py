"""Image decoding: the file extensions read as images, safe opening (decompression bombs refused,
EXIF orientation applied), any Pillow mode to 8-bit RGB, and the two decodes the loaders run in their
workers: a training crop (Sec. 3.1) and a whole image rescaled to Q (Sec. 3.2).

Image files are decoded by Pillow straight to the uint8 crop: the crop's window is mapped back to the
source image and only that window is resampled (``Image.resize`` with ``box``), after a DCT-domain
JPEG down-scale (draft mode) when the image is at least 2x too large.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .augment import crop_boxes, rescaled_size

# The package's one list of the file extensions read as images (folders, `vgg predict`).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff",
                              ".ppm", ".pgm", ".pbm", ".pnm"})
# Images above this many pixels are refused as decompression bombs (Pillow's own default limit).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89478485
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


class BadImage(Exception):
    """A file that cannot be used as an image; ``str(e)`` is the reason."""


def _bad_reason(path: str, error: BaseException) -> str:
    if isinstance(error, BadImage):
        return str(error)
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    if isinstance(error, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return f"too large to decode safely ({error})"
    if isinstance(error, UnidentifiedImageError):
        return "not an image (Pillow cannot identify the format)"
    if "truncated" in str(error).lower():
        return f"truncated ({error})"
    return f"corrupt ({type(error).__name__}: {error})"


def open_image(path: str | Path) -> tuple[Image.Image, Image.Transpose | None]:
    """Open an image lazily (header only) and refuse decompression bombs; also return the transpose
    that applies its EXIF orientation (None when upright). Raises BadImage with the reason."""
    path = str(path)
    im = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
        if im.width * im.height > MAX_PIXELS:
            raise BadImage(f"too large to decode safely ({im.width}x{im.height} pixels > {MAX_PIXELS})")
        orientation = im.getexif().get(0x0112, 1) if im.format in ("JPEG", "TIFF", "PNG", "WEBP") else 1
        return im, _ORIENTATION.get(orientation)
    except Exception as e:  # any decoder error (Pillow raises many types) is a reason to skip the file
        if im is not None:
            im.close()
        raise e if isinstance(e, BadImage) else BadImage(_bad_reason(path, e)) from e


def oriented_size(im: Image.Image, transpose) -> tuple[int, int]:
    """(height, width) once EXIF orientation is applied."""
    w, h = im.size
    swaps = transpose in (Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90,
                          Image.Transpose.ROTATE_270)
    return (w, h) if swaps else (h, w)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16/32-bit greyscale scaled (not clipped) to 0-255, transparency
    composited over white, palette/greyscale/CMYK/YCbCr converted."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if im.mode == "F":
            a = a * 255.0 if a.size and a.max() <= 1.0 else a
        else:  # 16-bit samples (I;16*, or "I" from a 16-bit PNG/TIFF): 65535 -> 255
            a = a / 257.0
        return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def load_image(path: str | Path, min_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode ``path`` to an upright 8-bit RGB Pillow image.

    With ``min_size`` = (height, width) wanted after orientation, a JPEG at least twice as large is
    decoded at 1/2, 1/4 or 1/8 scale in the DCT domain (Pillow's draft mode), never below min_size.
    Raises BadImage with the reason (corrupt, truncated, empty, not an image, too large).
    """
    im, transpose = open_image(path)
    with im:
        return _decode(im, transpose, str(path), min_size)


def _decode(im: Image.Image, transpose, path: str, min_size: tuple[int, int] | None) -> Image.Image:
    try:
        if min_size is not None and im.format == "JPEG":
            h, w = oriented_size(im, transpose)
            if min(h, w) >= 2 * min(min_size):  # draft mode only pays when it can halve the image
                wanted = min_size if (h, w) != (im.height, im.width) else min_size[::-1]
                im.draft(im.mode, wanted)
        im.load()
        out = im.transpose(transpose) if transpose is not None else im
        out = to_rgb(out)
        return out.copy() if out is im else out  # detached from the file, which the caller closes
    except Exception as e:  # as above
        raise BadImage(_bad_reason(path, e)) from e


def _to_tensor(im: Image.Image) -> Tensor:
    """(3, H, W) uint8 view of a writable copy of an RGB image (channels-last in memory)."""
    return torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1)


def decode_train_crop(path: str, crop_size: int, scale: int, u_y: float, u_x: float) -> Tensor:
    """The uint8 (3, crop, crop) training crop of one file (Sec. 3.1): rescaled to shorter side
    ``scale`` (S), then cropped where (u_y, u_x) in [0, 1) place it (see :func:`crop_boxes`). Only the
    crop's window of the source is resampled (``Image.resize(box=...)``), after draft-mode JPEG
    decoding at the rescaled size when the file is at least twice as large."""
    im, transpose = open_image(path)
    with im:
        h, w = oriented_size(im, transpose)
        rgb = _decode(im, transpose, path, rescaled_size(h, w, scale))
    x0, y0, x1, y1 = crop_boxes(h, w, scale, crop_size, u_y, u_x).tolist()
    fx, fy = rgb.width / w, rgb.height / h  # draft mode shrank the image by these factors
    crop = rgb.resize((crop_size, crop_size), Image.Resampling.BILINEAR,
                      box=(x0 * fx, y0 * fy, x1 * fx, y1 * fy))
    return _to_tensor(crop)


def decode_rescaled(path: str, scale: int, size: tuple[int, int] | None = None) -> Tensor:
    """The uint8 (3, H, W) image rescaled so its shorter side is ``scale`` (Q, Sec. 3.2), uncropped.
    ``size`` = the expected (H, W) after rescaling (from the header), checked."""
    im, transpose = open_image(path)
    with im:
        h, w = oriented_size(im, transpose)
        sh, sw = rescaled_size(h, w, scale)
        if size is not None and (sh, sw) != tuple(size):
            raise BadImage(f"changed on disk since it was listed: now {w}x{h}")
        rgb = _decode(im, transpose, path, (sh, sw))
    image = _to_tensor(rgb)
    if rgb.size != (sw, sh):
        # torch's uint8 channels-last bilinear (antialiased) resize gives Pillow's BILINEAR result,
        # bit for bit here, and faster (AVX2); the decoded (H, W, 3) array is already channels-last.
        image = F.interpolate(image[None], size=(sh, sw), mode="bilinear", align_corners=False,
                              antialias=True)[0]
    return image
