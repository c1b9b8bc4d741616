"""The HW3 data layout: reading, validating and converting it to COCO.

Layout::

    DATA_ROOT/train/<name>/image.tif            RGBA (or RGB, grey) uint8/uint16
    DATA_ROOT/train/<name>/class{1..K}.tif      instance-id maps, 0 = background (HW3: K = 4)
    DATA_ROOT/test_release/<file>.tif
    DATA_ROOT/test_image_name_to_ids.json       [{file_name, id, height, width}, ...]
    DATA_ROOT/classes.txt                       optional: the K class names, one a line

Every non-zero value of ``classK.tif`` is one instance of class K. Real masks are float64; any
integer dtype is accepted too. A class file may be absent (no instance of that class).

Images are read by ``cellseg.formats.images`` (the same rules for training, testing and
prediction: alpha dropped, grey replicated, other types than uint8 normalised by percentiles).
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from cellseg.formats.images import (  # noqa: F401  (read_image: the data's reader)
    TIFF_SUFFIXES,
    read_image,
    read_tiff,
    tiff_shape,
)
from cellseg.formats.problems import FormatError, is_int, raise_problems, short_repr
from cellseg.structures.rle import encode_instances

# The classes are the data's own (``data_classes``): the competition's four class files give
# class1..class4, other data may name its classes in this file.
CLASSES_TXT = 'classes.txt'  # optional, in the data root: one class name a line, class1 first
IMAGE_FILE = 'image.tif'
TEST_DIR = 'test_release'
TEST_ID_MAP = 'test_image_name_to_ids.json'
ID_MAP_KEYS = ('file_name', 'id', 'height', 'width')
_CLASS_FILE = re.compile(r'^class(\d+)\.tiff?$', re.IGNORECASE)

logger = logging.getLogger(__name__)


# A file of an HW3 data root is unreadable or breaks the format; the message names it. The
# formats' one error type: an image read by cellseg.formats.images raises the same.
HW3FormatError = FormatError


@dataclass(frozen=True)
class TrainSample:
    """One ``train/<name>/`` folder: its image and the class files present (class id -> path)."""

    name: str
    image_path: Path
    class_paths: dict[int, Path] = field(default_factory=dict)


class ImageInfo(NamedTuple):
    """One entry of ``test_image_name_to_ids.json``."""

    file_name: str
    id: int
    height: int
    width: int


def path_problem(name: str, folder: str) -> str | None:
    """Why ``name`` (a ``file_name`` of an id map or annotation file, relative to ``folder``)
    would lead outside that folder, or None when it stays inside. Such paths are refused rather
    than resolved: a map naming ``../../x`` or ``/x`` would read, and submit, a file that is not
    part of the data."""
    if Path(name).is_absolute() or PureWindowsPath(name).anchor:
        return f'{name!r} is an absolute path; it must be relative to {folder}'
    if '..' in PureWindowsPath(name).parts:  # both separators: '..\\x' is refused as well
        return f"{name!r} leaves {folder} ('..'); it must name a file inside it"
    return None


def load_id_map(path: str | Path) -> dict[int, ImageInfo]:
    """Read ``test_image_name_to_ids.json`` into ``{id: ImageInfo}``.

    Raises :class:`HW3FormatError` (a ``ValueError``) whose message starts with the file's path:
    unreadable or not JSON, not a non-empty list, an entry that is not an object, misses a key or
    has a value of the wrong type, non-positive height/width, duplicate ids or file names, a
    file name outside ``test_release/`` (absolute, or with ``..``). One problem is one line
    (``<map>: entry 2: ...``); several are listed under ``<map>: N problems:``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except OSError as e:
        # HW3FormatError rather than OSError: callers report ValueErrors as data problems.
        raise HW3FormatError(f'{path}: cannot read ({type(e).__name__}: {e})') from e
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise HW3FormatError(f'{path}: not valid JSON ({e})') from e
    if not isinstance(data, list):
        raise HW3FormatError(f'{path}: expected a JSON list of {{file_name, id, height, width}} '
                              f'objects, got {type(data).__name__}')
    if not data:
        raise HW3FormatError(f'{path}: the list is empty (no test image to submit)')

    problems: list[str] = []
    infos: dict[int, ImageInfo] = {}
    first_of_id: dict[int, int] = {}
    first_of_name: dict[str, int] = {}
    for i, e in enumerate(data):
        if not isinstance(e, dict):
            problems.append(f'entry {i}: not an object (got {type(e).__name__})')
            continue
        missing = [k for k in ID_MAP_KEYS if k not in e]
        if missing:
            problems.append(f'entry {i}: missing key{"s" if len(missing) > 1 else ""} '
                            + ', '.join(repr(k) for k in missing))
            continue
        ok = True
        name, image_id = e['file_name'], e['id']
        if not isinstance(name, str) or not name:
            problems.append(f'entry {i}: file_name must be a non-empty string, got '
                            f'{short_repr(name)}')
            ok = False
        elif (outside := path_problem(name, f'{TEST_DIR}/')) is not None:
            problems.append(f'entry {i}: file_name {outside}')
            ok = False
        if not is_int(image_id):
            problems.append(f'entry {i}: id must be an int, got {short_repr(image_id)}')
            ok = False
        for k in ('height', 'width'):
            if not is_int(e[k]) or e[k] <= 0:
                problems.append(f'entry {i}: {k} must be a positive int, got {short_repr(e[k])}')
                ok = False
        if is_int(image_id):
            if image_id in first_of_id:
                problems.append(f'entry {i}: duplicate id {image_id} '
                                f'(also entry {first_of_id[image_id]})')
                ok = False
            else:
                first_of_id[int(image_id)] = i
        if isinstance(name, str) and name:
            if name in first_of_name:
                problems.append(f'entry {i}: duplicate file_name {name!r} '
                                f'(also entry {first_of_name[name]})')
                ok = False
            else:
                first_of_name[name] = i
        if ok:
            infos[int(image_id)] = ImageInfo(name, int(image_id), int(e['height']), int(e['width']))
    if len(problems) == 1:
        raise HW3FormatError(f'{path}: {problems[0]}')
    raise_problems(HW3FormatError, str(path), problems, max_problems=20)
    return infos


def read_instance_map(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Read one ``classK.tif`` as an int64 HxW id map and check it.

    Raises HW3FormatError naming the file for a shape other than ``shape``, non-finite, negative
    or fractional values.
    """
    path = Path(path)
    values = read_tiff(path)
    if values.ndim == 3 and values.shape[-1] == 1:
        values = values[..., 0]
    if values.shape != tuple(shape):
        raise HW3FormatError(f'{path}: mask shape {values.shape} differs from its image '
                             f'{tuple(shape)}')
    if values.dtype.kind == 'f':
        if not np.isfinite(values).all():
            raise HW3FormatError(f'{path}: mask holds NaN or infinite values')
        if (values < 0).any():
            raise HW3FormatError(f'{path}: mask holds negative instance ids')
        if (values != np.floor(values)).any():
            raise HW3FormatError(f'{path}: mask holds fractional instance ids (e.g. '
                                 f'{float(values[values != np.floor(values)][0])})')
    elif values.dtype.kind in 'iu':
        if values.dtype.kind == 'i' and (values < 0).any():
            raise HW3FormatError(f'{path}: mask holds negative instance ids')
    elif values.dtype.kind == 'b':
        values = values.astype(np.uint8)
    else:
        raise HW3FormatError(f'{path}: unsupported mask type {values.dtype}')
    return values.astype(np.int64)


def class_files(sample_dir: str | Path) -> dict[int, Path]:
    """The ``classK.tif`` files of a train folder, by class id (K >= 1)."""
    found: dict[int, Path] = {}
    for p in sorted(Path(sample_dir).iterdir()):
        m = _CLASS_FILE.match(p.name)
        if not m:
            continue
        k = int(m.group(1))
        if k < 1:
            raise HW3FormatError(f'{p}: unknown class file (classes are numbered from class1)')
        if k in found:
            raise HW3FormatError(f'{p}: class {k} given twice ({found[k].name} and {p.name})')
        found[k] = p
    return found


def read_class_names(data_root: str | Path) -> tuple[str, ...] | None:
    """The names in ``DATA_ROOT/classes.txt`` (one a line, blank lines skipped), or None when
    the file is absent."""
    path = Path(data_root) / CLASSES_TXT
    if not path.is_file():
        return None
    names = tuple(line.strip() for line in path.read_text(encoding='utf-8').splitlines()
                  if line.strip())
    if not names:
        raise HW3FormatError(f'{path}: names no class')
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise HW3FormatError(f'{path}: class names given twice: {", ".join(dupes)}')
    return names


def data_classes(data_root: str | Path, samples: list[TrainSample]) -> tuple[str, ...]:
    """The classes of a data root: ``classes.txt``'s names, else ``class1..classK`` with K the
    highest class file number found. A class file above the named classes is an error."""
    names = read_class_names(data_root)
    highest = max((k for s in samples for k in s.class_paths), default=0)
    if names is None:
        if highest == 0:
            raise HW3FormatError(f'{Path(data_root) / "train"}: no class file in any folder and no '
                                 f'{CLASSES_TXT}: the classes cannot be known')
        return tuple(f'class{k}' for k in range(1, highest + 1))
    for s in samples:
        for k, path in s.class_paths.items():
            if k > len(names):
                raise HW3FormatError(f'{path}: class {k}, but {Path(data_root) / CLASSES_TXT} '
                                     f'names {len(names)} classes')
    return names


def list_train_samples(data_root: str | Path) -> list[TrainSample]:
    """All ``train/<name>/`` folders, sorted by name so image ids are stable across runs."""
    train_dir = Path(data_root) / 'train'
    if not train_dir.is_dir():
        raise HW3FormatError(f'{train_dir}: no train folder (expected train/<name>/image.tif)')
    samples = []
    for d in sorted(p for p in train_dir.iterdir() if p.is_dir()):
        image_path = d / IMAGE_FILE
        if not image_path.is_file():
            raise HW3FormatError(f'{d}: no {IMAGE_FILE} in this train folder')
        samples.append(TrainSample(d.name, image_path, class_files(d)))
    if not samples:
        raise HW3FormatError(f'{train_dir}: holds no image folders')
    return samples


def iter_instances(labels: np.ndarray) -> Iterator[tuple[int, tuple[slice, slice]]]:
    """(id, bounding slices) of each non-zero id of an id map, in increasing id order."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if ids.size == 0:
        return
    # find_objects allocates one slot per id up to the largest, so relabel sparse ids densely
    if ids[-1] > 4 * ids.size + 1024:
        dense = np.searchsorted(ids, labels).astype(np.int32) + 1
        dense[labels == 0] = 0
        slices = ndimage.find_objects(dense)
        for i, sl in enumerate(slices):
            yield int(ids[i]), sl
        return
    slices = ndimage.find_objects(labels.astype(np.int32, copy=False))
    for i in ids:
        yield int(i), slices[i - 1]


def categories(names: tuple[str, ...]) -> list[dict]:
    """COCO categories of ``names``: ids 1..K in order."""
    return [dict(id=i + 1, name=name) for i, name in enumerate(names)]


def convert_sample(sample: TrainSample) -> tuple[tuple[int, int], list[dict]]:
    """Image shape and the COCO-style instances (with ``category_id``) of one train folder.

    Class maps are read one at a time, so memory holds one map plus its RLEs, never all masks.
    """
    shape = tiff_shape(sample.image_path)
    instances = []
    owner: dict[str, Path] = {}  # RLE string -> the class file it came from
    for k, path in sorted(sample.class_paths.items()):
        # one column-major pass over the map's runs, not one full-image encode per instance;
        # the same RLEs as that (tests/test_speed_equivalences.py)
        found = encode_instances(read_instance_map(path, shape))
        for inst in found:
            inst['category_id'] = k
            instances.append(inst)
        _refuse_identical_masks(path, found, owner)
    return shape, instances


def _refuse_identical_masks(path: Path, found: list[dict], owner: dict[str, Path]) -> None:
    """Raise when an instance of ``path`` has exactly the pixels of one of an earlier class
    file of the same image (``owner``, updated here): the same cell in two classes, which would
    train as two overlapping instances of two classes (a class file copied by mistake)."""
    same: dict[Path, int] = {}
    for inst in found:
        counts = inst['segmentation']['counts']  # equal strings of one size: equal masks
        earlier = owner.setdefault(counts, path)
        if earlier != path:
            same[earlier] = same.get(earlier, 0) + 1
    for earlier, n in same.items():
        raise HW3FormatError(f'{path}: {n} of its {len(found)} instance masks are identical to '
                             f'masks of {earlier} (the same cells in two classes; each cell '
                             'belongs in one class file)')


def test_image_infos(data_root: str | Path, warn_unlisted: bool = True) -> list[ImageInfo]:
    """Entries of ``test_image_name_to_ids.json``, checked against ``test_release/``.

    A listed file that is missing, or whose size differs from the map, is an error naming it; a
    file present but not listed cannot be submitted and is logged as skipped (unless
    ``warn_unlisted`` is False: an early check whose caller reads the map again later).
    """
    root = Path(data_root)
    map_path = root / TEST_ID_MAP
    id_map = load_id_map(map_path)
    test_dir = root / TEST_DIR
    listed = {info.file_name for info in id_map.values()}
    for info in id_map.values():
        path = test_dir / info.file_name
        if not path.is_file():
            raise HW3FormatError(f'{path}: listed in {map_path} (id {info.id}) but missing')
        h, w = tiff_shape(path) if path.suffix.lower() in TIFF_SUFFIXES else read_image(
            path).shape[:2]
        if (h, w) != (info.height, info.width):
            raise HW3FormatError(f'{path}: size {h}x{w} differs from {map_path} '
                                 f'({info.height}x{info.width})')
    if test_dir.is_dir() and warn_unlisted:
        for p in sorted(test_dir.iterdir()):
            if p.is_file() and p.name not in listed:
                logger.warning('%s: not listed in %s, skipped (no id to submit it under)', p,
                               map_path)
    return sorted(id_map.values(), key=lambda info: info.id)
