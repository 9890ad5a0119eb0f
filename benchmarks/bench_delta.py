"""Benchmark of the Delta Lake publication of ``balance_snapshots``, on one generated ledger, in one run (issue 19).

(1) the publish of one rolled-forward day ``D`` (base ``D - 1`` published), local disk and a local S3
    server (moto, as bench_storage.py): the asset's phases; the Delta publish's own cost (``commit_ms -
    index_commit_ms``: ``Publication.finish``, i.e. ``publication.sync_partition`` -> ``delta.replace_partition``)
    vs the previous publish measured in the same run on the same file (a copy of ``D``'s file moved to
    a run-unique name with ``parquet.move_into``, a rename locally and ``fs.move`` on S3, then
    ``recovery.delete_unnamed`` deleting the superseded file); where the Delta commit's time goes (the
    calls inside ``Publication.finish``, timed in place); the day's total vs the total minus the
    Delta publish.
(2) the Delta log after ``--log-commits`` (400) commits: 400 small partitions, each committed by
    ``delta.replace_partition`` (the real code path and table properties, checkpoint every
    ``delta.CHECKPOINT_INTERVAL`` commits); the cost of a commit early and late; ``_delta_log`` bytes and
    files; ``DeltaTable(uri)`` open time (the median of fresh interpreters, and of fresh objects in one);
    ``delta.partition_files`` for one day; a DuckDB ``delta_scan`` of one of those partitions.
(3) reading partition ``D`` of (1): DuckDB ``delta_scan(table) WHERE snapshot_date = D`` vs DuckDB
    ``read_parquet([the partition's files])``, pyarrow reading the same files, and ``delta.read_partition``
    (deltalake's file list, pyarrow's reader). Exactness: every result must equal the files the manifest
    names (``Table.equals`` after sorting by balance_id), and the Delta version must name exactly those
    files; otherwise ``ERROR`` and exit 1.

No timed assertions. Every measurement runs in a fresh interpreter (``--worker``). Results are printed and
written as JSON to ``benchmarks/results/delta-<timestamp>.json``.

    python benchmarks/bench_delta.py                    # 200k balances, 1M transactions, 30 days
    python benchmarks/bench_delta.py --smoke            # 3k balances, 20k transactions, 5 days
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

from _common import (
    RESULTS_DIR,
    Scratch,
    add_server_arguments,
    dispatch,
    last_two_days,
    log,
    report_head,
    run_script_worker,
    seed,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # tests.readers: DuckDB with the delta/httpfs extensions from PyPI

import bench_storage as bst  # noqa: E402  (after the sys.path line)

LOG_COMMITS = 400
READ_REPEATS = 5
OPEN_RUNS = 5
DAY_RUNS = 3
OLD_PUBLISH_REPEATS = 5

# The calls of the Delta publish timed in place (inclusive times: ensure and version_of each include a load,
# version_of includes history); only while Publication.finish runs, or around each replace_partition.
PROFILED = (("publication", "Publication.finish"), ("generations", "latest_version"), ("publication", "describe_files"),
            ("delta", "replace_partition"), ("delta", "ensure"), ("delta", "load"), ("delta", "partition_files"),
            ("DeltaTable", "create_write_transaction"), ("delta", "version_of"), ("DeltaTable", "history"),
            ("generations", "set_delta_version"))


# =============================================================================================== workers


def _label(owner_name: str, attr: str) -> str:
    return attr if "." in attr else f"{owner_name}.{attr}"


class Profile:
    """Inclusive wall time and call count of chosen functions, counted only while ``active``."""

    def __init__(self) -> None:
        self.active = False
        self.ms: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def install(self) -> Profile:
        from deltalake import DeltaTable

        from snapshot_pipeline.store import delta, generations, publication

        owners = {"publication": publication, "generations": generations, "delta": delta, "DeltaTable": DeltaTable}
        for owner_name, attr in PROFILED:
            owner = owners[owner_name]
            if "." in attr:  # a method of a class in that module
                owner = getattr(owner, attr.split(".")[0])
            self._wrap(owner, attr.split(".")[-1], _label(owner_name, attr))
        return self

    def _wrap(self, owner, attr: str, label: str) -> None:
        original = getattr(owner, attr)
        profile = self

        def timed(*args, **kwargs):
            if not profile.active:
                return original(*args, **kwargs)
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                profile.ms[label] = profile.ms.get(label, 0.0) + (time.perf_counter() - started) * 1000
                profile.calls[label] = profile.calls.get(label, 0) + 1

        setattr(owner, attr, timed)

    def snapshot(self) -> dict:
        return {label: {"ms": round(self.ms[label], 2), "calls": self.calls[label]} for label in self.ms}

    def reset(self) -> None:
        self.ms, self.calls = {}, {}


def _take(spec: dict) -> dict:
    """take_snapshot of one day; the Delta publish (Publication.finish) profiled from inside."""
    from snapshot_pipeline import snapshot
    from snapshot_pipeline.store import delta, publication
    from snapshot_pipeline.store.location import Store

    profile = Profile().install()
    finish = publication.Publication.finish  # the profiled one

    def finish_profiled(self, *args, **kwargs):
        profile.active = True
        try:
            return finish(self, *args, **kwargs)
        finally:
            profile.active = False

    publication.Publication.finish = finish_profiled
    settings = bst._settings(spec)
    date = dt.date.fromisoformat(spec["date"])
    started = time.perf_counter()
    result = snapshot.take_snapshot(settings, date, spec["batch_size"], log=lambda _m: None)
    out = bst._result(result, time.perf_counter() - started)
    out.update(delta_version=result.delta_version, generation=result.generation, manifest_files=result.files,
               profile=profile.snapshot())
    # exactness: the version names the manifest's files
    table = delta.load(Store.at(settings.storage_uri), delta.SNAPSHOTS)
    named = sorted(os.path.basename(path) for path, _ in delta.partition_files(table, delta.SNAPSHOTS, date))
    out["delta_files"] = named
    out["delta_names_manifest_files"] = named == sorted(os.path.basename(f) for f in result.files)
    out["table_version"] = table.version()
    return out


def _old_publish(spec: dict) -> dict:
    """The publish before Delta, on a copy of D's file in a scratch root: ``parquet.move_into`` of the staged
    file to its run-unique name, then ``recovery.delete_unnamed`` (list the partition, delete the superseded
    file). Copies are made untimed; the same code the index transaction and ``finish`` ran."""
    import pyarrow.fs as pafs

    from snapshot_pipeline.store import parquet, recovery
    from snapshot_pipeline.store.location import Store

    date = dt.date.fromisoformat(spec["date"])
    store, scratch = Store.at(spec["storage"]), Store.at(spec["scratch"])
    fs = store.fs
    source = store.partition_paths(date, spec["files"])[0]
    directory, staging = scratch.partition_dir(date), scratch.staging_dir
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(directory, recursive=True)
        fs.create_dir(staging, recursive=True)
    recovery.delete_unnamed(scratch, date, set())  # what an earlier run of this worker left
    current = f"{directory}/{parquet.part_name(0, uuid.uuid4().hex[:16])}"
    fs.copy_file(source, current)  # the partition's current file, superseded by the move below
    runs = []
    for _ in range(spec["repeats"]):
        staged = f"{staging}/snapshot-{date.isoformat()}-{uuid.uuid4().hex}.parquet"
        fs.copy_file(source, staged)
        target = f"{directory}/{parquet.part_name(0, uuid.uuid4().hex[:16])}"
        started = time.perf_counter()
        parquet.move_into(fs, staged, target)
        moved = time.perf_counter()
        removed = recovery.delete_unnamed(scratch, date, {target})
        done = time.perf_counter()
        if removed != [current]:
            raise RuntimeError(f"old publish removed {removed}, expected [{current}]")
        runs.append({"move_ms": (moved - started) * 1000, "delete_ms": (done - moved) * 1000,
                     "ms": (done - started) * 1000})
        current = target
    return {"runs": runs, "ms": statistics.median(r["ms"] for r in runs),
            "move_ms": statistics.median(r["move_ms"] for r in runs),
            "delete_ms": statistics.median(r["delete_ms"] for r in runs), "first_ms": runs[0]["ms"],
            "bytes": fs.get_file_info(source).size}


def _tiny_partition(ids: list[str], cutoff: dt.datetime):
    import decimal

    import pyarrow as pa

    from snapshot_pipeline.store import parquet

    n = len(ids)
    columns = {"balance_id": ids, "ledger_id": ["ldg"] * n, "identity_id": [None] * n, "indicator": [None] * n,
               "currency": ["USD"] * n, **{c: [decimal.Decimal(i) for i in range(n)] for c in parquet.AMOUNT_COLUMNS},
               "balance_created_at": [cutoff] * n, "cutoff_at": [cutoff] * n}
    return pa.Table.from_pydict(columns, schema=parquet.SNAPSHOT_SCHEMA)


def _write_tiny(storage: str, days: list[dt.date]) -> list:
    """One Parquet file of 10 rows per day in its partition directory; their Delta descriptions."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from snapshot_pipeline.store import parquet, publication
    from snapshot_pipeline.store.location import Store

    store = Store.at(storage)
    fs = store.fs
    paths = []
    for day in days:
        directory = store.partition_dir(day)
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(directory, recursive=True)
        cutoff = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        path = f"{directory}/{parquet.part_name(0, uuid.uuid4().hex[:16])}"
        pq.write_table(_tiny_partition([f"bln_{day.isoformat()}_{i:02d}" for i in range(10)], cutoff), path,
                       filesystem=fs, compression="zstd")
        paths.append(path)
    return publication.describe_files(fs, paths)


def _log(spec: dict) -> dict:
    """``commits`` partitions of 10 rows, each published by one ``delta.replace_partition`` (timed and profiled).

    With ``prefix_commits`` (S3) the first ones are committed the same way on a local copy of the table,
    which is then uploaded as is (the log names files relative to the table), and only the last ones are
    committed (and timed) on S3: a commit on moto costs ~0.4-1.5 s, 400 of them would dominate the run.
    """
    import pyarrow.fs as pafs

    from snapshot_pipeline.store import delta, publication
    from snapshot_pipeline.store.location import Store

    storage, start, n = spec["storage"], dt.date.fromisoformat(spec["start_date"]), spec["commits"]
    prefix = spec.get("prefix_commits", 0)
    fs = Store.at(storage).fs
    days = [start + dt.timedelta(days=i) for i in range(n)]

    def commit(root: str, day: dt.date, file) -> None:
        delta.replace_partition(Store.at(root), delta.SNAPSHOTS, day, [file], history_days=spec["history_days"],
                                app_id=publication.app_id(day), app_version=1)

    if prefix:
        local = spec["local_copy"]
        for day, file in zip(days[:prefix], _write_tiny(local, days[:prefix]), strict=True):
            commit(local, day, file)
        pafs.copy_files(Store.at(local).root, Store.at(storage).root, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)
    timed = list(zip(days[prefix:], _write_tiny(storage, days[prefix:]), strict=True))
    window = len(timed) if prefix else min(50, len(timed) // 2)
    windows = [(prefix + 1, n)] if prefix else [(1, window), (n - window + 1, n)]
    profile = Profile().install()
    commits_ms, profiles = [], {}
    for i, (day, file) in enumerate(timed, start=prefix + 1):  # i: the table version this commit makes
        if any(i == first for first, _ in windows):
            profile.reset()
        profile.active = True
        started = time.perf_counter()
        commit(storage, day, file)
        commits_ms.append((time.perf_counter() - started) * 1000)
        profile.active = False
        for first, last in windows:
            if i == last:
                profiles[f"{first}-{last}"] = profile.snapshot()
    log_dir = f"{Store.at(storage).table_path(delta.SNAPSHOTS.name)}/_delta_log"
    infos = [i for i in fs.get_file_info(pafs.FileSelector(log_dir, recursive=True)) if i.type == pafs.FileType.File]
    table = delta.load(Store.at(storage), delta.SNAPSHOTS)
    assert table is not None
    medians = {}
    for first, last in windows:
        medians[f"{first}-{last}"] = statistics.median(commits_ms[first - prefix - 1:last - prefix])
    return {"commits_ms": commits_ms, "window": window, "profiles": profiles, "commit_median_ms": medians,
            "prefix_commits": prefix, "version": table.version(),
            "log_files": len(infos), "log_bytes": sum(i.size or 0 for i in infos),
            "log_json": sum(1 for i in infos if i.base_name.endswith(".json")),
            "log_checkpoints": sum(1 for i in infos if ".checkpoint." in i.base_name),
            "last_checkpoint": any(i.base_name == "_last_checkpoint" for i in infos),
            "probe_date": days[n // 2].isoformat()}


def _open(spec: dict) -> dict:
    """Open the table (the first DeltaTable of this interpreter), one partition's files; then fresh objects."""
    from snapshot_pipeline.store import delta
    from snapshot_pipeline.store.location import Store

    store, day = Store.at(spec["storage"]), dt.date.fromisoformat(spec["date"])
    started = time.perf_counter()
    table = delta.load(store, delta.SNAPSHOTS)
    opened = time.perf_counter()
    files = delta.partition_files(table, delta.SNAPSHOTS, day)
    listed = time.perf_counter()
    opens, lists = [], []
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        table = delta.load(store, delta.SNAPSHOTS)
        t1 = time.perf_counter()
        delta.partition_files(table, delta.SNAPSHOTS, day)
        t2 = time.perf_counter()
        opens.append((t1 - t0) * 1000)
        lists.append((t2 - t1) * 1000)
    assert table is not None
    return {"open_ms": (opened - started) * 1000, "partition_files_ms": (listed - opened) * 1000,
            "files": len(files), "active_files": len(delta.add_actions(table)), "version": table.version(),
            "warm_open_ms": statistics.median(opens), "warm_partition_files_ms": statistics.median(lists)}


def _read(spec: dict) -> dict:
    """One partition read by ``method``: the first call of the interpreter and the median of the next ones;
    the last result is dumped (sorted, cast to the files' schema) for the exactness check."""
    import pyarrow as pa
    import pyarrow.feather as feather

    from snapshot_pipeline.store import delta, parquet
    from snapshot_pipeline.store.location import Store

    storage, day, method = spec["storage"], dt.date.fromisoformat(spec["date"]), spec["method"]
    s3 = "://" in storage
    store = Store.at(storage)
    if method.startswith("duckdb"):
        from tests import readers

        con = readers.duckdb_connection(s3)
        if method == "duckdb_delta_scan":
            sql, params = f"SELECT * FROM delta_scan('{store.table_uri(delta.SNAPSHOTS.name)}')" \
                          " WHERE snapshot_date = ?", [day]
        else:
            sql, params = "SELECT * FROM read_parquet(?)", [spec["files"]]

        def read() -> pa.Table:
            return con.execute(sql, params).arrow().read_all()
    elif method == "pyarrow":
        paths = store.partition_paths(day, spec["files"])

        def read() -> pa.Table:
            return parquet.read_files(store.fs, paths)
    elif method == "delta_read_partition":
        def read() -> pa.Table:
            return delta.read_partition(store, delta.SNAPSHOTS, day)
    else:
        raise SystemExit(f"unknown read method {method!r}")
    runs = []
    for _ in range(spec["repeats"] + 1):
        started = time.perf_counter()
        table = read()
        runs.append((time.perf_counter() - started) * 1000)
    rows = table.num_rows
    if spec.get("dump"):
        if "snapshot_date" in table.column_names:
            table = table.drop_columns(["snapshot_date"])
        table = table.select(parquet.SNAPSHOT_SCHEMA.names).cast(parquet.SNAPSHOT_SCHEMA).sort_by("balance_id")
        feather.write_feather(table, spec["dump"], compression="uncompressed")
    return {"first_ms": runs[0], "ms": statistics.median(runs[1:]), "runs_ms": runs, "rows": rows}


WORKERS = {"take": _take, "old_publish": _old_publish, "log": _log, "open": _open, "read": _read}


def worker_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    os.environ.update(spec.get("env", {}))
    print(json.dumps(WORKERS[spec["kind"]](spec), default=str))
    return 0


def run_worker(spec: dict) -> dict:
    return run_script_worker(__file__, spec, f"{spec['kind']} ({spec.get('method') or spec.get('date')})")


# ================================================================================================ report


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize_day(runs: list[dict], old: list[dict]) -> dict:
    """Per run: the Delta publish (finish, ms), its ratio to the old publish on the same file, the day's total."""
    rows = []
    for run, base in zip(runs, old, strict=True):
        finish = run["profile"].get("Publication.finish", {}).get("ms")
        phases = run["phases_ms"]
        total_ms = run["seconds"] * 1000
        rows.append({"delta_publish_ms": finish,
                     "commit_minus_index_commit_ms": phases["commit_ms"] - phases["index_commit_ms"],
                     "old_publish_ms": base["ms"], "ratio": bst.ratio(finish, base["ms"]),
                     "total_ms": total_ms, "total_without_delta_ms": total_ms - finish,
                     "total_ratio": bst.ratio(total_ms, total_ms - finish),
                     "total_with_old_publish_ms": total_ms - finish + base["ms"]})
    summary = {key: median(r[key] for r in rows) for key in rows[0]}
    summary["ratio"] = bst.ratio(summary["delta_publish_ms"], summary["old_publish_ms"])
    summary["total_ratio"] = bst.ratio(summary["total_ms"], summary["total_without_delta_ms"])
    return {"runs": rows, "median": summary}


def _ms(value) -> str:
    return "-" if value is None else f"{value:,.1f}"


def render(report: dict) -> str:
    led, m = report["ledger"], report["machine"]
    lines = [f"ledger: {led['balances']:,} balances, {led['transaction_rows']:,} transaction rows,"
             f" {report['args']['days']} days; D = {report['day']}; {m['cpus']} CPUs; load (1 min)"
             f" {m['load_start']:.2f} -> {m['load_end']:.2f}"]
    labels = [label for label in ("local", "s3") if label in report["day_runs"]]
    lines += ["", f"(1) rolled-forward day D (base D-1), medians of {report['args']['day_runs']} run(s) of D"
              "          " + "".join(f"{label:>12}" for label in labels) + "    S3/local"]

    def row(name, values, fmt=_ms, show_ratio=True):
        cells = "".join(f"{fmt(v):>12}" for v in values)
        tail = f"    {bst.fmt_ratio(bst.ratio(values[1], values[0]))}" if show_ratio and len(values) == 2 else ""
        lines.append(f"    {name:<58}{cells}{tail}")

    first = {label: report["day_runs"][label]["runs"][0] for label in labels}
    for key in sorted(set().union(*(first[label]["phases_ms"] for label in labels))):
        row(f"phase {key} (first run, ms)", [first[label]["phases_ms"].get(key) for label in labels])
    days = {label: report["day_runs"][label]["summary"]["median"] for label in labels}
    row("day total, take_snapshot (ms)", [days[label]["total_ms"] for label in labels])
    row("Delta publish = Publication.finish (ms)", [days[label]["delta_publish_ms"] for label in labels])
    row("  commit_ms - index_commit_ms (ms)", [days[label]["commit_minus_index_commit_ms"] for label in labels])
    row("previous publish: move_into + delete_unnamed (ms)", [days[label]["old_publish_ms"] for label in labels])
    old = {label: report["day_runs"][label]["old_publish"][0] for label in labels}
    row("  of which move (rename / fs.move) (ms)", [old[label]["move_ms"] for label in labels])
    row("  of which delete_unnamed (list + delete) (ms)", [old[label]["delete_ms"] for label in labels])
    row("Delta publish / previous publish", [days[label]["ratio"] for label in labels], bst.fmt_ratio, False)
    row("day total without the Delta publish (ms)", [days[label]["total_without_delta_ms"] for label in labels])
    row("day total / total without the Delta publish", [days[label]["total_ratio"] for label in labels],
        bst.fmt_ratio, False)
    row("day total with the previous publish instead (ms)", [days[label]["total_with_old_publish_ms"]
                                                             for label in labels])
    lines.append("    where the Delta publish's time goes (first run of D; inclusive ms, calls):")
    for owner_name, attr in PROFILED:
        label = _label(owner_name, attr)
        cells = []
        for where in labels:
            p = first[where]["profile"].get(label)
            cells.append("-" if p is None else f"{p['ms']:,.1f} ({p['calls']})")
        lines.append(f"      {label:<56}" + "".join(f"{c:>14}" for c in cells))

    lines += ["", f"(2) Delta log after {report['args']['log_commits']} commits (one small partition each,"
              " delta.replace_partition)" + "".join(f"{label:>12}" for label in report["log"])]
    lg = report["log"]
    llabels = list(lg)

    def lrow(name, values, fmt=_ms):
        lines.append(f"    {name:<58}" + "".join(f"{fmt(v):>12}" for v in values)
                     + (f"    {bst.fmt_ratio(bst.ratio(values[1], values[0]))}"
                        if len(values) == 2 and fmt is not str else ""))

    lrow("_delta_log bytes", [lg[x]["build"]["log_bytes"] for x in llabels], lambda v: f"{v:,}")
    counts = [f"{b['log_files']} ({b['log_json']}/{b['log_checkpoints']})" for b in (lg[x]["build"] for x in llabels)]
    lrow("_delta_log files (json / checkpoints)", counts, str)
    lrow(f"open DeltaTable(uri), fresh interpreter, median of {report['args']['open_runs']} (ms)",
         [lg[x]["open_ms"] for x in llabels])
    lrow("open DeltaTable(uri), fresh object, warm interpreter (ms)", [lg[x]["warm_open_ms"] for x in llabels])
    lrow("delta.partition_files (one day), first call (ms)", [lg[x]["partition_files_ms"] for x in llabels])
    lrow("delta.partition_files (one day), warm (ms)", [lg[x]["warm_partition_files_ms"] for x in llabels])
    lrow("DuckDB delta_scan of one day (10 rows), warm (ms)", [lg[x]["delta_scan"]["ms"] for x in llabels])
    lrow("DuckDB delta_scan of one day (10 rows), first (ms)", [lg[x]["delta_scan"]["first_ms"] for x in llabels])
    for x in llabels:
        b = lg[x]["build"]
        how = (f"versions 1-{b['prefix_commits']} committed locally and uploaded, then timed on S3:"
               if b["prefix_commits"] else "each commit timed:")
        lines.append(f"    {x}, {how} max {max(b['commits_ms']):,.1f} ms, sum {sum(b['commits_ms']) / 1000:.1f} s")
        for versions, prof in b["profiles"].items():
            k = b["window"]
            lines.append(f"      commits making versions {versions}: median {b['commit_median_ms'][versions]:,.1f} ms;"
                         " inside, per commit (inclusive ms, calls):")
            lines.append("        " + ", ".join(f"{label} {v['ms'] / k:.1f} ({v['calls'] / k:g})"
                                                for label, v in prof.items()))
    lines += ["", f"(3) reading partition D ({report['reads']['rows']:,} rows), warm median of"
              f" {report['args']['read_repeats']} (first call of the interpreter in brackets), ms"]
    for where, reads in report["reads"]["by_storage"].items():
        base = reads["duckdb_read_parquet"]["ms"]
        for method, r in reads.items():
            lines.append(f"    {where:<6} {method:<24} {r['ms']:>10,.1f}  ({r['first_ms']:,.1f})"
                         f"   vs duckdb read_parquet {bst.fmt_ratio(bst.ratio(r['ms'], base))}")
    detail = "; ".join(report["errors"]) or "every read equals the manifest's files; the Delta version names them"
    lines += ["", f"exactness: {'OK' if report['exact'] else 'FAILED'} ({detail})"]
    return "\n".join(lines)


# ================================================================================================ run


def bench_main(args) -> int:
    import pyarrow.feather as feather

    from snapshot_pipeline.settings import DEFAULT_HISTORY_DAYS

    throwaway = Scratch.create(args, "bench_delta")
    url, work, stem = throwaway.url, throwaway.work, throwaway.stem
    base_day, last_day = last_two_days(args)
    report: dict = report_head(args, day=last_day.isoformat(), day_runs={}, log={}, reads={"by_storage": {}},
                               errors=[])
    errors = report["errors"]
    try:
        report["ledger"] = seed(url, args.balances, args.transactions, args.days, args.seed, args.start_date)
        common = {"ledger_url": url, "home": str(work), "batch_size": args.batch_size}
        with bst.MotoServer() as server:
            for label in ("local", "s3"):
                # (1) base D-1 (genesis), then D rolled forward day_runs times (each run replaces D)
                bst.reset_index(url)
                env = {} if label == "local" else server.env
                storage = bst.fresh_local(work, label) if label == "local" else server.bucket()
                scratch = bst.fresh_local(work, f"{label}-old") if label == "local" else server.bucket()
                spec = {**common, "storage": storage, "env": env}
                log(f"(1) {label}: genesis {base_day} ...")
                run_worker({**spec, "kind": "take", "date": base_day.isoformat()})
                runs, old = [], []
                for i in range(args.day_runs):
                    run = run_worker({**spec, "kind": "take", "date": last_day.isoformat()})
                    if run["mode"] != "incremental" or run["base_date"] != base_day.isoformat():
                        log(f"WARNING: {label} run {i} of {last_day}: mode {run['mode']} on base {run['base_date']}")
                    if not run["delta_names_manifest_files"]:
                        errors.append(f"{label} run {i}: the Delta version names {run['delta_files']},"
                                      f" the manifest {run['manifest_files']}")
                    base = run_worker({**spec, "kind": "old_publish", "date": last_day.isoformat(),
                                       "files": run["manifest_files"], "scratch": scratch,
                                       "repeats": OLD_PUBLISH_REPEATS})
                    runs.append(run)
                    old.append(base)
                    log(f"(1) {label} D run {i}: {run['seconds']:.2f} s, phases {run['phases_ms']}, Delta publish"
                        f" {run['profile'].get('Publication.finish', {}).get('ms')} ms, previous publish"
                        f" {base['ms']:.1f} ms")
                report["day_runs"][label] = {"runs": runs, "old_publish": old, "summary": summarize_day(runs, old)}

                # (3) reads of partition D as the last run published it
                files = runs[-1]["manifest_files"]
                dumps, reads = {}, {}
                for method in ("pyarrow", "duckdb_read_parquet", "duckdb_delta_scan", "delta_read_partition"):
                    dumps[method] = str(work / f"{label}-{method}.arrow")
                    log(f"(3) {label}: {method} ...")
                    reads[method] = run_worker({**spec, "kind": "read", "method": method,
                                                "date": last_day.isoformat(), "files": files,
                                                "repeats": args.read_repeats, "dump": dumps[method]})
                reference = feather.read_table(dumps["pyarrow"])
                report["reads"]["rows"] = reference.num_rows
                for method, path in dumps.items():
                    same = feather.read_table(path).equals(reference)
                    reads[method]["equals_manifest_files"] = same
                    if not same:
                        errors.append(f"{label} {method}: partition {last_day} ({reads[method]['rows']} rows) differs"
                                      f" from the manifest's files ({reference.num_rows} rows)")
                report["reads"]["by_storage"][label] = reads

                # (2) the log after N commits, on a fresh root of the same kind
                root = bst.fresh_local(work, f"{label}-log") if label == "local" else server.bucket()
                log(f"(2) {label}: {args.log_commits} commits ...")
                lspec = {"storage": root, "env": env}
                prefix = {} if label == "local" else {"prefix_commits": max(args.log_commits - args.s3_log_commits, 0),
                                                      "local_copy": bst.fresh_local(work, "s3-log-copy")}
                build = run_worker({**lspec, "kind": "log", "commits": args.log_commits, **prefix,
                                    "start_date": args.start_date.isoformat(), "history_days": DEFAULT_HISTORY_DAYS})
                opens = [run_worker({**lspec, "kind": "open", "date": build["probe_date"], "repeats": 5})
                         for _ in range(args.open_runs)]
                scan = run_worker({**lspec, "kind": "read", "method": "duckdb_delta_scan", "date": build["probe_date"],
                                   "repeats": args.read_repeats})
                if scan["rows"] != 10 or any(o["files"] != 1 for o in opens):
                    errors.append(f"{label} log table: partition {build['probe_date']} read {scan['rows']} rows,"
                                  f" {opens[0]['files']} file(s) (expected 10 rows, 1 file)")
                if opens[0]["active_files"] != args.log_commits or build["version"] != args.log_commits:
                    errors.append(f"{label} log table: version {build['version']}, {opens[0]['active_files']} files")
                report["log"][label] = {
                    "build": build, "opens": opens, "delta_scan": scan,
                    **{key: median(o[key] for o in opens)
                       for key in ("open_ms", "partition_files_ms", "warm_open_ms", "warm_partition_files_ms")}}
                log(f"(2) {label}: log {build['log_bytes']:,} B in {build['log_files']} files; open"
                    f" {report['log'][label]['open_ms']:.1f} ms")
        report["exact"] = not errors
        report["machine"]["load_end"] = os.getloadavg()[0]
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        out = RESULTS_DIR / f"delta-{stem}.json"
        out.write_text(json.dumps(report, indent=2, default=str))
        print(render(report))
        log(f"results: {out}")
    finally:
        throwaway.remove(args.keep)
    for error in errors:
        log(f"ERROR: {error}")
    return 1 if errors else 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--balances", type=int, default=bst.DEFAULT_BALANCES, help="balances (default 200,000)")
    p.add_argument("--transactions", type=int, default=bst.DEFAULT_TRANSACTIONS,
                   help="transactions (default 1,000,000)")
    p.add_argument("--days", type=int, default=bst.DEFAULT_DAYS, help="days of history (default 30)")
    p.add_argument("--start-date", type=dt.date.fromisoformat, default=bst.DEFAULT_START_DATE)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--batch-size", type=int, default=bst.DEFAULT_BATCH_SIZE, help="batch size (default 1000)")
    p.add_argument("--day-runs", type=int, default=DAY_RUNS, help="runs of day D per storage (default 3)")
    p.add_argument("--log-commits", type=int, default=LOG_COMMITS, help="commits of the log table (default 400)")
    p.add_argument("--s3-log-commits", type=int, default=50,
                   help="of those, the last ones committed on S3 (default 50; the others locally, then uploaded)")
    p.add_argument("--open-runs", type=int, default=OPEN_RUNS, help="fresh interpreters opening it (default 5)")
    p.add_argument("--read-repeats", type=int, default=READ_REPEATS, help="timed reads after the first (default 5)")
    p.add_argument("--smoke", action="store_true", help="tiny size (3k balances, 20k transactions, 5 days,"
                                                        " 1 run of D, 60 commits (10 on S3), 2 opens, 2 reads)")
    add_server_arguments(p)
    args = p.parse_args(argv)
    if args.smoke:
        args.balances, args.transactions, args.days = 3000, 20000, 5
        args.day_runs, args.log_commits, args.s3_log_commits, args.open_runs, args.read_repeats = 1, 60, 10, 2, 2
    return args


def main(argv: list[str] | None = None) -> int:
    return dispatch(argv, parse_args, worker_main, bench_main)


if __name__ == "__main__":
    sys.exit(main())
