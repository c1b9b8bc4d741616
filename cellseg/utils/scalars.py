"""Reading a work dir's logged scalars back."""
from __future__ import annotations

import json
from pathlib import Path

# what the leaderboard ranks and the best checkpoint is chosen on
LEADERBOARD_KEY = 'coco/segm_mAP_50'


def read_scalars(work_dir: str | Path) -> list[dict]:
    """Every row mmengine's LocalVisBackend logged under ``work_dir/*/vis_data/scalars.json``,
    in run order (a resumed run appends a new timestamped folder)."""
    rows = []
    for path in sorted(Path(work_dir).glob('*/vis_data/scalars.json')):
        with open(path) as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return rows
