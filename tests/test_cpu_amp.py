"""The recipe's mixed precision on a CPU: a bfloat16 autocast that trains where the CPU has
bfloat16, float32 with a message where it has not (the CPU flag simulated)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

import cellseg.engine.optimizers.cpu_amp_optim_wrapper as amp
from cellseg.apis.classes import resolve_classes
from cellseg.apis.cpu_fallback import adapt_to_cpu
from cellseg.apis.data_paths import set_data_paths

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / 'tests' / 'configs' / 'cell_r50_tiny.py'


def tiny_config(tiny_root: Path, tiny_ann: Path, work: Path) -> Config:
    cfg = Config.fromfile(str(TINY))
    set_data_paths(cfg, str(tiny_root), str(tiny_ann))
    resolve_classes(cfg)
    cfg.work_dir = str(work)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.log_level = 'WARNING'
    return cfg


@pytest.mark.parametrize('flags, expected', [
    ('fpu sse2 avx2 avx512f avx512_bf16', True),
    ('fpu sse2 avx2 amx_tile amx_bf16', True),
    ('fpu sse2 avx2 avx512f', False),
])
def test_cpu_flags_decide_native_bf16(tmp_path: Path, flags: str, expected: bool) -> None:
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text(f'processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\n')
    assert amp.cpu_has_bf16(str(cpuinfo)) is expected
    assert amp.cpu_has_bf16(str(tmp_path / 'absent')) is False


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU path is taken without CUDA only')
@pytest.mark.parametrize('native', [True, False])
def test_auto_chooses_bf16_only_with_native_support(monkeypatch: pytest.MonkeyPatch,
                                                    native: bool) -> None:
    monkeypatch.setattr(amp, 'cpu_has_bf16', lambda *a: native)
    cfg = Config.fromfile(str(TINY))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    changes = adapt_to_cpu(cfg)
    if native:
        assert cfg.optim_wrapper.type == 'CpuAmpOptimWrapper'
        assert cfg.optim_wrapper.dtype == 'bfloat16'
        assert 'bfloat16 autocast on the CPU' in changes[0]
    else:
        assert cfg.optim_wrapper.type == 'OptimWrapper' and 'dtype' not in cfg.optim_wrapper
        assert 'no native bfloat16 (no avx512_bf16 or amx_bf16 flag)' in changes[0]
    off = Config.fromfile(str(TINY))
    assert 'cpu_amp is off' in adapt_to_cpu(off, 'off')[0]
    assert off.optim_wrapper.type == 'OptimWrapper'
    with pytest.raises(ValueError, match='cpu_amp must be one of'):
        adapt_to_cpu(Config.fromfile(str(TINY)), 'fp8')


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU path is taken without CUDA only')
def test_bf16_path_trains(tiny_root: Path, tiny_ann: Path, tmp_path: Path) -> None:
    """Two steps under the CPU autocast (emulated on a CPU without bf16, which is only slower):
    the loss is finite, the weights move, and the layers did run in bfloat16."""
    from mmengine.runner import Runner

    cfg = tiny_config(tiny_root, tiny_ann, tmp_path)
    adapt_to_cpu(cfg, 'bf16')
    runner = Runner.from_cfg(cfg)
    model = runner.model
    optim = runner.build_optim_wrapper(copy.deepcopy(cfg.optim_wrapper))
    assert isinstance(optim, amp.CpuAmpOptimWrapper)
    data = next(iter(runner.build_dataloader(cfg.train_dataloader)))
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    seen = []
    hook = model.backbone.conv1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    model.train()
    for _ in range(2):
        losses = model.train_step(copy.deepcopy(data), optim)
        assert all(torch.isfinite(v).all() for k, v in losses.items() if 'loss' in k), losses
    hook.remove()
    assert seen and all(d == torch.bfloat16 for d in seen)
    moved = [k for k, v in model.state_dict().items()
             if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert 'roi_head.mask_head.conv_logits.weight' in moved
    assert 'backbone.conv1.weight' in moved
    # the checkpoint state of the wrapper loads back
    optim.load_state_dict(optim.state_dict())


def test_float32_roi_extractor_feeds_mmcv_float32_features_and_unrounded_rois() -> None:
    """mmcv's CPU RoIAlign refuses bfloat16 features, and mmdet's extractor casts the RoIs to the
    features' type; Float32RoIExtractor (CascadeRoIHead's stages under the bf16 autocast) gives
    what mmdet's gives on float32 copies of the features with the RoIs as they are."""
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor

    from cellseg.models.roi_heads import Float32RoIExtractor

    cfg = dict(roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
               out_channels=8, featmap_strides=[4, 8])
    gen = torch.Generator().manual_seed(0)
    feats = tuple(torch.randn(1, 8, s, s, generator=gen).bfloat16() for s in (64, 32))
    # corners bfloat16 cannot hold (its 8 bits of mantissa step by 1 px from 128 to 256)
    rois = torch.tensor([[0, 100.3, 101.7, 140.2, 150.9], [0, 3.1, 4.2, 60.7, 200.3]])
    with pytest.raises(RuntimeError):
        SingleRoIExtractor(**cfg)(feats, rois)
    got = Float32RoIExtractor(**cfg)(feats, rois)
    want = SingleRoIExtractor(**cfg)(tuple(f.float() for f in feats), rois)
    assert got.dtype == torch.float32
    assert torch.equal(got, want)
    rounded = SingleRoIExtractor(**cfg)(tuple(f.float() for f in feats), rois.bfloat16().float())
    assert not torch.equal(got, rounded)
