"""The CodaBench submission checker and writer (cellseg.formats.submission)."""
from __future__ import annotations

import copy
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest

import cellseg.formats.submission as sub
from cellseg.formats.hw3 import HW3FormatError, ImageInfo, load_id_map
from cellseg.formats.submission import (
    SUBMISSION_JSON,
    SubmissionError,
    summarize_submission,
    validate_submission,
    write_submission,
)

# The classes of the model the results come from: category ids 1..K.
K = 4
# Non-square images so that a transposed RLE size is detectable.
IMAGES = [ImageInfo('a.tif', 1, 40, 60), ImageInfo('b.tif', 7, 32, 24),
          ImageInfo('c.tif', 3, 50, 50)]


@pytest.fixture
def id_map() -> dict[int, ImageInfo]:
    return {info.id: info for info in IMAGES}


def _random_masks(info: ImageInfo, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    masks = []
    for _ in range(n):
        m = np.zeros((info.height, info.width), np.uint8)
        y, x = rng.integers(0, info.height - 4), rng.integers(0, info.width - 4)
        m[y:y + rng.integers(2, 15), x:x + rng.integers(2, 15)] = 1
        m &= (rng.random(m.shape) < 0.8).astype(np.uint8)  # ragged, so the RLE has many runs
        masks.append(m)
    return masks


def _entry(image_id: int, mask: np.ndarray, category_id: int, score: float) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle['counts'] = rle['counts'].decode()
    return dict(image_id=image_id, category_id=category_id,
                bbox=[float(v) for v in mask_utils.toBbox(rle)], score=score, segmentation=rle)


@pytest.fixture
def valid() -> tuple[list[dict], list[np.ndarray]]:
    """Results for images 1 and 7 (image 3 has no detection), and their masks in order."""
    rng = np.random.default_rng(0)
    results, masks = [], []
    for info, n in ((IMAGES[0], 4), (IMAGES[1], 3)):
        for j, m in enumerate(_random_masks(info, n, rng)):
            results.append(_entry(info.id, m, 1 + j % 4, float(rng.random())))
            masks.append(m)
    return results, masks


def _write_id_map(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps(entries))
    return path


def _problems(results: list[dict], id_map: dict[int, ImageInfo], num_classes: int = K) -> str:
    with pytest.raises(SubmissionError) as err:
        validate_submission(results, id_map, num_classes)
    return str(err.value)


def _no_output(out_dir: Path) -> None:
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


# --- valid submissions ---------------------------------------------------------------------------


# pycocotools 2.0.x decode warns under numpy 2 (its own __array__ signature), harmlessly.
@pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')
def test_valid_submission_round_trips(valid, id_map, tmp_path: Path) -> None:
    results, masks = valid
    validate_submission(results, id_map, K)
    json_path, zip_path = write_submission(results, tmp_path / 'out', id_map, K)
    assert json_path == tmp_path / 'out' / SUBMISSION_JSON
    assert zip_path == tmp_path / 'out' / 'submission.zip'
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.namelist() == [SUBMISSION_JSON]
        assert zf.getinfo(SUBMISSION_JSON).compress_type == zipfile.ZIP_DEFLATED
        from_zip = json.loads(zf.read(SUBMISSION_JSON))
    assert from_zip == json.loads(json_path.read_text())
    assert len(from_zip) == len(results)
    for entry, original, mask in zip(from_zip, results, masks):
        assert set(entry) == set(sub.RESULT_KEYS)
        assert entry['image_id'] == original['image_id']
        assert entry['category_id'] == original['category_id']
        assert entry['score'] == pytest.approx(original['score'])
        assert entry['bbox'] == pytest.approx(original['bbox'])
        info = id_map[entry['image_id']]
        assert entry['segmentation']['size'] == [info.height, info.width]
        assert isinstance(entry['segmentation']['counts'], str)
        decoded = mask_utils.decode(entry['segmentation'])
        assert decoded.shape == (info.height, info.width)
        np.testing.assert_array_equal(decoded, mask)
    # the written file passes the checker again
    validate_submission(from_zip, id_map, K)


def test_written_entries_are_normalized(valid, id_map, tmp_path: Path) -> None:
    results, _ = valid
    raw = copy.deepcopy(results)
    raw[0] = dict(raw[0], image_id=np.int64(1), category_id=np.int32(2), score=np.float32(0.5),
                  bbox=tuple(np.float32(v) for v in raw[0]['bbox']), extra='dropped',
                  segmentation=dict(raw[0]['segmentation'],
                                    counts=raw[0]['segmentation']['counts'].encode()))
    json_path, _ = write_submission(raw, tmp_path, id_map, K)
    first = json.loads(json_path.read_text())[0]
    assert first == dict(image_id=1, category_id=2, bbox=pytest.approx(results[0]['bbox']),
                         score=0.5, segmentation=results[0]['segmentation'])
    assert list(first) == list(sub.RESULT_KEYS)


def test_zip_path_and_directory_outputs(valid, id_map, tmp_path: Path) -> None:
    results, _ = valid
    json_path, zip_path = write_submission(results, tmp_path / 'sub' / 'mine.zip', id_map, K)
    assert (json_path, zip_path) == (tmp_path / 'sub' / SUBMISSION_JSON,
                                     tmp_path / 'sub' / 'mine.zip')
    assert sorted(p.name for p in (tmp_path / 'sub').iterdir()) == ['mine.zip', SUBMISSION_JSON]
    json_path2, zip_path2 = write_submission(results, str(tmp_path / 'dir'), id_map, K)
    assert (json_path2, zip_path2) == (tmp_path / 'dir' / SUBMISSION_JSON,
                                       tmp_path / 'dir' / 'submission.zip')
    for z in (zip_path, zip_path2):
        with zipfile.ZipFile(z) as zf:
            assert zf.namelist() == [SUBMISSION_JSON]
    assert json_path.read_bytes() == json_path2.read_bytes()


def test_out_path_that_is_a_file_is_refused(valid, id_map, tmp_path: Path) -> None:
    results, _ = valid
    target = tmp_path / 'results.txt'
    target.write_text('x')
    with pytest.raises(SubmissionError, match='not a directory'):
        write_submission(results, target, id_map, K)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['results.txt']


def test_empty_submission_passes_and_is_summarized_as_a_warning(id_map, tmp_path: Path) -> None:
    validate_submission([], id_map, K)
    json_path, zip_path = write_submission([], tmp_path, id_map, K)
    assert json.loads(json_path.read_text()) == []
    with zipfile.ZipFile(zip_path) as zf:
        assert json.loads(zf.read(SUBMISSION_JSON)) == []
    assert 'WARNING' in summarize_submission([], id_map)


def test_summary(valid, id_map) -> None:
    results, _ = valid
    text = summarize_submission(results, id_map)
    assert text.startswith('7 entries on 2/3 test images (1 without any detection)')
    assert 'class1 2, class2 2, class3 2, class4 1' in text
    scores = [e['score'] for e in results]
    assert f'{min(scores):.3f}..{max(scores):.3f}' in text
    assert '\n' not in text


# --- invalid submissions -------------------------------------------------------------------------


@pytest.mark.parametrize('change, expected', [
    (dict(image_id=999), 'image_id 999 is not in test_image_name_to_ids.json'),
    (dict(image_id='1'), 'image_id must be an int'),
    (dict(image_id=True), 'image_id must be an int'),
    (dict(category_id=0), "category_id must be an int in 1..4 (the model's classes), got 0"),
    (dict(category_id=5), "category_id must be an int in 1..4 (the model's classes), got 5"),
    (dict(category_id=2.0), "category_id must be an int in 1..4 (the model's classes), got 2.0"),
    (dict(bbox=[1.0, math.nan, 3.0, 4.0]), 'bbox must be 4 finite numbers'),
    (dict(bbox=[1.0, 2.0, 3.0]), 'bbox must be 4 finite numbers'),
    (dict(bbox=[1.0, 2.0, -3.0, 4.0]), 'bbox width and height must be >= 0'),
    (dict(score=1.5), 'score must be a finite number in [0, 1], got 1.5'),
    (dict(score=-0.1), 'score must be a finite number in [0, 1]'),
    (dict(score=math.inf), 'score must be a finite number in [0, 1], got inf'),
    (dict(score=None), 'score must be a finite number in [0, 1], got None'),
    (dict(segmentation=[[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]), 'segmentation must be an RLE object'),
])
def test_invalid_field_is_named(valid, id_map, change: dict, expected: str) -> None:
    results, _ = valid
    bad = copy.deepcopy(results)
    bad[2] = dict(bad[2], **change)
    msg = _problems(bad, id_map)
    assert msg.startswith(f'{SUBMISSION_JSON}: 1 problem:\n')
    assert f'entry 2: {expected}' in msg


def test_category_ids_are_checked_against_the_model_s_class_count(valid, id_map,
                                                                 tmp_path: Path) -> None:
    results, _ = valid
    five = copy.deepcopy(results)
    five[1]['category_id'] = 5
    validate_submission(five, id_map, 5)  # a model of 5 classes submits category 5
    json_path, _ = write_submission(five, tmp_path, id_map, num_classes=5)
    assert {e['category_id'] for e in json.loads(json_path.read_text())} == {1, 2, 3, 4, 5}
    assert "entry 1: category_id must be an int in 1..4 (the model's classes), got 5" in \
        _problems(five, id_map, 4)
    one = [dict(e, category_id=1) for e in results]
    validate_submission(one, id_map, 1)
    assert "entry 0: category_id must be an int in 1..1 (the model's classes), got 2" in \
        _problems([dict(results[0], category_id=2)], id_map, 1)
    assert "entry 0: category_id must be an int in 1..5 (the model's classes), got 0" in \
        _problems([dict(results[0], category_id=0)], id_map, 5)


def test_summary_names_every_class_of_the_model(valid, id_map) -> None:
    results, _ = valid
    names = ('tumour', 'lymphocyte', 'stroma', 'necrosis', 'other')
    text = summarize_submission(results, id_map, names)
    assert 'per class: tumour 2, lymphocyte 2, stroma 2, necrosis 1, other 0;' in text


def test_transposed_rle_size_is_rejected(valid, id_map) -> None:
    results, _ = valid
    bad = copy.deepcopy(results)
    h, w = bad[0]['segmentation']['size']
    assert h != w
    bad[0]['segmentation']['size'] = [w, h]
    msg = _problems(bad, id_map)
    assert f'entry 0: segmentation size [{w}, {h}] differs from the image size [{h}, {w}]' in msg
    assert 'transposed' in msg
    # the RLE of one image under another image's id has the wrong size too
    bad = copy.deepcopy(results)
    bad[-1]['image_id'] = 1
    assert "differs from the image size [40, 60] of 'a.tif'" in _problems(bad, id_map)


@pytest.mark.parametrize('counts, why', [
    ('garbage!!', 'outside the RLE alphabet'),
    ('', 'the runs cover 0 pixels, not 40*60 = 2400'),
    ('zzzz', 'outside the RLE alphabet'),
    ('oooo', 'truncated'),
    ('é', 'non-ASCII'),
    (b'\xff', 'outside the RLE alphabet'),
    ([2400], 'must be a compressed RLE string, got list'),
    (None, 'must be a compressed RLE string, got NoneType'),
])
def test_garbage_counts_are_rejected(valid, id_map, counts, why: str) -> None:
    results, _ = valid
    bad = copy.deepcopy(results)
    bad[1]['segmentation']['counts'] = counts
    msg = _problems(bad, id_map)
    assert 'entry 1: segmentation counts' in msg and why in msg


def test_counts_of_another_size_are_rejected(valid, id_map) -> None:
    # A well-formed RLE string that covers a different number of pixels than [h, w] says.
    results, _ = valid
    bad = copy.deepcopy(results)
    other = mask_utils.encode(np.asfortranarray(np.ones((10, 10), np.uint8)))
    bad[0]['segmentation']['counts'] = other['counts'].decode()
    assert 'the runs cover 100 pixels, not 40*60 = 2400' in _problems(bad, id_map)


def _rle_string(counts: list[int]) -> str:
    """maskApi.c's rleToString for any run lengths, negative ones included (pycocotools'
    encoder never writes those, a broken writer might)."""
    out = []
    for k, x in enumerate(counts):
        x -= counts[k - 2] if k > 2 else 0
        more = True
        while more:
            c, x = x & 0x1F, x >> 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return ''.join(out)


def test_batched_rle_check_agrees_with_the_per_entry_parser(valid) -> None:
    # validate_submission parses all strings at once and sends only the ones that fail (or a
    # lot it cannot parse) through _rle_problem: both must accept exactly the same strings
    results, _ = valid
    crafted = [
        _rle_string([5, 3, -2, 2394]),  # covers 40*60 but holds a negative run
        _rle_string([2400]), _rle_string([0, 2400]), _rle_string([1200, 1200]),
        _rle_string([1000, 100, 1299]), _rle_string([7, 2393]), '']
    assert _rle_string([2400]) == mask_utils.encode(
        np.zeros((40, 60), np.uint8, order='F'))['counts'].decode()
    entries = list(results) + [dict(segmentation=dict(size=[40, 60], counts=c))
                               for c in crafted]
    expected = [sub._rle_problem(e['segmentation']['counts'].encode(),
                                 *e['segmentation']['size']) is None for e in entries]
    assert sub._valid_rles(entries).tolist() == expected
    assert expected == [True] * len(results) + [False, True, True, True, False, True, False]
    # a string that cannot be parsed at all leaves every entry to the per-entry parser
    assert not sub._valid_rles(entries + [dict(segmentation=dict(size=[40, 60],
                                                                 counts='zz'))]).any()


@pytest.mark.parametrize('key', sub.RESULT_KEYS)
def test_missing_key_is_named(valid, id_map, key: str) -> None:
    results, _ = valid
    bad = copy.deepcopy(results)
    del bad[3][key]
    assert f"entry 3: missing key '{key}'" in _problems(bad, id_map)


def test_not_a_list_and_not_a_dict(id_map) -> None:
    with pytest.raises(SubmissionError, match='expected a list'):
        validate_submission({'image_id': 1}, id_map, K)  # type: ignore[arg-type]
    assert 'entry 0: not an object (got list)' in _problems([[1, 2]], id_map)


def test_all_problems_are_listed_together(valid, id_map, tmp_path: Path) -> None:
    results, _ = valid
    bad = copy.deepcopy(results)
    bad[0]['image_id'] = 999
    bad[1]['category_id'] = 5
    bad[1]['score'] = 1.5  # two problems in one entry
    bad[4]['segmentation']['counts'] = 'garbage'
    del bad[6]['bbox']
    msg = _problems(bad, id_map)
    lines = msg.splitlines()
    assert lines[0] == f'{SUBMISSION_JSON}: 5 problems:'
    assert [line.split(':')[0].strip() for line in lines[1:]] == \
        ['entry 0', 'entry 1', 'entry 1', 'entry 4', 'entry 6']
    for part in ('image_id 999', 'category_id', 'score', 'segmentation counts', "'bbox'"):
        assert part in msg
    with pytest.raises(SubmissionError):
        write_submission(bad, tmp_path / 'out', id_map, K)
    with pytest.raises(SubmissionError):
        write_submission(bad, tmp_path / 'z' / 'sub.zip', id_map, K)
    _no_output(tmp_path / 'out')
    _no_output(tmp_path / 'z')


def test_problem_list_is_capped(valid, id_map) -> None:
    results, _ = valid
    bad = [dict(results[0], score=2.0) for _ in range(30)]
    with pytest.raises(SubmissionError) as err:
        validate_submission(bad, id_map, K, max_problems=5)
    lines = str(err.value).splitlines()
    assert lines[0] == f'{SUBMISSION_JSON}: 30 problems:'
    assert len(lines) == 1 + 5 + 1
    assert lines[-1] == '  ... and 25 more'


def test_nothing_is_written_on_invalid_submission(valid, id_map, tmp_path: Path) -> None:
    results, _ = valid
    bad = copy.deepcopy(results)
    bad[0]['category_id'] = 0
    out = tmp_path / 'out'
    with pytest.raises(SubmissionError, match='category_id'):
        write_submission(bad, out, id_map, K)
    _no_output(out)


# --- atomic writing ------------------------------------------------------------------------------


def _boom(*args, **kwargs):
    raise RuntimeError('disk on fire')


def test_failed_json_dump_writes_nothing(valid, id_map, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    results, _ = valid
    monkeypatch.setattr(sub.json, 'dumps', _boom)
    with pytest.raises(RuntimeError, match='disk on fire'):
        write_submission(results, tmp_path / 'out', id_map, K)
    _no_output(tmp_path / 'out')


def test_failed_zip_writing_writes_nothing(valid, id_map, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    results, _ = valid
    monkeypatch.setattr(zipfile.ZipFile, 'writestr', _boom)
    with pytest.raises(RuntimeError, match='disk on fire'):
        write_submission(results, tmp_path / 'out', id_map, K)
    _no_output(tmp_path / 'out')


def test_failure_while_writing_the_zip_file_removes_the_json(
        valid, id_map, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The JSON is already at its final path when the zip's write (fsync) fails.
    results, _ = valid
    real_fsync = os.fsync
    calls = []

    def fsync_fails_on_the_zip(fd: int) -> None:
        target = os.readlink(f'/proc/self/fd/{fd}')
        calls.append(target)
        if '.zip' in Path(target).name:
            raise OSError('no space left on device')
        real_fsync(fd)

    monkeypatch.setattr(os, 'fsync', fsync_fails_on_the_zip)
    with pytest.raises(OSError, match='no space'):
        write_submission(results, tmp_path / 'out', id_map, K)
    assert any(SUBMISSION_JSON in c for c in calls)  # the JSON had been written
    _no_output(tmp_path / 'out')  # neither the final files nor temporary files are left


# --- the id map ----------------------------------------------------------------------------------


def _map_entries() -> list[dict]:
    return [info._asdict() for info in IMAGES]


def test_load_id_map(tmp_path: Path) -> None:
    path = _write_id_map(tmp_path / 'map.json', _map_entries())
    assert load_id_map(path) == {info.id: info for info in IMAGES}
    assert load_id_map(str(path))[7] == ImageInfo('b.tif', 7, 32, 24)


def test_load_id_map_rejects_duplicate_ids(tmp_path: Path) -> None:
    entries = _map_entries() + [dict(IMAGES[0]._asdict(), file_name='other.tif')]
    path = _write_id_map(tmp_path / 'map.json', entries)
    with pytest.raises(HW3FormatError) as err:
        load_id_map(path)
    # one problem is one line naming the map and the entry
    assert str(err.value) == f'{path}: entry 3: duplicate id 1 (also entry 0)'
    entries.append(dict(IMAGES[1]._asdict(), id=100))
    _write_id_map(path, entries)
    with pytest.raises(HW3FormatError) as err:
        load_id_map(path)
    assert str(err.value).splitlines() == [
        f'{path}: 2 problems:', '  entry 3: duplicate id 1 (also entry 0)',
        "  entry 4: duplicate file_name 'b.tif' (also entry 1)"]


def test_load_id_map_rejects_duplicate_file_names(tmp_path: Path) -> None:
    entries = _map_entries() + [dict(IMAGES[1]._asdict(), id=100)]
    path = _write_id_map(tmp_path / 'map.json', entries)
    with pytest.raises(ValueError, match=str(path)) as err:
        load_id_map(path)
    assert "entry 3: duplicate file_name 'b.tif' (also entry 1)" in str(err.value)


@pytest.mark.parametrize('content, expected', [
    ('{"a": 1}', 'expected a JSON list'),
    ('[]', 'empty'),
    ('[1', 'not valid JSON'),
    ('[1]', 'entry 0: not an object'),
    ('[{"file_name": "a.tif", "id": 1, "height": 5}]', "entry 0: missing key 'width'"),
    ('[{"file_name": "a.tif", "id": "1", "height": 5, "width": 5}]', 'id must be an int'),
    ('[{"file_name": "", "id": 1, "height": 5, "width": 5}]', 'file_name must be a non-empty'),
    ('[{"file_name": "a.tif", "id": 1, "height": 0, "width": 5}]', 'height must be a positive'),
    ('[{"file_name": "a.tif", "id": 1, "height": 5, "width": -2}]', 'width must be a positive'),
    ('[{"file_name": "a.tif", "id": 1, "height": 5, "width": 2.5}]', 'width must be a positive'),
])
def test_load_id_map_errors_name_the_file(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / 'test_image_name_to_ids.json'
    path.write_text(content)
    with pytest.raises(HW3FormatError) as err:
        load_id_map(path)
    assert str(err.value).startswith(f'{path}: ')
    assert expected in str(err.value)


@pytest.mark.parametrize('name, problem', [
    ('../../outside/secret.tif', "'../../outside/secret.tif' leaves test_release/ ('..')"),
    ('sub/../../x.tif', "leaves test_release/ ('..')"),
    ('..\\x.tif', "leaves test_release/ ('..')"),
    ('/etc/passwd', "'/etc/passwd' is an absolute path; it must be relative to test_release/"),
    ('C:\\data\\x.tif', 'is an absolute path'),
])
def test_load_id_map_refuses_paths_outside_test_release(tmp_path: Path, name: str,
                                                        problem: str) -> None:
    entries = _map_entries()
    entries[1]['file_name'] = name
    path = _write_id_map(tmp_path / 'map.json', entries)
    with pytest.raises(HW3FormatError) as err:
        load_id_map(path)
    assert str(err.value).startswith(f'{path}: entry 1: file_name ')
    assert problem in str(err.value)


def test_load_id_map_accepts_a_subfolder_of_test_release(tmp_path: Path) -> None:
    entries = _map_entries()
    entries[1]['file_name'] = 'batch2/b.tif'
    assert load_id_map(_write_id_map(tmp_path / 'map.json', entries))[7].file_name == \
        'batch2/b.tif'


def test_load_id_map_missing_file(tmp_path: Path) -> None:
    path = tmp_path / 'nope.json'
    with pytest.raises(HW3FormatError, match='cannot read'):
        load_id_map(path)
