"""Export predicted cell instances as a QuPath-readable GeoJSON FeatureCollection.

Input is an instance label image as cellseg's predict writes ``<stem>_labels.tif`` (2-D
integer array, 0 = background, one id per instance) plus one record per instance:
a mapping with keys ``instance_id`` (int, the label value), ``class_id`` (int, 1..K, an
index into ``class_names``/``palette`` counted from 1) and ``score`` (finite float).

QuPath conventions followed (QuPath >= 0.4, GeoJSON reader/writer ``PathObjectTypeAdapters``
and pull request qupath/qupath#1099):

* one ``Feature`` per object; ``properties.objectType`` selects the object kind
  (``"detection"`` here); ``properties.name`` is a free-text label;
* ``properties.classification`` is ``{"name": str, "color": [r, g, b]}``;
* ``properties.measurements`` is a flat ``{name: number}`` map (the pre-0.4 list of
  ``{"name", "value"}`` pairs is still read but no longer written by QuPath). We write
  ``score``, ``area`` (pixel count) and ``instance_id`` so rows can be joined back to the
  label image;
* no top-level ``id``: since 0.4 QuPath only accepts a UUID there and generates one
  itself when it is absent.

The user imports the file with drag & drop of the ``.geojson`` onto the open image, or
File > Object data... > Import objects (available since QuPath 0.3, qupath/qupath#698).

Coordinates are pixels of the full-resolution image with the origin at the TOP-LEFT
CORNER of the image, x = column, y = row (QuPath docs, "Exporting annotations": "origin
(0, 0) as the top left corner"). Pixel (r, c) therefore covers the square
[c, c+1] x [r, r+1]; QuPath's own raster tracing (``ContourTracing``) also emits
polygons along pixel edges on this integer corner grid. Our polygons follow pixel edges
too, so the shoelace area of each polygon equals the instance's pixel count exactly
(OpenCV contours alone pass through pixel centres and lose half a pixel all round).
Method: each 4-connected piece is upsampled 2x (nearest), traced with
``cv2.findContours(RETR_CCOMP, CHAIN_APPROX_NONE)``, and every traced sub-pixel is mapped
to the pixel corner it touches (sub-pixel (i, j) of the padded 2x image -> corner
(j // 2, i // 2)); repeated and collinear vertices are then dropped.

Connectivity: pieces are 4-connected (edge-sharing), like QuPath's pixel-edge tracing. An
instance of several pieces, including pieces touching only at a pixel corner, becomes a
``MultiPolygon`` (one polygon per piece, with its holes); a single piece is a ``Polygon``.
This keeps rings free of repeated vertices (no self-touching shells).

Orientation follows RFC 7946 section 3.1.6 (right-hand rule: exterior rings
counter-clockwise, holes clockwise) applied to the numeric coordinates as written: the
shoelace signed area 0.5 * sum(x_i * y_{i+1} - x_{i+1} * y_i) is positive for every
exterior ring and negative for every hole. Because image y points down, an exterior ring
drawn on screen appears clockwise. Every ring is closed (first position == last).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

Ring = list[list[int]]

__all__ = ["geojson_bytes", "instances_to_geojson", "signed_area"]


def signed_area(ring: Sequence[Sequence[float]]) -> float:
    """Shoelace signed area of a ring of (x, y) positions; positive = CCW per RFC 7946."""
    pts = np.asarray(ring, dtype=np.float64)
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _clean_ring(points: np.ndarray) -> np.ndarray:
    """Drop consecutive duplicates and collinear (incl. back-tracking) vertices of an open ring."""
    pts = points
    while len(pts) >= 3:
        keep = np.any(pts != np.roll(pts, 1, axis=0), axis=1)
        pts = pts[keep]
        if len(pts) < 3:
            break
        prev, nxt = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
        d1, d2 = pts - prev, nxt - pts
        cross = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
        if np.all(cross != 0):
            break
        pts = pts[cross != 0]
    return pts


def _to_ring(contour: np.ndarray, x0: int, y0: int, outer: bool) -> Ring | None:
    """Map a contour of the padded 2x image to a closed corner-grid ring with RFC orientation."""
    sub = contour.reshape(-1, 2).astype(np.int64)
    pts = _clean_ring(sub // 2 + np.array([x0, y0], dtype=np.int64))
    if len(pts) < 3:
        return None
    ring = pts.tolist()
    ring.append(ring[0])
    if (signed_area(ring) > 0) != outer:
        ring.reverse()
    return ring


def _mask_polygons(mask: np.ndarray, x0: int, y0: int) -> list[list[Ring]]:
    """Polygons (exterior ring first, then holes) of a binary crop whose top-left is (x0, y0)."""
    n, comps = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    polygons: list[list[Ring]] = []
    for k in range(1, n):
        piece = (comps == k).astype(np.uint8)
        up = np.pad(np.repeat(np.repeat(piece, 2, axis=0), 2, axis=1), 1)
        contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        if hierarchy is None:
            continue
        links = hierarchy[0]
        for i, (_, _, child, parent) in enumerate(links):
            if parent != -1:
                continue
            shell = _to_ring(contours[i], x0, y0, outer=True)
            if shell is None:
                continue
            rings = [shell]
            while child != -1:
                hole = _to_ring(contours[child], x0, y0, outer=False)
                if hole is not None:
                    rings.append(hole)
                child = links[child][0]
            polygons.append(rings)
    return polygons


def _pixel_groups(labels: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Row and column indices of every non-zero id, from one sort of the image."""
    flat = labels.ravel()
    nz = np.flatnonzero(flat)
    order = nz[np.argsort(flat[nz], kind="stable")]
    ids, starts, counts = np.unique(flat[order], return_index=True, return_counts=True)
    rows, cols = np.divmod(order, labels.shape[1])
    return {
        int(i): (rows[s : s + c], cols[s : s + c])
        for i, s, c in zip(ids, starts, counts, strict=True)
    }


def _check_inputs(
    labels: np.ndarray,
    instances: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    palette: Sequence[tuple[int, int, int]],
) -> dict[int, Mapping[str, Any]]:
    """Validate the inputs and index the records by instance id."""
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 2-D integer array, got {labels.dtype} {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative (0 = background)")
    if len(palette) < len(class_names):
        raise ValueError(f"palette has {len(palette)} colours for {len(class_names)} classes")
    for colour in palette[: len(class_names)]:
        if len(colour) != 3 or not all(0 <= int(v) <= 255 for v in colour):
            raise ValueError(f"palette colour {colour!r} is not an (r, g, b) triple in 0..255")
    records: dict[int, Mapping[str, Any]] = {}
    for rec in instances:
        iid = int(rec["instance_id"])
        if iid in records:
            raise ValueError(f"instance id {iid} appears in more than one record")
        cid = int(rec["class_id"])
        if not 1 <= cid <= len(class_names):
            raise ValueError(f"instance id {iid}: class_id {cid} outside 1..{len(class_names)}")
        if not math.isfinite(float(rec["score"])):
            raise ValueError(f"instance id {iid}: score {rec['score']!r} is not finite")
        records[iid] = rec
    return records


def instances_to_geojson(
    labels: np.ndarray,
    instances: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    palette: Sequence[tuple[int, int, int]],
) -> dict[str, Any]:
    """Build a QuPath GeoJSON FeatureCollection with one detection Feature per instance.

    ``instances`` holds one mapping per instance with keys ``instance_id``, ``class_id``
    (1-based into ``class_names``/``palette``) and ``score``; features keep their order.
    Every id must appear both in ``labels`` and in ``instances``: a mismatch is a
    ``ValueError`` naming the ids, since a silently dropped or empty cell would corrupt
    counts in QuPath. See the module docstring for coordinates and ring orientation.
    """
    labels = np.asarray(labels)
    records = _check_inputs(labels, instances, class_names, palette)
    groups = _pixel_groups(labels) if labels.size else {}
    missing = sorted(set(records) - set(groups))
    if missing:
        raise ValueError(f"instance ids {missing} have records but no pixels in the label image")
    unrecorded = sorted(set(groups) - set(records))
    if unrecorded:
        raise ValueError(f"instance ids {unrecorded} are in the label image but have no record")
    features = []
    for iid, rec in records.items():
        rows, cols = groups[iid]
        y0, x0 = int(rows.min()), int(cols.min())
        crop = np.zeros((int(rows.max()) - y0 + 1, int(cols.max()) - x0 + 1), dtype=np.uint8)
        crop[rows - y0, cols - x0] = 1
        polygons = _mask_polygons(crop, x0, y0)
        if len(polygons) == 1:
            geometry = {"type": "Polygon", "coordinates": polygons[0]}
        else:
            geometry = {"type": "MultiPolygon", "coordinates": polygons}
        cid = int(rec["class_id"])
        features.append(
            {
                "type": "Feature",
                "geometry": geometry,
                "properties": {
                    "objectType": "detection",
                    "name": f"instance {iid}",
                    "classification": {
                        "name": str(class_names[cid - 1]),
                        "color": [int(v) for v in palette[cid - 1]],
                    },
                    "measurements": {
                        "score": float(rec["score"]),
                        "area": int(rows.size),
                        "instance_id": iid,
                    },
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def geojson_bytes(collection: Mapping[str, Any]) -> bytes:
    """Serialise a collection as compact UTF-8 JSON (NaN/inf rejected) for an atomic write."""
    text = json.dumps(collection, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")
