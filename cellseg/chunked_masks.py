"""Instance masks as COCO RLEs without full-image arrays: pasting, encoding, label maps.

mmdet's ``FCNMaskHead`` pastes every detection into an (N, H, W) tensor before anything encodes
it: 1000 detections of a 2500x2000 image are 5 GB. ``paste_masks_to_rles`` pastes the same
masks a bounded chunk at a time, each into a window around its own box, and RLE-encodes every
chunk at once, so memory holds one chunk of windows and the RLEs, never the full-size masks.

The results are the same bytes as pasting with mmdet and encoding with pycocotools:

- pasting computes, for every pixel of a detection's window, what mmdet's ``_do_paste_mask``
  computes for that pixel (same grid, same ``grid_sample``). The window is the one mmdet's CPU
  path uses, the box widened by one pixel each side. Outside it mmdet's CPU path leaves zeros;
  its GPU path samples the whole image, where pixels outside the window get less than half the
  mask's edge value, below any ``mask_thr_binary >= 0.5`` (mmdet's default is 0.5), so both
  paths give the same binary masks;
- an RLE is built from the runs of the window in column-major order, shifted to the window's
  place in the image: pycocotools' ``encode`` of the full-size mask yields the same counts, and
  ``frPyObjects`` compresses them the same way.

``encode_label_map`` encodes every instance of an id map from one column-major pass over the
map, instead of one full-image ``encode`` per instance; ``rle_pixels`` parses the RLEs of an
image, all at once, into their foreground pixels. Only the pasting needs torch (imported there),
so the data conversion can use the rest without it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pycocotools.mask as mask_utils

if TYPE_CHECKING:
    from torch import Tensor

# Pixels of the windows pasted at once. The float32 grid (2 values) and sampled masks (1) take
# 12 bytes a pixel: 2**22 pixels are ~50 MB, small beside the model's own memory on a CPU or GPU,
# yet ~4600 cell windows of 30x30 px, so one grid_sample call serves a whole dense image.
DEFAULT_CHUNK_PIXELS = 2**22


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


def _label_map_runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
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


def encode_label_map(labels: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """``(ids, rles)``: the non-zero ids of an HxW id map in increasing order and the compressed
    COCO RLE of each (what ``pycocotools.mask.encode(labels == id)`` gives), from one pass."""
    ids, owner, starts, lengths = _label_map_runs(labels)
    return ids, rles_from_runs(owner, starts, lengths, len(ids), *labels.shape)


def encode_instances(labels: np.ndarray) -> list[dict]:
    """What ``cellseg.hw3.encode_instance_map`` returns, ``[{'id', 'segmentation', 'bbox',
    'area'}]`` by increasing id with ``counts`` as str, from one pass over the map."""
    ids, owner, starts, lengths = _label_map_runs(labels)
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
    raw = [v.encode('ascii') if isinstance(v, str) else bytes(v) for v in strings]
    n = len(raw)
    c = np.frombuffer(b''.join(raw), np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if c.min() < 0 or c.max() > 63:
        raise ValueError('an RLE string holds characters outside its alphabet')
    ends = (c & 0x20) == 0  # the last group of a count
    string_end = np.cumsum([len(v) for v in raw]) - 1
    nonempty = np.array([len(v) > 0 for v in raw])
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


def rle_pixels(rles: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(instance, y, x)`` int64 coordinates of every foreground pixel of compressed COCO RLEs
    of one image (all of the same ``size``), by instance then column-major position."""
    if not rles:
        return (np.zeros(0, np.int64),) * 3
    height, width = (int(v) for v in rles[0]['size'])
    if any([int(v) for v in r['size']] != [height, width] for r in rles):
        raise ValueError('RLEs of one image must share one size')
    counts, owner = rle_string_counts([r['counts'] for r in rles])
    if counts.size and counts.min() < 0:
        raise ValueError('an RLE holds a negative run length')
    per_string = np.bincount(owner, minlength=len(rles))
    first = np.cumsum(per_string) - per_string
    offset = np.cumsum(counts) - counts  # exclusive running sum, then restarted per string
    offset -= np.repeat(offset[first[per_string > 0]], per_string[per_string > 0])
    if (np.bincount(owner, weights=counts, minlength=len(rles)) != height * width).any():
        raise ValueError(f'an RLE does not cover its {height}x{width} image')
    odd = (np.arange(counts.size) - np.repeat(first, per_string)) % 2 == 1  # foreground runs
    lengths, starts, inst = counts[odd], offset[odd], owner[odd]
    total = int(lengths.sum())
    run = np.repeat(np.arange(lengths.size), lengths)
    pos = starts[run] + np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return inst[run], pos % height, pos // height


def _windows(boxes: Tensor, img_h: int, img_w: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Top-left corner and size of each box's paste window, as mmdet's CPU path pastes one box:
    the box widened by a pixel each side, clipped to the image (int64, on the boxes' device)."""
    import torch

    x0 = torch.clamp(boxes[:, 0].floor() - 1, min=0).to(torch.int32).long()
    y0 = torch.clamp(boxes[:, 1].floor() - 1, min=0).to(torch.int32).long()
    x1 = torch.clamp(boxes[:, 2].ceil() + 1, max=img_w).to(torch.int32).long()
    y1 = torch.clamp(boxes[:, 3].ceil() + 1, max=img_h).to(torch.int32).long()
    return y0, x0, (y1 - y0).clamp(min=0), (x1 - x0).clamp(min=0)


def _chunks(heights: np.ndarray, widths: np.ndarray, max_pixels: int) -> list[np.ndarray]:
    """Detection indices grouped so each group's windows, padded to the group's largest height
    and width, hold at most ``max_pixels`` (one oversized window makes a group of its own).
    Windows go by increasing size, so a group pads little."""
    order = np.lexsort((widths, heights))
    groups, current, gh, gw = [], [], 0, 0
    for i in order.tolist():
        h, w = max(gh, int(heights[i])), max(gw, int(widths[i]))
        if current and (len(current) + 1) * h * w > max_pixels:
            groups.append(np.asarray(current))
            current, h, w = [], int(heights[i]), int(widths[i])
        current.append(i)
        gh, gw = h, w
    if current:
        groups.append(np.asarray(current))
    return groups


def _paste_group(mask_probs: Tensor, boxes: Tensor, y0: Tensor, x0: Tensor, hs: Tensor,
                 ws: Tensor, threshold: float) -> Tensor:
    """(n, H, W) bool windows of one group, H and W its largest window; pixels past a
    detection's own window are False. The grid arithmetic is ``_do_paste_mask``'s, pixel by
    pixel, so each value is the one mmdet computes."""
    import torch
    import torch.nn.functional as F

    device = boxes.device
    n = len(boxes)
    h, w = int(hs.max()), int(ws.max())
    img_y = (y0[:, None] + torch.arange(h, device=device)).to(torch.float32) + 0.5
    img_x = (x0[:, None] + torch.arange(w, device=device)).to(torch.float32) + 0.5
    bx0, by0, bx1, by1 = torch.split(boxes, 1, dim=1)
    img_y = (img_y - by0) / (by1 - by0) * 2 - 1
    img_x = (img_x - bx0) / (bx1 - bx0) * 2 - 1
    img_x[torch.isinf(img_x)] = 0  # a zero-width box, as mmdet handles it
    img_y[torch.isinf(img_y)] = 0
    gx = img_x[:, None, :].expand(n, h, w)
    gy = img_y[:, :, None].expand(n, h, w)
    grid = torch.stack([gx, gy], dim=3)
    probs = F.grid_sample(mask_probs.to(dtype=torch.float32), grid, align_corners=False)[:, 0]
    binary = probs >= threshold
    inside = ((torch.arange(h, device=device)[None, :, None] < hs[:, None, None])
              & (torch.arange(w, device=device)[None, None, :] < ws[:, None, None]))
    return binary & inside


def paste_masks_to_rles(mask_probs: Tensor, boxes: Tensor, img_h: int, img_w: int,
                        threshold: float, max_pixels: int = DEFAULT_CHUNK_PIXELS) -> list[dict]:
    """Paste (N, 1, h, w) mask probabilities into their (N, 4) x1 y1 x2 y2 boxes of an
    ``img_h`` x ``img_w`` image, binarise at ``threshold`` and return N compressed COCO RLEs.

    The same as mmdet's ``FCNMaskHead`` paste followed by ``encode_mask_results`` (see the module
    doc), with at most ``max_pixels`` window pixels in memory at once (plus one window, if a
    single box is larger).
    """
    import torch

    img_h, img_w = int(img_h), int(img_w)
    n = len(boxes)
    if n == 0:
        return []
    y0, x0, hs, ws = _windows(boxes, img_h, img_w)
    hs_np, ws_np = hs.cpu().numpy(), ws.cpu().numpy()
    rles: list[dict | None] = [None] * n
    # a box wholly outside the image has an empty window: an empty mask, nothing to paste
    empty = np.flatnonzero((hs_np == 0) | (ws_np == 0))
    for i, rle in zip(empty.tolist(), rles_from_runs(
            np.zeros(0), np.zeros(0), np.zeros(0), len(empty), img_h, img_w)):
        rles[i] = rle
    nonempty = np.flatnonzero((hs_np > 0) & (ws_np > 0))
    for group in _chunks(hs_np[nonempty], ws_np[nonempty], max_pixels):
        group = nonempty[group]
        idx = torch.from_numpy(group).to(boxes.device)
        windows = _paste_group(mask_probs[idx], boxes[idx], y0[idx], x0[idx], hs[idx], ws[idx],
                               threshold)
        encoded = encode_windows(windows.cpu().numpy(), y0[idx].cpu().numpy(),
                                 x0[idx].cpu().numpy(), img_h, img_w)
        for i, rle in zip(group.tolist(), encoded):
            rles[i] = rle
    return rles
