"""Everything a run needs to continue where it stopped, as one checkpoint written by one module.

A checkpoint is a plain dict of tensors, numbers and strings (so `torch.load(weights_only=True)`
reads it): the model, optimizer and LR-scheduler states, every random-number state that training
draws from (torch's global generator, the batch generator, CUDA's where used), the last finished
epoch, the metrics of every epoch so far, and the identity and MLflow run id of the run it
belongs to. Restoring it and training on gives the same numbers, bit for bit on the CPU, as never
having stopped. The layout follows PyTorch Lightning's checkpoint dictionary.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vaelab.errors import CheckpointError

FORMAT = 1  # bumped when the layout changes; an older checkpoint is then refused, not misread


@dataclass
class TrainingState:
    """The live objects a checkpoint is taken from and restored into."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any  # an LRScheduler, or None
    generator: torch.Generator  # the batch order (and dynamic binarization) generator
    epoch: int = 0  # last finished epoch
    history: list[dict[str, float]] = field(default_factory=list)  # metrics of epochs 1..epoch

    def state_dict(self, **meta: Any) -> dict[str, Any]:
        """A checkpoint of the last finished epoch; `meta` adds e.g. run_id and identity."""
        return {
            "format": FORMAT,
            "epoch": self.epoch,
            "history": [dict(m) for m in self.history],
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "batches": self.generator.get_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            },
            **meta,
        }

    def load_state_dict(self, checkpoint: dict[str, Any]) -> list[str]:
        """Put every state back; training then continues at epoch `checkpoint["epoch"] + 1`.

        A checkpoint taken on another kind of device (a GPU run resumed on a CPU, or the other way
        round) restores everything but the random streams of that device, which cannot be carried
        across: the batch generator is then reseeded from the saved state, deterministically, and
        the returned notes say that the run goes on, but not bit for bit as it would have there."""
        if checkpoint.get("format") != FORMAT:
            raise CheckpointError(f"checkpoint format {checkpoint.get('format')!r} is not {FORMAT}; "
                                  "start afresh with trainer.resume=false")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None and checkpoint["scheduler"] is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        rng = checkpoint["rng"]
        torch.set_rng_state(rng["torch"])
        notes = []
        try:
            self.generator.set_state(rng["batches"])
        except RuntimeError:  # the state of another device type's generator (sizes differ)
            seed = int.from_bytes(hashlib.sha256(rng["batches"].numpy().tobytes()).digest()[:8], "little")
            self.generator.manual_seed(seed)
            notes.append(f"the checkpoint was taken on another kind of device than {self.generator.device.type}: "
                         "batches are drawn in a new (fixed) order from here on")
        if rng["cuda"]:
            if torch.cuda.is_available() and len(rng["cuda"]) <= torch.cuda.device_count():
                torch.cuda.set_rng_state_all(rng["cuda"])
            else:
                notes.append("CUDA's random state was saved on a GPU this machine lacks and is not restored")
        self.epoch = int(checkpoint["epoch"])
        self.history = [dict(m) for m in checkpoint["history"]]
        return notes


def save(checkpoint: dict[str, Any], path: Path) -> None:
    """Write atomically: a temporary file in the same folder, flushed, then renamed over `path`,
    so a reader (or a crash) only ever sees the previous checkpoint or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint onto the CPU with `weights_only=True` (no code is unpickled)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same problem to the user
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()  # torch's own message carries terminal colours
        reason = f"{type(err).__name__}: {text.splitlines()[0].split('. ')[0][:160] if text else ''}"
        raise CheckpointError(f"checkpoint {path} cannot be read ({reason}); "
                              "trainer.restart=true trains its run again from epoch 0", reason=reason) from None
