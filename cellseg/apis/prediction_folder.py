"""The output folder of a prediction run: what identifies the run, whether the folder may take
it (writable; holding nothing, or an earlier run of the same prediction to continue, or another
run's outputs only when they may be replaced), and appends that reach the disk."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from cellseg.utils.fileio import atomic_write_bytes

CSV_NAME = 'instances.csv'
FAILED_NAME = 'failed.csv'
# what one image's outputs are named, after its stem
OUTPUT_SUFFIXES = ('_labels.tif', '_classes.tif', '_overlay.png', '.geojson')
STATE_DIR = '.cellseg_predict'


def _describe(run: dict) -> str:
    return ', '.join(f'{k} {v}' for k, v in run.items())


def _our_outputs(out_dir: Path) -> list[Path]:
    found = [p for p in out_dir.iterdir() if p.is_file()
             and (p.name in (CSV_NAME, FAILED_NAME) or p.name.endswith(OUTPUT_SUFFIXES))]
    return found + ([out_dir / STATE_DIR] if (out_dir / STATE_DIR).exists() else [])


def prediction_run(checkpoint: str | os.PathLike, score_thr: float,
                   config: str | os.PathLike | None = None, cfg_options: dict | None = None,
                   amp: bool = False) -> dict:
    """What makes two runs the same prediction, for ``prepare_output_dir``: the checkpoint by
    path, size and time (a retrained model written to the same path is another run), the
    threshold, the config, the options and the precision."""
    stat = os.stat(checkpoint) if os.path.isfile(checkpoint) else None
    return dict(checkpoint=os.path.abspath(checkpoint), score_thr=score_thr,
                checkpoint_bytes=stat and stat.st_size,
                checkpoint_mtime_ns=stat and stat.st_mtime_ns,
                config=os.path.abspath(config) if config else None,
                cfg_options=str(cfg_options or ''), **({'amp': True} if amp else {}))


def prepare_output_dir(out_dir: str | Path, run: dict, overwrite: bool = False) -> Path:
    """Make ``out_dir`` ready for the prediction ``run`` (what identifies it: checkpoint,
    threshold, options), before the model loads: it must be writable; it may hold an earlier
    run of the same prediction (whose finished images are then skipped), but another run's
    outputs only with ``overwrite``, which deletes them (instances.csv, failed.csv, the
    per-image outputs and the run's state; nothing else).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix='.write-test-', dir=out_dir)  # PermissionError: refused
    os.close(fd)
    os.unlink(probe)
    state = out_dir / STATE_DIR / 'run.json'
    previous = json.loads(state.read_text()) if state.is_file() else None
    existing = _our_outputs(out_dir)
    if existing and previous != run:
        if not overwrite:
            what = (f'the outputs of another prediction ({_describe(previous)})' if previous
                    else f'outputs of an earlier prediction ({existing[0].name}, ...)')
            raise ValueError(f'{out_dir}: holds {what}; pass --overwrite to replace them, or '
                             'choose another --out-dir')
        for path in existing:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    (out_dir / STATE_DIR / 'rows').mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(state, json.dumps(run, sort_keys=True).encode())
    return out_dir


def append_durably(path: Path, data: bytes) -> None:
    with open(path, 'ab') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
