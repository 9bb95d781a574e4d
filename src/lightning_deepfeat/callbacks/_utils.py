"""Small private helpers shared by the callbacks: fresh logged values, rank-consistent reductions, state keys.

Argument checks live in :mod:`lightning_deepfeat.validation`.
"""

from __future__ import annotations

from typing import Any

import torch


def same_logged_value(a: Any, b: Any) -> bool:
    """Whether two reads of ``trainer.callback_metrics`` hold the same logged value (not logged again in between).

    Lightning hands out a fresh ``detach()`` of a stored value at every read, so the tensor
    objects differ, but they share that value's storage; a value logged again is computed
    into a new tensor. The caller keeps a reference to ``b`` so its storage cannot be freed
    and reused by a newer value. ``tests/test_contract_callbacks.py`` checks this behaviour of
    Lightning, so a change upstream fails loudly there.
    """
    if a is b:
        return True
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return False
    # bool(): the stubs type storage_offset() as int | SymInt, whose == is a SymBool (eager tensors give ints)
    return bool(
        a.device == b.device
        and a.storage_offset() == b.storage_offset()
        and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    )


def reduce_mean_consistent(trainer: Any, value: torch.Tensor) -> torch.Tensor:
    """Mean of ``value`` over all processes, then rank 0's result broadcast to all.

    The mean makes every process decide on the same number even when the user logged a
    process-local metric (no ``sync_dist``); the broadcast makes that number bit-identical
    everywhere whatever the reduction order of the backend. Outside a distributed run both
    are the identity.
    """
    strategy = trainer.strategy
    if trainer.world_size > 1:
        value = strategy.reduce(value, reduce_op="mean")
        value = strategy.broadcast(value, src=0)
    return value


def callback_state_key(callback: Any, **identity: Any) -> str:
    """The key under which a callback's state is saved: its class name and the arguments that identify it.

    The same form as Lightning's own callbacks use (``ClassName{'monitor': 'val_loss', ...}``),
    so two instances with other arguments keep separate states in one checkpoint.
    """
    return f"{type(callback).__qualname__}{repr(identity)}"
