"""A trained model's prediction and evaluation per image with ``ChunkedMaskHead``'s forward
(channels-last deconvolution and logits on the CPU) against ``FCNMaskHead``'s, in one process.

    OMP_NUM_THREADS=2 python benchmarks/mask_head_layout_ab.py CHECKPOINT \\
        [--images '../shared/data/consep/test_release/*.tif'] [--n 12] [--config CONFIG]

Both variants are the same model (the checkpoint, ``--config``'s test settings); 'old' has
mmdet's ``FCNMaskHead.forward`` bound to its mask head. Each image is predicted by every variant
in turn (float32 and bfloat16, tools/predict.py at 0.5 with its outputs written, and evaluation
at the config's threshold), after a warm-up pass; medians over images, the ratio new / old, and
whether the label TIFFs of the two are identical.
"""
from __future__ import annotations

import argparse
import glob
import statistics
import sys
import tempfile
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoint')
    parser.add_argument('--images',
                        default=str(REPO.parent / 'shared/data/consep/test_release/*.tif'))
    parser.add_argument('--n', type=int, default=12)
    parser.add_argument('--config', default=str(REPO / 'configs/cell_r50_scratch_tuned.py'),
                        help='the config whose model.test_cfg both variants use')
    args = parser.parse_args(argv)

    import torch
    from mmdet.models.roi_heads.mask_heads import FCNMaskHead
    from mmengine.config import Config

    from benchmarks.speed_items.predict_trained import timed_evaluate, timed_predict
    from cellseg.apis.predict import load_model

    paths = sorted(glob.glob(args.images))[:args.n]
    if not paths:
        raise SystemExit(f'error: {args.images}: no images')
    test_cfg = {'model.test_cfg': Config.fromfile(args.config).model.test_cfg.to_dict()}
    models = {}
    for mode, thr in (('predict', 0.5), ('eval', None)):
        for variant in ('old', 'new'):
            model = load_model(args.checkpoint, device='cpu', score_thr=thr, cfg_options=test_cfg)
            if variant == 'old':
                head = model.roi_head.mask_head
                head.forward = types.MethodType(FCNMaskHead.forward, head)
            models[mode, variant] = model
    times: dict[tuple, list[float]] = {}
    precisions = {'fp32': None, 'bf16': torch.bfloat16}
    with tempfile.TemporaryDirectory() as tmp:  # outputs kept only to compare them
        out = Path(tmp)
        for r in range(2):  # pass 0 warms up
            for i, path in enumerate(paths):
                for prec, dtype in precisions.items():
                    for (mode, variant), model in models.items():
                        t = (timed_predict(model, path, out, f'{variant}_{prec}_{i}', dtype)[0]
                             if mode == 'predict' else timed_evaluate(model, path, dtype)[0])
                        if r:
                            times.setdefault((mode, prec, variant), []).append(t)
        same = {prec: all((out / f'old_{prec}_{i}_labels.tif').read_bytes()
                          == (out / f'new_{prec}_{i}_labels.tif').read_bytes()
                          for i in range(len(paths)))
                for prec in precisions}
    print(f'{len(paths)} images, {torch.get_num_threads()} threads, {Path(args.checkpoint).name}')
    for mode in ('predict', 'eval'):
        for prec in precisions:
            old = statistics.median(times[mode, prec, 'old'])
            new = statistics.median(times[mode, prec, 'new'])
            print(f'{mode} {prec}: FCNMaskHead.forward {old * 1e3:.0f} ms, ChunkedMaskHead.forward '
                  f'{new * 1e3:.0f} ms per image, new / old {new / old:.3f}')
    for prec in precisions:
        print(f'{prec}: label TIFFs of old and new identical: {same[prec]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
