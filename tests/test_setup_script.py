"""scripts/setup.sh's decisions, with torch, GPUs, nvcc and the venv simulated.

Each test runs a copy of the script in a temporary repository (so ``../shared/wheels`` and
``.venv`` are the test's own) with a clean environment whose PATH holds only the tools the script
uses: this machine's nvcc, CUDA_HOME, GPUs and pip settings are never seen.

- ``python3`` (``PYTHON``) runs this interpreter with ``-S`` and a folder holding a fake ``torch``
  (version, CUDA version and device capabilities of the test's choosing) as its only packages;
  ``python3 -m venv DIR`` only writes a fake ``DIR/bin/python``.
- That venv python logs every pip call with the environment the build would see, installs
  nothing, and answers the script's import and GPU checks.
- ``nvcc`` is a shell script printing the release line of the test's choosing.

Most tests run the dry run (``SETUP_DRY_RUN=1``), which prints the decisions and stops; a few run
the whole script against the fakes. Nothing is created outside ``tmp_path``, nothing installed.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = ('bash', 'cat', 'dirname', 'grep', 'gzip', 'head', 'mkdir', 'nproc', 'readlink', 'rm',
         'sed', 'tar', 'touch', 'tr')
NVCC13_ARCHS = 'compute_75 compute_80 compute_86 compute_89 compute_90 compute_100 compute_120'
LOGGED_ENV = ('MMCV_WITH_OPS', 'FORCE_CUDA', 'TORCH_CUDA_ARCH_LIST', 'CUDA_HOME', 'PIP_FIND_LINKS',
              'CPATH')
# what torch's ATen/cuda headers include beyond the CUDA runtime
CUDA_LIB_HEADERS = ('cublas_v2.h', 'cublasLt.h', 'cusparse.h', 'cusolverDn.h')

FAKE_TORCH = '''\
__version__ = {version!r}


class version:
    cuda = {cuda!r}


class cuda:
    @staticmethod
    def device_count():
        return {count}

    @staticmethod
    def get_device_capability(index):
        return {caps!r}[index]
'''

FAKE_NVCC = '''\
#!/bin/sh
case "$*" in
  *--version*) echo "nvcc: NVIDIA (R) Cuda compiler driver"
               echo "Cuda compilation tools, release {release}, V{release}.131" ;;
  *--list-gpu-arch*) printf '%s\\n' {archs} ;;
esac
'''

# $PY: `-m venv DIR` writes the fake venv python; anything else is python with only `site`
FAKE_PY = '''\
#!/bin/sh
if [ "$1" = -m ] && [ "$2" = venv ]; then
  for dir; do :; done
  echo "venv $*" >> {log}
  {mkdir} -p "$dir/bin" && {cp} {venv_python} "$dir/bin/python"
  exit 0
fi
PYTHONPATH={site} exec {python} -S "$@"
'''

# the venv's python: sees `venv_site` then `site` (as --system-site-packages would)
FAKE_VENV_PYTHON = '''\
#!/bin/sh
if [ "$1" = -m ] && [ "$2" = pip ]; then
  echo "$*{logged_env}" >> {log}
  case "$*" in *"${{FAKE_PIP_FAIL:-@none@}}"*) echo "ERROR: unreachable" >&2; exit 1 ;; esac
  if [ "$3" = download ] && [ -n "${{FAKE_SDIST:-}}" ]; then  # the sdist into the -d folder
    while [ "$1" != -d ]; do shift; done
    {cp} "$FAKE_SDIST" "$2"
  fi
  exit 0
fi
if [ "$1" = - ]; then
  code=$({cat})
  case $code in
    *RoIAlign*) echo "gpu-check" >> {log}
      [ "${{FAKE_GPU_OPS:-}}" = fail ] && {{ echo "RuntimeError: no kernel image" >&2; exit 1; }}
      echo "setup: mmcv RoIAlign and nms run on a fake GPU"; exit 0 ;;
  esac
  printf '%s\\n' "$code" | PYTHONPATH={venv_site}:{site} {python} -S -
  exit $?
fi
case "$*" in
  *"import mmcv.ops, mmdet, cellseg"*) echo "setup: ok, mmcv 2.1.0 mmdet 3.3.0"; exit 0 ;;
esac
PYTHONPATH={venv_site}:{site} exec {python} -S "$@"
'''


class Sandbox:
    """A copy of the repository's setup files, a PATH of plain tools, fake torch, nvcc and venv."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repo = root / 'repo'
        (self.repo / 'scripts').mkdir(parents=True)
        shutil.copy(REPO / 'scripts' / 'setup.sh', self.repo / 'scripts' / 'setup.sh')
        shutil.copy(REPO / 'requirements.txt', self.repo / 'requirements.txt')
        self.bin = root / 'bin'
        self.bin.mkdir()
        for tool in TOOLS:
            found = shutil.which(tool)
            assert found, f'{tool} is needed to run scripts/setup.sh'
            (self.bin / tool).symlink_to(found)
        self.site, self.venv_site = root / 'site', root / 'venv-site'
        self.site.mkdir()
        self.venv_site.mkdir()
        self.log = root / 'calls.log'
        self.log.touch()
        fakes = root / 'fakes'
        fakes.mkdir()
        paths = dict(log=self.log, site=self.site, venv_site=self.venv_site,
                     python=sys.executable, cat=shutil.which('cat'),
                     mkdir=shutil.which('mkdir'), cp=shutil.which('cp'))
        venv_python = self._script(fakes / 'venv-python', FAKE_VENV_PYTHON.format(
            logged_env=''.join(f' | {v}=${{{v}:-}}' for v in LOGGED_ENV), **paths))
        self.python = self._script(fakes / 'python3',
                                   FAKE_PY.format(venv_python=venv_python, **paths))
        self.env = {'PATH': str(self.bin), 'HOME': str(root), 'PYTHON': str(self.python)}

    @staticmethod
    def _script(path: Path, text: str) -> Path:
        path.write_text(text)
        path.chmod(0o755)
        return path

    def torch(self, version: str, cuda: str | None = None, caps: tuple = (),
              in_venv: bool = False, cxx: int | None = None) -> None:
        """A fake torch for python3 (or, ``in_venv``, for the venv only); ``cxx``: the C++
        standard its ATen.h demands, as torch's own header says it."""
        pkg = (self.venv_site if in_venv else self.site) / 'torch'
        pkg.mkdir()
        (pkg / '__init__.py').write_text(
            FAKE_TORCH.format(version=version, cuda=cuda, count=len(caps), caps=list(caps)))
        if cxx:
            (pkg / 'include' / 'ATen').mkdir(parents=True)
            (pkg / 'include' / 'ATen' / 'ATen.h').write_text(
                f'#pragma once\n#if !defined(_MSC_VER) && __cplusplus < 20{cxx - 20 or ""}02L\n'
                f'#error C++{cxx} or later compatible compiler is required to use ATen.\n#endif\n')

    def torch_cuda_wheel_headers(self, headers: tuple = CUDA_LIB_HEADERS) -> Path:
        """``headers`` in ``nvidia/cu13/include`` beside python3's torch, as its CUDA wheels
        (nvidia-*-cu13) install them."""
        include = self.site / 'nvidia' / 'cu13' / 'include'
        include.mkdir(parents=True)
        for header in headers:
            (include / header).touch()
        return include

    def sdist(self, setup_py: str) -> Path:
        """An mmcv-2.1.0.tar.gz holding ``setup_py``, which the fake pip downloads."""
        src = self.root / 'sdist-src' / 'mmcv-2.1.0'
        src.mkdir(parents=True)
        (src / 'setup.py').write_text(setup_py)
        tarball = self.root / 'mmcv-2.1.0.tar.gz'
        subprocess.run(['tar', '-czf', tarball, '-C', src.parent, src.name], check=True)
        return tarball

    def nvcc(self, release: str, on_path: bool = True, archs: str = NVCC13_ARCHS,
             headers: bool = True, lib_headers: bool = True) -> Path:
        """A CUDA toolkit folder holding bin/nvcc; linked into PATH when ``on_path``; with the
        runtime's headers (``headers``) and those of the math libraries (``lib_headers``)."""
        home = self.root / f'cuda-{release}'
        (home / 'bin').mkdir(parents=True)
        if headers:
            (home / 'include').mkdir()
            (home / 'include' / 'cuda_runtime.h').touch()
            for header in CUDA_LIB_HEADERS if lib_headers else ():
                (home / 'include' / header).touch()
        nvcc = self._script(home / 'bin' / 'nvcc', FAKE_NVCC.format(release=release, archs=archs))
        if on_path:
            (self.bin / 'nvcc').symlink_to(nvcc)
        return home

    def shared_wheels(self) -> Path:
        wheels = self.root / 'shared' / 'wheels'
        wheels.mkdir(parents=True)
        return wheels

    def venv_with_mmcv(self, compiled_cuda: str) -> None:
        """An existing .venv whose mmcv was built for ``compiled_cuda`` ('not available': CPU)."""
        (self.venv_site / 'mmcv' / 'ops').mkdir(parents=True)
        (self.venv_site / 'mmcv' / '__init__.py').write_text('')
        (self.venv_site / 'mmcv' / 'ops' / '__init__.py').write_text(
            f'def get_compiling_cuda_version():\n    return {compiled_cuda!r}\n')
        subprocess.run([self.python, '-m', 'venv', self.repo / '.venv'], check=True)
        self.log.write_text('')

    def run(self, dry: bool = True, *args: str, **env: str) -> Result:
        proc = subprocess.run(
            ['bash', str(self.repo / 'scripts' / 'setup.sh'), *args], cwd=self.root,
            env={**self.env, **({'SETUP_DRY_RUN': '1'} if dry else {}), **env},
            capture_output=True, text=True, timeout=60)
        calls = self.log.read_text().splitlines()
        if dry:
            assert calls == [], f'the dry run ran {calls}'
        return Result(proc, calls)


class Result:
    """What a run printed (the mmcv build's environment and pip command, or the error) and the
    calls the fake venv logged."""

    def __init__(self, proc: subprocess.CompletedProcess, calls: list[str]) -> None:
        self.rc, self.out, self.err, self.calls = proc.returncode, proc.stdout, proc.stderr, calls
        self.build_env: dict[str, str] = {}
        self.install = None
        for line in proc.stdout.splitlines():
            if line.startswith('setup: mmcv env: '):
                key, _, value = line[len('setup: mmcv env: '):].partition('=')
                self.build_env[key] = value
            elif line.startswith('setup: mmcv install: '):
                self.install = line[len('setup: mmcv install: '):]

    def ok(self) -> Result:
        assert self.rc == 0, self.err
        assert self.install and self.install.endswith(' mmcv==2.1.0'), self.out
        assert self.build_env['MMCV_WITH_OPS'] == '1'
        return self

    def failed(self) -> str:
        assert self.rc == 1, (self.rc, self.out, self.err)
        assert self.install is None, 'an error must stop before the mmcv install'
        assert 'setup: error: ' in self.err
        return self.err

    def mmcv_pip_call(self) -> tuple[str, dict[str, str]]:
        """The logged pip install of mmcv: its arguments and the environment it ran in."""
        return self.mmcv_pip_call_of('mmcv==')

    def mmcv_pip_call_of(self, source: str) -> tuple[str, dict[str, str]]:
        """The logged pip install of ``source`` (what names mmcv), as ``mmcv_pip_call``."""
        [call] = [c for c in self.calls if c.startswith('-m pip install') and source in c]
        args, *env = call.split(' | ')
        return args, dict(e.partition('=')[::2] for e in env)


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


# --- a CPU torch: today's behaviour ---------------------------------------------------------

def test_cpu_torch_takes_the_cached_wheel_and_ignores_nvcc(box: Sandbox) -> None:
    box.torch('2.13.0+cpu')
    wheels = box.shared_wheels()
    box.nvcc('13.0')  # like this machine: an nvcc on PATH must not turn a CPU torch to CUDA
    r = box.run().ok()
    assert r.build_env['PIP_FIND_LINKS'] == str(wheels)
    assert {'FORCE_CUDA', 'TORCH_CUDA_ARCH_LIST', 'CUDA_HOME'}.isdisjoint(r.build_env)
    assert r.install.endswith('-m pip install --no-build-isolation mmcv==2.1.0')
    assert 'using the torch of' in r.out


def test_cpu_torch_keeps_the_pip_find_links_already_set(box: Sandbox) -> None:
    box.torch('2.13.0+cpu')
    wheels = box.shared_wheels()
    r = box.run(PIP_FIND_LINKS='/opt/wheels').ok()
    assert r.build_env['PIP_FIND_LINKS'] == f'{wheels} /opt/wheels'


@pytest.mark.parametrize('version, cache', [('2.14.1+cpu', True), ('2.13.0+cpu', False)])
def test_cpu_torch_builds_from_source_without_a_cache_of_its_build(
        box: Sandbox, version: str, cache: bool) -> None:
    box.torch(version)
    if cache:
        box.shared_wheels()
    r = box.run().ok()
    assert 'PIP_FIND_LINKS' not in r.build_env and 'FORCE_CUDA' not in r.build_env
    assert f'building mmcv 2.1.0 with ops against torch {version}' in r.out


def test_python_without_torch_defers_the_decision_to_the_pinned_torch(box: Sandbox) -> None:
    r = box.run()
    assert r.rc == 0, r.err
    assert 'would install torch==2.13.0' in r.out and r.install is None


def test_check_only_flag_is_the_dry_run(box: Sandbox) -> None:
    box.torch('2.13.0+cpu')
    assert box.run(False, '--check-only').ok().calls == []


def test_full_cpu_run_installs_in_order_with_the_cached_wheel(box: Sandbox) -> None:
    box.torch('2.13.0+cpu', in_venv=True)  # python3 has no torch: the pinned one is installed
    wheels = box.shared_wheels()
    r = box.run(False).ok()
    pip_installs = [c.split(' | ')[0] for c in r.calls if c.startswith('-m pip install')]
    assert pip_installs[1] == '-m pip install -q setuptools==80.8.0 wheel ninja'
    # no GPU visible: the CPU build, from PyTorch's CPU index
    assert pip_installs[2] == ('-m pip install -q --retries 1 --timeout 30 --index-url '
                               'https://download.pytorch.org/whl/cpu torch==2.13.0')
    assert len(pip_installs) == 6  # pip, build tools, torch, mmcv, the rest, cellseg
    args, env = r.mmcv_pip_call()
    assert args == '-m pip install --no-build-isolation mmcv==2.1.0'
    assert env['PIP_FIND_LINKS'] == str(wheels) and env['MMCV_WITH_OPS'] == '1'
    assert env['FORCE_CUDA'] == ''
    rest = (box.repo / '.venv' / 'requirements-rest.txt').read_text()
    assert 'mmdet==3.3.0' in rest and 'setuptools' not in rest and 'mmcv' not in rest
    assert 'gpu-check' not in r.calls
    assert (box.repo / '.venv' / '.cellseg-installed').exists()


# --- a CUDA torch ---------------------------------------------------------------------------

def test_cuda_torch_with_matching_nvcc_and_a_gpu_builds_cuda_ops_for_it(box: Sandbox) -> None:
    box.torch('2.6.0+cu124', cuda='12.4', caps=[(9, 0)])
    home = box.nvcc('12.4')
    box.shared_wheels()  # a CPU build's cache: never for a CUDA torch
    r = box.run().ok()
    assert r.build_env['FORCE_CUDA'] == '1'
    assert r.build_env['TORCH_CUDA_ARCH_LIST'] == '9.0'
    assert r.build_env['CUDA_HOME'] == str(home)
    assert 'PIP_FIND_LINKS' not in r.build_env
    # pip must compile it, neither reusing a wheel it cached from a CPU build nor a found one
    assert '--no-cache-dir' in r.install and '--no-binary mmcv' in r.install
    assert '--force-reinstall' not in r.install
    assert 'expect about an hour or more on 2 cores' in r.out


def test_several_gpus_give_each_capability_once_in_order(box: Sandbox) -> None:
    box.torch('2.6.0+cu124', cuda='12.4', caps=[(9, 0), (8, 6), (9, 0)])
    box.nvcc('12.4')
    assert box.run().ok().build_env['TORCH_CUDA_ARCH_LIST'] == '8.6;9.0'


@pytest.mark.parametrize('caps', [[(9, 0)], []], ids=['gpu-9.0', 'no-gpu'])
def test_user_given_arch_list_is_respected(box: Sandbox, caps: list) -> None:
    box.torch('2.6.0+cu124', cuda='12.4', caps=caps)
    box.nvcc('12.4')
    r = box.run(TORCH_CUDA_ARCH_LIST='8.0;8.6+PTX').ok()
    assert r.build_env['TORCH_CUDA_ARCH_LIST'] == '8.0;8.6+PTX'
    assert r.build_env['FORCE_CUDA'] == '1'


def test_nvcc_of_another_minor_version_is_accepted(box: Sandbox) -> None:
    box.torch('2.6.0+cu124', cuda='12.4', caps=[(8, 0)])
    box.nvcc('12.1')
    assert box.run().ok().build_env['FORCE_CUDA'] == '1'


def test_no_nvcc_is_an_error_naming_nvcc(box: Sandbox) -> None:
    box.torch('2.6.0+cu124', cuda='12.4', caps=[(9, 0)])
    err = box.run().failed()
    assert 'no nvcc on PATH' in err and 'CUDA_HOME' in err and 'CUDA 12.4' in err


def test_nvcc_of_another_major_version_is_an_error_naming_both(box: Sandbox) -> None:
    box.torch('2.6.0+cu124', cuda='12.4', caps=[(9, 0)])
    box.nvcc('13.0')
    err = box.run().failed()
    assert 'CUDA 13.0' in err and 'CUDA 12.4' in err and 'nvcc' in err


# --- a CUDA torch without a GPU (PyPI's Linux wheel on a laptop or CPU server) ---------------

@pytest.mark.parametrize('nvcc', [None, '13.0', '12.8'], ids=['no-nvcc', 'other-nvcc', 'nvcc'])
def test_cuda_torch_without_a_gpu_builds_mmcv_s_cpu_ops_and_says_so(box: Sandbox,
                                                                    nvcc: str | None) -> None:
    box.torch('2.13.0', cuda='12.8', caps=[])  # as `pip install torch==2.13.0` gets it
    if nvcc:
        box.nvcc(nvcc)  # neither a missing nor a mismatched nvcc stops a CPU build
    box.shared_wheels()  # built against 2.13.0+cpu: not for this torch
    r = box.run().ok()
    assert r.build_env == {'MMCV_WITH_OPS': '1', 'MAX_JOBS': r.build_env['MAX_JOBS'],
                           'FORCE_CUDA': '0'}
    assert r.install.endswith('-m pip install --no-build-isolation --no-cache-dir --no-binary '
                              'mmcv mmcv==2.1.0')
    assert 'torch 2.13.0 has CUDA 12.8 but no GPU is visible: mmcv 2.1.0 is built with CPU ops' \
        in r.out
    assert 'Once a GPU is there, rebuild it with CUDA ops: rm .venv/.cellseg-installed && bash ' \
        'scripts/setup.sh' in r.out


def test_full_run_of_a_cuda_torch_without_a_gpu_installs_cpu_ops(box: Sandbox) -> None:
    box.torch('2.13.0', cuda='12.8', caps=[])
    r = box.run(False).ok()
    args, env = r.mmcv_pip_call()
    assert args == '-m pip install --no-build-isolation --no-cache-dir --no-binary mmcv mmcv==2.1.0'
    assert env['FORCE_CUDA'] == '0' and env['TORCH_CUDA_ARCH_LIST'] == ''
    assert 'gpu-check' not in r.calls
    assert (box.repo / '.venv' / '.cellseg-installed').exists()


# --- no torch yet: which build to install -----------------------------------------------------

def test_no_torch_and_no_gpu_falls_back_to_the_configured_index(box: Sandbox) -> None:
    box.torch('2.13.0+cpu', in_venv=True)
    r = box.run(False, FAKE_PIP_FAIL='--index-url').ok()
    torch_calls = [c.split(' | ')[0] for c in r.calls if 'torch==' in c]
    assert torch_calls == ['-m pip install -q --retries 1 --timeout 30 --index-url '
                           'https://download.pytorch.org/whl/cpu torch==2.13.0',
                           '-m pip install -q torch==2.13.0']
    assert 'https://download.pytorch.org/whl/cpu is not reachable' in r.out


def test_no_torch_and_a_gpu_takes_the_index_s_default_build(box: Sandbox) -> None:
    box._script(box.bin / 'nvidia-smi', '#!/bin/sh\necho "GPU 0: NVIDIA H200 (UUID: GPU-1)"\n')
    assert 'the index\'s default build: a GPU is visible' in box.run().out
    box.torch('2.13.0+cpu', in_venv=True)
    r = box.run(False).ok()
    assert [c.split(' | ')[0] for c in r.calls if 'torch==' in c] == [
        '-m pip install -q torch==2.13.0']


def test_dry_run_without_torch_and_gpu_names_the_cpu_index(box: Sandbox) -> None:
    out = box.run().out
    assert 'the CPU build (no GPU is visible), from https://download.pytorch.org/whl/cpu' in out


def test_python_older_than_3_11_is_refused_naming_it(box: Sandbox) -> None:
    old = box._script(box.root / 'python3.10', '#!/bin/sh\ncase "$*" in\n'
                      '  *version_info*) exit 1 ;;\n  *python_version*) echo 3.10.12 ;;\nesac\n')
    r = box.run(PYTHON=str(old))
    assert r.rc == 1 and r.calls == []
    assert 'cellseg needs Python 3.11 or newer, but' in r.err and 'is 3.10.12' in r.err


def test_cuda_home_names_the_nvcc_whatever_path_holds(box: Sandbox) -> None:
    box.torch('2.14.1+cu130', cuda='13.0', caps=[(9, 0)])
    box.nvcc('12.4')  # on PATH, but CUDA_HOME is what torch's build compiles with
    home = box.nvcc('13.0', on_path=False)
    assert box.run(CUDA_HOME=str(home)).ok().build_env['CUDA_HOME'] == str(home)


def test_cuda_home_without_nvcc_is_an_error(box: Sandbox) -> None:
    box.torch('2.6.0+cu124', cuda='12.4', caps=[(9, 0)])
    box.nvcc('12.4')
    err = box.run(CUDA_HOME=str(box.root / 'nowhere')).failed()
    assert f'CUDA_HOME={box.root / "nowhere"} has no bin/nvcc' in err


def test_wrapper_nvcc_on_path_gives_the_toolkit_it_runs(box: Sandbox) -> None:
    # like /usr/local/bin/nvcc here: `exec /usr/local/cuda-13.0/bin/nvcc "$@"`; torch's own guess
    # (the wrapper's parent folder) has no CUDA headers
    box.torch('2.14.1+cu130', cuda='13.0', caps=[(9, 0)])
    home = box.nvcc('13.0', on_path=False)
    real = home / 'bin' / 'nvcc'
    real.write_text(real.read_text().replace(
        'esac', f'  *--dryrun*) echo "#\\$ _HERE_={home}/bin" >&2 ;;\nesac'))
    box._script(box.bin / 'nvcc', f'#!/bin/sh\nexec {real} "$@"\n')
    assert box.run().ok().build_env['CUDA_HOME'] == str(home)


def test_nvcc_without_cuda_headers_is_an_error_saying_to_set_cuda_home(box: Sandbox) -> None:
    box.torch('2.14.1+cu130', cuda='13.0', caps=[(9, 0)])
    box.nvcc('13.0', headers=False)
    err = box.run().failed()
    assert 'has no CUDA headers next to it' in err and 'set CUDA_HOME' in err


def test_arch_the_nvcc_cannot_compile_is_an_error(box: Sandbox) -> None:
    box.torch('2.14.1+cu130', cuda='13.0', caps=[(7, 0)])  # a V100: nvcc 13 starts at 7.5
    box.nvcc('13.0')
    err = box.run().failed()
    assert 'GPU arch 7.0 (of "7.0") is not one' in err and 'CUDA 13.0' in err
    assert 'supports compute_75 compute_80' in err


def test_cpu_only_mmcv_in_the_venv_is_rebuilt_for_a_cuda_torch(box: Sandbox) -> None:
    box.torch('2.6.0+cu124', cuda='12.4', caps=[(9, 0)])
    box.nvcc('12.4')
    box.venv_with_mmcv('not available')
    assert '--force-reinstall --no-deps' in box.run().ok().install


def test_cuda_mmcv_in_the_venv_is_kept(box: Sandbox) -> None:
    box.torch('2.6.0+cu124', cuda='12.4', caps=[(9, 0)])
    box.nvcc('12.4')
    box.venv_with_mmcv('12.4')
    assert '--force-reinstall' not in box.run().ok().install


def test_full_cuda_run_builds_with_the_cuda_env_and_checks_the_gpu(box: Sandbox) -> None:
    box.torch('2.14.1+cu130', cuda='13.0', caps=[(9, 0)])
    home = box.nvcc('13.0')
    box.shared_wheels()
    r = box.run(False).ok()
    assert r.calls[0].startswith('venv -m venv --system-site-packages ')
    args, env = r.mmcv_pip_call()
    assert args == '-m pip install --no-build-isolation --no-cache-dir --no-binary mmcv mmcv==2.1.0'
    assert env == {'MMCV_WITH_OPS': '1', 'FORCE_CUDA': '1', 'TORCH_CUDA_ARCH_LIST': '9.0',
                   'CUDA_HOME': str(home), 'PIP_FIND_LINKS': '', 'CPATH': ''}
    assert r.calls[-1] == 'gpu-check' and 'RoIAlign and nms run on' in r.out
    assert (box.repo / '.venv' / '.cellseg-installed').exists()


def test_full_cuda_run_fails_when_the_ops_fail_on_the_gpu(box: Sandbox) -> None:
    box.torch('2.14.1+cu130', cuda='13.0', caps=[(9, 0)])
    box.nvcc('13.0')
    r = box.run(False, FAKE_GPU_OPS='fail')
    assert r.rc == 1 and "mmcv's CUDA ops fail on the GPU" in r.err
    assert 'TORCH_CUDA_ARCH_LIST=9.0 covers' in r.err and 'pip uninstall -y mmcv' in r.err
    assert not (box.repo / '.venv' / '.cellseg-installed').exists()


def test_full_cuda_run_stops_before_making_the_venv_without_nvcc(box: Sandbox) -> None:
    box.torch('2.14.1+cu130', cuda='13.0', caps=[(9, 0)])
    r = box.run(False)
    assert r.rc == 1 and 'nvcc' in r.err and r.calls == []
    assert not (box.repo / '.venv').exists()


def test_full_cuda_run_stops_when_an_old_venv_torch_hides_the_cuda_one(box: Sandbox) -> None:
    box.torch('2.14.1+cu130', cuda='13.0', caps=[(9, 0)])
    box.torch('2.13.0+cpu', in_venv=True)  # a .venv made before python3 had a CUDA torch
    box.nvcc('13.0')
    r = box.run(False)
    assert r.rc == 1 and 'has its own torch 2.13.0+cpu, which hides torch 2.14.1+cu130' in r.err
    assert 'rm -rf .venv' in r.err and not any(c.startswith('-m pip') for c in r.calls)


def test_full_cuda_run_without_a_gpu_skips_the_gpu_check(box: Sandbox) -> None:
    box.torch('2.14.1+cu130', cuda='13.0', caps=[])
    box.nvcc('13.0')
    r = box.run(False, TORCH_CUDA_ARCH_LIST='9.0').ok()
    assert 'gpu-check' not in r.calls and r.mmcv_pip_call()[1]['FORCE_CUDA'] == '1'


def test_setup_script_parses() -> None:
    subprocess.run(['bash', '-n', str(REPO / 'scripts' / 'setup.sh')], check=True)


# --- a torch whose headers need C++20 (2.14 on) -----------------------------------------------

# the lines of mmcv 2.1.0's setup.py that choose the C++ standard (Linux), with their neighbours
MMCV_SETUP_PY = """\
        if platform.system() != 'Windows':
            if parse_version(torch.__version__) <= parse_version('1.12.1'):
                extra_compile_args['cxx'] = ['-std=c++14']
            else:
                extra_compile_args['cxx'] = ['-std=c++17']
        if 'nvcc' in extra_compile_args and platform.system() != 'Windows':
            if parse_version(torch.__version__) <= parse_version('1.12.1'):
                extra_compile_args['nvcc'] += ['-std=c++14']
            else:
                extra_compile_args['nvcc'] += ['-std=c++17']
            extra_compile_args['cxx'] = ['-Wall', '-std=c++17']
"""


@pytest.mark.parametrize('cxx, patched', [(17, False), (None, False), (20, True)])
def test_the_cpp_standard_comes_from_torch_s_headers(box: Sandbox, cxx: int | None,
                                                     patched: bool) -> None:
    box.torch('2.14.1+cu130', cuda='13.0', caps=[(9, 0)], cxx=cxx)
    box.nvcc('13.0')
    r = box.run().ok()
    assert ('setup: mmcv patch: setup.py -std=c++17 -> -std=c++20' in r.out) == patched
    assert ('needs C++20' in r.out) == patched


def test_full_run_against_a_cpp20_torch_builds_mmcv_s_source_with_cpp20(box: Sandbox) -> None:
    box.torch('2.14.1+cu130', cuda='13.0', caps=[(9, 0)], cxx=20)
    box.nvcc('13.0')
    r = box.run(False, FAKE_SDIST=str(box.sdist(MMCV_SETUP_PY)))
    assert r.rc == 0, r.err
    [download] = [c for c in r.calls if c.startswith('-m pip download')]
    assert '--no-binary :all:' in download and 'mmcv==2.1.0' in download
    source = box.repo / '.venv' / 'mmcv-src' / 'mmcv-2.1.0'
    args, env = r.mmcv_pip_call_of(str(source))
    assert env['FORCE_CUDA'] == '1' and '--no-build-isolation' in args
    # exactly the two flags, nothing else (the macOS line keeps its -std=c++17)
    expected = MMCV_SETUP_PY.replace("'cxx'] = ['-std=c++17']", "'cxx'] = ['-std=c++20']"
                                     ).replace("+= ['-std=c++17']", "+= ['-std=c++20']")
    assert (source / 'setup.py').read_text() == expected
    assert "['-Wall', '-std=c++17']" in expected


def test_a_setup_py_without_the_two_flags_is_an_error_naming_it(box: Sandbox) -> None:
    box.torch('2.14.1+cu130', cuda='13.0', caps=[(9, 0)], cxx=20)
    box.nvcc('13.0')
    other = MMCV_SETUP_PY.replace("+= ['-std=c++17']", "+= ['-std=c++14']")
    r = box.run(False, FAKE_SDIST=str(box.sdist(other)))
    assert r.rc == 1 and 'setup.py does not pass -std=c++17 in the two lines' in r.err
    assert not [c for c in r.calls if c.startswith('-m pip install') and 'mmcv' in c]


# --- a toolkit of nvcc and the runtime only (as on these machines) --------------------------

def test_math_library_headers_missing_from_the_toolkit_come_from_torch_s_wheels(
        box: Sandbox) -> None:
    box.torch('2.14.1+cu130', cuda='13.0', caps=[(9, 0)])
    box.nvcc('13.0', lib_headers=False)
    include = box.torch_cuda_wheel_headers()
    r = box.run(CPATH='/opt/include').ok()
    assert r.build_env['CPATH'] == f'{include}:/opt/include'  # the user's CPATH is kept after
    assert 'lacks cublas_v2.h cublasLt.h cusparse.h cusolverDn.h' in r.out


def test_a_toolkit_with_the_math_library_headers_sets_no_cpath(box: Sandbox) -> None:
    box.torch('2.14.1+cu130', cuda='13.0', caps=[(9, 0)])
    box.nvcc('13.0')
    box.torch_cuda_wheel_headers()
    assert 'CPATH' not in box.run().ok().build_env


def test_math_library_headers_found_nowhere_are_an_error_naming_them(box: Sandbox) -> None:
    box.torch('2.14.1+cu130', cuda='13.0', caps=[(9, 0)])
    box.nvcc('13.0', lib_headers=False)
    box.torch_cuda_wheel_headers(headers=('cublas_v2.h', 'cublasLt.h'))
    err = box.run().failed()
    assert 'has no cusparse.h cusolverDn.h' in err and 'cuSPARSE' in err


def test_a_build_that_stopped_continues_in_its_patched_source(box: Sandbox) -> None:
    box.torch('2.14.1+cu130', cuda='13.0', caps=[(9, 0)], cxx=20)
    box.nvcc('13.0')
    sdist = str(box.sdist(MMCV_SETUP_PY))
    assert box.run(False, FAKE_SDIST=sdist).rc == 0
    source = box.repo / '.venv' / 'mmcv-src' / 'mmcv-2.1.0'
    (source / 'build').mkdir()
    (source / 'build' / 'compiled.o').touch()  # what the stopped build had compiled
    (box.repo / '.venv' / '.cellseg-installed').unlink()  # as after a failed build
    box.log.write_text('')
    r = box.run(False, FAKE_SDIST=sdist)
    assert r.rc == 0, r.err
    assert 'reusing the patched source and objects of an earlier build' in r.out
    assert not [c for c in r.calls if c.startswith('-m pip download')]
    r.mmcv_pip_call_of(str(source))
    assert (source / 'build' / 'compiled.o').exists()

