"""The statements behind ``balance_at``, written out in full (no SQL is built by string formatting).

``REPLAY_SQL`` takes ``%(b)s`` (the balance id) and ``%(t)s`` (the instant, naive UTC) and returns one row
(none when the balance does not exist): currency, ledger_id, created_at, anchored, credit, debit, inflight
credit, inflight debit, legs replayed. ``GENESIS_SQL`` is the from-genesis sum of a set of balances (see
its comment). Effective time is ``COALESCE(effective_date, created_at)``.
"""

# The legs of S_T \ S_X, where X is the anchor partition (cutoff %(c)s, watermark %(w)s): effective in
# [c, T], or (late rows) id > w with effective < c. ``%(anchored)s`` says whether the index holds a row
# for b at the anchor; the window falls back to genesis (c = -infinity, w = 0) when it does not.
# Inflight: minus (a) commits/voids in S_T \ S_X among b's legs of INFLIGHT parents in S_T holding on b,
# and minus (b) commits/voids already in S_X of INFLIGHT parents new in S_T. ``src`` and ``dst`` read
# the journal through Blnk's (source) and (destination) indexes respectively.
REPLAY_SQL = """
WITH bal AS (
    SELECT balance_id, currency, ledger_id, created_at FROM blnk.balances WHERE balance_id = %(b)s
),
win AS (
    SELECT CASE WHEN %(anchored)s THEN %(c)s::timestamp ELSE '-infinity'::timestamp END AS c,
           CASE WHEN %(anchored)s THEN %(w)s::bigint ELSE 0 END AS w
    FROM bal
),
src AS (
    SELECT t.id, t.transaction_id, t.status, t.parent_transaction, COALESCE(t.precise_amount, 0) AS amount
      FROM blnk.transactions t
     WHERE t.source = %(b)s AND t.status IN ('APPLIED', 'INFLIGHT', 'VOID')
       AND COALESCE(t.effective_date, t.created_at) >= (SELECT c FROM win)
       AND COALESCE(t.effective_date, t.created_at) <= %(t)s::timestamp
    UNION ALL
    SELECT t.id, t.transaction_id, t.status, t.parent_transaction, COALESCE(t.precise_amount, 0) AS amount
      FROM blnk.transactions t
     WHERE t.source = %(b)s AND t.status IN ('APPLIED', 'INFLIGHT', 'VOID')
       AND t.id > (SELECT w FROM win) AND COALESCE(t.effective_date, t.created_at) < (SELECT c FROM win)
       AND (SELECT c FROM win) > '-infinity'::timestamp
),
dst AS (
    SELECT t.id, t.transaction_id, t.status, t.parent_transaction, COALESCE(t.precise_amount, 0) AS amount
      FROM blnk.transactions t
     WHERE t.destination = %(b)s AND t.status IN ('APPLIED', 'INFLIGHT', 'VOID')
       AND COALESCE(t.effective_date, t.created_at) >= (SELECT c FROM win)
       AND COALESCE(t.effective_date, t.created_at) <= %(t)s::timestamp
    UNION ALL
    SELECT t.id, t.transaction_id, t.status, t.parent_transaction, COALESCE(t.precise_amount, 0) AS amount
      FROM blnk.transactions t
     WHERE t.destination = %(b)s AND t.status IN ('APPLIED', 'INFLIGHT', 'VOID')
       AND t.id > (SELECT w FROM win) AND COALESCE(t.effective_date, t.created_at) < (SELECT c FROM win)
       AND (SELECT c FROM win) > '-infinity'::timestamp
)
SELECT bal.currency, bal.ledger_id, bal.created_at, win.c > '-infinity'::timestamp AS anchored,
       (SELECT COALESCE(sum(amount), 0) FROM dst WHERE status = 'APPLIED') AS credit,
       (SELECT COALESCE(sum(amount), 0) FROM src WHERE status = 'APPLIED') AS debit,
       (SELECT COALESCE(sum(amount), 0) FROM dst WHERE status = 'INFLIGHT')
         - (SELECT COALESCE(sum(c.amount), 0) FROM dst c
              JOIN blnk.transactions p ON p.transaction_id = c.parent_transaction
             WHERE c.status IN ('APPLIED', 'VOID') AND c.parent_transaction IS NOT NULL
               AND p.status = 'INFLIGHT' AND p.destination = %(b)s
               AND COALESCE(p.effective_date, p.created_at) <= %(t)s::timestamp)
         - (SELECT COALESCE(sum(COALESCE(c.precise_amount, 0)), 0) FROM dst p
              JOIN blnk.transactions c ON c.parent_transaction = p.transaction_id
             WHERE p.status = 'INFLIGHT' AND c.status IN ('APPLIED', 'VOID') AND c.id <= (SELECT w FROM win)
               AND COALESCE(c.effective_date, c.created_at) < (SELECT c FROM win)) AS inflight_credit,
       (SELECT COALESCE(sum(amount), 0) FROM src WHERE status = 'INFLIGHT')
         - (SELECT COALESCE(sum(c.amount), 0) FROM src c
              JOIN blnk.transactions p ON p.transaction_id = c.parent_transaction
             WHERE c.status IN ('APPLIED', 'VOID') AND c.parent_transaction IS NOT NULL
               AND p.status = 'INFLIGHT' AND p.source = %(b)s
               AND COALESCE(p.effective_date, p.created_at) <= %(t)s::timestamp)
         - (SELECT COALESCE(sum(COALESCE(c.precise_amount, 0)), 0) FROM src p
              JOIN blnk.transactions c ON c.parent_transaction = p.transaction_id
             WHERE p.status = 'INFLIGHT' AND c.status IN ('APPLIED', 'VOID') AND c.id <= (SELECT w FROM win)
               AND COALESCE(c.effective_date, c.created_at) < (SELECT c FROM win)) AS inflight_debit,
       (SELECT count(*) FROM (SELECT id FROM src UNION SELECT id FROM dst) ids) AS legs
FROM bal CROSS JOIN win
"""

# From genesis, written independently of the anchor logic, for a set of balances: every leg of each in S_T
# (only journal ids <= %(w)s: the sampled recomputation also asks what a partition's read could see), every
# hold's children in S_T (whatever their own source and destination). Takes ``%(ids)s`` (text[]), ``%(t)s``
# (inclusive, naive UTC) and ``%(w)s``. One row per id, found or not: balance_id, found, currency,
# ledger_id, created_at, credit, debit, inflight credit, inflight debit, legs (journal rows touching it).
# The one from-genesis recomputation: ``balance_at(from_source=True)`` and the sampled recomputation check.
GENESIS_SQL = """
WITH ids AS (SELECT unnest(%(ids)s::text[]) AS balance_id),
tx AS (
    SELECT t.transaction_id, t.source, t.destination, t.status, COALESCE(t.precise_amount, 0) AS amount
      FROM blnk.transactions t
     WHERE (t.source = ANY(%(ids)s::text[]) OR t.destination = ANY(%(ids)s::text[]))  -- BitmapOr of two indexes
       AND t.status IN ('APPLIED', 'INFLIGHT') AND t.id <= %(w)s
       AND COALESCE(t.effective_date, t.created_at) <= %(t)s::timestamp
),
released AS (
    SELECT c.parent_transaction, sum(COALESCE(c.precise_amount, 0)) AS amount
      FROM blnk.transactions c
     WHERE c.parent_transaction IN (SELECT transaction_id FROM tx WHERE status = 'INFLIGHT')
       AND c.status IN ('APPLIED', 'VOID') AND c.id <= %(w)s
       AND COALESCE(c.effective_date, c.created_at) <= %(t)s::timestamp
     GROUP BY 1
),
holds AS (
    SELECT p.source, p.destination, p.amount - COALESCE(r.amount, 0) AS amount
      FROM tx p LEFT JOIN released r ON r.parent_transaction = p.transaction_id
     WHERE p.status = 'INFLIGHT'
),
legs AS (  -- a row touching a balance on both sides is one leg of it (the source side counts 0)
    SELECT destination AS balance_id, amount AS credit, 0 AS debit, 0 AS held_in, 0 AS held_out, 1 AS legs
      FROM tx WHERE status = 'APPLIED'
    UNION ALL SELECT source, 0, amount, 0, 0, CASE WHEN source IS DISTINCT FROM destination THEN 1 ELSE 0 END
      FROM tx WHERE status = 'APPLIED'
    UNION ALL SELECT destination, 0, 0, amount, 0, 1 FROM holds
    UNION ALL SELECT source, 0, 0, 0, amount, CASE WHEN source IS DISTINCT FROM destination THEN 1 ELSE 0 END
      FROM holds
)
SELECT i.balance_id, b.balance_id IS NOT NULL AS found, b.currency, b.ledger_id, b.created_at,
       COALESCE(sum(l.credit), 0), COALESCE(sum(l.debit), 0),
       COALESCE(sum(l.held_in), 0), COALESCE(sum(l.held_out), 0), COALESCE(sum(l.legs), 0)
  FROM ids i
  LEFT JOIN blnk.balances b ON b.balance_id = i.balance_id  -- unique (balance_id)
  LEFT JOIN legs l ON l.balance_id = i.balance_id
 GROUP BY i.balance_id, b.balance_id, b.currency, b.ledger_id, b.created_at
"""

# Every journal id: a watermark that hides nothing (what is visible now).
ALL_IDS = 2**62
