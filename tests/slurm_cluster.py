"""A private single-node SLURM cluster for tests: munged, slurmctld and slurmd with generated
configs under one scratch directory, stopped by pid.

Needs root and Debian's ``slurm-wlm`` + ``munge`` (``scripts/install_system.sh``; ``.ci/run``
installs them). Nothing touches /etc: munged gets its own key, socket, pid and log files, and
slurm.conf points its authentication at that socket (``AuthInfo=socket=...``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol")
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED")


def missing() -> list[str]:
    return [d for d in DAEMONS if shutil.which(d) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """One node (this host, ``cpus`` CPUs) in one partition ``debug``; see the module docstring."""

    def __init__(self, root: Path, cpus: int = 2) -> None:
        self.root = Path(root)
        self.cpus = cpus
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self._procs: list[subprocess.Popen] = []

    @property
    def env(self) -> dict[str, str]:
        """The environment for SLURM clients (sbatch, scontrol, ...)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self) -> "SlurmCluster":
        r = self.root
        for d in ("munge", "state", "spool", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        sock = r / "munge" / "munge.socket"
        self._spawn(["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={sock}",
                     f"--pid-file={r / 'munge' / 'munged.pid'}", f"--log-file={r / 'log' / 'munged.log'}",
                     f"--seed-file={r / 'munge' / 'munged.seed'}"], "munged")
        self._wait(lambda: sock.exists(), "munged's socket", r / "log" / "munged.log")
        self.conf.write_text(f"""\
ClusterName=ldes
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'slurmctld.pid'}
SlurmdPidFile={r / 'slurmd.pid'}
SlurmctldLogFile={r / 'log' / 'slurmctld.log'}
SlurmdLogFile={r / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
InactiveLimit=0
SlurmdTimeout=60
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
""")
        self._spawn(["slurmctld", "-D", "-i", "-f", str(self.conf)], "slurmctld")
        self._spawn(["slurmd", "-D", "-f", str(self.conf)], "slurmd")
        self._wait(self._idle, "the node to be idle", r / "log" / "slurmctld.log", timeout=60)
        return self

    def _spawn(self, cmd: list[str], name: str) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "w")
        self._procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True))

    def _wait(self, ok, what: str, log: Path, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ok():
                return
            dead = [p for p in self._procs if p.poll() is not None]
            if dead:
                break
            time.sleep(0.3)
        tail = log.read_text()[-3000:] if log.exists() else "(no log)"
        self.stop()
        raise RuntimeError(f"SLURM test cluster: gave up waiting for {what}; {log.name} ends:\n{tail}")

    def _idle(self) -> bool:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=self.env)
        return out.returncode == 0 and out.stdout.strip() == "idle"

    def stop(self) -> None:
        """Stop the daemons started here, by pid (slurmd, slurmctld, then munged)."""
        for p in reversed(self._procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self._procs.clear()

    # -- jobs ----------------------------------------------------------------------------
    def sbatch(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> int:
        """Submit; returns the job id."""
        out = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, cwd=cwd, env={**self.env, **(env or {})})
        if out.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(args)} failed: {out.stderr}")
        return int(out.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Restarts, ExitCode, ...)."""
        out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True, env=self.env, check=True)
        return dict(kv.split("=", 1) for kv in out.stdout.split() if "=" in kv)

    def logs(self, chars: int = 3000) -> str:
        """The ends of slurmctld's and slurmd's logs (for failure messages)."""
        out = []
        for name in ("slurmctld.log", "slurmd.log"):
            p = self.root / "log" / name
            out.append(f"--- {name} ---\n" + (p.read_text()[-chars:] if p.exists() else "(none)"))
        return "\n".join(out)

    def wait(self, job_id: int, timeout: float = 600) -> dict[str, str]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            info = self.job(job_id)
            if info["JobState"] in TERMINAL:
                return info
            time.sleep(1)
        raise TimeoutError(f"job {job_id} still {self.job(job_id)['JobState']} after {timeout} s")

    def scontrol(self, *args: str) -> None:
        subprocess.run(["scontrol", *args], check=True, capture_output=True, text=True, env=self.env)

    def scancel(self, *args: str) -> None:
        subprocess.run(["scancel", *args], check=True, capture_output=True, text=True, env=self.env)
