"""Running the launchers as the scale tests do: several CPU processes on this machine, logs kept on failure."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CPU_ENTRY = "tests/scale_cpu_entry.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def deepspeed_command(num_processes: int, *script_and_args: str) -> list[str]:
    """The `deepspeed` launcher on this machine with ``num_processes`` CPU processes."""
    return [str(BIN / "deepspeed"), "--num_accelerators", str(num_processes), "--master_port", str(free_port()),
            *script_and_args]  # fmt: skip


def launcher_env(**extra: str) -> dict[str, str]:
    """The environment of a launched run: this venv first on PATH, one thread per process, the repo importable."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **extra}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run(command: list[str], log_dir: Path, env: dict[str, str] | None = None, timeout: float = 540) -> None:
    """Run a launcher (which starts the processes) to completion; on failure show the end of its log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "launcher.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=REPO, env=env or launcher_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        code = process.wait(timeout=timeout)
    finally:
        if process.poll() is None:  # timed out: stop the launcher and the processes it started
            os.killpg(process.pid, signal.SIGKILL)
    if code:
        raise AssertionError(
            f"{' '.join(command[:4])} ... exited with {code}; end of {log}:\n{log.read_text()[-6000:]}"
        )


FAKE_SRUN = """#!/bin/bash
# Stand-in for srun on one machine: the command once per node of the job, all at once, each with its SLURM_NODEID.
while [[ $1 == --* ]]; do shift; done
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do SLURM_NODEID=$node SLURM_PROCID=$node "$@" & pids+=($!); done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
"""
# Two names for this machine, so that a hostfile built from them has two distinct "nodes".
FAKE_SCONTROL = """#!/bin/bash
[[ "$1 $2" == "show hostnames" ]] || { echo "fake scontrol: only 'show hostnames'" >&2; exit 1; }
printf '127.0.0.1\\nlocalhost\\n'
"""


def slurm_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a two-node SLURM job on this machine: srun/scontrol stand-ins first on PATH, one GPU
    slot per node (a CPU process here), a free master port."""
    bin_dir = tmp_path / "slurm-bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    job = {"SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "node[0-1]", "SLURM_NNODES": "2", "GPUS_PER_NODE": "1",
           "SLURM_SUBMIT_DIR": str(REPO), "MASTER_PORT": str(free_port())}  # fmt: skip
    env = launcher_env(**{**job, **extra})
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env


def train_logs(output_dir: Path) -> list[dict]:
    """The per-step logs of the last checkpoint under ``output_dir`` (full precision, unlike the console)."""
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "loss" in entry]
