"""What the benchmarks share (each is still one command of its own): the log line and the worker launcher.

Every measurement runs in a fresh interpreter: ``run_script_worker`` starts ``SCRIPT --worker SPEC`` through a
small launcher process, so the worker's peak RSS (``ru_maxrss`` of its own process) is its own, and reads the
JSON the worker prints last.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

# a process that only starts the worker: Linux carries ru_maxrss over a fork, so the worker must not be forked
# from the (large) benchmark process itself
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def log(message: str) -> None:
    """A progress line on stderr (stdout carries the report)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_script_worker(script: str | Path, spec: dict, label: str) -> dict:
    """Run ``script --worker <spec as JSON>`` in a fresh interpreter (with ``spec["env"]`` added to the
    environment); returns the JSON it printed last, plus ``process_seconds``."""
    command = [sys.executable, "-c", LAUNCHER, sys.executable, str(Path(script).resolve()), "--worker",
               json.dumps(spec)]
    started = time.perf_counter()
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, env={**os.environ, **spec.get("env", {})})
    if proc.returncode != 0:
        raise RuntimeError(f"worker {label} exited with {proc.returncode}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_seconds"] = time.perf_counter() - started
    return out
