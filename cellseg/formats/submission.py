"""The CodaBench submission: its format, a checker that lists every problem, and writing it.

The test set is described by ``test_image_name_to_ids.json``, a JSON list of
``{"file_name": "x.tif", "id": int, "height": int, "width": int}``. A submission is a zip holding
``test-results.json`` at its root, a COCO results list of::

    {"image_id": int, "category_id": 1..K, "bbox": [x, y, w, h], "score": 0..1,
     "segmentation": {"size": [h, w], "counts": str}}

with K the model's classes (HW3 has four; the checker is given K by the caller, which knows the
model's classes from its checkpoint).

MMDetection's ``CocoMetric(format_only=True, outfile_prefix=P)`` writes ``P.segm.json`` in exactly
this format; ``tools/test.py`` loads it and hands it to :func:`write_submission`.

This module depends only on the standard library, numpy, pycocotools,
:mod:`cellseg.utils.fileio` and
:mod:`cellseg.structures.rle` (numpy only), so the checker can run without MMDetection installed.
"""
from __future__ import annotations

import io
import json
import math
import os
import tempfile
import zipfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

from cellseg.formats.hw3 import TEST_ID_MAP, ImageInfo
from cellseg.formats.problems import is_int as _is_int
from cellseg.formats.problems import is_real as _is_real
from cellseg.formats.problems import raise_problems
from cellseg.formats.problems import short_repr as _short
from cellseg.structures.rle import rle_string_counts
from cellseg.utils.fileio import atomic_write_bytes

SUBMISSION_JSON = 'test-results.json'
SUBMISSION_ZIP = 'submission.zip'
RESULT_KEYS = ('image_id', 'category_id', 'bbox', 'score', 'segmentation')

# The characters of a compressed COCO RLE string ('0'..'o'; cellseg.structures.rle parses it):
# only to say which character is wrong when the decoder rejects a string.
_RLE_FIRST, _RLE_LAST = 48, 48 + 63


class SubmissionError(ValueError):
    """A submission or an id map breaks the format; the message lists every problem found."""


def _rle_problem(counts: bytes, height: int, width: int) -> str | None:
    """Why ``counts`` is not a compressed RLE of a ``height`` x ``width`` mask, or None if it is.

    pycocotools does not check this itself: ``area``/``toBbox`` return nonsense for garbage and
    ``decode`` of an empty string returns uninitialised memory. The string is parsed by the one
    RLE decoder (``rle_string_counts``); the runs must be non-negative and cover exactly h*w
    pixels. Only the wording of a parse failure is found here.
    """
    try:
        runs, _ = rle_string_counts([counts])
    except ValueError:
        codes = np.frombuffer(counts, np.uint8)
        bad = np.flatnonzero((codes < _RLE_FIRST) | (codes > _RLE_LAST))
        if bad.size:
            return (f'character {chr(codes[bad[0]])!r} at offset {int(bad[0])} is outside the '
                    "RLE alphabet '0'..'o'")
        return 'the string ends inside a run (truncated)'
    negative = np.flatnonzero(runs < 0)
    if negative.size:
        return f'run {int(negative[0])} has negative length {int(runs[negative[0]])}'
    total = int(runs.sum())
    if total != height * width:
        return f'the runs cover {total} pixels, not {height}*{width} = {height * width}'
    return None


def _is_rle_size(size: Any) -> bool:
    return (isinstance(size, (list, tuple)) and len(size) == 2
            and all(_is_int(v) and v >= 0 for v in size))


def _rle_counts(entry: Any) -> tuple[str | bytes, int] | None:
    """``(counts, height * width)`` of an entry whose segmentation has the shape of an RLE
    object (a size of two non-negative ints, str or bytes counts), else None."""
    seg = entry.get('segmentation') if isinstance(entry, dict) else None
    if not isinstance(seg, dict):
        return None
    size, counts = seg.get('size'), seg.get('counts')
    if not _is_rle_size(size) or not isinstance(counts, (str, bytes)):
        return None
    return counts, int(size[0]) * int(size[1])


def _valid_rles(results: Sequence[Any]) -> np.ndarray:
    """Per entry, True when its counts are known to be a valid compressed RLE of its size.

    All strings are parsed in one call of ``rle_string_counts`` (docs/speed.md). Entries left
    False (bad shape, or any string of the lot unparsable) go through ``_rle_problem``, which
    says what is wrong.
    """
    valid = np.zeros(len(results), bool)
    shaped = [(i, r) for i, r in enumerate(map(_rle_counts, results)) if r is not None]
    if not shaped:
        return valid
    index = np.array([i for i, _ in shaped])
    try:
        counts, owner = rle_string_counts([c for _, (c, _) in shaped])
    except ValueError:  # a bad (or non-ASCII) string somewhere: check each entry on its own
        return valid
    n = len(shaped)
    covered = np.bincount(owner, weights=counts, minlength=n)
    negative = np.bincount(owner, weights=counts < 0, minlength=n) > 0
    pixels = np.array([p for _, (_, p) in shaped], np.float64)
    valid[index] = (covered == pixels) & ~negative
    return valid


def _segmentation_problems(seg: Any, info: ImageInfo | None,
                           rle_known_valid: bool = False) -> list[str]:
    if not isinstance(seg, dict):
        return [f'segmentation must be an RLE object {{size, counts}}, got {type(seg).__name__} '
                '(polygons are not accepted)']
    missing = [k for k in ('size', 'counts') if k not in seg]
    if missing:
        return ['segmentation misses ' + ', '.join(repr(k) for k in missing)]
    problems = []
    size, counts = seg['size'], seg['counts']
    size_ok = _is_rle_size(size)
    if not size_ok:
        problems.append(f'segmentation size must be [height, width], got {_short(size)}')
    elif info is not None and [int(size[0]), int(size[1])] != [info.height, info.width]:
        hint = ' (transposed?)' if [size[1], size[0]] == [info.height, info.width] else ''
        problems.append(f'segmentation size {[int(v) for v in size]} differs from the image size '
                        f'[{info.height}, {info.width}] of {info.file_name!r}{hint}')
    if isinstance(counts, str):
        try:
            raw = counts.encode('ascii')
        except UnicodeEncodeError:
            problems.append('segmentation counts holds non-ASCII characters (not a COCO RLE)')
            return problems
    elif isinstance(counts, bytes):
        raw = counts
    else:
        # A list is an uncompressed RLE; the scorer expects the compressed string.
        problems.append(f'segmentation counts must be a compressed RLE string, got '
                        f'{type(counts).__name__}')
        return problems
    if size_ok:
        # Check against the size the entry claims: a wrong size is its own problem above.
        h, w = int(size[0]), int(size[1])
        why = None if rle_known_valid else _rle_problem(raw, h, w)
        if why is None:
            try:  # the scorer decodes with pycocotools: make sure it takes this object too
                mask_utils.area({'size': [h, w], 'counts': raw})
            except Exception as e:  # pycocotools raises TypeError/ValueError/... for bad input
                why = f'pycocotools rejects it ({type(e).__name__}: {e})'
        if why is not None:
            problems.append(f'segmentation counts {_short(counts, 30)} is not a valid RLE: {why}')
    return problems


def _category_problem(cat: Any, num_classes: int) -> str | None:
    """Why ``cat`` is not a category id of a model of ``num_classes`` classes (1..K), or None."""
    if _is_int(cat) and 1 <= cat <= num_classes:
        return None
    return f"category_id must be an int in 1..{num_classes} (the model's classes), got " \
        f'{_short(cat)}'


def _entry_problems(entry: Any, id_map: dict[int, ImageInfo], num_classes: int,
                    rle_known_valid: bool = False) -> list[str]:
    if not isinstance(entry, dict):
        return [f'not an object (got {type(entry).__name__})']
    missing = [k for k in RESULT_KEYS if k not in entry]
    if missing:
        return [f'missing key{"s" if len(missing) > 1 else ""} '
                + ', '.join(repr(k) for k in missing)]
    problems = []
    image_id, cat, bbox, score = (entry[k] for k in RESULT_KEYS[:4])
    info = None
    if not _is_int(image_id):
        problems.append(f'image_id must be an int, got {_short(image_id)}')
    elif image_id not in id_map:
        problems.append(f'image_id {image_id} is not in {TEST_ID_MAP}')
    else:
        info = id_map[image_id]
    if (why := _category_problem(cat, num_classes)) is not None:
        problems.append(why)
    if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
            or not all(_is_real(v) and math.isfinite(v) for v in bbox)):
        problems.append(f'bbox must be 4 finite numbers [x, y, w, h], got {_short(bbox)}')
    elif bbox[2] < 0 or bbox[3] < 0:
        problems.append(f'bbox width and height must be >= 0, got {_short(bbox)}')
    if not _is_real(score) or not math.isfinite(score) or not 0 <= score <= 1:
        problems.append(f'score must be a finite number in [0, 1], got {_short(score)}')
    problems += _segmentation_problems(entry['segmentation'], info, rle_known_valid)
    return problems


def validate_submission(results: list[dict], id_map: dict[int, ImageInfo],
                        num_classes: int, max_problems: int = 20) -> None:
    """Check every entry of a COCO results list against the test images of ``id_map`` and a
    model of ``num_classes`` classes (category ids 1..K).

    Raises :class:`SubmissionError` listing the first ``max_problems`` problems and a count of the
    rest. Extra keys in an entry are allowed (they are dropped when written). An empty list passes:
    it is a valid (zero-scoring) submission, and the caller should warn about it.
    """
    if not isinstance(results, (list, tuple)):
        raise SubmissionError(f'{SUBMISSION_JSON}: expected a list of results, '
                              f'got {type(results).__name__}')
    valid = _valid_rles(results)
    problems = [f'entry {i}: {p}' for i, e in enumerate(results)
                for p in _entry_problems(e, id_map, num_classes, bool(valid[i]))]
    raise_problems(SubmissionError, SUBMISSION_JSON, problems, max_problems)


def _normalized(entry: dict) -> dict:
    """The entry with only the five keys and plain JSON types (numpy scalars, bytes converted)."""
    seg = entry['segmentation']
    counts = seg['counts']
    return {
        'image_id': int(entry['image_id']),
        'category_id': int(entry['category_id']),
        'bbox': [float(v) for v in entry['bbox']],
        'score': float(entry['score']),
        'segmentation': {'size': [int(v) for v in seg['size']],
                         'counts': counts.decode('ascii') if isinstance(counts, bytes) else counts},
    }


def submission_paths(out_path: str | Path) -> tuple[Path, Path]:
    """``(json_path, zip_path)`` for ``out_path``: a ``.zip`` file path or a directory."""
    out_path = Path(out_path)
    if out_path.suffix.lower() == '.zip' and not out_path.is_dir():
        return out_path.parent / SUBMISSION_JSON, out_path
    if out_path.exists() and not out_path.is_dir():
        raise SubmissionError(f'{out_path}: exists and is not a directory; give a folder or a '
                              '.zip path for the submission')
    return out_path / SUBMISSION_JSON, out_path / SUBMISSION_ZIP


def check_submission_folder(out_path: str | Path) -> Path:
    """The folder the submission of ``out_path`` goes to, checked before the long run that
    fills it: the nearest folder of its path that exists must take a new file (the folder
    itself is created when the submission is written). Raises ``OSError`` or
    :class:`SubmissionError` naming the folder."""
    folder = submission_paths(out_path)[0].parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SubmissionError(f'{existing}: not a folder, so the submission folder {folder} '
                              'cannot be created')
    try:
        fd, probe = tempfile.mkstemp(prefix='.write-test-', dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OSError(e.errno, f'the submission cannot be written there ({e.strerror})',
                      str(existing)) from None
    return folder


def write_submission(results: list[dict], out_path: str | Path, id_map: dict[int, ImageInfo],
                     num_classes: int) -> tuple[Path, Path]:
    """Validate ``results`` (for a model of ``num_classes`` classes, see
    :func:`validate_submission`), then write ``test-results.json`` and the zip holding it.

    ``out_path`` ending in ``.zip``: the zip goes there and the JSON beside it. Otherwise it is a
    directory (created if needed) receiving ``test-results.json`` and ``submission.zip``. The zip
    holds one member, ``test-results.json``, at its root (where CodaBench reads it). Nothing is
    written if validation fails, and a failure while writing leaves neither file at its final path.
    Returns ``(json_path, zip_path)``.
    """
    json_path, zip_path = submission_paths(out_path)
    validate_submission(results, id_map, num_classes)
    # Everything is serialised in memory first, so a failure here touches no file.
    data = json.dumps([_normalized(e) for e in results], separators=(',', ':'),
                      allow_nan=False).encode()
    buf = io.BytesIO()
    # deflate level 1: faster than the default 6 on RLE JSON for a slightly larger zip (both
    # measured in docs/speed.md)
    with zipfile.ZipFile(buf, 'w', compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr(SUBMISSION_JSON, data)
    zip_bytes = buf.getvalue()

    atomic_write_bytes(json_path, data)
    try:
        atomic_write_bytes(zip_path, zip_bytes)
    except BaseException:
        # The JSON alone would look like a finished run whose zip is missing or stale.
        json_path.unlink(missing_ok=True)
        raise
    return json_path, zip_path


def summarize_submission(results: list[dict], id_map: dict[int, ImageInfo],
                         class_names: Sequence[str] = ()) -> str:
    """One short paragraph: entries, images with detections / total, per-class counts (every
    class of ``class_names``, the model's, by name; ids beyond them as ``classK``), scores."""
    total = len(id_map)
    if not results:
        return (f'0 entries: no detection on any of the {total} test images '
                '(WARNING: an empty submission scores 0).')
    images = {e.get('image_id') for e in results} & set(id_map)
    per_class = Counter(e.get('category_id') for e in results)
    scores = [float(e['score']) for e in results if _is_real(e.get('score'))]
    ids = sorted(set(range(1, len(class_names) + 1)) | {k for k in per_class if _is_int(k)})
    names = [class_names[k - 1] if 1 <= k <= len(class_names) else f'class{k}' for k in ids]
    text = (f'{len(results)} entries on {len(images)}/{total} test images '
            f'({total - len(images)} without any detection); per class: '
            + ', '.join(f'{name} {per_class.get(k, 0)}' for k, name in zip(ids, names)))
    if scores:
        mean = sum(scores) / len(scores)
        text += f'; scores {min(scores):.3f}..{max(scores):.3f} (mean {mean:.3f})'
    return text + '.'
