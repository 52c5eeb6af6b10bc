"""The process that talks to the tracking store, so that a run's MLflow calls never run in its
training process.

MLflow's imports, its store and the pictures drawn for it cost seconds of CPU, and in a thread of
the training process every one of them held the GIL that the training loop needs between two
operators. Here they run in one helper process (`remote.main`, a child process), started as
soon as the command knows that it will track (`prestart`), so that MLflow imports on the second
core while the training process imports torch. The process is shared by the runs of the process
that started it (a sweep's jobs), which then find MLflow ready.

`Remote` is one run's end of it, with the interface of `Worker`: calls submitted in order, each
retried there for up to `patience_s`, futures for the few whose result the run waits for. Calls
travel pickled (plain pickle: multiprocessing's pickler would hand torch tensors over as shared
memory, which only its own child processes can open), so they are module-level functions with
plain arguments. If the process dies,
the run goes offline as it would if the store were lost: training goes on, kept locally.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any

from vaelab.errors import TrackingError, VaelabError
from vaelab.tracking.store import opening, sqlite_path
from vaelab.tracking.worker import Worker, short_error

log = logging.getLogger("vaelab.tracking.run")  # the run's logger: its warnings read as the run's
# The logging process yields the CPU to training: its pictures wait for idle moments rather than
# stalling the training threads (docs/performance.md, round four).
NICE = 5


class LoggingProcess:
    """The helper process and the training process's end of its socket."""

    def __init__(self, store: str = "") -> None:
        ours, theirs = socket.socketpair()
        env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # the same vaelab
        command = [sys.executable, "-c", "import sys; from vaelab.tracking.remote import main; main(*sys.argv[1:])"]
        self._proc = subprocess.Popen([*command, str(theirs.fileno()), store, sys.argv[0]], pass_fds=(theirs.fileno(),),
                                      env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        self._conn = Connection(ours.detach())
        self._send_lock = threading.Lock()
        self._ids = itertools.count()
        self._waiting: dict[int, Future] = {}
        self._remotes: dict[int, Remote] = {}
        self.exited: str | None = None  # why the process is gone, once it is
        threading.Thread(target=self._read, name="vaelab-logging-reader", daemon=True).start()

    def send(self, *message: Any) -> None:
        """Send one message; a process that is gone fails the call (the caller goes offline)."""
        if self.exited:
            raise TrackingError(self.exited)
        try:
            with self._send_lock:
                self._conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError as err:
            raise TrackingError(f"the logging process exited ({short_error(err)})") from None

    def ask(self, *message: Any) -> Future:
        """Send a message that is answered; its future gets the answer (or the error raised there)."""
        future: Future = Future()
        key = next(self._ids)
        self._waiting[key] = future
        try:
            self.send(message[0], key, *message[1:])
        except TrackingError as err:
            self._waiting.pop(key, None)
            future.set_exception(err)
        return future

    def close(self) -> None:
        """Close the socket: the process logs what it was told to keep, then exits."""
        self._conn.close()

    def attach(self, remote: Remote) -> int:
        key = next(self._ids)
        self._remotes[key] = remote
        return key

    def detach(self, key: int) -> None:
        self._remotes.pop(key, None)

    def _read(self) -> None:
        while True:
            try:
                kind, key, *rest = pickle.loads(self._conn.recv_bytes())
            except (EOFError, OSError):
                break
            except Exception as err:  # noqa: BLE001 - one message that cannot be read back
                log.warning("a message from the logging process was lost: %s", short_error(err))
                continue
            if kind == "answer":
                future = self._waiting.pop(key, None)
                ok, value = rest
                if future is not None:
                    future.set_result(value) if ok else future.set_exception(value)
            elif kind == "offline" and key in self._remotes:
                self._remotes[key].went_offline(rest[0])
        self.exited = f"the logging process exited (exit code {self._proc.wait()})"
        for future in list(self._waiting.values()):
            future.set_exception(TrackingError(self.exited))
        for remote in list(self._remotes.values()):
            remote.went_offline(self.exited)


_shared: LoggingProcess | None = None
_shared_lock = threading.Lock()


def shared_process(store: str = "") -> LoggingProcess:
    """This process's logging process, started on first use (and again if it died); a new one
    opens `store` (a tracking URI) while it waits for its first call."""
    global _shared  # noqa: PLW0603 - one helper per training process, shared by its runs
    with _shared_lock:
        if _shared is None or _shared.exited:
            _shared = LoggingProcess(store)
        return _shared


def close_shared() -> None:
    """Let this process's logging process end (after a signal, once the runs are closed), so
    that nothing waits for it."""
    with _shared_lock:
        if _shared is not None and not _shared.exited:
            _shared.close()


def prestart(tracking: Any) -> None:
    """Start the logging process now if this run will track to MLflow, so that MLflow imports
    there while torch imports here (`tracking` is the run's `tracking` config)."""
    if str(tracking.get("_target_", "")).endswith("MlflowTracker"):
        shared_process(str(tracking.get("uri") or ""))


class Remote:
    """One run's calls into the logging process, in order, with `Worker`'s interface."""

    def __init__(self, patience_s: float) -> None:
        self.offline: str | None = None
        self._process = shared_process()
        self._key = self._process.attach(self)
        env = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
        self._process.ask("session", self._key, patience_s, env, os.getcwd())  # calls sent after it wait for it there

    def went_offline(self, reason: str) -> None:
        if self.offline is None:
            self.offline = reason
            log.warning("MLflow logging stopped: %s", reason)

    def submit(self, fn: Any, *args: Any, keep: bool = False, **kwargs: Any) -> None:
        """Queue a call, retried until it succeeds or patience runs out; `keep`: never discarded."""
        try:
            self._process.send("submit", self._key, fn, args, kwargs, keep)
        except TrackingError as err:
            self.went_offline(str(err))

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Future:
        """Queue a call whose result (or error) the caller waits for; not retried."""
        return self._process.ask("call", self._key, fn, args, kwargs)

    def now(self, fn: Any, *args: Any) -> Future:
        """Run a call at once, beside the queue (ending a run while a call is being retried)."""
        return self._process.ask("now", self._key, fn, args, {})

    def drain(self, timeout: float | None = None) -> None:
        """Wait until everything queued has run (or `timeout` seconds have passed)."""
        try:
            self.call(_nothing).result(timeout)
        except Exception:  # noqa: BLE001 - timed out, or the process is gone: nothing left to wait for
            pass

    def discard_pending(self) -> None:
        """Drop queued calls that are not marked `keep`."""
        try:
            self._process.send("discard", self._key)
        except TrackingError:
            pass

    def stop(self, wait: bool = True) -> None:
        """End this run's queue once it has run (`wait`: until then)."""
        done = self._process.ask("stop", self._key)
        if wait:
            try:
                done.result()
            except TrackingError:
                pass
        self._process.detach(self._key)


def _nothing() -> None:
    """A call that marks a point in the queue."""


def serve(conn: Connection, store: str = "") -> None:
    """The logging process: one `Worker` thread per run, fed from the socket until it closes.
    First it opens `store`, if given, while the training process imports torch."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the training process decides; a terminal's Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # or SLURM's SIGTERM reaches the whole group
    open_early(store)
    os.nice(NICE)
    send_lock = threading.Lock()
    workers: dict[int, Worker] = {}
    stopping: list[Worker] = []  # runs that ended, their last calls (a checkpoint upload) still running

    def send(*message: Any) -> None:
        try:
            with send_lock:
                conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            pass  # the training process is gone

    def answer(key: int, ok: bool, value: Any) -> None:
        try:
            send("answer", key, ok, value if ok else _portable(value))
        except Exception as err:  # noqa: BLE001 - a result that cannot be pickled is an error too
            send("answer", key, False, RuntimeError(short_error(err)))

    def run_and_answer(key: int, fn: Any, *args: Any) -> None:
        try:
            value = fn(*args)
        except BaseException as err:  # noqa: BLE001 - handed to the waiting run
            answer(key, False, err)
        else:
            answer(key, True, value)

    def answer_future(key: int, future: Future) -> None:
        err = future.exception()
        answer(key, err is None, future.result() if err is None else err)

    while True:
        try:
            kind, *rest = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            break
        if kind == "session":
            key, run, patience_s, env, cwd = rest
            os.environ.update(env)
            os.chdir(cwd)
            workers[run] = Worker(patience_s, on_offline=lambda reason, run=run: send("offline", run, reason))
            answer(key, True, None)
        elif kind == "submit" and rest[0] in workers:
            run, fn, args, kwargs, keep = rest
            workers[run].submit(fn, *args, keep=keep, **kwargs)
        elif kind == "call":
            key, run, fn, args, kwargs = rest
            workers[run].call(fn, *args, **kwargs).add_done_callback(lambda f, key=key: answer_future(key, f))
        elif kind == "now":
            key, _, fn, args, _ = rest
            threading.Thread(target=run_and_answer, args=(key, fn, *args), daemon=True).start()
        elif kind == "discard" and rest[0] in workers:
            workers[rest[0]].discard_pending()
        elif kind == "stop":
            key, run = rest
            worker = workers.pop(run, None)
            stopping.extend([worker] if worker is not None else [])
            stop = worker.stop if worker is not None else _nothing
            threading.Thread(target=run_and_answer, args=(key, stop), daemon=True).start()
    for worker in [*workers.values(), *stopping]:  # the training process is gone or done: what it
        worker.discard_pending()  # asked to keep (checkpoints) is still logged, for up to 10 s
        worker.drain(timeout=10.0)


def open_early(store: str) -> None:
    """Import MLflow (and its database store, for a database URI) and open an existing SQLite
    store before the first call, which comes once the training process has imported torch:
    until then this process would wait. A new store is left for the run's lookup to create, as
    before (its first run should not wait for tables it may never use). The lookup reports any
    failure."""
    try:
        from mlflow import MlflowClient

        if store.startswith(("sqlite:", "postgresql", "mysql", "mssql")):
            import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - most of opening such a store
        path = sqlite_path(store)
        if path is not None and path.is_file():
            with opening(store):  # another command may be creating its tables this very moment
                MlflowClient(store).search_experiments(max_results=1)
    except Exception:  # noqa: BLE001 - a store that cannot be opened is the lookup's to report
        pass


def _portable(err: BaseException) -> BaseException:
    """An error the training process can unpickle without MLflow: vaelab's and Python's own as
    they are, any other as a RuntimeError naming it."""
    if isinstance(err, VaelabError) or type(err).__module__ == "builtins":
        return err
    return RuntimeError(short_error(err))


def main(fd: str, store: str = "", source: str = "") -> None:
    """The logging process's entry point, on the socket it was handed as file descriptor `fd`.
    It takes the training command's `sys.argv[0]` as its own, so that the runs' source and git
    commit tags (which MLflow reads from it) name the command, not this process's `-c`."""
    from vaelab.exiting import exit_now

    sys.argv = [source or sys.argv[0]]
    serve(Connection(int(fd)), store)
    exit_now(0)  # MLflow, SQLAlchemy and torch need not be freed one object at a time
