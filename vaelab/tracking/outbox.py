"""Pictures a store could not take, kept beside the run's local checkpoint for the next run of the
config: one `.npz` each, written whole or not at all (the disk that failed the store may be full)."""

from __future__ import annotations

import logging
import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vaelab.tracking.worker import short_error

log = logging.getLogger("vaelab.tracking")


def keep(folder: Path, key: str, image: np.ndarray, step: int | None) -> None:
    path = folder / f"{time.time_ns()}.npz"
    partial = path.with_suffix(".part")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as f:
            np.savez(f, image=image, key=key, step=-1 if step is None else step)
        os.replace(partial, path)
    except OSError as err:
        partial.unlink(missing_ok=True)
        log.warning("the %s picture could not be kept for a re-run: %s", key, err.strerror)


def kept(folder: Path) -> Iterator[tuple[str, np.ndarray, int | None]]:
    """(key, image, step) of each kept picture in the order kept, removed once read; one that
    cannot be read is passed over with a warning."""
    for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        try:
            with np.load(path) as found:
                key, image, step = str(found["key"]), found["image"], int(found["step"])
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
            log.warning("a kept picture could not be read, left out: %s (%s)", path.name, short_error(err))
        else:
            yield key, image, None if step < 0 else step
        path.unlink()
