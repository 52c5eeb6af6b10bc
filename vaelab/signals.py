"""SIGINT and SIGTERM as an exception in the main thread, so a run stops where it can be resumed.

SIGTERM is what SLURM and most schedulers send on pre-emption, Ctrl-C sends SIGINT: both raise
`Interrupted` (a KeyboardInterrupt, so `except KeyboardInterrupt` sees both) at the next bytecode
of the main thread, which abandons the current epoch. Code that must not be cut in half (writing
a checkpoint) runs inside `deferred()`: a signal that arrives there is raised when it ends.

Nor is it raised inside the `logging` package: Python 3.11's logging takes its locks outside the
`try` that releases them, so an exception raised there can leak a lock, and the tracking thread,
which logs too, then waits on it forever and the command hangs at exit. A signal that arrives
while logging is on the main thread's stack is raised a few milliseconds later, once it is not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM)
RETRY_S = 0.005  # how soon a signal that arrived inside logging is tried again
_LOGGING = os.path.dirname(logging.__file__) + os.sep


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal; `exit_code` is the shell's 128 + signal number (130, 143)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + signum


class _State:
    depth = 0  # nesting of deferred() sections
    pending: int | None = None  # a signal that arrived inside one, or inside logging
    forward = False  # whether a signal goes to this process's children before it is raised here


def _raise(signum: int, frame: FrameType | None) -> None:
    if _State.depth:
        _State.pending = signum
        return
    if _in_logging(frame):  # tried again by SIGALRM (_retry) until the main thread is out of it
        _State.pending = signum
        signal.setitimer(signal.ITIMER_REAL, RETRY_S)
        return
    if _State.forward:  # a parallel sweep's workers end their own runs first: joblib, once it sees
        _State.forward = False  # the exception, kills whatever workers are left
        forward_to_children(signum, wait_s=15.0)
    raise Interrupted(signum)


def _retry(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001 - signal handler signature
    if _State.pending is not None and not _State.depth:
        signum, _State.pending = _State.pending, None
        _raise(signum, frame)


def _in_logging(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith(_LOGGING):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def handle_signals(forward: bool = False) -> Iterator[None]:
    """Turn SIGINT/SIGTERM into `Interrupted` for the duration (main thread only; a no-op
    elsewhere); `forward`: first hand the signal on to this process's children and wait for them
    (the command's own process, whose children are a parallel sweep's workers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outer_forward, _State.forward = _State.forward, forward
    previous = {s: signal.signal(s, _raise) for s in HANDLED}
    previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, _retry)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for s, handler in previous.items():
            signal.signal(s, handler)
        pending, _State.pending = _State.pending, None
        _State.forward = outer_forward
    if pending is not None:  # it arrived in logging just before the end: raised here, not lost
        raise Interrupted(pending)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A section a signal cannot cut: one that arrives meanwhile is raised at its end."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        if not _State.depth and _State.pending is not None:
            signum, _State.pending = _State.pending, None
            raise Interrupted(signum)


def ignore_further() -> None:
    """While shutting down after a signal, a second Ctrl-C must not cut the clean-up short."""
    if threading.current_thread() is threading.main_thread():
        for s in HANDLED:
            signal.signal(s, signal.SIG_IGN)


def forward_to_children(signum: int, wait_s: float = 4.0) -> None:
    """Send `signum` to this process's descendants (a parallel sweep's workers) and wait, up to
    `wait_s`, for them to end, so that each closes its own run before the sweep's parent closes."""
    children = [pid for pid in descendants(os.getpid()) if not ignores(pid, signum)]  # not the resource
    for pid in children:  # trackers of multiprocessing and joblib, which outlive their clients
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(alive(pid) for pid in children):
        time.sleep(0.05)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, read from /proc (Linux); empty where /proc is absent."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])  # field 4: ppid
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == current]
        found += kids
        frontier += kids
    return found


def ignores(pid: int, signum: int) -> bool:
    """Whether process `pid` ignores `signum` (its SigIgn mask in /proc; False where unknown)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next((line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), "0")
    return bool(int(mask, 16) >> (signum - 1) & 1)


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state != "Z"
