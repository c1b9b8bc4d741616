#!/usr/bin/env bash
# Create .venv with everything cellseg needs; safe to re-run (a stamp skips finished installs).
#
# Order matters: mmdet 3.3.0 needs mmcv < 2.2, and PyPI has no mmcv 2.1.0 wheel for current
# torch, so mmcv is compiled from source against the torch already in the venv
# (MMCV_WITH_OPS=1 for the compiled ops Mask R-CNN uses, --no-build-isolation so the build sees
# that torch, and the setuptools of requirements.txt, which mmcv's setup.py still works with).
# That build takes ~22 minutes on 2 cores. When ../shared/wheels holds a wheel of exactly that
# build (CI), pip takes it through PIP_FIND_LINKS instead.
#
# A machine whose python3 already has torch (e.g. a CUDA build) keeps it: the venv sees the
# system packages and mmcv is compiled against that torch. A CUDA torch gets mmcv's CUDA ops
# (FORCE_CUDA=1) for the GPUs in TORCH_CUDA_ARCH_LIST, else for the visible ones; a missing or
# mismatched nvcc stops the script before the hour-long build, not at the first RoIAlign on a
# GPU (docs/gpu.md). A CUDA torch on a machine without a visible GPU (and no
# TORCH_CUDA_ARCH_LIST) gets mmcv's CPU ops, and the script says how to rebuild once a GPU is there.
# Without torch, the pinned one is installed: the CPU build (PyTorch's CPU wheel index, else
# whatever the configured index serves) when no GPU is visible, the index's default otherwise
# (PyPI's Linux wheel is the CUDA build). docs/install.md says what each kind of machine gets.
#
# SETUP_DRY_RUN=1 (or --check-only) prints those decisions, the mmcv install command and its
# environment, then exits before creating or installing anything.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.cellseg-installed"
SHARED_WHEELS=$(cd .. && pwd)/shared/wheels
MMCV_REQ=$(grep '^mmcv==' requirements.txt)
DRY_RUN=${SETUP_DRY_RUN:-0}
case "${1:-}" in
  --check-only) DRY_RUN=1 ;;
  "") ;;
  *) echo "usage: $0 [--check-only]" >&2; exit 2 ;;
esac

die() { echo "setup: error: $*" >&2; exit 1; }

# numpy 2.4 and scipy 1.17 of requirements.txt need Python 3.11
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  PY_VERSION=$("$PY" -c 'import platform; print(platform.python_version())' 2>/dev/null) ||
    PY_VERSION="not a working python"
  die "cellseg needs Python 3.11 or newer, but $PY is $PY_VERSION: run with" \
    "PYTHON=/path/to/python3.11 bash scripts/setup.sh"
fi

TORCH_REQ=$(grep '^torch==' requirements.txt)
# PyTorch's index of CPU-only wheels (no CUDA libraries: ~200 MB instead of several GB)
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

# "yes" when nvidia-smi lists a GPU: what decides the torch build when none is installed yet
gpu_visible() {
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    echo yes
  else
    echo no
  fi
}

# One python call for everything the mmcv build depends on: torch's version, the CUDA it was
# built with ("none" for a CPU build), the compute capabilities of the visible GPUs and the C++
# standard torch's headers need (ATen.h stops a compiler below it: "C++20 or later compatible
# compiler is required" from torch 2.14 on, C++17 before).
probe_torch() {
  "$1" - <<'EOF'
import os
import re

import torch

cxx = 17
try:
    with open(os.path.join(os.path.dirname(torch.__file__), 'include', 'ATen', 'ATen.h')) as f:
        found = re.search(r'C\+\+(\d+) or later', f.read())
    cxx = int(found.group(1)) if found else cxx
except OSError:
    pass

caps = set()
if torch.version.cuda:
    caps = {'%d.%d' % torch.cuda.get_device_capability(i)
            for i in range(torch.cuda.device_count())}
caps = sorted(caps, key=lambda c: tuple(map(int, c.split('.'))))
print(torch.__version__, torch.version.cuda or 'none', ';'.join(caps) or 'none', cxx)
EOF
}

# Sets NVCC to the nvcc the build will compile with. torch's build takes $CUDA_HOME/bin/nvcc
# when CUDA_HOME is set, whatever PATH says, so that is the one to check then.
find_nvcc() {
  local wanted="install the CUDA $TORCH_CUDA toolkit (torch $TORCH was built with it)"
  if [ -n "${CUDA_HOME:-}" ]; then
    NVCC=$CUDA_HOME/bin/nvcc
    [ -x "$NVCC" ] || die "CUDA_HOME=$CUDA_HOME has no bin/nvcc, so mmcv's CUDA ops cannot be" \
      "compiled: point CUDA_HOME at a CUDA $TORCH_CUDA toolkit, or unset it to use the nvcc on PATH"
  elif ! NVCC=$(command -v nvcc); then
    local hint=""
    [ -x /usr/local/cuda/bin/nvcc ] &&
      hint=" (to use /usr/local/cuda/bin/nvcc: export CUDA_HOME=/usr/local/cuda)"
    die "no nvcc on PATH and CUDA_HOME is not set, so mmcv's CUDA ops cannot be compiled$hint:" \
      "$wanted and put its bin/ on PATH or set CUDA_HOME to it"
  fi
}

# "12.4" from nvcc's "Cuda compilation tools, release 12.4, V12.4.131"; empty when absent.
nvcc_release() {
  { "$1" --version 2>/dev/null || true; } |
    sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1
}

has_cuda_headers() {
  compgen -G "$1/include/cuda_runtime.h" || compgen -G "$1/targets/*/include/cuda_runtime.h"
} >/dev/null

# The toolkit root for CUDA_HOME: the folder above nvcc's bin/, which must hold the CUDA headers.
# For a wrapper such as /usr/local/bin/nvcc running /usr/local/cuda-13.0/bin/nvcc, that folder
# (which is also torch's build's guess) has none; nvcc's dry run names the folder it lives in.
cuda_root_of() {
  local root dry here
  root=$(cd "$(dirname "$(readlink -f "$1")")/.." && pwd)
  if ! has_cuda_headers "$root"; then
    dry=$("$1" --dryrun -x cu -c /dev/null -o /dev/null 2>&1 || true)
    here=$(sed -n 's/^#\$ _HERE_=//p' <<<"$dry" | head -n 1)
    if [ -z "$here" ] || ! has_cuda_headers "$here/.."; then
      die "$1 has no CUDA headers next to it (no $root/include/cuda_runtime.h) and its dry" \
        "run names no other toolkit${dry:+ (it says: ${dry//$'\n'/ })}: set CUDA_HOME to the" \
        "CUDA toolkit it belongs to"
    fi
    root=$(cd "$here/.." && pwd)
  fi
  echo "$root"
}

# An arch this nvcc cannot compile for (nvcc 13 dropped everything before 7.5) would only fail
# deep into the build; an nvcc without --list-gpu-arch leaves that to the build.
check_arch_supported() {
  local supported arch compute
  supported=$({ "$NVCC" --list-gpu-arch 2>/dev/null || true; } | tr '\n' ' ')
  supported=" ${supported%% } "
  [ "$supported" != "  " ] || return 0
  for arch in ${1//;/ }; do
    case $arch in [0-9]*.[0-9]*) ;; *) continue ;; esac  # named archs ("Hopper"): torch's to map
    compute=${arch%+PTX}           # "9.0a+PTX" -> compute_90
    compute=compute_${compute//./}
    case $supported in
      *" ${compute%[af]} "*) ;;
      *) die "GPU arch $arch (of \"$1\") is not one $NVCC (CUDA $NVCC_CUDA) can compile for;" \
        "it supports${supported% }: set TORCH_CUDA_ARCH_LIST to those of yours it supports, or" \
        "use a CUDA toolkit and a torch built for it that still support $arch" ;;
    esac
  done
}

# How mmcv is installed for the torch of python $1 (BUILD_PY): sets TORCH, TORCH_CUDA, GPU_CAPS, MMCV_ENV
# (the build's environment) and MMCV_PIP_ARGS (and for CUDA: NVCC, NVCC_CUDA, ARCH_LIST), or
# stops naming what is missing.
decide_mmcv() {
  local probe
  probe=$(probe_torch "$1") || die "$1 cannot report its torch (see the error above)"
  BUILD_PY=$1
  read -r TORCH TORCH_CUDA GPU_CAPS TORCH_CXX <<<"${probe##*$'\n'}"  # last: a site hook may print
  MMCV_ENV=(MMCV_WITH_OPS=1 "MAX_JOBS=${MAX_JOBS:-$(nproc)}")
  MMCV_PIP_ARGS=(--no-build-isolation)
  if [ "$TORCH_CUDA" = none ]; then
    decide_mmcv_cpu
  elif [ "$GPU_CAPS" = none ] && [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    decide_mmcv_cpu_ops_for_cuda_torch
  else
    decide_mmcv_cuda
  fi
  # mmcv 2.1.0's setup.py passes -std=c++17 to g++ and nvcc on Linux (torch then adds none of its
  # own), so against a torch needing C++20 every file stops at ATen.h's #error. The one change
  # this script makes to mmcv: those two flags name torch's standard instead.
  MMCV_CXX_STD=
  if [ "${TORCH_CXX:-17}" -gt 17 ]; then
    MMCV_CXX_STD=$TORCH_CXX
    echo "setup: torch $TORCH needs C++$TORCH_CXX but mmcv 2.1.0's setup.py compiles with" \
      "-std=c++17: its source is fetched and built with -std=c++$TORCH_CXX, the only change"
  fi
}

decide_mmcv_cpu() {
  if [ "$TORCH" = "2.13.0+cpu" ] && [ -d "$SHARED_WHEELS" ]; then
    # the cached wheel was built against exactly this torch; never use it for another one
    export PIP_FIND_LINKS="$SHARED_WHEELS${PIP_FIND_LINKS:+ $PIP_FIND_LINKS}"
    echo "setup: mmcv from the build cache in $SHARED_WHEELS if it matches"
  else
    echo "setup: building mmcv 2.1.0 with ops against torch $TORCH (about 22 minutes on 2 cores)"
  fi
}

# A CUDA torch and no GPU to compile for (a laptop or CPU server given PyPI's default Linux
# wheel): mmcv's CPU ops, as for a CPU torch. mmcv's setup.py compiles its CUDA ops only when
# torch sees a GPU or FORCE_CUDA=1, so FORCE_CUDA=0 keeps a user's exported one from asking
# for them. pip must compile it against this torch: a wheel in its cache or a find-links folder
# was built against another one.
decide_mmcv_cpu_ops_for_cuda_torch() {
  MMCV_ENV+=(FORCE_CUDA=0)
  MMCV_PIP_ARGS+=(--no-cache-dir --no-binary mmcv)
  echo "setup: torch $TORCH has CUDA $TORCH_CUDA but no GPU is visible: mmcv 2.1.0 is built" \
    "with CPU ops only (about 22 minutes on 2 cores), and cellseg runs on the CPU. Once a GPU" \
    "is there, rebuild it with CUDA ops: rm $STAMP && bash scripts/setup.sh (or build the CUDA" \
    "ops now, without a GPU: rm $STAMP && TORCH_CUDA_ARCH_LIST=\"9.0\" bash scripts/setup.sh," \
    "with your GPUs' compute capabilities; docs/gpu.md)"
}

decide_mmcv_cuda() {
  find_nvcc
  NVCC_CUDA=$(nvcc_release "$NVCC")
  [ -n "$NVCC_CUDA" ] || die "$NVCC --version names no CUDA release" \
    "(expected a line like 'Cuda compilation tools, release 12.4, V12.4.131')"
  # torch's extension build refuses an nvcc of another major CUDA version; a minor difference
  # within one major version builds and runs
  if [ "${NVCC_CUDA%%.*}" != "${TORCH_CUDA%%.*}" ]; then
    die "nvcc $NVCC is CUDA $NVCC_CUDA but torch $TORCH was built with CUDA $TORCH_CUDA;" \
      "mmcv's CUDA ops need an nvcc of the same major version: install the CUDA $TORCH_CUDA" \
      "toolkit and put its bin/ first on PATH (or set CUDA_HOME to it), or use a torch built" \
      "for CUDA $NVCC_CUDA"
  fi
  ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$GPU_CAPS}  # one of the two is set (decide_mmcv)
  check_arch_supported "$ARCH_LIST"
  # named explicitly, so that the build compiles with the nvcc checked here
  local cuda_home=${CUDA_HOME:-}
  if [ -z "$cuda_home" ]; then
    cuda_home=$(cuda_root_of "$NVCC")
  fi
  MMCV_ENV+=(FORCE_CUDA=1 "TORCH_CUDA_ARCH_LIST=$ARCH_LIST" "CUDA_HOME=$cuda_home")
  find_cuda_lib_headers "$cuda_home"
  [ -z "$CUDA_LIB_INCLUDE" ] || MMCV_ENV+=("CPATH=$CUDA_LIB_INCLUDE${CPATH:+:$CPATH}")
  # pip must compile this one: a wheel it cached from an earlier CPU build, or one in a
  # find-links folder (../shared/wheels, the machine's pip config), has no CUDA ops
  MMCV_PIP_ARGS+=(--no-cache-dir --no-binary mmcv)
  # ...and a CPU-only mmcv already in the venv (built before a GPU was there) satisfies
  # "mmcv==2.1.0", so pip would keep it
  if [ "$("$VENV/bin/python" -c 'from mmcv.ops import get_compiling_cuda_version as v; print(v())' \
    2>/dev/null)" = "not available" ]; then
    MMCV_PIP_ARGS+=(--force-reinstall --no-deps)
    echo "setup: the mmcv in $VENV has no CUDA ops; it is rebuilt"
  fi
  echo "setup: building mmcv 2.1.0 with CUDA ops for GPU arch $ARCH_LIST against torch $TORCH" \
    "(CUDA $TORCH_CUDA) with $NVCC (CUDA $NVCC_CUDA): expect about an hour or more on 2 cores," \
    "much less on a many-core machine"
}

print_mmcv_plan() {
  local var
  for var in "${MMCV_ENV[@]}" ${PIP_FIND_LINKS:+"PIP_FIND_LINKS=$PIP_FIND_LINKS"}; do
    echo "setup: mmcv env: $var"
  done
  [ -z "$MMCV_CXX_STD" ] || echo "setup: mmcv patch: setup.py -std=c++17 -> -std=c++$MMCV_CXX_STD"
  echo "setup: mmcv install: $VENV/bin/python -m pip install ${MMCV_PIP_ARGS[*]} $MMCV_REQ"
}

# Sets MMCV_SRC to what pip installs: the requirement itself, or (MMCV_CXX_STD set) its sdist
# unpacked under $VENV with setup.py's two -std=c++17 flags changed, refusing a setup.py that
# does not hold exactly those two lines (another mmcv release needs its own look).
fetch_mmcv_source() {
  MMCV_SRC=$MMCV_REQ
  [ -n "$MMCV_CXX_STD" ] || return 0
  local dir lines="extra_compile_args\['(cxx|nvcc)'\] \+?= \['-std=c\+\+"
  # a build that stopped (a missing header, an interrupted run) continues where it was: the
  # tree holds its compiled objects, and ninja recompiles only what is missing or changed
  local previous
  previous=$(echo "$VENV"/mmcv-src/mmcv-*/setup.py)
  if [ -f "$previous" ] &&
    [ "$(grep -cE "^ +${lines}${MMCV_CXX_STD}'\]$" "$previous")" = 2 ]; then
    MMCV_SRC=$(cd "${previous%/setup.py}" && pwd)
    echo "setup: reusing the patched source and objects of an earlier build in $MMCV_SRC"
    return 0
  fi
  rm -rf "$VENV/mmcv-src"
  mkdir -p "$VENV/mmcv-src"
  dir=$(cd "$VENV/mmcv-src" && pwd)
  pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$dir" "$MMCV_REQ"
  tar -xzf "$dir"/mmcv-*.tar.gz -C "$dir"
  local setup_py
  setup_py=$(echo "$dir"/mmcv-*/setup.py)
  [ -f "$setup_py" ] || die "the $MMCV_REQ sdist fetched into $dir holds no setup.py"
  [ "$(grep -cE "^ +${lines}17'\]$" "$setup_py")" = 2 ] ||
    die "$setup_py does not pass -std=c++17 in the two lines this script changes" \
      "(extra_compile_args['cxx'] = [...], extra_compile_args['nvcc'] += [...]): look at it"
  sed -i -E "s/^( +${lines})17'\]$/\1$MMCV_CXX_STD']/" "$setup_py"
  [ "$(grep -cE "^ +${lines}${MMCV_CXX_STD}'\]$" "$setup_py")" = 2 ] ||
    die "changing -std=c++17 to -std=c++$MMCV_CXX_STD in $setup_py failed"
  echo "setup: $setup_py now compiles with -std=c++$MMCV_CXX_STD"
  MMCV_SRC=${setup_py%/setup.py}
}

# torch's ATen/cuda headers include those of cuBLAS, cuSPARSE and cuSOLVER, which a toolkit of
# nvcc and the CUDA runtime alone does not have (these machines' /usr/local/cuda-13.0), while the
# CUDA wheels torch installs with (nvidia-*-cu13) ship them beside it. Sets CUDA_LIB_INCLUDE to
# the folders of those the toolkit $1 lacks (empty when it has them all), for CPATH: searched
# after the build's own -I folders, so the toolkit's headers keep precedence; stops naming any
# header found in neither place.
CUDA_LIB_HEADERS=(cublas_v2.h cublasLt.h cusparse.h cusolverDn.h)
find_cuda_lib_headers() {
  local missing=() header
  CUDA_LIB_INCLUDE=
  for header in "${CUDA_LIB_HEADERS[@]}"; do
    [ -f "$1/include/$header" ] || missing+=("$header")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  CUDA_LIB_INCLUDE=$("$BUILD_PY" - "${missing[@]}" <<'EOF'
import glob
import os
import sys

import torch

site = os.path.dirname(os.path.dirname(torch.__file__))
folders, absent = [], []
for header in sys.argv[1:]:
    found = sorted(glob.glob(os.path.join(site, 'nvidia', '*', 'include', header)))
    if not found:
        absent.append(header)
    elif os.path.dirname(found[0]) not in folders:
        folders.append(os.path.dirname(found[0]))
print(':'.join(folders) if not absent else 'absent ' + ' '.join(absent))
EOF
  ) || die "$BUILD_PY cannot look for the CUDA library headers beside torch (error above)"
  case $CUDA_LIB_INCLUDE in
    absent*) die "the CUDA toolkit $1 has no ${CUDA_LIB_INCLUDE#absent } (torch's CUDA headers" \
      "include them) and torch's CUDA wheels beside it have none either: install the CUDA" \
      "$TORCH_CUDA math libraries' headers (cuBLAS, cuSPARSE, cuSOLVER) into $1" ;;
  esac
  echo "setup: $1 lacks ${missing[*]}: taken from torch's CUDA wheels ($CUDA_LIB_INCLUDE, CPATH)"
}

# RoIAlign and nms on small tensors on the GPU: the compiled CUDA ops every Mask R-CNN step uses.
# A failure here (an arch list without this GPU, a driver older than torch's CUDA) would
# otherwise surface at the first training step.
check_gpu_ops() {
  if ! "$VENV/bin/python" - <<'EOF'
import torch
from mmcv.ops import RoIAlign, nms

feat = torch.rand(1, 1, 8, 8, device='cuda')
rois = torch.tensor([[0, 0, 0, 4, 4]], dtype=torch.float32, device='cuda')
assert RoIAlign((2, 2), 1.0, 0)(feat, rois).shape == (1, 1, 2, 2)
boxes = torch.tensor([[0, 0, 4, 4], [0, 0, 4, 4.2]], device='cuda')
assert nms(boxes, torch.tensor([0.9, 0.8], device='cuda'), 0.5)[1].tolist() == [0]
print('setup: mmcv RoIAlign and nms run on', torch.cuda.get_device_name(0))
EOF
  then
    die "mmcv's CUDA ops fail on the GPU (error above). Check that the build's" \
      "TORCH_CUDA_ARCH_LIST=$ARCH_LIST covers the GPU's capability ($GPU_CAPS) and that the" \
      "driver supports CUDA $TORCH_CUDA (nvidia-smi), then rebuild:" \
      "$VENV/bin/python -m pip uninstall -y mmcv && bash scripts/setup.sh (docs/gpu.md)"
  fi
}

if [ "$DRY_RUN" != 1 ] && [ -f "$STAMP" ] && [ "$STAMP" -nt requirements.txt ] \
  && [ "$STAMP" -nt scripts/setup.sh ]; then
  exit 0
fi

TORCH_PY=""
if "$PY" -c 'import torch' 2>/dev/null; then
  echo "setup: using the torch of $PY ($("$PY" -c 'import torch; print(torch.__version__)'))"
  KEEP_TORCH=1
  TORCH_PY=$PY
else
  KEEP_TORCH=0
  if [ "$DRY_RUN" = 1 ] && "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    TORCH_PY=$VENV/bin/python  # a re-run builds against the torch the venv already has
  fi
fi
if [ -n "$TORCH_PY" ]; then
  # decided before the venv and the installs, so that a missing nvcc stops the script at once
  decide_mmcv "$TORCH_PY"
fi

if [ "$DRY_RUN" = 1 ]; then
  if [ -n "$TORCH_PY" ]; then
    print_mmcv_plan
  else
    if [ "$(gpu_visible)" = yes ]; then
      echo "setup: would install $TORCH_REQ (the index's default build: a GPU is visible) into" \
        "$VENV, then decide the mmcv build from that torch"
    else
      echo "setup: would install $TORCH_REQ, the CPU build (no GPU is visible), from" \
        "$TORCH_CPU_INDEX (else from the configured index) into $VENV, then decide the mmcv" \
        "build from that torch"
    fi
  fi
  exit 0
fi

if [ "$KEEP_TORCH" = 1 ]; then
  "$PY" -m venv --system-site-packages "$VENV"
  # --system-site-packages shows the base interpreter's packages, so a $PY that is itself a venv
  # (or a conda env's python run through a venv) hides its torch: name torch's folder in a .pth
  if ! "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1; then
    TORCH_SITE=$("$PY" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
    VENV_SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$TORCH_SITE" > "$VENV_SITE/cellseg-torch-site.pth"
    echo "setup: $VENV sees the torch of $PY through $VENV_SITE/cellseg-torch-site.pth"
  fi
  # a venv made earlier with its own (CPU) torch hides python3's: mmcv would be built for that one
  VENV_TORCH=$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')
  if [ "$VENV_TORCH" != "$TORCH" ]; then
    die "$VENV has its own torch $VENV_TORCH, which hides torch $TORCH of $PY: remove it" \
      "(rm -rf $VENV) and run this again"
  fi
else
  "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade pip
pip install -q "$(grep '^setuptools==' requirements.txt)" wheel ninja
if [ "$KEEP_TORCH" = 0 ]; then
  if [ "$(gpu_visible)" = yes ]; then
    pip install -q "$TORCH_REQ"
  elif pip install -q --retries 1 --timeout 30 --index-url "$TORCH_CPU_INDEX" "$TORCH_REQ"; then
    # pip also takes a matching wheel from find-links folders, so the index is not always where
    # it came from; decide_mmcv below says which build it is
    echo "setup: no GPU is visible: installed $TORCH_REQ asking $TORCH_CPU_INDEX for the CPU build"
  else
    echo "setup: $TORCH_CPU_INDEX is not reachable: $TORCH_REQ from the configured index"
    pip install -q "$TORCH_REQ"
  fi
  decide_mmcv "$VENV/bin/python"
fi

print_mmcv_plan
fetch_mmcv_source
(export "${MMCV_ENV[@]}"; pip install "${MMCV_PIP_ARGS[@]}" "$MMCV_SRC")
grep -v -e '^torch==' -e '^mmcv==' -e '^setuptools==' -e '^#' -e '^$' requirements.txt \
  > "$VENV/requirements-rest.txt"
pip install -q -r "$VENV/requirements-rest.txt"
pip install -q --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c 'import mmcv.ops, mmdet, cellseg
print("setup: ok, mmcv", mmcv.__version__, "mmdet", mmdet.__version__)'
if [ "$TORCH_CUDA" != none ] && [ "$GPU_CAPS" != none ]; then
  check_gpu_ops
fi
touch "$STAMP"
