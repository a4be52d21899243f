"""Run a script as rank 0 of a one-process torch.distributed group, in a subprocess.

Why a subprocess: DeepSpeed and init_process_group set process-wide state that must not leak
into the rest of the test session. The script prints `RESULT <json>`; that JSON comes back.
Shared by the CPU (gloo) and CUDA (NCCL) engine tests.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_single_rank(script: str, extra_env: dict[str, str], timeout: int = 280) -> dict:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1",
           "LOCAL_RANK": "0", **extra_env}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, env=env)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])
