"""Query plans in tests: a real ADBC cursor that asks PostgreSQL for the plan of each statement it runs, and
the one assertion that a statement reads ``blnk.*`` through primary or unique keys only."""

from __future__ import annotations

import json

# Blnk's primary and unique keys (DESIGN §2): the only indexes the pipeline may read the ledger through.
KEY_INDEXES = {"transactions_pkey", "transactions_transaction_id_key", "balances_pkey", "balances_balance_id_key"}
LEDGER_TABLES = ("transactions", "balances")

PLAN_FUNCTION = """
    CREATE OR REPLACE FUNCTION pg_temp.plan_of(statement text) RETURNS json LANGUAGE plpgsql AS $$
    DECLARE plan json;
    BEGIN EXECUTE 'EXPLAIN (FORMAT JSON) ' || statement INTO plan; RETURN plan; END $$"""


class ExplainingCursor:
    """A real ADBC cursor that asks PostgreSQL for the plan of each statement before running it."""

    EXPLAINABLE = ("select", "with", "create temp table")

    def __init__(self, cur):
        self._cur = cur
        self.plans: list[tuple[str, dict]] = []
        self.executed: list[tuple[str, object]] = []  # (statement, parameters) as the code ran them

    def execute(self, sql, parameters=None):
        self.executed.append((sql, parameters))
        if sql.lstrip().lower().startswith(self.EXPLAINABLE):
            if not self.plans:
                self._cur.execute(PLAN_FUNCTION)
            self._cur.execute("SELECT pg_temp.plan_of($1)::text", parameters=(inline(sql, parameters),))
            self.plans.append((sql, json.loads(self._cur.fetchone()[0])))
        return self._cur.execute(sql, parameters=parameters)

    def plan_of(self, sql: str) -> dict:
        """The plan of the first run of ``sql`` (its root node)."""
        return next(plan[0]["Plan"] for statement, plan in self.plans if statement == sql)

    def __getattr__(self, name):
        return getattr(self._cur, name)


def inline(sql: str, parameters) -> str:
    """The statement with its parameters as literals (EXPLAIN of a parameterized statement needs values)."""
    for n in range(len(parameters or ()), 0, -1):
        value = parameters[n - 1]
        literal = str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"
        sql = sql.replace(f"${n}", literal)
    return sql


def nodes(node: dict):
    """A plan node and every node below it."""
    yield node
    for child in node.get("Plans", []):
        yield from nodes(child)


def _limited(node: dict) -> set[int]:
    """The ids of the nodes directly under a Limit in ``node``'s tree (such as ``max(id)`` read as the last
    entry of a key index: one row, whatever index condition the server version prints)."""
    found = set()
    for parent in nodes(node):
        if parent.get("Node Type") == "Limit":
            found.update(id(child) for child in parent.get("Plans", []))
    return found


def assert_ledger_read_by_key(plans: list[tuple[str, dict]], *, probes_only: bool = False,
                              bitmap_scans: bool = True) -> int:
    """Every scan of ``blnk.transactions``/``blnk.balances`` in ``plans`` goes through a primary or unique key
    (with ``bitmap_scans``, a bitmap scan through one too). With ``probes_only``, each index scan is also bounded
    by an index condition or a Limit: a probe, a key range or one end of a key, never a walk of a whole index.
    Returns how many scans of those tables the plans hold."""
    allowed = ("Index Scan", "Index Only Scan") + (("Bitmap Heap Scan",) if bitmap_scans else ())
    touched = 0
    for sql, plan in plans:
        bounded = _limited(plan[0]["Plan"])
        for node in nodes(plan[0]["Plan"]):
            if node.get("Relation Name") in LEDGER_TABLES:
                touched += 1
                where = f"{node['Node Type']} on blnk.{node['Relation Name']} in: {sql[:200]}"
                assert node["Node Type"] in allowed, where
                if node["Node Type"] != "Bitmap Heap Scan":
                    assert node["Index Name"] in KEY_INDEXES, f"{node['Index Name']}: {where}"
                    assert not probes_only or "Index Cond" in node or id(node) in bounded, (
                        f"a whole index walked: {where}")
            if node.get("Node Type") == "Bitmap Index Scan" and not node["Index Name"].startswith("roll_"):
                assert node["Index Name"] in KEY_INDEXES, f"{node['Index Name']} in: {sql[:200]}"
                assert not probes_only or "Index Cond" in node, f"a whole index walked: {sql[:200]}"
    return touched
