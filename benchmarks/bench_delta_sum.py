"""Issue 20 item 1: the day's delta summed in SQL (as the core does) against the legs summed in Arrow.

One command: seeds a throwaway ledger, publishes the day before the last as genesis, then, in the view a
roll-forward of the last day opens (its step staged by key, as ``take_snapshot`` stages it), times, each
``--repeats`` times:

* ``sql_delta``: the core's delta query (``journal.delta_reader``'s statement: the legs summed per balance in
  SQL, the attribute probe of each changed balance, numeric to text, the byte-order sort), fetched as Arrow;
* ``sql_sums``: the same sums and sort without the attribute probes;
* ``attribute_probes``: the attribute probes alone (one per changed balance, by the unique ``balance_id``);
* ``arrow_fetch`` + ``arrow_sum``: the raw legs fetched into Arrow (amounts as text), then cast to decimal256 and
  summed per balance and kind in Arrow.

Prints the medians and the ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time

from _common import Scratch, add_server_arguments, last_two_days, log, seed


def _timed_query(samples: dict, name: str, cur, statement: str):
    """``statement`` executed on ``cur`` and fetched as Arrow, its time added to ``samples[name]``."""
    started = time.perf_counter()
    cur.execute(statement)
    out = cur.fetch_arrow_table()
    samples.setdefault(name, []).append(time.perf_counter() - started)
    return out


def _arrow_sum(raw):
    import pyarrow as pa
    import pyarrow.compute as pc

    legs = raw.filter(pc.is_valid(raw["kind"]))
    amount = pc.cast(legs["amount"], pa.decimal256(60, 0))
    return [pa.table({"balance_id": pc.filter(legs["balance_id"], pc.equal(legs["kind"], kind)),
                      "amount": pc.filter(amount, pc.equal(legs["kind"], kind))})
            .group_by("balance_id").aggregate([("amount", "sum")]) for kind in range(4)]


def measure(settings, day: dt.date, repeats: int) -> dict:
    """The variants, each ``repeats`` times, in a fresh view of the step from ``day``'s base each time."""
    from snapshot_pipeline import calendar, db
    from snapshot_pipeline.ledger import journal
    from snapshot_pipeline.snapshot import roll
    from snapshot_pipeline.store import index

    raw_legs = (f"SELECT balance_id, kind, amount::text AS amount FROM ({journal.LEGS_SQL})"
                " AS l(balance_id, currency, kind, amount)")
    sums_only = f"""WITH legs (balance_id, currency, kind, amount) AS ({journal.LEGS_SQL}
        ), sums AS (SELECT balance_id, min(currency) AS leg_currency,{journal.LEG_SUMS} FROM legs GROUP BY balance_id)
        SELECT balance_id, leg_currency, credit::text, debit::text, inflight_credit::text, inflight_debit::text
          FROM sums ORDER BY balance_id COLLATE "C" """
    probes = """SELECT x.balance_id, x.ledger_id, x.identity_id, x.indicator, x.currency, x.created_at
                  FROM blnk.balances x
                 WHERE x.balance_id IN (SELECT destination FROM roll_tx UNION SELECT source FROM roll_tx)"""
    cutoff = calendar.cutoff(day, settings.timezone)
    samples: dict[str, list[float]] = {}
    with db.connect(db.snapshot_url(settings), autocommit=True) as index_conn:
        origin = roll.origin_of(index_conn, index.nearest_before(index_conn, day))
    for _ in range(repeats):
        conn = db.connect_arrow(db.ledger_url(settings))
        cur = conn.cursor()
        try:
            view = journal.open_view(cur)
            journal.begin_step(cur, view, cutoff, origin)
            cur.execute("SELECT 1")  # warm the session
            cur.fetchall()
            delta = _timed_query(samples, "sql_delta", cur, journal.delta_sql(journal.LEGS_SQL))
            _timed_query(samples, "sql_sums", cur, sums_only)
            _timed_query(samples, "attribute_probes", cur, probes)
            raw = _timed_query(samples, "arrow_fetch", cur, raw_legs)
            started = time.perf_counter()
            _arrow_sum(raw)
            samples.setdefault("arrow_sum", []).append(time.perf_counter() - started)
            cur.execute("COMMIT")
        finally:
            cur.close()
            conn.close()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return {"changed_balances": delta.num_rows, "legs": raw.num_rows, "median_seconds": medians,
            "samples": samples}


def render(out: dict) -> str:
    m = out["median_seconds"]
    arrow = m["arrow_fetch"] + m["arrow_sum"]
    lines = [f"day's delta: {out['changed_balances']:,} changed balances, {out['legs']:,} legs; medians:"]
    lines += [f"  {name:<17} {seconds * 1000:8.0f} ms" for name, seconds in m.items()]
    lines.append(f"  SQL sums + sort vs Arrow fetch + sum: {m['sql_sums'] * 1000:.0f} ms vs {arrow * 1000:.0f} ms"
                 f" ({m['sql_sums'] / arrow:.2f}x); the core's whole delta query: {m['sql_delta'] * 1000:.0f} ms,"
                 f" of which the attribute probes alone take {m['attribute_probes'] * 1000:.0f} ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--balances", type=int, default=300_000)
    p.add_argument("--transactions", type=int, default=1_500_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--start-date", type=dt.date.fromisoformat, default=dt.date(2025, 1, 1))
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--repeats", type=int, default=4)
    add_server_arguments(p, worker=False)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    from snapshot_pipeline.settings import load_settings
    from snapshot_pipeline.snapshot import take_snapshot

    throwaway = Scratch.create(args, "bench_delta_sum")
    try:
        seed(throwaway.url, args.balances, args.transactions, args.days, args.seed, args.start_date)
        settings = load_settings({"LEDGER_DATABASE_URL": throwaway.url, "SNAPSHOT_DATABASE_URL": throwaway.url,
                                  "SNAPSHOT_STORAGE_URI": str(throwaway.work / "store"),
                                  "SNAPSHOT_HOME": str(throwaway.work), "SNAPSHOT_TIMEZONE": "UTC",
                                  "SNAPSHOT_START_DATE": args.start_date.isoformat()})
        base_day, last_day = last_two_days(args)
        log(f"genesis {base_day} ...")
        take_snapshot(settings, base_day, 1000, log=lambda message: None)
        log(f"the step of {last_day}, {args.repeats} times ...")
        print(render(measure(settings, last_day, args.repeats)))
    finally:
        throwaway.remove(args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
