"""The one background thread that talks to the store for a run, and the retries before training.

Calls run in order on a one-thread `ThreadPoolExecutor`, each retried for up to `patience_s`; then
the worker goes offline (it says why once) and training goes on: later calls are skipped, or
handed to their `fallback` (pictures wait in the run's outbox for the next run of the config).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

log = logging.getLogger("vaelab.tracking")
detail = logging.getLogger("vaelab.tracking.detail")  # to tracking.log only, with MLflow's own records


def short_error(err: BaseException) -> str:
    """An error in a few words: the operating system's reason if there is one (a refused
    connection), else the first line of its message that is not SQLAlchemy's detail."""
    text = str(err)
    reason = re.search(r"\[Errno -?\d+\] ([^\"\n]+)", text)
    if reason:
        return reason.group(1).strip().rstrip(")")
    lines = [line.strip() for line in text.strip().splitlines()
             if line.strip() and not line.strip().startswith(("(Background on this error", "[SQL:", "[parameters:"))]
    first = re.sub(r"^\(\S+\) ", "", lines[0]) if lines else ""  # "(sqlite3.OperationalError) ..."
    return f"{type(err).__name__}: {first}"[:300]


def refused(err: BaseException) -> str | None:
    """What a server that asks for a login, or refuses it, said (HTTP 401 or 403), if it did."""
    found = re.search(r"error code (401|403)\b", str(err))
    return {"401": "it asks for a login", "403": "the login may not do this"}[found.group(1)] if found else None


BUSY = ("database is locked", "database is busy", "read timed out")  # reached, but not answering yet


def until_usable(uri: str, connect_timeout_s: float, patience_s: float, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn` until it succeeds, before anything trains: a store unreachable for `connect_timeout_s`
    is a TrackingError; a busy one (a locked database, a server that took the request but is slow
    to answer) gets `patience_s`; a refused login fails at once."""
    from vaelab.errors import TrackingError

    started = time.monotonic()
    while True:
        try:
            return fn(*args)
        except Exception as err:  # noqa: BLE001 - anything here means the store is not usable
            detail.warning("the store is not usable yet", exc_info=err)
            if why := refused(err):
                raise TrackingError(f"the tracking server {uri} refused vaelab ({why}): pass its login with "
                                    "tracking.credentials=<file> or MLFLOW_TRACKING_USERNAME and "
                                    "MLFLOW_TRACKING_PASSWORD") from None
            busy = any(sign in str(err).lower() for sign in BUSY)
            if time.monotonic() - started > (patience_s if busy else connect_timeout_s):
                raise TrackingError(f"the tracking store {uri} cannot be reached or written: "
                                    f"{short_error(err)}; check tracking.uri") from None
            time.sleep(0.5)


class Worker:
    """One thread running submitted calls in order, each retried for up to `patience_s`."""

    def __init__(self, patience_s: float) -> None:
        self.patience_s = patience_s
        self.offline: str | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vaelab-tracking")
        self._pending: list[tuple[Future, bool]] = []  # (call, kept when the run is abandoned)
        self._latest: dict[str, Future] = {}  # the last call queued under each `replaces` key
        self._lock = threading.Lock()  # calls are queued from the training thread and the worker's
        self._closing = threading.Event()

    def call(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run `fn` in turn, not retried: its future gets the result or the error."""
        return self._track(self._pool.submit(fn, *args), keep=True)

    def submit(self, fn: Callable[..., Any], *args: Any, keep: bool = False,
               fallback: Callable[[], None] | None = None, replaces: str | None = None) -> Future:
        """Run `fn` in turn, retried. `keep`: not dropped when the run is abandoned (metrics,
        checkpoints); `fallback`: what runs instead once the store is given up on; `replaces`: a
        call queued earlier under this key, not yet started, is dropped (this one supersedes it)."""
        future = self._track(self._pool.submit(self._retrying, fn, args, fallback), keep)
        if replaces is not None:
            with self._lock:
                earlier, self._latest[replaces] = self._latest.get(replaces), future
            if earlier is not None:
                earlier.cancel()
        return future

    def _track(self, future: Future, keep: bool) -> Future:
        with self._lock:
            self._pending = [(f, k) for f, k in self._pending if not f.done()] + [(future, keep)]
        return future

    def discard(self) -> None:
        """Drop the queued calls that are not kept (pictures of a run that is being abandoned)."""
        with self._lock:
            pending = list(self._pending)
        for future, keep in pending:
            if not keep:
                future.cancel()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything queued has run, or `timeout` seconds; whether it all ran."""
        with self._lock:
            pending = [f for f, _ in self._pending]
        return not wait(pending, timeout).not_done

    def close(self, wait_for_calls: bool = True) -> None:
        """End the thread; without waiting, queued calls are dropped and a retry stops at once."""
        if not wait_for_calls:
            self._closing.set()
        self._pool.shutdown(wait=wait_for_calls, cancel_futures=not wait_for_calls)

    def _retrying(self, fn: Callable[..., Any], args: tuple, fallback: Callable[[], None] | None) -> Any:
        deadline, delay = time.monotonic() + self.patience_s, 0.25
        while self.offline is None:
            try:
                return fn(*args)
            except Exception as err:  # noqa: BLE001 - any store failure: wait, then give up logging
                if self._closing.is_set() or time.monotonic() + delay > deadline:
                    self.offline = short_error(err)
                    detail.warning("giving up on the tracking store", exc_info=err)
                    log.warning("MLflow logging stopped: %s", self.offline)
                    break
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        if fallback is not None:
            fallback()
        return None
