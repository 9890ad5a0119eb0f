"""The two statements behind ``balance_at``, written out in full (no SQL is built by string formatting).

Both take ``%(b)s`` (the balance id) and ``%(t)s`` (the instant, naive UTC); effective time is
``COALESCE(effective_date, created_at)``. Each returns one row (none when the balance does not
exist): currency, ledger_id, created_at, anchored, credit, debit, inflight credit, inflight debit,
legs replayed.
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

# From genesis, written independently of the anchor logic: every leg of b in S_T, every hold's
# children in S_T (whatever their own source and destination).
GENESIS_SQL = """
WITH bal AS (
    SELECT balance_id, currency, ledger_id, created_at FROM blnk.balances WHERE balance_id = %(b)s
),
legs AS (
    SELECT t.transaction_id, t.source, t.destination, t.status, COALESCE(t.precise_amount, 0) AS amount
    FROM blnk.transactions t
    WHERE (t.source = %(b)s OR t.destination = %(b)s) AND t.status IN ('APPLIED', 'INFLIGHT')
      AND COALESCE(t.effective_date, t.created_at) <= %(t)s::timestamp
),
open_holds AS (
    SELECT h.source, h.destination, h.amount - COALESCE((
        SELECT sum(COALESCE(c.precise_amount, 0)) FROM blnk.transactions c
        WHERE c.parent_transaction = h.transaction_id AND c.status IN ('APPLIED', 'VOID')
          AND COALESCE(c.effective_date, c.created_at) <= %(t)s::timestamp), 0) AS open_amount
    FROM legs h WHERE h.status = 'INFLIGHT'
)
SELECT bal.currency, bal.ledger_id, bal.created_at, false AS anchored,
       (SELECT COALESCE(sum(amount), 0) FROM legs WHERE status = 'APPLIED' AND destination = %(b)s),
       (SELECT COALESCE(sum(amount), 0) FROM legs WHERE status = 'APPLIED' AND source = %(b)s),
       (SELECT COALESCE(sum(open_amount), 0) FROM open_holds WHERE destination = %(b)s),
       (SELECT COALESCE(sum(open_amount), 0) FROM open_holds WHERE source = %(b)s),
       (SELECT count(*) FROM legs)
FROM bal
"""
