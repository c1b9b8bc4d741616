"""The config a checkpoint was trained with, read back without running it.

mmengine saves the training config's text in every checkpoint (``meta['cfg']``), so prediction
needs no config file. That text is Python, and reading it with ``Config.fromstring`` would run
whatever a checkpoint's author wrote there, the very thing ``cellseg.engine.checkpoint_loader``
refuses for the pickle. So it is read as data: each statement must assign a literal (numbers,
strings, None, lists, tuples, dicts, ``dict(...)`` with keywords), which is all
``Config.pretty_text`` writes; anything else is refused naming the checkpoint. The modules the
config imports (``custom_imports``) must be cellseg's or mmdet's.
"""
from __future__ import annotations

import ast
import os
from typing import Any

from mmengine.config import Config
from mmengine.utils import import_modules_from_strings

IMPORTABLE = ('cellseg', 'mmdet')


class _Refused(ValueError):
    pass


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.List):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'dict'
            and not node.args and all(k.arg is not None for k in node.keywords)):
        return {k.arg: _literal(k.value) for k in node.keywords}
    raise _Refused(f'line {getattr(node, "lineno", "?")}: {ast.unparse(node)[:60]}')


def config_from_text(text: str, source: str) -> Config:
    """A ``Config`` of a saved config's text, read as literals (see the module doc); errors
    name ``source``."""
    try:
        tree = ast.parse(text)
        values = {}
        for stmt in tree.body:
            if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Name)):
                raise _Refused(f'line {stmt.lineno}: not an assignment of a value')
            values[stmt.targets[0].id] = _literal(stmt.value)
    except (SyntaxError, _Refused) as e:
        raise ValueError(f'{source}: its saved config is not plain data ({e}); pass the config '
                         'file it was trained with') from None
    cfg = Config(values)
    imports = (cfg.get('custom_imports') or {}).get('imports') or []
    foreign = [m for m in imports if m.split('.')[0] not in IMPORTABLE]
    if foreign:
        raise ValueError(f'{source}: its saved config imports {", ".join(foreign)}; only '
                         f'{" and ".join(IMPORTABLE)} modules are imported from a checkpoint '
                         '(pass the config file it was trained with)')
    import_modules_from_strings(imports)
    return cfg


def config_from_checkpoint(checkpoint: dict, source: str | os.PathLike) -> Config:
    """The training config saved in a loaded checkpoint (``meta['cfg']``)."""
    text = (checkpoint.get('meta') or {}).get('cfg')
    if not isinstance(text, str):
        raise ValueError(f'{source}: the checkpoint holds no training config (meta.cfg); pass '
                         'the config file it was trained with (--config)')
    return config_from_text(text, os.fspath(source))
