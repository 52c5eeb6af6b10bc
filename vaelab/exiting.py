"""Ending a vaelab process without the interpreter's teardown.

Once a command is done, Python would still free every object of every module one by one: with
torch loaded that takes 1.3 s of CPU (2.2 s with torch._dynamo, which torch.optim imports), after
the last line is printed and before the shell gets its prompt back, in the training process and
again in its logging process (docs/performance.md, round five). `exit_now` does what that
teardown does for the program (waits for its threads, runs its atexit handlers: MLflow's, the
logging module's, multiprocessing's) and then leaves without freeing anything: the operating
system takes the memory back at once.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn


def exit_code(code: object) -> int:
    """The status `sys.exit(code)` exits with; a message (`sys.exit("...")`) is printed, as Python does."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_now(code: object = 0) -> NoReturn:
    """Exit with `code` as `sys.exit(code)` would, without freeing the interpreter's objects."""
    status = exit_code(code)
    try:
        shutdown = getattr(threading, "_shutdown", None)  # what the interpreter calls first: joins
        if shutdown is not None:  # non-daemon threads, ends thread pools (concurrent.futures)
            shutdown()
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except BaseException:  # noqa: BLE001 - a handler that fails, or a second Ctrl-C: exit anyway
        status = status or 1
    os._exit(status)


def exit_after(command: Callable[[], object]) -> NoReturn:
    """Run an entry point's `command`, then leave through `exit_now` with the status it ends
    with (`sys.exit`'s, else 0). A command that ends in a traceback (a bug) leaves as Python
    leaves."""
    try:
        command()
    except SystemExit as done:
        exit_now(done.code)
    exit_now(0)
