"""Draw the ground truth of HW3 train images, straight from their class TIFFs.

    python tools/browse_dataset.py DATA_ROOT --out-dir DIR [--limit N]

Writes DIR/<name>_gt.png per train/<name>/ folder: the image with every instance outlined in its
class colour and a legend counting the instances per class. The classes are the data root's, as
data_prep/hw3_to_coco.py names them (classes.txt, else class1..classK). The masks are read through
cellseg.formats.hw3 (not from the COCO files), so a conversion can be checked against its source.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cellseg.apis.cli import run_tool  # noqa: E402
from cellseg.datasets.cell_dataset import palette_for  # noqa: E402
from cellseg.formats.hw3 import data_classes, list_train_samples  # noqa: E402
from cellseg.visualization import CellLocalVisualizer  # noqa: E402
from cellseg.visualization.cell_local_visualizer import hw3_gt_overlay  # noqa: E402
from cellseg.visualization.visualize import write_png  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('data_root', help='HW3 data root (holding train/<name>/)')
    parser.add_argument('--out-dir', required=True, help='where the PNGs go')
    parser.add_argument('--limit', type=int, help='only the first N folders (by name)')
    args = parser.parse_args(argv)
    from tqdm import tqdm

    samples = list_train_samples(args.data_root)
    # the data's classes, as the conversion names them: classes.txt, else class1..classK
    classes = data_classes(args.data_root, samples)
    palette = palette_for(None, len(classes))  # the colours a dataset of these classes gets
    visualizer = CellLocalVisualizer.get_instance('browse_dataset')
    visualizer.dataset_meta = dict(classes=classes, palette=palette)
    samples = samples[:args.limit]
    for sample in tqdm(samples, desc='browse', unit='image'):
        write_png(Path(args.out_dir) / f'{sample.name}_gt.png',
                  hw3_gt_overlay(sample, visualizer))
    print(f'wrote {len(samples)} ground-truth overlays to {args.out_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
