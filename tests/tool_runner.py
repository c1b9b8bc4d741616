"""Run the project's command lines (``tools/*.py``, ``data_prep/*.py``) as a user runs them, each
in a process of its own, without paying for importing torch, mmengine and mmdet again in
every one of them (seconds per run, most of a test's time for the tiny models).

Each run is a child forked from one server process that imported those libraries once and did
nothing else (multiprocessing's forkserver with preloaded modules): the child starts with no
mmengine instances, loggers, visualizers or torch threads of an earlier run, exactly as a new
``python tools/x.py`` would, runs the script as ``__main__`` with the given argv, and its exit
status and output come back as from ``subprocess.run``. What cannot be reproduced after the
import is what the libraries read while importing: ``OMP_NUM_THREADS`` is applied in the child
with ``torch.set_num_threads``.
"""
from __future__ import annotations

import io
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# third-party libraries only: a tool must import the cellseg modules it needs itself (a
# preloaded cellseg would let a tool that forgets one pass its tests)
PRELOAD = ['torch', 'cv2', 'matplotlib.pyplot', 'mmengine.runner', 'mmdet.apis', 'mmdet.models',
           'mmdet.datasets', 'mmdet.evaluation', 'mmdet.engine', 'mmdet.visualization']
_context = None


def _forkserver() -> multiprocessing.context.BaseContext:
    global _context
    if _context is None:
        _context = multiprocessing.get_context('forkserver')
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _run_script(script: str, argv: list[str], cwd: str, env: dict[str, str], out: str,
                err: str) -> None:
    """The child: the script's ``__main__`` with stdout and stderr in the files ``out``, ``err``
    (unbuffered, so a killed run leaves what it printed)."""
    # one open file for both when they are the same path (as stderr=subprocess.STDOUT): two
    # opens would each keep their own offset and write over each other
    os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
    os.dup2(1 if err == out else os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
    sys.stdout = io.TextIOWrapper(open(1, 'wb', buffering=0, closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(open(2, 'wb', buffering=0, closefd=False), write_through=True)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    if 'OMP_NUM_THREADS' in env:
        import torch

        torch.set_num_threads(int(env['OMP_NUM_THREADS']))
    sys.argv = [script, *argv]
    sys.path[0] = os.path.dirname(script)  # as `python script` has it
    code = 0
    try:
        runpy.run_path(script, run_name='__main__')
    except SystemExit as e:  # sys.exit(None | int | message), as the interpreter reads it
        code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
        if code == 1 and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    os._exit(code)  # no atexit handlers of the libraries the server imported


class ToolProcess:
    """A started tool run, with the parts of ``subprocess.Popen`` the tests use."""

    def __init__(self, script: Path, args: tuple, cwd: Path, env: dict[str, str] | None,
                 output: Path | None) -> None:
        self.args = [str(script), *map(str, args)]
        self._dir = tempfile.TemporaryDirectory(prefix='tool-')
        self.out = Path(output) if output else Path(self._dir.name) / 'stdout'
        # with `output`, both streams go to one file, as with stderr=subprocess.STDOUT
        self.err = self.out if output else Path(self._dir.name) / 'stderr'
        full_env = dict(os.environ, **(env or {}))
        self._process = _forkserver().Process(
            target=_run_script,
            args=(str(script), self.args[1:], str(cwd), full_env, str(self.out), str(self.err)))
        self._process.start()
        self.pid = self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self._process.exitcode

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill(self) -> None:
        self._process.kill()

    def result(self) -> subprocess.CompletedProcess:
        stdout = self.out.read_text(errors='replace')
        stderr = '' if self.err == self.out else self.err.read_text(errors='replace')
        self._dir.cleanup()
        return subprocess.CompletedProcess(self.args, self.returncode, stdout, stderr)


def start_tool(script: str | Path, *args: object, cwd: Path = REPO,
               env: dict[str, str] | None = None, output: Path | None = None) -> ToolProcess:
    """Start ``script`` (a path, or relative to the repository) with ``args``; ``env`` adds to
    the environment; ``output``: one file for stdout and stderr, read while it runs."""
    return ToolProcess(REPO / script, args, cwd, env, output)


def kill_when(proc: ToolProcess, ready: Callable[[], bool], log: Path,
              timeout: float = 300) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (or when it has ended by itself), failing
    with the end of its ``log`` if neither happens within ``timeout`` seconds; waits for it."""
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None:
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)


def run_tool(script: str | Path, *args: object, ok: bool = True, cwd: Path = REPO,
             env: dict[str, str] | None = None, timeout: float = 900
             ) -> subprocess.CompletedProcess:
    """``subprocess.run([python, script, *args], capture_output=True, text=True)``, forked from
    the preloaded server; ``ok``: assert that it exits 0, showing its output if not."""
    proc = start_tool(script, *args, cwd=cwd, env=env)
    try:
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(60)
    done = proc.result()
    if ok:
        assert done.returncode == 0, \
            f'{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}'
    return done
