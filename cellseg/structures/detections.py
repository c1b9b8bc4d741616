"""One image's (or tile's) detections as numpy arrays with ``CropMasks``: what tiling, test-time
augmentation and large-image prediction merge, between mmdet's ``pred_instances`` and the
writers."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from mmengine.structures import InstanceData

from cellseg.structures.crop_masks import CropMasks, mask_frame


@dataclass
class Detections:
    """Boxes (N, 4 float32 ``x1 y1 x2 y2``), scores (N float32), 0-based labels (N int64) and
    masks, all in the frame of ``masks`` (its ``height`` x ``width``)."""

    bboxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    masks: CropMasks

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def shape(self) -> tuple[int, int]:
        return self.masks.height, self.masks.width

    def select(self, index: np.ndarray | Sequence[int]) -> Detections:
        index = np.asarray(index, np.int64)
        return Detections(self.bboxes[index], self.scores[index], self.labels[index],
                          self.masks[index])

    @classmethod
    def empty(cls, height: int, width: int) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                   np.zeros(0, np.int64), CropMasks.from_crops([], height, width))

    @classmethod
    def concat(cls, parts: Sequence[Detections], height: int, width: int) -> Detections:
        """The detections of ``parts``, all in one ``height`` x ``width`` frame."""
        parts = [cls.empty(height, width), *parts]
        return cls(np.concatenate([p.bboxes for p in parts]).reshape(-1, 4).astype(np.float32),
                   np.concatenate([p.scores for p in parts]).astype(np.float32),
                   np.concatenate([p.labels for p in parts]).astype(np.int64),
                   CropMasks.cat([p.masks for p in parts]))

    @classmethod
    def from_instances(cls, instances: InstanceData, shape: tuple[int, int] | None = None,
                       offset: tuple[int, int] = (0, 0),
                       frame: tuple[int, int] | None = None) -> Detections:
        """From mmdet's ``pred_instances`` of an image of ``shape`` (default: the size the masks
        carry; masks in any form ``CropMasks.from_masks`` reads), moved by ``offset`` (dy, dx)
        into a ``frame`` (default: ``shape``), as a tile's detections go into their image."""
        if shape is None:
            shape = mask_frame(instances.masks)
        dy, dx = offset
        bboxes = instances.bboxes.detach().cpu().numpy().astype(np.float32).reshape(-1, 4)
        masks = CropMasks.from_masks(instances.masks, *shape)
        if frame is not None or dy or dx:
            masks = masks.placed(dy, dx, *(frame or shape))
        return cls(bboxes + np.array([dx, dy, dx, dy], np.float32),
                   instances.scores.detach().cpu().numpy().astype(np.float32),
                   instances.labels.detach().cpu().numpy().astype(np.int64), masks)

    def to_instances(self, masks: str = 'rle', device: torch.device | str = 'cpu'
                     ) -> InstanceData:
        """mmdet's ``pred_instances``, masks as COCO RLEs (``'rle'``: what mmdet's metric and
        the submission read) or a bool tensor (``'tensor'``: what ``MaskRCNN`` returns)."""
        out = InstanceData()
        out.bboxes = torch.from_numpy(self.bboxes.reshape(-1, 4)).to(device)
        out.scores = torch.from_numpy(self.scores).to(device)
        out.labels = torch.from_numpy(self.labels).to(device)
        if masks not in ('rle', 'tensor'):
            raise ValueError(f"masks must be 'rle' or 'tensor', got {masks!r}")
        out.masks = (self.masks.to_rles() if masks == 'rle'
                     else self.masks.to_bool_tensor(device))
        return out

    def extents(self) -> np.ndarray:
        """(N, 4) y0 x0 y1 x1 covering each mask and its box, integer pixels."""
        b = self.bboxes
        ext = np.stack([np.floor(b[:, 1]), np.floor(b[:, 0]), np.ceil(b[:, 3]),
                        np.ceil(b[:, 2])], axis=1).astype(np.int64).reshape(-1, 4)
        for i, c in enumerate(self.masks.crops):
            if c.pixels.size:
                ext[i] = (min(ext[i, 0], c.y0), min(ext[i, 1], c.x0), max(ext[i, 2], c.y1),
                          max(ext[i, 3], c.x1))
        return ext

    def rescaled(self, scale_factor: tuple[float, float], height: int, width: int
                 ) -> Detections:
        """Detections of a resized image mapped back to its ``height`` x ``width`` original;
        ``scale_factor`` is mmdet's ``(w_scale, h_scale)``."""
        sx, sy = (float(s) for s in scale_factor)
        return Detections(self.bboxes / np.array([sx, sy, sx, sy], np.float32), self.scores,
                          self.labels, self.masks.rescaled_to(scale_factor, height, width))


def rotate_boxes(boxes: np.ndarray, height: int, width: int, k: int) -> np.ndarray:
    """(N, 4) ``x1 y1 x2 y2`` boxes of a ``height`` x ``width`` image, in that image turned as
    ``MaskCrop.turned`` turns masks (``-k`` undoes ``k`` likewise). Boxes lie on pixel edges, so
    a mask's box turns into the turned mask's box."""
    x1, y1, x2, y2 = np.asarray(boxes, np.float32).reshape(-1, 4).T
    k %= 4
    if k == 0:
        out = (x1, y1, x2, y2)
    elif k == 1:  # point (x, y) -> (y, width - x)
        out = (y1, width - x2, y2, width - x1)
    elif k == 2:  # (x, y) -> (width - x, height - y)
        out = (width - x2, height - y2, width - x1, height - y1)
    else:  # (x, y) -> (height - y, x)
        out = (height - y2, x1, height - y1, x2)
    return np.stack(out, axis=1).astype(np.float32)
