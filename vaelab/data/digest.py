"""What a run trained on, as a digest of the files its source reads: part of the run's identity,
so a data set changed in place trains anew instead of being found "already finished".

A file is hashed once and remembered by its path, size, mtime and ctime (ctime cannot be set back
by `touch`), in `data-digests.json` in vaelab's home: a 188 MB set costs one read, then a `stat`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

CHUNK = 1 << 20


def files_digest(paths: Iterable[Path], cache: Path) -> str:
    """A 16-hex-digit digest of the files' contents, in order (names do not count)."""
    known = _read(cache)
    digest, changed = hashlib.sha256(), False
    for path in paths:
        path = Path(path).resolve()
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]
        entry = known.get(str(path))
        if not entry or entry[:3] != stamp:
            entry, changed = [*stamp, sha256_file(path)], True
            known[str(path)] = entry
        digest.update(entry[3].encode())
    if changed:
        _write(cache, known)
    return digest.hexdigest()[:16]


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's content, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read(cache: Path) -> dict[str, list]:
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _write(cache: Path, known: dict[str, list]) -> None:
    """Atomically; a home that cannot be written only costs hashing again next time."""
    tmp = None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{cache.name}.", dir=cache.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(known, f)
        os.replace(tmp, cache)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
