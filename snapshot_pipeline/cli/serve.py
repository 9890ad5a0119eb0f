"""Commands that run servers: ``serve`` (the HTTP API, uvicorn) and ``ui`` (``dg dev``, Dagster's dev server)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from snapshot_pipeline import db
from snapshot_pipeline.cli.common import int_in
from snapshot_pipeline.cli.instance import prepare_dagster_home
from snapshot_pipeline.settings import Settings, export_metrics_multiprocess_dir

SERVE_WORKERS = 3  # measured on the 2-core machine: see docs/http-api.md, "Serving"
UI_GRACE_SECONDS = 6.0  # after SIGINT/SIGTERM: time for `dagster dev` to stop its processes, then SIGKILL
API_FACTORY = "snapshot_pipeline.api:create_app"  # what each uvicorn worker process calls


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``serve`` and ``ui`` to the CLI's subcommands."""
    p = sub.add_parser("serve", help="the HTTP API (Blnk-compatible balance queries and snapshot trigger)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int_in(1, 65535, "--port"), default=8000)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--workers", type=int_in(1, 64, "--workers"), default=SERVE_WORKERS,
                   help=f"server processes (default {SERVE_WORKERS}, sized by benchmarks/bench_query.py)")
    p.add_argument("--access-log", action="store_true", help="log every request (off: it costs throughput)")
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("ui", help="start the Dagster UI (dg dev: webserver, daemon, code server) on the project")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int_in(1, 65535, "--port"), default=3000)
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help="Dagster's own log level (default warning: only what needs attention)")
    p.set_defaults(handler=cmd_ui)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run the HTTP API with uvicorn: ``--workers`` processes, each with its own query pool
    (docs/http-api.md, "Serving").

    Settings were validated by :func:`snapshot_pipeline.cli.main` before this runs, so a bad one exits 2
    before binding. With one worker the app is built here; with several, each worker process builds it
    from the (same) environment through the :func:`snapshot_pipeline.api.create_app` factory.
    """
    import uvicorn  # noqa: PLC0415

    from snapshot_pipeline.api import create_app  # noqa: PLC0415

    print(f"serving on http://{args.host}:{args.port} (docs at /docs, metrics at /metrics) with {args.workers}"
          f" worker(s); auth {'on' if settings.api_key else 'off'}; Dagster webserver {settings.dagster_webserver_url}",
          file=sys.stderr)
    options = {"host": args.host, "port": args.port, "log_level": args.log_level, "access_log": args.access_log}
    if args.workers == 1:
        uvicorn.run(create_app(settings), **options)
        return 0
    # several processes: prometheus_client's multiprocess mode sums their request metrics (a fresh directory)
    metrics_dir = Path(tempfile.mkdtemp(prefix="snapshot-pipeline-metrics-"))
    export_metrics_multiprocess_dir(metrics_dir)
    try:
        uvicorn.run(API_FACTORY, factory=True, workers=args.workers, **options)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def ui_command(settings: Settings, host: str, port: int, log_level: str = "warning") -> list[str]:
    """``dg dev`` (Dagster's dev server command; ``dagster dev`` is superseded by it) on the project's workspace.

    With a workspace file ``dg dev`` starts the webserver and the daemon directly (no project scaffolding
    needed); the code server and the daemon log at ``log_level``.
    """
    workspace = settings.home / "workspace.yaml"
    target = ["-w", str(workspace)] if workspace.exists() else ["-m", "snapshot_pipeline.definitions"]
    dg = Path(sys.executable).with_name("dg")
    return [str(dg), "dev", "-h", host, "-p", str(port), "--log-level", log_level,
            "--code-server-log-level", log_level, *target]


def ui_environment() -> dict[str, str]:
    """The child's environment: the embedded PostgreSQL's platformdirs warns once per process when
    ``XDG_RUNTIME_DIR`` is unset (containers, CI) and the UI starts many processes: not actionable, silenced."""
    env = dict(os.environ)
    ignore = "ignore:XDG_RUNTIME_DIR is not set"
    env["PYTHONWARNINGS"] = f"{env['PYTHONWARNINGS']},{ignore}" if env.get("PYTHONWARNINGS") else ignore
    return env


def cmd_ui(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``dg dev`` (webserver, daemon, code server) until it exits or we get SIGINT/SIGTERM.

    It runs in ``DAGSTER_HOME`` (so Dagster finds its ``dagster.yaml`` there and does not warn about the
    project's copy in the current folder) and in its own session, so a terminal's Ctrl-C reaches only this
    process, which then stops the whole tree within :data:`UI_GRACE_SECONDS` (+ a SIGKILL of what is left).
    """
    if settings.uses_embedded:
        db.embedded_url(settings.data_dir)
    instance = prepare_dagster_home(settings)
    command = ui_command(settings, args.host, args.port, args.log_level)
    print(f"Dagster UI: http://{args.host}:{args.port}  (DAGSTER_HOME={instance.home},"
          f" DAGSTER_PG_URL={db.redact(instance.postgres_url)}; Ctrl-C stops it)", file=sys.stderr, flush=True)
    env = {**ui_environment(), "SNAPSHOT_HOME": str(settings.home)}  # the code server's home, not its cwd
    child = subprocess.Popen(command, start_new_session=True, cwd=instance.home, env=env)
    return _wait_or_stop(child)


def _wait_or_stop(child: subprocess.Popen) -> int:
    """``child``'s exit code; on SIGINT/SIGTERM, stop its whole tree and return 128 + the signal."""
    stopping: list[int] = []

    def on_signal(signum, _frame) -> None:
        stopping.append(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return child.wait()
    except KeyboardInterrupt:
        for sig in previous:  # a second Ctrl-C must not interrupt the shutdown
            signal.signal(sig, signal.SIG_IGN)
        print("stopping the Dagster UI ...", file=sys.stderr, flush=True)
        stop_process_tree(child)
        return 128 + stopping[0] if stopping else 130
    finally:
        for sig, handler in previous.items():
            if signal.getsignal(sig) is not signal.SIG_IGN:
                signal.signal(sig, handler)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``; empty elsewhere), children first."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            # the field after the parenthesised command (which may hold spaces) is the state, then the ppid
            ppid = int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        out += children
        todo += children
    return out


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def stop_process_tree(child: subprocess.Popen, grace: float = UI_GRACE_SECONDS) -> None:
    """SIGTERM to ``child``, which shuts its own processes down; after ``grace`` seconds SIGKILL every
    process that was below it (recorded before it exited: orphans lose their ancestry)."""
    tree = _descendants(child.pid)
    _signal_all([child.pid], signal.SIGTERM)
    try:
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    tree += _descendants(child.pid) if child.poll() is None else []
    _signal_all([child.pid, *tree], signal.SIGKILL)
    child.wait()
