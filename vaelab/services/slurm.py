"""A one-node SLURM cluster on this machine: `munged` with a key of its own, then `slurmctld` and
`slurmd` in the foreground over a generated slurm.conf; everything (config, state, spool, logs,
the munge socket) lives in one folder, so it never touches /etc/slurm or a system munged."""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from vaelab.services.process import (
    Daemon, Service, ServiceError, chown_to, current_user, free_port, is_root, log_tail, run_checked, wait_until,
)

MUNGE_USER = "munge"  # who runs munged when we are root
START_TIMEOUT_S = 60.0
REVOKE_GRACE_S = 2.0  # slurmd compares credential and revocation times in whole seconds
BINARIES = ("munged", "slurmctld", "slurmd", "sinfo", "squeue", "scontrol", "scancel", "sbatch")


def missing() -> str | None:
    """Why a one-node cluster cannot be started here, or None."""
    absent = [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).is_file()]
    if absent:
        return (f"SLURM/munge not installed (no {', '.join(absent)};"
                " Debian: apt-get install slurmctld slurmd slurm-client munge)")
    if not is_root():
        return "a SLURM cluster of our own needs root (slurmd starts each job as its user)"
    return None


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class Munge:
    """munged with its own key, socket, log and seed in `folder` (as user munge when root)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.socket = self.folder / "munge.socket"
        self.log = self.folder / "munged.log"
        self.user = MUNGE_USER if is_root() else None
        self.daemon: Daemon | None = None

    def start(self) -> None:
        self.folder.mkdir(mode=0o755, parents=True, exist_ok=True)  # munged checks its folders' modes
        chown_to(self.folder, self.user)
        key = self.folder / "munge.key"
        key.touch(mode=0o600)
        key.write_bytes(os.urandom(128))  # a fresh key: only this cluster's daemons share it
        chown_to(key, self.user)
        self.daemon = Daemon(
            "munged",
            [_binary("munged"), "--foreground", f"--socket={self.socket}", f"--key-file={key}",
             f"--pid-file={self.folder / 'munged.pid'}", f"--log-file={self.log}",
             f"--seed-file={self.folder / 'munged.seed'}"],
            self.folder / "munged.out", cwd=self.folder, user=self.user,
        )
        self.daemon.wait_ready(self.socket.exists, START_TIMEOUT_S)

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None


class SlurmCluster(Service):
    """`with SlurmCluster() as cluster:` a one-node cluster, partition `cluster.partition`.

    Clients (sbatch, squeue, submitit) need `cluster.env` (SLURM_CONF) in their environment.
    This host is controller and node, with the CPUs and memory `slurmd -C` finds. `folder`
    defaults to a fresh temporary folder, removed at the end.
    """

    partition = "debug"

    def __init__(self, folder: Path | None = None, kill_wait_s: int = 5) -> None:
        self.owns_folder = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix="vaelab-slurm-")).resolve()
        self.folder.chmod(0o755)  # munged (another user when root) must reach its own folder
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.folder / "slurm.conf"
        self.kill_wait_s = kill_wait_s
        self.munge = Munge(self.folder / "munge")
        self.daemons: list[Daemon] = []

    @property
    def env(self) -> dict[str, str]:
        """What a client's environment needs to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def start(self) -> None:
        if (reason := missing()) is not None:
            raise ServiceError(reason)
        try:
            self.munge.start()
            self.conf.write_text(self.config_text())
            env = {**os.environ, **self.env}
            for folder in ("state", "spool"):
                (self.folder / folder).mkdir(exist_ok=True)
            (self.folder / "plugstack.conf").touch()
            self.daemons.append(Daemon("slurmctld", [_binary("slurmctld"), "-D", "-f", str(self.conf)],
                                       self.folder / "slurmctld.out", env=env, cwd=self.folder))
            self.daemons.append(Daemon("slurmd", [_binary("slurmd"), "-D", "-f", str(self.conf), "-N", self.node],
                                       self.folder / "slurmd.out", env=env, cwd=self.folder))
            wait_until(self._node_idle, START_TIMEOUT_S, f"SLURM node {self.node} did not become idle",
                       self._dead_daemon)
        except BaseException as err:
            self.stop()
            if isinstance(err, ServiceError):
                raise ServiceError(f"{err}\nslurmctld log:\n{log_tail(self.folder / 'slurmctld.log')}"
                                   f"\nslurmd log:\n{log_tail(self.folder / 'slurmd.log')}") from None
            raise

    def stop(self) -> None:
        """Cancel every job, stop slurmd, slurmctld and munged, kill what the jobs left behind."""
        if self.daemons and all(d.running() for d in self.daemons):
            self._cancel_jobs()
        for daemon in reversed(self.daemons):
            daemon.stop()
        self.daemons = []
        self._kill_job_leftovers()
        self.munge.stop()
        if self.owns_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def command(self, *args: str, timeout: float = 30) -> str:
        """Run a SLURM client (sinfo, squeue, scontrol, ...) against this cluster; its stdout."""
        return run_checked(list(args), args[0], env={**os.environ, **self.env}, timeout=timeout)

    def jobs(self) -> dict[str, str]:
        """Job id -> state (PENDING, RUNNING, ...) of every job the controller still knows."""
        out = self.command("squeue", "-h", "-o", "%i %T")
        return dict(line.split() for line in out.splitlines() if line.strip())

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict: JobState, Restarts, Reason, ..."""
        out = self.command("scontrol", "-o", "show", "job", job_id)
        return dict(field.split("=", 1) for field in out.split() if "=" in field)

    def requeue(self, job_id: str, timeout: float = 60) -> None:
        """`scontrol requeue` (what pre-emption does: SIGTERM, SIGKILL after KillWait, back to the
        queue), then let it start again at once: SLURM holds a requeued job for ~2 minutes."""
        restarts = int(self.job(job_id)["Restarts"])
        self.command("scontrol", "requeue", job_id)

        def back_in_queue() -> bool:  # its first run has ended (no longer COMPLETING)
            info = self.job(job_id)
            return int(info["Restarts"]) > restarts and info["JobState"] in ("PENDING", "RUNNING", "COMPLETED")

        wait_until(back_in_queue, timeout, f"job {job_id} was not requeued")
        # slurmd refuses ("Job credential revoked") a credential issued in the same second as its
        # predecessor's revocation, and SLURM then holds the job: start it a clear second later,
        # and release and start it again should that still happen.
        time.sleep(REVOKE_GRACE_S)

        nudged = [-math.inf]

        def started() -> bool:
            info = self.job(job_id)
            if info["JobState"] != "PENDING":
                return True
            if time.monotonic() - nudged[0] >= REVOKE_GRACE_S:  # not at every poll
                if "held" in info.get("Reason", "").lower() or info.get("Priority") == "0":
                    self.command("scontrol", "release", job_id)
                self.command("scontrol", "update", f"JobId={job_id}", "StartTime=now")
                nudged[0] = time.monotonic()
            return False

        wait_until(started, timeout, f"requeued job {job_id} did not start again")

    def config_text(self) -> str:
        f, user = self.folder, current_user()
        return "\n".join([
            "# A one-node cluster written by vaelab.services.slurm; every path lives in this folder.",
            "ClusterName=vaelab",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge.socket}",  # our munged, not the system's
            f"StateSaveLocation={f / 'state'}",
            f"SlurmdSpoolDir={f / 'spool'}",
            f"SlurmctldPidFile={f / 'slurmctld.pid'}",
            f"SlurmdPidFile={f / 'slurmd.pid'}",
            f"SlurmctldLogFile={f / 'slurmctld.log'}",
            f"SlurmdLogFile={f / 'slurmd.log'}",
            f"PlugStackConfig={f / 'plugstack.conf'}",  # none of the system's SPANK plugins
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            # No cgroups (none in a container): processes tracked by parentage, no CPU binding.
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",  # CPUs are what jobs share out; memory is only checked
            "SchedulerType=sched/builtin",
            "JobRequeue=1",  # batch jobs may be requeued (pre-emption, `scontrol requeue`)
            f"KillWait={self.kill_wait_s}",  # seconds from SIGTERM to SIGKILL when a job is stopped
            "ReturnToService=2",
            "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",  # no slurmdbd: sacct has nothing
            "JobCompType=jobcomp/none",
            f"NodeName={self.node} NodeAddr=127.0.0.1 {self._hardware()} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ])

    def _hardware(self) -> str:
        """CPUs, sockets, cores, threads and memory as slurmd sees them (`slurmd -C`)."""
        out = run_checked([_binary("slurmd"), "-C"], "slurmd -C")
        fields = out.splitlines()[0].split()
        keep = ("CPUs=", "Boards=", "SocketsPerBoard=", "CoresPerSocket=", "ThreadsPerCore=", "RealMemory=")
        return " ".join(x for x in fields if x.startswith(keep))

    def _node_idle(self) -> bool:
        try:
            state = self.command("sinfo", "-h", "-N", "-n", self.node, "-o", "%T", timeout=10)
        except (ServiceError, subprocess.TimeoutExpired):
            return False
        return state.strip() == "idle"

    def _dead_daemon(self) -> str | None:
        for daemon in [self.munge.daemon, *self.daemons]:
            if daemon is not None and (reason := daemon.exit_reason()):
                return reason
        return None

    def _cancel_jobs(self) -> None:
        try:
            self.command("scancel", "--full", "--user", current_user(), timeout=10)
            wait_until(lambda: not self.jobs(), 2 * self.kill_wait_s + 10, "jobs did not end")
        except (ServiceError, subprocess.TimeoutExpired):
            pass  # whatever is left is killed below

    def _kill_job_leftovers(self) -> None:
        """Job processes outlive slurmd (slurmstepd daemonizes): find them by this cluster's
        SLURM_CONF in their environment and kill them, by pid."""
        mark = f"SLURM_CONF={self.conf}".encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if mark in (proc / "environ").read_bytes().split(b"\0"):
                    os.kill(int(proc.name), 9)
            except (OSError, ValueError):
                continue
