#!/usr/bin/env bash
# The main job end to end on generated demo data: make data -> COCO files -> train -> evaluate ->
# CodaBench submission. Everything goes under work_dirs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=work_dirs/demo
CONFIG=${CONFIG:-configs/demo/cell_r18_scratch_demo.py}  # the demo config, or a child of it
export PYTHONUNBUFFERED=1
start=$(date +%s)

echo "== 1/4 demo data (HW3 layout) -> $OUT/data"
$PY data_prep/make_demo_data.py "$OUT/data"
echo "== 2/4 COCO annotations -> $OUT/data/annotations"
$PY data_prep/hw3_to_coco.py "$OUT/data" --out-dir "$OUT/data/annotations" --folds 5
echo "== 3/4 training $CONFIG -> $OUT/train (a few minutes on CPU)"
$PY tools/train.py "$CONFIG" --work-dir "$OUT/train"
ckpt=$(ls -t "$OUT"/train/epoch_*.pth | head -n 1)
echo "== 4/4 evaluation on the demo test ground truth, the submission, predictions to look at"
$PY tools/test.py "$CONFIG" "$ckpt" --work-dir "$OUT/test" --metrics-out "$OUT/metrics.json" \
  --report "$OUT/report"
$PY tools/test.py "$CONFIG" "$ckpt" --work-dir "$OUT/test" --submit "$OUT/submission.zip"
# --overwrite: a second `make demo` trains a new model, whose predictions replace the first's
$PY tools/predict.py "$ckpt" "$OUT/data/test_release" --out-dir "$OUT/predict" --overwrite

$PY - "$OUT/metrics.json" <<'PYEOF'
import json, sys
m = json.load(open(sys.argv[1]))
print('\n== demo results (test images, maxDets 100 as on CodaBench)')
print(f"mask AP50 {m['coco/segm_mAP_50']:.3f}   mask AP {m['coco/segm_mAP']:.3f}   "
      f"box AP50 {m['coco/bbox_mAP_50']:.3f}")
print('mask AP50 per class: ' + ', '.join(
    f"{k.split('/')[1].split('_')[1]} {v:.3f}" for k, v in m.items()
    if k.startswith('coco/segm_class') and k.endswith('_mAP_50')))
PYEOF
echo "data: $OUT/data   model: $ckpt   logs: $OUT/train"
echo "submission: $OUT/submission.zip ($OUT/test-results.json)   metrics: $OUT/metrics.json"
echo "look at: $OUT/predict (label TIFFs, overlays, instances.csv), $OUT/report, $OUT/train/curves.png"
echo "took $(( $(date +%s) - start )) s"
