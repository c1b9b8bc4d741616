"""QuPath GeoJSON export: rings, orientation (RFC 7946), pixel-edge areas, properties, errors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from cellseg.formats.qupath_geojson import geojson_bytes, instances_to_geojson, signed_area

CLASSES = ["epithelial", "lymphocyte", "stromal"]
PALETTE = [(255, 0, 0), (0, 200, 0), (10, 20, 250)]


def _scene() -> tuple[np.ndarray, list[dict]]:
    """Label image with the shapes the export must handle, and one record per instance."""
    lab = np.zeros((120, 160), np.int32)
    cv2.circle(lab, (20, 20), 12, 1, -1)  # disc
    cv2.ellipse(lab, (60, 22), (18, 8), 30, 0, 360, 2, -1)  # rotated ellipse
    ring = np.zeros_like(lab, np.uint8)
    cv2.circle(ring, (110, 25), 16, 1, -1)
    cv2.circle(ring, (110, 25), 7, 0, -1)
    lab[ring > 0] = 3  # ring with a hole
    cv2.line(lab, (10, 60), (60, 85), 4, 2)  # thin 2-px-wide spindle
    lab[55:95, 75:80] = 5  # L shape: vertical bar ...
    lab[90:95, 75:100] = 5  # ... and foot
    lab[60:66, 110:116] = 6  # two disconnected pieces
    lab[80:88, 130:140] = 6
    lab[100:115, 10:30] = 7  # touching neighbours sharing an edge
    lab[100:115, 30:45] = 8
    lab[100:104, 60:64] = 9  # piece touching another one only at a corner
    lab[104:108, 64:68] = 9
    records = [
        {"instance_id": i, "class_id": 1 + i % 3, "score": 0.5 + i / 20} for i in range(1, 10)
    ]
    return lab, records


def _polygons(feature: dict) -> list[list[list[list[int]]]]:
    geom = feature["geometry"]
    return [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]


def _polygon_area(feature: dict) -> float:
    return sum(sum(signed_area(r) for r in poly) for poly in _polygons(feature))


def _rasterise(feature: dict, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies inside the geometry (even-odd rule over all rings)."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    inside = np.zeros(shape, bool)
    for poly in _polygons(feature):
        for ring in poly:
            for (x1, y1), (x2, y2) in zip(ring[:-1], ring[1:], strict=True):
                if y1 == y2:
                    continue
                cross = ((y1 > ys) != (y2 > ys)) & (xs < x1 + (ys - y1) * (x2 - x1) / (y2 - y1))
                inside ^= cross
    return inside


@pytest.fixture(scope="module")
def exported() -> tuple[np.ndarray, dict]:
    lab, records = _scene()
    return lab, instances_to_geojson(lab, records, CLASSES, PALETTE)


def _by_id(collection: dict) -> dict[int, dict]:
    return {f["properties"]["measurements"]["instance_id"]: f for f in collection["features"]}


def test_every_instance_once(exported):
    lab, fc = exported
    ids = [f["properties"]["measurements"]["instance_id"] for f in fc["features"]]
    assert sorted(ids) == sorted(set(np.unique(lab)) - {0})
    assert len(ids) == len(set(ids))
    assert all(f["type"] == "Feature" for f in fc["features"])


def test_rings_closed_and_oriented(exported):
    _, fc = exported
    for f in fc["features"]:
        for poly in _polygons(f):
            for k, ring in enumerate(poly):
                assert len(ring) >= 4 and ring[0] == ring[-1]
                body = [tuple(p) for p in ring[:-1]]
                assert len(set(body)) == len(body), "ring touches itself"
                assert (signed_area(ring) > 0) == (k == 0), (k, signed_area(ring))


def test_hole_and_multipolygon(exported):
    _, fc = exported
    feats = _by_id(fc)
    assert feats[3]["geometry"]["type"] == "Polygon"
    assert len(feats[3]["geometry"]["coordinates"]) == 2  # exterior + one hole
    for iid in (6, 9):  # far apart / touching at a corner only: one polygon per piece
        assert feats[iid]["geometry"]["type"] == "MultiPolygon"
        assert len(feats[iid]["geometry"]["coordinates"]) == 2
    for iid in (1, 2, 4, 5, 7, 8):
        assert feats[iid]["geometry"]["type"] == "Polygon"
        assert len(feats[iid]["geometry"]["coordinates"]) == 1


def test_polygon_area_matches_pixel_count(exported):
    lab, fc = exported
    for iid, f in _by_id(fc).items():
        count = int((lab == iid).sum())
        assert count >= 20 or iid == 9
        assert abs(_polygon_area(f) - count) <= 0.1 * count, iid
        assert _polygon_area(f) == count  # pixel-edge tracing is exact, not just within 10 %


def test_single_pixel_and_thin_lines_follow_pixel_edges():
    lab = np.zeros((6, 8), np.int32)
    lab[1, 1] = 1
    lab[3, 2:7] = 2  # 1-px-wide line: zero area if traced through pixel centres
    fc = instances_to_geojson(
        lab,
        [
            {"instance_id": 1, "class_id": 1, "score": 1.0},
            {"instance_id": 2, "class_id": 1, "score": 1.0},
        ],
        CLASSES,
        PALETTE,
    )
    dot, line = fc["features"]
    # the square [1, 2] x [1, 2], counter-clockwise in (x, y) numbers (+x then +y), i.e.
    # clockwise as drawn on screen where y points down
    assert dot["geometry"]["coordinates"] == [[[1, 1], [2, 1], [2, 2], [1, 2], [1, 1]]]
    assert signed_area(dot["geometry"]["coordinates"][0]) == 1.0
    xs = {p[0] for p in line["geometry"]["coordinates"][0]}
    ys = {p[1] for p in line["geometry"]["coordinates"][0]}
    assert (xs, ys) == ({2, 7}, {3, 4})
    assert _polygon_area(line) == 5


def test_rasterised_polygons_reproduce_masks(exported):
    lab, fc = exported
    for iid, f in _by_id(fc).items():
        mask = lab == iid
        filled = _rasterise(f, lab.shape)
        iou = (mask & filled).sum() / (mask | filled).sum()
        assert iou >= 0.9, (iid, iou)
        assert np.array_equal(mask, filled), iid


def test_random_irregular_masks_exact():
    rng = np.random.default_rng(0)
    for _ in range(40):
        lab = (rng.random((25, 30)) < rng.uniform(0.3, 0.7)).astype(np.int32)
        fc = instances_to_geojson(
            lab, [{"instance_id": 1, "class_id": 2, "score": 0.1}], CLASSES, PALETTE
        )
        (f,) = fc["features"]
        assert _polygon_area(f) == lab.sum()
        assert np.array_equal(_rasterise(f, lab.shape), lab > 0)
        n4, _ = cv2.connectedComponents(lab.astype(np.uint8), connectivity=4)
        assert len(_polygons(f)) == n4 - 1


def test_properties_follow_qupath(exported):
    lab, fc = exported
    _, records = _scene()
    feats = _by_id(fc)
    for rec in records:
        props = feats[rec["instance_id"]]["properties"]
        assert props["objectType"] == "detection"
        assert props["classification"] == {
            "name": CLASSES[rec["class_id"] - 1],
            "color": list(PALETTE[rec["class_id"] - 1]),
        }
        meas = props["measurements"]
        assert meas["score"] == pytest.approx(rec["score"])
        assert meas["area"] == int((lab == rec["instance_id"]).sum())
        assert "id" not in feats[rec["instance_id"]]  # QuPath wants a UUID there, or none


def test_bytes_are_valid_compact_json(exported):
    _, fc = exported
    raw = geojson_bytes(fc)
    assert isinstance(raw, bytes) and b" " not in raw.replace(b"instance ", b"")
    back = json.loads(raw.decode("utf-8"))
    assert back == fc
    assert back["type"] == "FeatureCollection"
    assert {f["geometry"]["type"] for f in back["features"]} == {"Polygon", "MultiPolygon"}
    nan = {"type": "FeatureCollection", "features": [{"x": float("nan")}]}
    with pytest.raises(ValueError):
        geojson_bytes(nan)


def test_empty_label_image():
    fc = instances_to_geojson(np.zeros((10, 10), np.uint16), [], CLASSES, PALETTE)
    assert fc == {"type": "FeatureCollection", "features": []}
    assert json.loads(geojson_bytes(fc)) == fc


def test_record_without_pixels_is_error():
    lab = np.zeros((10, 10), np.int32)
    lab[2:6, 2:6] = 1
    recs = [
        {"instance_id": 1, "class_id": 1, "score": 0.9},
        {"instance_id": 7, "class_id": 1, "score": 0.9},
    ]
    with pytest.raises(ValueError, match=r"\b7\b"):
        instances_to_geojson(lab, recs, CLASSES, PALETTE)


def test_pixels_without_record_is_error():
    lab = np.zeros((10, 10), np.int32)
    lab[2:6, 2:6] = 1
    lab[7:9, 7:9] = 4
    with pytest.raises(ValueError, match=r"\b4\b.*no record"):
        instances_to_geojson(
            lab, [{"instance_id": 1, "class_id": 1, "score": 0.9}], CLASSES, PALETTE
        )


@pytest.mark.parametrize(
    ("record", "pattern"),
    [
        ({"instance_id": 1, "class_id": 4, "score": 0.5}, "class_id 4"),
        ({"instance_id": 1, "class_id": 0, "score": 0.5}, "class_id 0"),
        ({"instance_id": 1, "class_id": 1, "score": float("nan")}, "not finite"),
    ],
)
def test_bad_records_are_errors(record, pattern):
    lab = np.ones((4, 4), np.int32)
    with pytest.raises(ValueError, match=pattern):
        instances_to_geojson(lab, [record], CLASSES, PALETTE)


def test_bad_inputs_are_errors():
    rec = [{"instance_id": 1, "class_id": 1, "score": 0.5}]
    with pytest.raises(ValueError, match="2-D integer"):
        instances_to_geojson(np.ones((4, 4), np.float32), rec, CLASSES, PALETTE)
    with pytest.raises(ValueError, match="more than one record"):
        instances_to_geojson(np.ones((4, 4), np.int32), rec * 2, CLASSES, PALETTE)
    with pytest.raises(ValueError, match="palette"):
        instances_to_geojson(np.ones((4, 4), np.int32), rec, CLASSES, PALETTE[:2])
