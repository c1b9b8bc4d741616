#!/usr/bin/env bash
# Create .venv with everything cellseg needs; safe to re-run (a stamp skips finished installs).
#
# Order matters: mmdet 3.3.0 needs mmcv < 2.2, and PyPI has no mmcv 2.1.0 wheel for current
# torch, so mmcv is compiled from source against the torch already in the venv
# (MMCV_WITH_OPS=1 for the compiled ops Mask R-CNN uses, --no-build-isolation so the build sees
# that torch, setuptools < 81 which mmcv's setup.py still works with). That build takes ~22
# minutes on 2 cores. When ../shared/wheels holds a wheel of exactly that build (CI), pip takes it
# through PIP_FIND_LINKS instead.
#
# A machine whose python3 already has torch (e.g. a CUDA build) keeps it: the venv sees the
# system packages and mmcv is compiled against that torch.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.cellseg-installed"
if [ -f "$STAMP" ] && [ "$STAMP" -nt requirements.txt ] && [ "$STAMP" -nt scripts/setup.sh ]; then
  exit 0
fi

if "$PY" -c 'import torch' 2>/dev/null; then
  echo "setup: using the torch of $PY ($("$PY" -c 'import torch; print(torch.__version__)'))"
  "$PY" -m venv --system-site-packages "$VENV"
  KEEP_TORCH=1
else
  "$PY" -m venv "$VENV"
  KEEP_TORCH=0
fi
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade pip
pip install -q "setuptools>=77,<81" wheel ninja
if [ "$KEEP_TORCH" = 0 ]; then
  pip install -q "$(grep '^torch==' requirements.txt)"
fi

TORCH=$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')
SHARED_WHEELS=$(cd .. && pwd)/shared/wheels
if [ "$TORCH" = "2.13.0+cpu" ] && [ -d "$SHARED_WHEELS" ]; then
  # the cached wheel was built against exactly this torch; never use it for another one
  export PIP_FIND_LINKS="$SHARED_WHEELS${PIP_FIND_LINKS:+ $PIP_FIND_LINKS}"
  echo "setup: mmcv from the build cache in $SHARED_WHEELS if it matches"
else
  echo "setup: building mmcv 2.1.0 with ops against torch $TORCH (about 22 minutes on 2 cores)"
fi
MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} pip install --no-build-isolation \
  "$(grep '^mmcv==' requirements.txt)"
grep -v -e '^torch==' -e '^mmcv==' -e '^#' -e '^$' requirements.txt > "$VENV/requirements-rest.txt"
pip install -q -r "$VENV/requirements-rest.txt"
pip install -q --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c 'import mmcv.ops, mmdet, cellseg; print("setup: ok, mmcv", mmcv.__version__, "mmdet", mmdet.__version__)'
touch "$STAMP"
