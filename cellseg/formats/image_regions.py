"""Reading an image a region at a time, for images larger than memory (whole-slide TIFFs).

- TIFF, OME-TIFF, tiled or pyramidal or neither: tifffile's zarr interface
  (``tifffile.imread(path, aszarr=True)`` opened with zarr), full-resolution level of the first
  series; a region read decodes only the TIFF tiles or strips it touches.
- SVS and NDPI (chosen by the file's suffix): tiffslide, else openslide, when one is installed;
  otherwise opening fails with ``<file>: ... install tiffslide``.

A region comes back as the model's input: HxWx3 uint8 by the rules of
``cellseg.formats.images`` (alpha dropped, grey replicated, planar samples moved last). For
pixel types other than uint8 the percentile rule needs the percentiles of the *whole* image,
which cannot be loaded: ``percentile_limits`` takes them from a strided sample of the full
resolution (every s-th pixel of every s-th row, s chosen so that at most
``PERCENTILE_SAMPLE_PIXELS`` are sampled). A strided sample is an unbiased sample of the pixel
values, which a lower pyramid level is not (its pixels are averages, so its high percentile lies
below the full image's), and any TIFF has it, pyramid or not.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import tifffile

from cellseg.formats.images import PERCENTILES, TIFF_SUFFIXES, to_rgb_uint8
from cellseg.formats.problems import FormatError

SLIDE_SUFFIXES = ('.svs', '.ndpi')
# 4 Mi sampled pixels put the 1st and 99.8th percentiles within a few thousandths of a percentile
# rank of the whole image's (binomial error sqrt(p(1-p)/n)), and hold 16 MB of float32
PERCENTILE_SAMPLE_PIXELS = 4 * 2**20


class ImageRegions:
    """A large image read a region at a time: ``height``, ``width``, ``dtype``, ``levels`` (the
    pyramid levels in the file, 1 when it has none) and ``read``."""

    height: int
    width: int
    dtype: np.dtype
    levels: int

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """Pixels of rows ``y0:y1`` and columns ``x0:x1`` as stored (types kept), samples last."""
        raise NotImplementedError

    def sample(self, step: int) -> np.ndarray:
        """Every ``step``-th pixel of every ``step``-th row, as stored, samples last."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> ImageRegions:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TiffRegions(ImageRegions):
    """A TIFF's first series, full resolution, through tifffile's zarr store."""

    def __init__(self, path: str | Path) -> None:
        import zarr  # only large TIFFs need it (requirements.txt pins it)

        super().__init__(path)
        try:
            with tifffile.TiffFile(self.path) as tif:
                series = tif.series[0]
                axes, shape = series.axes, series.shape
                self.levels = len(series.levels)
            self._store = tifffile.imread(self.path, aszarr=True, series=0, level=0)
            self._array = zarr.open(self._store, mode='r')
        except Exception as e:  # tifffile raises many types for truncated or foreign files
            raise FormatError(f'{self.path}: cannot read as TIFF ({type(e).__name__}: {e})') from e
        # singleton axes (OME-TIFF's T, Z, C of one plane) are dropped; what remains must be an
        # image the model reads: YX, YXS, or planar SYX/CYX with 3 or 4 samples
        self._index = tuple(0 if n == 1 and a not in 'YX' else slice(None)
                            for a, n in zip(axes, shape))
        kept = ''.join(a for a, n in zip(axes, shape) if n > 1 or a in 'YX')
        if kept not in ('YX', 'YXS', 'SYX', 'CYX') or (kept[0] in 'SC' and
                                                      shape[axes.index(kept[0])] not in (3, 4)):
            self.close()
            raise FormatError(f'{self.path}: expected a grey, RGB or RGBA image, got axes '
                              f'{axes} of shape {shape}')
        self._planar = kept[0] in 'SC'
        self.height, self.width = int(shape[axes.index('Y')]), int(shape[axes.index('X')])
        self.dtype = np.dtype(self._array.dtype)

    def _get(self, rows: slice, cols: slice) -> np.ndarray:
        index = list(self._index)
        spatial = [i for i, s in enumerate(index) if isinstance(s, slice)]
        y, x = (spatial[1], spatial[2]) if self._planar else (spatial[0], spatial[1])
        index[y], index[x] = rows, cols
        pixels = np.asarray(self._array[tuple(index)])
        return np.moveaxis(pixels, 0, -1) if self._planar else pixels

    def read(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        return self._get(slice(y0, y1), slice(x0, x1))

    def sample(self, step: int) -> np.ndarray:
        return self._get(slice(None, None, step), slice(None, None, step))

    def close(self) -> None:
        store = getattr(self, '_store', None)
        if store is not None:
            store.close()
            self._store = None


class SlideRegions(ImageRegions):
    """An SVS or NDPI slide's full-resolution level through tiffslide or openslide (RGB uint8)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        try:
            import tiffslide as slides
        except ImportError:
            try:
                import openslide as slides
            except ImportError:
                raise FormatError(f'{self.path}: reading {self.path.suffix} slides needs '
                                  'tiffslide or openslide: pip install tiffslide') from None
        try:
            self._slide = (slides.TiffSlide(str(self.path)) if hasattr(slides, 'TiffSlide')
                           else slides.OpenSlide(str(self.path)))
        except Exception as e:
            raise FormatError(f'{self.path}: cannot open as a slide ({type(e).__name__}: {e})'
                              ) from e
        self.width, self.height = (int(v) for v in self._slide.dimensions)
        self.levels = int(self._slide.level_count)
        self.dtype = np.dtype(np.uint8)

    def read(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        region = self._slide.read_region((x0, y0), 0, (x1 - x0, y1 - y0))
        return np.asarray(region)  # RGBA (openslide, tiffslide's default): alpha dropped later

    def sample(self, step: int) -> np.ndarray:
        raise FormatError(f'{self.path}: slides are read as RGB uint8; no percentiles needed')

    def close(self) -> None:
        slide = getattr(self, '_slide', None)
        if slide is not None:
            slide.close()
            self._slide = None


def open_regions(path: str | Path) -> ImageRegions:
    """The region reader for ``path``, by its suffix (``SLIDE_SUFFIXES`` or TIFF)."""
    suffix = Path(path).suffix.lower()
    if suffix in SLIDE_SUFFIXES:
        return SlideRegions(path)
    if suffix in TIFF_SUFFIXES:
        return TiffRegions(path)
    raise FormatError(f'{path}: cannot be read a region at a time (TIFF, OME-TIFF, '
                      f'{", ".join(SLIDE_SUFFIXES)} can)')


def percentile_limits(regions: ImageRegions, percentiles: tuple[float, float] = PERCENTILES
                      ) -> tuple[float, float] | None:
    """The values the percentile rule maps to 0 and 255 for the whole image, from a strided
    sample (module doc); None for uint8, which is used as it is. A constant sample gets its
    type's range, as ``cellseg.formats.images.to_uint8`` gives a constant image."""
    if regions.dtype == np.uint8:
        return None
    dtype = regions.dtype
    if dtype.kind == 'b' or not (np.issubdtype(dtype, np.integer)
                                 or np.issubdtype(dtype, np.floating)):
        raise FormatError(f'{regions.path}: unsupported pixel type {dtype} (integer or '
                          'floating point expected)')
    step = max(1, math.ceil(math.sqrt(regions.height * regions.width
                                      / PERCENTILE_SAMPLE_PIXELS)))
    values = regions.sample(step).astype(np.float32)
    if values.ndim == 3 and values.shape[-1] == 4:  # alpha is dropped, not normalised
        values = values[..., :3]
    values = values[np.isfinite(values)]
    if not values.size:
        raise FormatError(f'{regions.path}: no finite pixel value')
    lo, hi = (float(v) for v in np.percentile(values, percentiles))
    if hi <= lo:
        lo, hi = (0.0, 1.0) if np.issubdtype(dtype, np.floating) else (
            float(min(np.iinfo(dtype).min, 0)), float(np.iinfo(dtype).max))
    return lo, hi  # plain floats: they are kept in the run's JSON state


def region_rgb(regions: ImageRegions, y0: int, x0: int, y1: int, x1: int,
               limits: tuple[float, float] | None, bgr: bool = False) -> np.ndarray:
    """Rows ``y0:y1``, columns ``x0:x1`` as HxWx3 uint8 RGB (BGR with ``bgr``).

    ``limits`` (from ``percentile_limits``) scale other types than uint8 exactly as
    ``cellseg.formats.images.to_uint8`` scales a whole image by its own percentiles; that
    function cannot be given the whole image's values, so the scaling is spelled out here."""
    pixels = regions.read(y0, x0, y1, x1)
    if pixels.dtype != np.uint8:
        if limits is None:
            raise ValueError(f'{regions.path}: {pixels.dtype} pixels need percentile limits')
        # float64 as np.percentile returns them to to_uint8: the same arithmetic, the same bytes
        lo, hi = np.float64(limits[0]), np.float64(limits[1])
        if pixels.ndim == 3 and pixels.shape[-1] == 4:
            pixels = pixels[..., :3]
        values = pixels.astype(np.float32)
        finite = np.isfinite(values)
        values -= lo
        values *= 255.0 / (hi - lo)
        np.clip(values, 0, 255, out=values)
        values[~finite] = 0
        pixels = np.rint(values).astype(np.uint8)
    return to_rgb_uint8(pixels, regions.path, bgr)
