"""Global random states saved with every checkpoint, so a resumed run draws what the
uninterrupted one draws."""
from __future__ import annotations

import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


def get_rng_states() -> dict:
    """The global random states of python, numpy and torch (and CUDA when present)."""
    states = dict(python=random.getstate(), numpy=np.random.get_state(),
                  torch=torch.get_rng_state())
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Restore what ``get_rng_states`` returned."""
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Make a resumed epoch-based run draw the random numbers an uninterrupted one draws.

    mmengine's checkpoints hold no random state, so after ``--resume`` mmdet's RoI samplers
    (``RandomSampler``, global torch RNG) and augmentations drawn in the main process pick other
    RoIs and crops than the uninterrupted run would have. The state at the end of each training
    epoch is recorded, saved in every checkpoint of that epoch, and put back at the start of the
    next epoch, in an uninterrupted run as in a resumed one: whatever validation draws in between
    then changes nothing either. Dataloader workers keep their own states, which no checkpoint
    can hold; with ``num_workers > 0`` augmentations drawn there differ after a resume.
    """

    priority = 'VERY_HIGH'  # record before CheckpointHook (VERY_LOW) saves the epoch

    def __init__(self) -> None:
        self._states: dict | None = None

    def after_train_epoch(self, runner) -> None:
        self._states = get_rng_states()

    def before_train_epoch(self, runner) -> None:
        # epoch 0 starts from the seed, also when ``load_from`` brought a trained run's states
        if self._states is not None and runner.epoch > 0:
            set_rng_states(self._states)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._states is not None:
            checkpoint['rng_states'] = self._states

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # applied at the next epoch's start, not here: weight initialisation and the set-up
        # between loading and training would consume it first
        if 'rng_states' in checkpoint:
            self._states = checkpoint['rng_states']
