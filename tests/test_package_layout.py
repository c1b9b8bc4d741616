"""The package's architecture, as the tree shows it: layers import downwards only, no cycles,
each registered module in the file named after it, each concern in its layer (the palette with
the dataset, process groups with the training run), thin tools, and every config builds its
model."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / 'cellseg'
# Lowest first: a subpackage may import its own modules and those of lower layers only.
LAYERS = {'utils': 0, 'structures': 1, 'formats': 2, 'visualization': 3, 'testing': 3,
          'datasets': 4, 'models': 5, 'evaluation': 6, 'engine': 7, 'apis': 8}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob('*.py'))}


def cellseg_imports(path: Path) -> set[str]:
    """The cellseg modules ``path`` imports, anywhere in it (functions included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith('cellseg'))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith('cellseg'):
            # `from cellseg.x import y` imports the module cellseg.x.y when there is one
            for a in node.names:
                sub = f'{node.module}.{a.name}'
                out.add(sub if sub in MODULES else node.module)
    return out


def layer(module: str) -> str | None:
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else None


def test_every_subpackage_has_a_layer() -> None:
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / '__init__.py').is_file()}
    assert subpackages == set(LAYERS)
    assert {layer(m) for m in MODULES} - {None} == set(LAYERS)


def test_no_layer_imports_a_higher_one() -> None:
    upward = []
    for module, path in MODULES.items():
        here = layer(module)
        for target in cellseg_imports(path):
            there = layer(target)
            if here and there and there != here and LAYERS[there] >= LAYERS[here]:
                upward.append(f'{module} imports {target}')
    assert not upward, '\n'.join(upward)


def test_formats_and_structures_import_only_each_other_and_utils() -> None:
    allowed = {'structures': {'structures', 'utils'},
               'formats': {'formats', 'structures', 'utils'}}
    wrong = [f'{m} imports {t}' for m, p in MODULES.items() if layer(m) in allowed
             for t in cellseg_imports(p) if layer(t) not in allowed[layer(m)]]
    assert not wrong, '\n'.join(wrong)


def test_no_import_cycle() -> None:
    graph = {m: {t for t in cellseg_imports(p) if t in MODULES and t != m}
             for m, p in MODULES.items()}
    # a package's __init__ importing its own modules is how registration works, not a cycle
    for m in graph:
        graph[m] = {t for t in graph[m] if not t.startswith(m + '.')}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                raise AssertionError('import cycle: ' + ' -> '.join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def snake(name: str) -> str:
    return re.sub(r'(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])', '_', name).lower()


# class names whose file name reads better than the mechanical split (snake gives
# 'chunked_ro_i_head' for ChunkedRoIHead)
FILE_OF = {'ChunkedRoIHead': 'chunked_roi_head', 'MaskTTAModel': 'mask_tta_model',
           'Float32ProposalRPNHead': 'float32_proposal_rpn_head',
           'Float32RoIExtractor': 'float32_roi_extractor', 'Rot90': 'rot90'}


def registered_classes(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            for dec in node.decorator_list:
                call = dec.func if isinstance(dec, ast.Call) else dec
                if isinstance(call, ast.Attribute) and call.attr == 'register_module':
                    out.append(node.name)
    return out


def test_every_registered_module_is_in_the_file_named_after_it() -> None:
    found = {}
    for path in MODULES.values():
        for cls in registered_classes(path):
            found[cls] = path.stem
    assert len(found) >= 12  # the registry holds cellseg's modules, not nothing
    wrong = {cls: stem for cls, stem in found.items() if FILE_OF.get(cls, snake(cls)) != stem}
    assert not wrong, wrong


def test_tools_only_parse_arguments_and_call_the_package() -> None:
    """A tool is its arguments and a ``main`` over ``cellseg`` (the logic lives in the package,
    where tests call it): no other function or class, and no import of torch, numpy or mmdet
    for work of its own."""
    heavy = ('torch', 'numpy', 'mmdet', 'scipy', 'cv2', 'tifffile')
    found = {}
    for path in sorted((REPO / 'tools').glob('*.py')):
        tree = ast.parse(path.read_text())
        defs = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        imports = [a.name if isinstance(n, ast.Import) else n.module for n in ast.walk(tree)
                   if isinstance(n, (ast.Import, ast.ImportFrom))
                   for a in (n.names if isinstance(n, ast.Import) else [n])]
        extra = [d for d in defs if d not in ('parse_args', 'main')]
        work = [m for m in imports if m and m.split('.')[0] in heavy]
        if extra or work or 'main' not in defs:
            found[path.name] = extra + work
    assert len(list((REPO / 'tools').glob('*.py'))) >= 8
    assert not found, found


def test_concerns_sit_in_their_layer() -> None:
    """The class colours are the dataset's metainfo (mmdet: the visualizer reads
    ``dataset_meta``), not something datasets take from the visualization layer; the process
    group of a CPU run is started by the training run, not by a config helper; and nothing
    re-registers mmengine's file handlers for the whole process."""
    from cellseg.datasets.cell_dataset import CellDataset

    assert 'palette' in CellDataset.METAINFO
    datasets_use = [f'{m} imports {t}' for m, p in MODULES.items() if layer(m) == 'datasets'
                    for t in cellseg_imports(p) if layer(t) == 'visualization']
    assert not datasets_use, datasets_use
    text = {m: p.read_text() for m, p in MODULES.items()}
    assert [m for m, t in text.items() if 'init_process_group' in t] == ['cellseg.apis.train']
    assert not [m for m, t in text.items() if 'register_handler' in t]


def test_rle_strings_are_parsed_in_one_place() -> None:
    """The 5-bit group arithmetic of compressed RLE strings appears in the codec alone."""
    parsing = re.compile(r'\b(0x1[fF]|0x20)\b')
    where = [m for m, p in MODULES.items() if parsing.search(p.read_text())]
    assert where == ['cellseg.structures.rle']



def test_one_instance_mask_type() -> None:
    """cellseg defines one mask container (``CropMasks``, an mmdet ``BaseInstanceMasks``) and
    nothing else holds masks as its own structure; and the arithmetic turning RLE counts into
    foreground runs (the running sum restarted per string) is written once, in the codec."""
    import importlib

    from mmdet.structures.mask import BaseInstanceMasks

    containers = set()
    for m in MODULES:
        for value in vars(importlib.import_module(m)).values():
            if (isinstance(value, type) and issubclass(value, BaseInstanceMasks)
                    and value.__module__.startswith('cellseg')):
                containers.add(f'{value.__module__}.{value.__name__}')
    assert containers == {'cellseg.structures.crop_masks.CropMasks'}
    restart = re.compile(r'cumsum\(counts\) - counts')
    assert [m for m, p in MODULES.items() if restart.search(p.read_text())] == [
        'cellseg.structures.rle']


CONFIGS = sorted(p for p in (REPO / 'configs').rglob('*.py') if '_base_' not in p.parts)


@pytest.mark.parametrize('config', CONFIGS, ids=[str(p.relative_to(REPO)) for p in CONFIGS])
def test_every_config_builds_its_model(config: Path) -> None:
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.utils import import_modules_from_strings

    register_all_modules()
    cfg = Config.fromfile(str(config))
    import_modules_from_strings(cfg.custom_imports.imports)
    model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 1_000_000
    if 'tta_model' in cfg:
        tta = MODELS.build(dict(cfg.tta_model, module=cfg.model))
        assert tta.module.__class__ is model.__class__
