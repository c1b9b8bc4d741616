"""Reading microscopy images as the 3-channel uint8 pictures the model sees: one rule for
training, testing and prediction.

- TIFF (tifffile; planar RGB as ImageJ writes it, samples first, is turned to samples last),
  PNG and JPEG (OpenCV, unchanged: 16 bits and alpha kept until the rules below).
- RGBA: the alpha channel is dropped (real HW3 images have alpha 255 everywhere; a partly
  transparent image is converted the same way and a warning names it). Grey (HxW, HxWx1) is
  converted first and replicated to three channels last, so the conversion touches one channel.
- uint8: used as it is.
- Any other type (uint16 from 12- and 16-bit cameras, float32 from Fiji, other integers):
  normalised by percentiles, as csbdeep's ``normalize(img, 1, 99.8)`` that StarDist and
  Cellpose users know: the image's ``percentiles`` (over all its pixels and channels) map to 0
  and 255, values beyond them are clipped. A single saturated pixel or a hot-pixel outlier then
  no longer decides the contrast of the whole image, as it did with the image's own min..max.
  An image whose two percentiles coincide (a constant image) is scaled by its type's range
  instead (integers: 0..max of the type; floats: 0..1), so it does not turn black.

``LoadCellImageFromFile`` takes the percentiles from the config (``percentiles``), so they are
saved with every checkpoint and prediction reads with what training used.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tifffile

from cellseg.formats.problems import FormatError

TIFF_SUFFIXES = ('.tif', '.tiff')
# csbdeep's defaults (normalize(x, pmin=1, pmax=99.8)), which StarDist's models are trained with
PERCENTILES = (1.0, 99.8)

logger = logging.getLogger(__name__)


def read_tiff(path: Path) -> np.ndarray:
    """The pixels of a TIFF's first series, samples (RGB) last even where the file stores them
    first (planar, axes ``SYX`` or ``CYX`` with 3 or 4 samples)."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            pixels = series.asarray()
            axes = series.axes
    except Exception as e:  # tifffile raises many types for empty, truncated or foreign files
        raise FormatError(f'{path}: cannot read as TIFF ({type(e).__name__}: {e})') from e
    if pixels.ndim == 3 and axes[0] in 'SC' and axes[1:] == 'YX' and pixels.shape[0] in (3, 4):
        pixels = np.moveaxis(pixels, 0, -1)
    return pixels


def tiff_shape(path: str | Path) -> tuple[int, int]:
    """Height and width of a TIFF from its header, without decoding the pixels."""
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            shape = tif.series[0].shape
            axes = tif.series[0].axes
    except Exception as e:
        raise FormatError(f'{path}: cannot read as TIFF ({type(e).__name__}: {e})') from e
    if 'Y' not in axes or 'X' not in axes:
        raise FormatError(f'{path}: not a 2-D image (axes {axes}, shape {shape})')
    return int(shape[axes.index('Y')]), int(shape[axes.index('X')])


def to_uint8(pixels: np.ndarray, source: str | Path = '<array>',
             percentiles: tuple[float, float] = PERCENTILES) -> np.ndarray:
    """``pixels`` of any numeric type as uint8 by the percentile rule of the module doc (uint8
    is returned as it is)."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == bool or not (np.issubdtype(pixels.dtype, np.integer)
                                    or np.issubdtype(pixels.dtype, np.floating)):
        raise FormatError(f'{source}: unsupported pixel type {pixels.dtype} (integer or '
                          'floating point expected)')
    values = pixels.astype(np.float32)
    finite = np.isfinite(values)
    if not finite.any():
        raise FormatError(f'{source}: no finite pixel value')
    lo, hi = np.percentile(values[finite] if not finite.all() else values, percentiles)
    if hi <= lo:  # constant: the type's own range
        lo, hi = (0.0, 1.0) if np.issubdtype(pixels.dtype, np.floating) else (
            float(min(np.iinfo(pixels.dtype).min, 0)), float(np.iinfo(pixels.dtype).max))
    values -= lo
    values *= 255.0 / (hi - lo)
    np.clip(values, 0, 255, out=values)
    values[~finite] = 0
    return np.rint(values).astype(np.uint8)


def to_rgb_uint8(pixels: np.ndarray, source: str | Path = '<array>', bgr: bool = False,
                 percentiles: tuple[float, float] = PERCENTILES) -> np.ndarray:
    """Grey/RGB/RGBA pixels of any numeric type as HxWx3 uint8 RGB (BGR with ``bgr``), by the
    rules of the module doc; the channel order is chosen in the copy that drops alpha, so the
    data loader does not copy the image a second time to reorder it."""
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim == 2:
        grey = to_uint8(pixels, source, percentiles)
        return np.repeat(grey[..., None], 3, axis=-1)
    if pixels.ndim == 3 and pixels.shape[-1] == 4:
        alpha = pixels[..., 3]
        if alpha.min() != alpha.max():
            logger.warning('%s: alpha channel is not uniform; it is ignored (pixels are used as '
                           'they are, not composited)', source)
        pixels = pixels[..., 2::-1] if bgr else pixels[..., :3]
    elif pixels.ndim == 3 and pixels.shape[-1] == 3:
        if bgr:
            pixels = pixels[..., ::-1]
    else:
        raise FormatError(f'{source}: expected a grey, RGB or RGBA image, got shape '
                          f'{pixels.shape}')
    return np.ascontiguousarray(to_uint8(pixels, source, percentiles))


def read_image(path: str | Path, bgr: bool = False,
               percentiles: tuple[float, float] = PERCENTILES) -> np.ndarray:
    """Read an image file (TIFF, PNG, JPEG) as HxWx3 uint8 RGB (BGR with ``bgr``)."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f'{path}: image file not found')
    flip = bgr
    if path.suffix.lower() in TIFF_SUFFIXES:
        pixels = read_tiff(path)
    else:
        import cv2  # only non-TIFF images need OpenCV's decoders

        # IMREAD_UNCHANGED keeps 16 bits and alpha, so the rules above apply as for a TIFF
        # (cv2's colour decode, which mmcv uses, would divide 16-bit values by 256)
        pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if pixels is None:
            raise FormatError(f'{path}: cannot decode image')
        # OpenCV decodes to BGR(A): reversing it gives RGB, keeping it gives BGR, and
        # to_rgb_uint8 does either in its one copy
        flip = not bgr
    if pixels.ndim >= 2 and min(pixels.shape[:2]) == 0:
        raise FormatError(f'{path}: image is empty (shape {pixels.shape})')
    return to_rgb_uint8(pixels, path, flip, tuple(percentiles))
