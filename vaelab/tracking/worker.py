"""The thread that talks to the tracking store for a run (in the logging process, `remote`).

Calls run in order; each is retried while the store is busy or failing, for up to `patience_s`;
after that the worker goes offline (it says why once) and training goes on unlogged.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


def short_error(err: BaseException) -> str:
    """An error in a few words: the operating system's reason where there is one (a refused
    connection, a missing folder), else the last line of its message, cut to 300 characters."""
    text = str(err)
    reason = re.search(r"\[Errno -?\d+\] ([^\"\n]+)", text)
    if reason:
        return reason.group(1).strip().rstrip(")")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"[:300]


def is_busy(err: BaseException) -> bool:
    """A store that is there but busy (SQLite locked by another writer) is worth waiting for."""
    text = str(err).lower()
    return "database is locked" in text or "database is busy" in text


class Worker:
    """One thread running submitted calls in order, each retried for up to `patience_s`.

    If a call still fails, the worker goes offline: it records why, tells `on_offline` (which
    hands it to the run), skips what follows (except clean-up), and never raises into its caller.
    `call` returns a Future for the few calls whose result (or error) the caller must wait for;
    those are not retried here.
    """

    def __init__(self, patience_s: float, on_offline: Callable[[str], None]) -> None:
        self.patience_s = patience_s
        self.offline: str | None = None
        self._on_offline = on_offline
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="vaelab-mlflow", daemon=True)
        self._thread.start()

    def submit(self, fn: Any, *args: Any, keep: bool = False, **kwargs: Any) -> None:
        """Queue a call, retried until it succeeds or patience runs out; `keep`: never discarded."""
        self._queue.put((fn, args, kwargs, None, keep))

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        self._queue.put((fn, args, kwargs, future, True))
        return future

    def drain(self, timeout: float | None = None) -> None:
        """Wait until everything queued has run (or `timeout` seconds have passed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return
            time.sleep(0.02)

    def discard_pending(self) -> None:
        """Drop queued calls that are not marked `keep` (pictures, metrics of an abandoned run)."""
        kept = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            self._queue.task_done()
            if item is not None and item[4]:
                kept.append(item)
        for item in kept:
            self._queue.put(item)

    def stop(self, wait: bool = True) -> None:
        self._queue.put(None)
        if wait:
            self._thread.join()

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args, kwargs, future, _ = item
            try:
                if future is not None:
                    self._run_for(future, fn, args, kwargs)
                elif self.offline is None:
                    self._retrying(fn, args, kwargs)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    @staticmethod
    def _run_for(future: Future, fn: Any, args: tuple, kwargs: dict) -> None:
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - handed to the waiting thread
            future.set_exception(err)

    def _retrying(self, fn: Any, args: tuple, kwargs: dict) -> None:
        deadline = time.monotonic() + self.patience_s
        delay = 0.25
        while True:
            try:
                fn(*args, **kwargs)
                return
            except Exception as err:  # noqa: BLE001 - any store failure: wait, then give up logging
                if time.monotonic() + delay > deadline:
                    self.offline = short_error(err)
                    self._on_offline(self.offline)
                    return
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
