"""Fine-tuning from a downloaded checkpoint, without the internet: a server on 127.0.0.1 serves a
checkpoint laid out like mmdet's COCO Mask R-CNN R50-FPN (80-class heads, 3-anchor RPN, mmdet
2.x meta), and configs/cell_r50.py trains from it; an unreachable URL stops training before the
first iteration with one line; ``--pretrained`` chooses the weights."""
from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from tests.tool_runner import run_tool

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / 'configs'
ZOO_NAME = 'mask_rcnn_r50_fpn_1x_coco_20200205-d4b0c5d6.pth'
CLASS_LAYERS = {f'roi_head.{layer}.{p}' for layer in ('bbox_head.fc_cls', 'bbox_head.fc_reg',
                                                      'mask_head.conv_logits')
                for p in ('weight', 'bias')}


@pytest.fixture(scope='module')
def zoo_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cell_r50's network with mmdet's COCO heads (80 classes, mmdet's base leaves them so),
    every weight moved by seeded noise so that no initialisation gives it, saved as mmdet 2.x
    published its model-zoo files: meta (mmdet_version, CLASSES, config) and state_dict."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import cellseg.models  # noqa: F401  (the config's custom heads)

    register_all_modules()
    cfg = Config.fromfile(CONFIGS / 'cell_r50.py')
    assert cfg.model.roi_head.bbox_head.num_classes == 80
    model = MODELS.build(cfg.model)
    generator = torch.Generator().manual_seed(7)
    state = {k: (v + 0.01 * torch.randn(v.shape, generator=generator)).abs()
             if k.endswith('running_var') else
             v + 0.01 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
             for k, v in model.state_dict().items()}
    assert state['rpn_head.rpn_cls.weight'].shape[0] == 3  # 3 anchors per position, 1 class
    folder = tmp_path_factory.mktemp('zoo')
    torch.save({'meta': {'mmdet_version': '2.11.0', 'CLASSES': tuple(f'coco{i}' for i in range(80)),
                         'config': 'model = dict(type="MaskRCNN")', 'epoch': 12, 'iter': 87960},
                'state_dict': state}, folder / ZOO_NAME)
    return folder / ZOO_NAME


@pytest.fixture()
def served(zoo_checkpoint: Path):
    """An http server on 127.0.0.1 serving the checkpoint's folder; yields (url, request log)."""
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            requests.append(self.path)

    handler = functools.partial(Handler, directory=str(zoo_checkpoint.parent))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}/{ZOO_NAME}', requests
    finally:
        server.shutdown()
        server.server_close()


class WeightsAtFirstIteration(Hook):
    """Keeps a copy of the model's weights as the first training iteration starts."""

    def __init__(self) -> None:
        self.weights: dict[str, torch.Tensor] = {}

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if runner.iter == 0:
            self.weights = {k: v.detach().clone() for k, v in runner.model.state_dict().items()}


def test_fine_tuning_from_a_url_loads_every_matching_weight_and_reinitialises_the_class_layers(
        served, zoo_checkpoint: Path, tiny_root: Path, tiny_ann: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from cellseg.apis.train import build_runner, training_config
    from tools.train import parse_args

    url, requests = served
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    args = parse_args([str(CONFIGS / 'cell_r50.py'), '--data-root', str(tiny_root), '--ann-dir',
                       str(tiny_ann), '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                       f'load_from={url}', 'train_dataloader.batch_size=3',
                       'train_dataloader.num_workers=0',
                       'train_dataloader.persistent_workers=False',
                       'train_cfg.max_epochs=2', 'default_hooks.checkpoint.interval=3',
                       'default_hooks.checkpoint.save_last=False',
                       'default_hooks.checkpoint.save_best=None',
                       # few RoIs: weights are what this test is about, not the heads' work
                       'model.train_cfg.rpn_proposal.max_per_img=64',
                       'model.train_cfg.rcnn.sampler.num=16'])
    cfg = training_config(args)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None  # two iterations, nothing else
    runner = build_runner(cfg, cpu_amp='off')
    snapshot = WeightsAtFirstIteration()
    runner.register_hook(snapshot)
    runner.train()
    assert runner.iter == 2  # 6 tiny images, 3 per batch: one batch of an aspect ratio an epoch

    # downloaded once, into the torch hub cache
    assert requests == [f'/{ZOO_NAME}']
    assert (tmp_path / 'torch' / 'hub' / 'checkpoints' / ZOO_NAME).is_file()
    served_state = torch.load(zoo_checkpoint, weights_only=True)['state_dict']
    assert served_state.keys() == snapshot.weights.keys()
    loaded = {k for k, v in snapshot.weights.items()
              if v.shape == served_state[k].shape and torch.equal(v, served_state[k])}
    assert set(snapshot.weights) - loaded == CLASS_LAYERS
    for key in CLASS_LAYERS:  # sized to the 4 classes of the data, not COCO's 80
        assert snapshot.weights[key].shape != served_state[key].shape
    # what was re-initialised is listed once, in the run's log
    log = next((tmp_path / 'work').glob('*/*.log')).read_text()
    (line,) = [s for s in log.splitlines() if f'load_from {url}: every weight but' in s]
    assert set(line.split('another shape): ')[1].split(', ')) == CLASS_LAYERS


def test_an_unreachable_url_stops_training_with_one_line(tiny_root: Path, tiny_ann: Path,
                                                         tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    url = f'http://127.0.0.1:{port}/{ZOO_NAME}'
    done = run_tool('tools/train.py', CONFIGS / 'cell_r50.py', '--data-root', tiny_root,
                    '--ann-dir', tiny_ann, '--work-dir', tmp_path / 'work',
                    '--cfg-options', f'load_from={url}', ok=False,
                    env={'TORCH_HOME': str(tmp_path / 'torch')})
    assert done.returncode == 1
    assert 'Traceback' not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    cache = tmp_path / 'torch' / 'hub' / 'checkpoints' / ZOO_NAME
    assert lines[0].startswith(f'error: {url}: cannot be downloaded (')
    assert f'place a copy at {cache}' in lines[0]
    assert 'configs/cell_r50_scratch_tuned.py' in lines[0]
    assert not list((tmp_path / 'work').glob('*/*.log'))  # stopped before the Runner existed


def test_the_coco_url_of_the_config_is_the_one_of_pretrained_coco() -> None:
    from cellseg.apis.pretrained import COCO_MASK_RCNN_R50

    assert Config.fromfile(CONFIGS / 'cell_r50.py').load_from == COCO_MASK_RCNN_R50


def backbone(config: str) -> dict:
    return Config.fromfile(CONFIGS / config).model.backbone.to_dict()


@pytest.mark.parametrize('choice', ['none', 'coco', 'imagenet'])
def test_pretrained_choices_give_the_configs_that_say_so(choice: str) -> None:
    """--pretrained none on cell_r50 is cell_r50_scratch; coco on cell_r50_scratch is cell_r50;
    imagenet on cell_r50 is cell_r50_imagenet."""
    from cellseg.apis.pretrained import choose_pretrained

    start, expected = {'none': ('cell_r50.py', 'cell_r50_scratch.py'),
                       'coco': ('cell_r50_scratch.py', 'cell_r50.py'),
                       'imagenet': ('cell_r50.py', 'cell_r50_imagenet.py')}[choice]
    cfg = Config.fromfile(CONFIGS / start)
    line = choose_pretrained(cfg, choice)
    assert line.startswith(f'pretrained: {choice}')
    want = Config.fromfile(CONFIGS / expected)
    assert cfg.model.backbone.to_dict() == want.model.backbone.to_dict()
    assert cfg.load_from == want.load_from


def test_pretrained_imagenet_takes_the_backbone_s_own_weights() -> None:
    from cellseg.apis.pretrained import choose_pretrained

    cfg = Config.fromfile(CONFIGS / 'cell_x50_scratch.py')
    choose_pretrained(cfg, 'imagenet')
    assert cfg.model.backbone.to_dict() == backbone('cell_x50.py')
    with pytest.raises(ValueError, match='backbone is ResNeXt-50: use --pretrained imagenet'):
        choose_pretrained(Config.fromfile(CONFIGS / 'cell_x50.py'), 'coco')
    with pytest.raises(FileNotFoundError, match='nowhere.pth: no such checkpoint file'):
        choose_pretrained(cfg, 'nowhere.pth')
