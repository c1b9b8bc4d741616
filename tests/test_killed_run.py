"""A training run killed with SIGKILL and resumed with ``--resume`` ends exactly where an
uninterrupted run of the same seed ends."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import torch
from tool_runner import ToolProcess, start_tool

from cellseg.utils.scalars import read_scalars

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / 'tests' / 'configs' / 'cell_r50_tiny.py'
EPOCHS = 2  # the tiny config's; the kill lands in the second epoch
OPTIONS = [
    'randomness.seed=0', 'randomness.deterministic=True', 'train_dataloader.num_workers=0',
    'default_hooks.checkpoint.interval=1',
    # no validation: it does not change the weights and costs time
    'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None',
    'default_hooks.checkpoint.save_best=None',
]


def start(work: Path, tiny_root: Path, tiny_ann: Path, *extra: str) -> ToolProcess:
    # One thread per process: the two runs go side by side on two cores, and float sums are
    # split the same way in every run.
    return start_tool('tools/train.py', TINY, '--data-root', tiny_root, '--ann-dir', tiny_ann,
                      '--work-dir', work, '--cfg-options', *OPTIONS, *extra,
                      env={'OMP_NUM_THREADS': '1'}, output=work.parent / f'{work.name}.out')


def output(work: Path) -> str:
    return (work.parent / f'{work.name}.out').read_text()[-4000:]


def finish(proc: ToolProcess, work: Path, timeout: float = 600) -> None:
    assert proc.wait(timeout) == 0, output(work)


def wait_for_checkpoint(proc: ToolProcess, work: Path, name: str,
                        timeout: float = 600) -> None:
    """Poll until auto-resume would pick ``name``: mmengine writes ``last_checkpoint`` (what
    ``--resume`` reads) after the checkpoint itself, so the checkpoint file alone is not enough."""
    pointer = work / 'last_checkpoint'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pointer.is_file() and pointer.read_text().strip().endswith(name):
            return
        assert proc.poll() is None, f'the run ended before {name}:\n{output(work)}'
        time.sleep(0.05)
    raise AssertionError(f'no {name} after {timeout} s:\n{output(work)}')


# bf16: the CPU autocast (CpuAmpOptimWrapper), native or emulated; off: float32 (OptimWrapper)
@pytest.mark.parametrize('cpu_amp', ['bf16', 'off'])
def test_resume_after_sigkill_gives_the_uninterrupted_weights(tiny_root: Path, tiny_ann: Path,
                                                             tmp_path: Path, cpu_amp: str) -> None:
    """Same final iteration, and the same weights and optimizer state, bit for bit
    (``torch.equal``, i.e. allclose with rtol=0, atol=0).

    Exact equality holds on CPU because every step is a deterministic function of the checkpoint
    (weights, AdamW moments, lr schedule, iteration), of the data order, which the seeded
    sampler derives from (seed, epoch), and of the global random states, from which the RPN and
    R-CNN samplers draw their anchors and RoIs: mmengine 0.10.7 neither saves nor restores those
    states, so without ``RNGStateHook`` the resumed run samples others (142 of 162 weight tensors
    of this tiny run then ended up to 1.6e-3 apart). The configs' samplers are kept as they are,
    with one thread in every process; in float32 and under the CPU's bfloat16 autocast (native
    on a CPU with avx512_bf16, emulated elsewhere).
    """
    uninterrupted, killed = tmp_path / 'uninterrupted', tmp_path / 'killed'
    reference = start(uninterrupted, tiny_root, tiny_ann, '--cpu-amp', cpu_amp)
    victim = start(killed, tiny_root, tiny_ann, '--cpu-amp', cpu_amp)
    try:
        wait_for_checkpoint(victim, killed, 'epoch_1.pth')
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(60) == -signal.SIGKILL
        assert not (killed / f'epoch_{EPOCHS}.pth').exists()  # killed before the end
        resumed = start(killed, tiny_root, tiny_ann, '--cpu-amp', cpu_amp, '--resume')
        finish(resumed, killed)
        finish(reference, uninterrupted)
    finally:
        for proc in (reference, victim):
            if proc.poll() is None:
                proc.kill()

    assert 'Auto resumed from the latest checkpoint' in output(killed)
    wrapper = 'CpuAmpOptimWrapper' if cpu_amp == 'bf16' else 'OptimWrapper instead of'
    assert wrapper in output(killed) and wrapper in output(uninterrupted)
    images = len(json.loads((tiny_ann / 'train_all.json').read_text())['images'])
    per_epoch = -(-images // 2)  # batch 2
    # the resumed run logged only the second epoch, after the killed run's first
    runs = sorted(p for p in killed.iterdir() if (p / 'vis_data').is_dir())
    assert len(runs) == 2
    assert [r['step'] for r in read_scalars(killed) if 'loss' in r][-per_epoch:] == list(
        range(per_epoch + 1, EPOCHS * per_epoch + 1))

    a = torch.load(uninterrupted / f'epoch_{EPOCHS}.pth', map_location='cpu', weights_only=False)
    b = torch.load(killed / f'epoch_{EPOCHS}.pth', map_location='cpu', weights_only=False)
    assert a['meta']['iter'] == b['meta']['iter'] == EPOCHS * per_epoch
    assert a['meta']['epoch'] == b['meta']['epoch'] == EPOCHS
    assert a['state_dict'].keys() == b['state_dict'].keys()
    different = [k for k in a['state_dict'] if not torch.equal(a['state_dict'][k],
                                                               b['state_dict'][k])]
    assert not different, f'{len(different)} tensors differ, e.g. {different[:3]}'
    opt_a, opt_b = a['optimizer']['state'], b['optimizer']['state']
    assert opt_a.keys() == opt_b.keys()
    for i in opt_a:
        for key in opt_a[i]:
            assert torch.equal(torch.as_tensor(opt_a[i][key]), torch.as_tensor(opt_b[i][key]))
