"""What makes two runs the same run: the resolved config that can change the result, plus the
code that runs it. Re-running a command looks a run up by this identity to skip or resume it."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Keys that cannot change what is trained or measured: where it is logged, how it is shown, how
# often it is saved, and the switches that decide whether to resume.
VOLATILE = frozenset({
    "tracking", "trainer.progress", "trainer.progress_every", "trainer.checkpoint_every",
    "trainer.resume", "trainer.retry_failed", "trainer.restart", "trainer.threads",
})


# Keys that say nothing when runs are compared (as params, in `vaelab compare`): class paths (the
# option chosen names the class), md5 digests (the data's digest is in the identity and the dataset
# input) and where data comes from (root, path, download, offline), which changes by machine.
NOT_COMPARED = re.compile(r"(^|\.)(_target_|md5|download|offline|root|path)(\.|$)")


def compared(key: str) -> bool:
    """Whether a dotted config key is worth comparing runs by: neither volatile nor NOT_COMPARED."""
    return not NOT_COMPARED.search(key) and not any(key == v or key.startswith(f"{v}.") for v in VOLATILE)


def config_identity(cfg: DictConfig, data_digest: str = "") -> str:
    """A 16-hex-digit digest of the result-relevant config, vaelab's source code and the content
    of the data (`Source.digest`: a file changed in place is other data)."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    relevant = _drop(tree, VOLATILE)
    text = json.dumps(relevant, sort_keys=True, default=str) + code_digest() + data_digest
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def code_digest() -> str:
    """A digest of every Python file of the vaelab package, so that an edited, uncommitted change
    is never mistaken for a run of the old code."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _drop(tree: Any, keys: frozenset[str], prefix: str = "") -> Any:
    if not isinstance(tree, dict):
        return tree
    return {k: _drop(v, keys, f"{prefix}{k}.") for k, v in tree.items() if f"{prefix}{k}" not in keys}
