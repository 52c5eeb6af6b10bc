"""`python -m vaelab [overrides]` and the `vaelab` console script: a thin Hydra shim over `execute`.

Errors are reported here, once, for the user: a bad config or bad data is one short line and exit
code 2; Ctrl-C (SIGINT) and SIGTERM stop the run at once, keep its last checkpoint and exit 130 /
143; in a sweep (`--multirun`) a job that fails is recorded and the sweep goes on.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys

import hydra
from omegaconf import DictConfig

from vaelab.config import register_configs
from vaelab.errors import VaelabError, config_error
from vaelab.help import register_help_resolver
from vaelab.paths import config_dir, home  # noqa: F401 - config_dir is also imported from here by tests and tools
from vaelab.signals import Interrupted, forward_to_children, handle_signals


COMMAND_PID = "VAELAB_COMMAND_PID"
register_configs()
register_help_resolver()  # `vaelab --help` is built from the schema (hydra.help in conf/config.yaml)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def task(cfg: DictConfig) -> float:
    """One run; in a sweep, a failed job returns NaN (a failed trial to Optuna) instead of
    raising, so that Hydra's sweepers and launchers carry on with the other jobs."""
    from vaelab.config import validate
    from vaelab.context import job_context
    from vaelab.sweeps import JobRecord, job_failed, sweeper_counts_failures

    context = job_context()
    record = JobRecord.start(context)
    try:
        with handle_signals():
            validate(cfg)  # bad input stops here, before anything opens (or creates) the store
            from vaelab.app import execute  # torch and friends load after Hydra has parsed the command line

            outcome = execute(cfg, context)
    except Interrupted as err:
        record.save("KILLED")
        if under_submitit():  # a pre-empted or requeued SLURM job: end here, leaving no result
            sys.stdout.flush()  # for submitit to report, so the requeued job resumes the run and
            sys.stderr.flush()  # the sweep waits for it
            os._exit(err.exit_code)
        if os.environ.get(COMMAND_PID, str(os.getpid())) != str(os.getpid()):  # a parallel launcher's
            signal.signal(err.signum, signal.SIG_DFL)  # worker, its run ended: it dies of the signal, so
            os.kill(os.getpid(), err.signum)  # the command waiting for its workers goes on at once
        raise
    except Exception as err:
        if context.job_num is None:
            record.save("FAILED", error=f"{type(err).__name__}: {err}")
            if isinstance(err, VaelabError):  # one line; exiting here spares Hydra's own report
                print(f"vaelab: error: {err}", file=sys.stderr)
                sys.exit(2)
            raise
        return job_failed(record, context.job_num, err, sweeper_counts_failures())
    record.save(outcome.status, test_loss=outcome.test_loss, run_id=outcome.run_id)
    return outcome.test_loss


def under_submitit() -> bool:
    """Whether this job runs as a SLURM job of submitit's (which SLURM may requeue)."""
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm"


COMPLETION_FLAGS = ("-sc", "--shell-completion")
COMPLETION_USAGE = """vaelab: --shell-completion needs what to do, e.g.
  eval "$(vaelab -sc install=bash)"     # complete groups, options and keys in this bash session
  vaelab -sc install=fish | source      # fish; also install=zsh; uninstall=bash removes it"""


def other_command(args: list[str]) -> None:
    """`vaelab ui [...]` serves the store, `vaelab compare ...` compares runs, `vaelab plan ...`
    tells what a sweep would do, `vaelab reproduce RUN` trains a run again; a bare
    `--shell-completion` explains itself; anything else is left to the Hydra app."""
    if args[:1] == ["ui"]:
        from vaelab.ui import main as ui

        sys.exit(ui(args[1:]))
    if args[:1] == ["compare"]:
        from vaelab.compare import main as compare

        sys.exit(compare(args[1:]))
    if args[:1] == ["plan"]:
        from vaelab.plan import main as plan

        sys.exit(plan(args[1:]))
    if args[:1] == ["reproduce"]:
        from vaelab.reproduce import main as reproduce

        sys.exit(reproduce(args[1:]))
    if len(args) == 1 and args[0] in COMPLETION_FLAGS:  # Hydra alone would print a traceback
        print(COMPLETION_USAGE, file=sys.stderr)
        sys.exit(2)


def os_error(err: OSError) -> str:
    """A home (or Hydra's folder in it) that is full, read-only or not the user's, in one line."""
    import errno

    where = f"{err.strerror}: {err.filename or ''}"
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{where}; vaelab's home ({home()}) must be writable: fix it, or set VAELAB_HOME to a folder you can write"
    return f"{where}; free some space and run the same command again"


def main() -> None:
    """The console script: `vaelab [ui] [overrides]`, Hydra's app with every error reported as
    vaelab's own, ending by `sys.exit` when it fails."""
    logging.raiseExceptions = False  # a log file on a full disk: no "--- Logging error ---" tracebacks
    os.environ[COMMAND_PID] = str(os.getpid())  # what a sweep's worker processes tell themselves apart by
    try:
        command()
    finally:
        # The interpreter's last garbage collection walks every object torch and MLflow made, all
        # about to be freed anyway: 1.1 s of a run's exit, against 0.2 s with them frozen out of it.
        # A sweep pays it once, and needs it: a parallel launcher's semaphores are unlinked there.
        if "vaelab.tracking.sweep" not in sys.modules or not sys.modules["vaelab.tracking.sweep"].swept():
            gc.freeze()


def command() -> None:
    other_command(sys.argv[1:])
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra hands errors to us instead of printing tracebacks
    try:
        with handle_signals(forward=True):
            task()
    except Interrupted as err:
        stopped(err)
    except VaelabError as err:
        print(f"vaelab: error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:
        message = config_error(err)  # first: Hydra's missing-config error is an OSError too
        if message is None and isinstance(err, OSError) and err.strerror:  # vaelab's home or Hydra's folder
            message = os_error(err)
        if message is None:
            raise
        print(f"vaelab: error: {message}", file=sys.stderr)
        sys.exit(2)
    from vaelab.tracking.sweep import sweep_failed

    if sweep_failed():
        sys.exit(1)


def stopped(err: Interrupted) -> None:
    """SIGINT/SIGTERM: workers of a parallel sweep get the signal too and close their runs, the
    sweep's parent run ends KILLED, and the exit code tells which signal it was."""
    from vaelab.signals import ignore_further

    ignore_further()
    forward_to_children(err.signum)
    if "vaelab.tracking.sweep" in sys.modules:
        from vaelab.tracking.sweep import abort_sweeps

        abort_sweeps()
    print(f"vaelab: stopped by {err.name}; the last finished epoch's checkpoint is kept: "
          "run the same command again to resume", file=sys.stderr)
    sys.exit(err.exit_code)



if __name__ == "__main__":
    main()
