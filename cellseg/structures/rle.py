"""The one COCO RLE codec of cellseg: compressed ``counts`` strings parsed all at once, and masks
encoded from their runs, never as one full-image array per mask.

- ``rle_string_counts`` parses compressed strings (maskApi.c's format) into counts, vectorised
  over every string of an image or a results file (``CropMasks.from_rles`` decodes with it).
- ``encode_windows`` encodes masks given as windows placed in an image (pasted detections, mask
  crops), ``encode_instances`` every instance of an id map from one column-major pass; both
  build counts with ``rles_from_runs`` and compress with pycocotools' ``frPyObjects``, so the
  bytes equal pycocotools' ``encode`` of the full-size masks.
"""
from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils


def rles_from_runs(owner: np.ndarray, starts: np.ndarray, lengths: np.ndarray, n: int,
                   height: int, width: int) -> list[dict]:
    """Compressed COCO RLEs of ``n`` masks given their runs of foreground pixels.

    ``owner[j]`` is the mask of run ``j``, which starts at column-major pixel index ``starts[j]``
    of a ``height`` x ``width`` image and spans ``lengths[j]`` pixels. Runs are sorted by owner,
    then position, and runs of one owner neither touch nor overlap (each is maximal).
    Counts follow pycocotools' ``encode``: background first (0 when the mask starts with
    foreground), alternating, the last run ending the image included only if not empty.
    """
    total = height * width
    owner = np.asarray(owner, np.int64)
    starts = np.asarray(starts, np.int64)
    lengths = np.asarray(lengths, np.int64)
    ends = starts + lengths
    first = np.ones(len(owner), bool)
    first[1:] = owner[1:] != owner[:-1]
    prev_end = np.empty_like(ends)
    prev_end[0:1] = 0
    prev_end[1:] = ends[:-1]
    prev_end[first] = 0
    pairs = np.stack([starts - prev_end, lengths], axis=1).ravel().tolist()
    bounds = np.searchsorted(owner, np.arange(n + 1)).tolist()
    last_end = np.zeros(n, np.int64)
    has_runs = np.diff(bounds) > 0
    last_end[has_runs] = ends[np.asarray(bounds[1:], np.int64)[has_runs] - 1]
    tails = (total - last_end).tolist()
    objs = []
    for i in range(n):
        counts = pairs[2 * bounds[i]:2 * bounds[i + 1]]
        if tails[i]:
            counts.append(tails[i])
        objs.append({'counts': counts, 'size': [height, width]})
    return mask_utils.frPyObjects(objs, height, width) if objs else []


def encode_windows(windows: np.ndarray, y0: np.ndarray, x0: np.ndarray, height: int,
                   width: int) -> list[dict]:
    """RLEs of masks given as (n, h, w) bool windows whose top-left pixels lie at ``y0, x0``.

    Every foreground pixel must lie inside the ``height`` x ``width`` image. The runs come from
    the changes down each window column, so the cost follows the windows, not the image.
    """
    n = len(windows)
    if n == 0:
        return []
    y0, x0 = np.asarray(y0, np.int64), np.asarray(x0, np.int64)
    cols = windows.transpose(0, 2, 1)  # column-major within each window
    # background above and below every column: each run gives a change in and a change out
    changes = np.diff(cols, axis=2, prepend=False, append=False)
    # flat positions split by divmod: half the time of np.nonzero's per-axis indices
    _, n_cols, col_len = changes.shape
    flat = np.flatnonzero(changes)
    owner, rest = np.divmod(flat[0::2], n_cols * col_len)
    col, first = np.divmod(rest, col_len)
    last = flat[1::2] % col_len
    if owner.size and ((y0[owner] + last).max() > height or (x0[owner] + col).max() >= width
                       or (y0[owner] + first).min() < 0 or (x0[owner] + col).min() < 0):
        raise ValueError(f'a mask window reaches outside the {height}x{width} image')
    starts = (x0[owner] + col) * height + y0[owner] + first
    lengths = last - first
    # a run down to the image's last row goes on at the top of the next column
    joined = np.zeros(owner.size, bool)
    joined[1:] = (starts[1:] == starts[:-1] + lengths[:-1]) & (owner[1:] == owner[:-1])
    if joined.any():
        heads = np.flatnonzero(~joined)
        owner, starts, lengths = owner[heads], starts[heads], np.add.reduceat(lengths, heads)
    return rles_from_runs(owner, starts, lengths, n, height, width)


def label_map_runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                  np.ndarray]:
    """``(ids, owner, starts, lengths)``: the non-zero ids of an id map in increasing order and
    the runs of each (``owner`` indexes ``ids``) in column-major order."""
    flat = np.asarray(labels).ravel(order='F')
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.append(starts, flat.size))
    values = flat[starts]
    fg = values != 0
    starts, lengths, values = starts[fg], lengths[fg], values[fg]
    order = np.argsort(values, kind='stable')  # by id, each id's runs stay in image order
    starts, lengths, values = starts[order], lengths[order], values[order]
    ids, owner = np.unique(values, return_inverse=True)
    return ids, owner, starts, lengths


def encode_instances(labels: np.ndarray) -> list[dict]:
    """The instances of an id map, ``[{'id', 'segmentation', 'bbox',
    'area'}]`` by increasing id with ``counts`` as str, from one pass over the map."""
    ids, owner, starts, lengths = label_map_runs(labels)
    if not ids.size:
        return []
    rles = rles_from_runs(owner, starts, lengths, len(ids), *labels.shape)
    # the runs' sum is the area (pycocotools' area() of a list fails past 255 RLEs on numpy 2)
    areas = np.bincount(owner, weights=lengths, minlength=len(ids))
    boxes = mask_utils.toBbox(rles)
    return [dict(id=i, segmentation=dict(size=rle['size'], counts=rle['counts'].decode('ascii')),
                 bbox=[float(v) for v in box], area=float(area))
            for i, rle, box, area in zip(ids.tolist(), rles, boxes, areas.tolist())]


def rle_string_counts(strings: list[str | bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The uncompressed counts of compressed COCO RLE strings, all strings at once.

    Returns ``(counts, owner)``: int64 counts in order, ``owner[j]`` the string of ``counts[j]``.
    The format is maskApi.c's ``rleToString``: each count is stored in 5-bit groups, one character
    ('0' + group) per group, bit 0x20 "more groups follow", bit 0x10 of the last group the sign;
    from the fourth count on, counts are stored as differences from the count two places before.
    Raises ValueError for a string outside the alphabet or ending inside a count.
    """
    n = len(strings)
    if all(type(v) is str for v in strings):  # the usual case (JSON): one join, no copies
        joined = ''.join(strings).encode('ascii')
        lengths = np.fromiter(map(len, strings), np.int64, n)
    else:
        raw = [v.encode('ascii') if isinstance(v, str) else bytes(v) for v in strings]
        joined = b''.join(raw)
        lengths = np.fromiter(map(len, raw), np.int64, n)
    c = np.frombuffer(joined, np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if c.min() < 0 or c.max() > 63:
        raise ValueError('an RLE string holds characters outside its alphabet')
    ends = (c & 0x20) == 0  # the last group of a count
    string_end = np.cumsum(lengths) - 1
    nonempty = lengths > 0
    if not ends[string_end[nonempty]].all():
        raise ValueError('an RLE string ends inside a count (truncated)')
    starts = np.flatnonzero(np.concatenate([[True], ends[:-1]]))  # first group of each count
    groups = np.diff(np.append(starts, c.size))
    shift = 5 * (np.arange(c.size) - np.repeat(starts, groups))
    x = np.add.reduceat((c & 0x1F) << shift, starts)
    negative = (c[ends] & 0x10) != 0
    x[negative] -= np.left_shift(1, 5 * groups[negative])
    per_string = np.diff(np.concatenate([[0], np.cumsum(ends)[string_end]]))
    owner = np.repeat(np.arange(n), per_string)
    m = np.arange(x.size) - np.repeat(np.cumsum(per_string) - per_string, per_string)
    counts = x.copy()
    for parity in (0, 1):
        # counts[m] = x[m] + counts[m - 2] from m = 3 on: one running sum per string and parity,
        # starting at m = 1 (odd) and m = 2 (even)
        idx = np.flatnonzero((m >= 1) & (m % 2 == parity))
        if idx.size == 0:
            continue
        run = np.cumsum(x[idx])
        first = np.concatenate([[True], owner[idx[1:]] != owner[idx[:-1]]])
        base = (run - x[idx])[first]
        counts[idx] = run - np.repeat(base, np.diff(np.append(np.flatnonzero(first), idx.size)))
    return counts, owner


def foreground_runs(counts: np.ndarray, owner: np.ndarray, n: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(starts, lengths, owner)`` of the foreground runs of ``n`` masks' parsed counts
    (``rle_string_counts``): each run's first column-major pixel in its own mask's image, its
    length, and its mask; sorted by mask, then position. Counts alternate background and
    foreground, background first, so foreground runs are the odd places of each string."""
    per_string = np.bincount(owner, minlength=n)
    first = np.cumsum(per_string) - per_string
    nonempty = per_string > 0
    start = np.cumsum(counts) - counts  # exclusive running sum, restarted per string
    start -= np.repeat(start[first[nonempty]], per_string[nonempty])
    fg = ((np.arange(counts.size) - np.repeat(first, per_string)) % 2 == 1) & (counts > 0)
    return start[fg], counts[fg], owner[fg]
