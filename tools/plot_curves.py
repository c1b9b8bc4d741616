"""Plot a training run's losses, learning rate and validation mask AP50 per epoch in one PNG.

    python tools/plot_curves.py WORK_DIR [--out PNG]

Reads mmengine's WORK_DIR/*/vis_data/scalars.json (every run of the work dir, so a resumed run
is one curve); the PNG goes to WORK_DIR/curves.png unless --out names another path.
PlotCurvesHook (cellseg/engine/hooks/plot_curves_hook.py) writes the same picture at the end of
training.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cellseg.apis.cli import run_tool  # noqa: E402
from cellseg.utils.scalars import read_scalars  # noqa: E402
from cellseg.visualization.visualize import plot_training_curves, save_figure  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('work_dir', help='a training work dir (holding <timestamp>/vis_data/)')
    parser.add_argument('--out', help='PNG path (default: WORK_DIR/curves.png)')
    parser.add_argument('--metric', default='coco/segm_mAP_50',
                        help='validation metric to plot (default: coco/segm_mAP_50)')
    args = parser.parse_args(argv)
    rows = read_scalars(args.work_dir)
    if not rows:
        print(f'error: {args.work_dir}: no */vis_data/scalars.json with logged values',
              file=sys.stderr)
        return 1
    out = Path(args.out or Path(args.work_dir) / 'curves.png')
    title = Path(args.work_dir).resolve().name
    save_figure(plot_training_curves(rows, title=title, metric=args.metric), out)
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
