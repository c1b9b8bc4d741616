"""Pasting predicted masks into their images as COCO RLEs, a bounded chunk at a time.

mmdet's ``FCNMaskHead`` pastes every detection into an (N, H, W) tensor before anything encodes
it: 1000 detections of a 2500x2000 image are 5 GB. ``paste_masks_to_rles`` pastes the same
masks a bounded chunk at a time, each into a window around its own box, and RLE-encodes every
chunk at once (``cellseg.structures.rle.encode_windows``), so memory holds one chunk of windows
and the RLEs, never the full-size masks.

The results are the same bytes as pasting with mmdet and encoding with pycocotools: pasting
computes, for every pixel of a detection's window, what mmdet's ``_do_paste_mask`` computes for
that pixel (same grid, same ``grid_sample``). The window is the one mmdet's CPU path uses, the
box widened by one pixel each side. Outside it mmdet's CPU path leaves zeros; its GPU path
samples the whole image, where pixels outside the window get less than half the mask's edge
value, below any ``mask_thr_binary >= 0.5`` (mmdet's default is 0.5), so both paths give the
same binary masks.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cellseg.structures.rle import encode_windows

# Pixels of the windows pasted at once. The float32 grid (2 values) and sampled masks (1) take
# 12 bytes a pixel: 2**22 pixels are ~50 MB, small beside the model's own memory on a CPU or GPU,
# yet ~4600 cell windows of 30x30 px, so one grid_sample call serves a whole dense image.
DEFAULT_CHUNK_PIXELS = 2**22


def _windows(boxes: Tensor, img_h: int, img_w: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Top-left corner and size of each box's paste window, as mmdet's CPU path pastes one box:
    the box widened by a pixel each side, clipped to the image (int64, on the boxes' device)."""

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

    img_h, img_w = int(img_h), int(img_w)
    n = len(boxes)
    if n == 0:
        return []
    y0, x0, hs, ws = _windows(boxes, img_h, img_w)
    hs_np, ws_np = hs.cpu().numpy(), ws.cpu().numpy()
    rles: list[dict | None] = [None] * n
    # a box wholly outside the image has an empty window: an empty mask, nothing to paste
    empty = np.flatnonzero((hs_np == 0) | (ws_np == 0))
    zeros = np.zeros(len(empty), np.int64)
    for i, rle in zip(empty.tolist(), encode_windows(np.zeros((len(empty), 1, 1), bool), zeros,
                                                     zeros, img_h, img_w)):
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
