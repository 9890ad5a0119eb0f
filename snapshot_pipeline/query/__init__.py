"""Balances at any instant, exact: ``balance_at``, ``balances_at``, ``balance_change``.

The contract (DESIGN §3): the value of balance ``b`` at instant ``T`` is the sum over
``S_T`` = {journal rows visible now whose effective time ``COALESCE(effective_date,
created_at)`` is ``<= T``}:

* ``credit_balance`` / ``debit_balance``: APPLIED legs with destination / source ``b``;
* ``inflight_credit_balance`` / ``inflight_debit_balance``: the open amounts of INFLIGHT rows in
  ``S_T`` with destination / source ``b`` (``precise_amount`` minus their APPLIED and VOID children
  in ``S_T``); a child counts against a parent only when the parent is itself in ``S_T``, and an
  APPLIED child also counts as an ordinary APPLIED leg;
* ``balance = credit - debit``, ``inflight_balance = inflight_credit - inflight_debit``;
* the balance *existed* at ``T`` iff its ``created_at <= T``; before that every amount is 0.

How an answer is built (no replay from genesis):

1. the **anchor** ``X`` is the latest published partition whose cutoff ``C_X <= T``; its value for
   ``b`` is the latest index row of ``b`` at or before ``X`` (one index seek). ``X`` summed
   ``S_X = {id <= W_X and effective < C_X}`` (``W_X`` = its watermark);
2. the **replay** adds the legs of ``S_T \\ S_X`` touching ``b``: effective time in ``[C_X, T]``,
   or ``id > W_X`` with effective time before ``C_X`` (late and backdated rows the snapshot could
   not see), so an answer is exact before any repair run. For the inflight columns it also
   replays new commits/voids of holds in ``S_T`` and old commits/voids (in ``S_X``) of new holds;
3. a balance without an index row at ``X`` (created at or after ``C_X``, or created before it but
   recorded after ``X`` was read) is replayed from zero over all of its legs in ``S_T``.

Per-balance replay finds the legs of ``b`` with the journal's ``(source, ...)`` and
``(destination, ...)`` indexes; ``snapshot-pipeline ledger-indexes`` offers composite indexes that
make it proportional to the legs since the anchor (:mod:`snapshot_pipeline.ledger.indexes`).
New commits and voids are found among ``b``'s own legs: like Blnk, a commit or void of an inflight
transaction carries its parent's source and destination. ``from_source=True`` replays from
genesis and needs no such assumption.

Limits: a journal row whose id is at or below ``W_X`` but which committed after ``X``'s read
(a writer in flight while the snapshot was read) is not seen by the replay; the snapshot's
staleness scan (:mod:`snapshot_pipeline.quality.lateness`, the repair sensor's) reports it and a
re-materialization fixes it.

Modules: :mod:`.instants` (parsing and printing instants), :mod:`.answers` (answer types and Blnk's
shapes), :mod:`.sql` (the replay statements), :mod:`.engine` (the pooled engine), :mod:`.hot` (busy
balances answered from their legs in memory, kept exact by primary-key probes), :mod:`.sets`
(``balances_at`` as an Arrow table), :mod:`.errors`.
"""

from snapshot_pipeline.query.answers import (
                                              Anchor,
                                              BalanceAt,
                                              BalanceChange,
                                              check_representable,
)
from snapshot_pipeline.query.engine import QueryEngine, balance_at
from snapshot_pipeline.query.errors import AmountOverflow, BalanceNotFound, QueryError
from snapshot_pipeline.query.history import MAX_HISTORY_DAYS, EndOfDay, end_of_day_history
from snapshot_pipeline.query.instants import (
                                              FIRST_INSTANT,
                                              INSTANT_RANGE,
                                              LAST_INSTANT,
                                              MICROSECOND,
                                              blnk_timestamp,
                                              iso_utc,
                                              just_before,
                                              parse_timestamp,
                                              to_utc,
                                              utc_now,
)
from snapshot_pipeline.query.sets import OUTPUT_SCHEMA, balances_at_table

__all__ = [
    "FIRST_INSTANT", "INSTANT_RANGE", "LAST_INSTANT", "MAX_HISTORY_DAYS", "MICROSECOND", "OUTPUT_SCHEMA",
    "AmountOverflow", "Anchor", "BalanceAt", "BalanceChange", "BalanceNotFound", "EndOfDay", "QueryEngine",
    "QueryError", "balance_at", "balances_at_table", "blnk_timestamp", "check_representable", "end_of_day_history",
    "iso_utc", "just_before", "parse_timestamp", "to_utc", "utc_now",
]
