"""Every hand-written statement of the labeler loop, named, with why it is written as it is.

The runner (labeling/sql/__init__.py) says why these are SQL strings instead of querysets and how
they run on both backends. The names passed to the runner (`name="il_..."`) make PostgreSQL
prepare a statement once per connection; a statement that is formatted differently per call
(a `{tried}` list, a lock clause) runs under one name per shape, or unnamed.

Placeholders: `%s` are parameters; `{...}` are filled by the caller before running: a row-lock
clause (`sql.lock`, nothing on SQLite), a backend's dialect, or a model's columns
(`sql.columns(Model, alias)`, so that a new field is read without editing the statement and
`sql.instance` can build the model from the row).
"""

from __future__ import annotations

# --- the claim (queue.claim) ------------------------------------------------------------------

# Lets a transaction's commit return before its WAL reaches disk (PostgreSQL only). Only for
# lease bookkeeping (claim, heartbeat): if the server crashes in that instant the lease is gone
# and the labeler claims again; nothing they entered is lost. Submits never use this: they commit
# durably. Saves one fsync per claim, the largest single cost of the labeler loop.
COMMIT_MAY_LAG = "SET LOCAL synchronous_commit TO OFF"

# One claim at a time per (labeler, project, kind), PostgreSQL only: a transaction-scoped
# advisory lock (memory only: no row is written, no WAL), keyed by queue._claim_key. Prepared, and
# sent in the round trip of HELD, just before it: HELD then runs with a snapshot taken once the
# lock is held, so of a labeler's concurrent `next` calls (a double click, two tabs, a retrying
# script) the second finds the lease the first took and gets it back, instead of a task of its
# own. SQLite serialises the claims anyway (BEGIN IMMEDIATE). The reclaim of an expired lease
# takes it too.
CLAIM_LOCK = "SELECT pg_advisory_xact_lock(%s, %s)"

# Leases that occupy a slot, per lease row h: submitted, or active and not yet expired
# (queue._holding is the same rule for the ORM).
HOLDING = "(h.status = 'submitted' OR (h.status = 'active' AND h.expires_at > %s))"

# The user's unexpired active lease of this kind in the project, if any: a refresh or a double
# click on "next" gets it back instead of taking a second slot (under CLAIM_LOCK).
HELD = """
    SELECT l.id FROM labeling_lease l JOIN labeling_task t ON t.id = l.task_id
    WHERE l.user_id = %s AND t.project_id = %s AND t.kind = %s
      AND l.status = 'active' AND l.expires_at > %s
    ORDER BY l.created_at, l.id LIMIT 1"""

# Open tasks of the kind with a free slot that this user has not finished, skipped or written the
# prompt of; `mine` is the user's own (expired, still active) lease on it, if any. NOT IN, not
# NOT EXISTS: PostgreSQL hashes the user's finished tasks once per query instead of probing per
# task, so a labeler deep into the queue does not re-scan everything they already did.
# `{tried}` excludes tasks this claim already found full, `{holding}` is HOLDING, `{lock}` the
# row lock (FOR UPDATE OF t, with or without SKIP LOCKED).
CANDIDATE = """
    SELECT t.id, t.overlap,
           (SELECT m.id FROM labeling_lease m WHERE m.task_id = t.id AND m.user_id = %s) AS mine
    FROM labeling_task t JOIN labeling_prompt p ON p.id = t.prompt_id
    WHERE t.project_id = %s AND t.kind = %s AND NOT t.done {tried}
      AND (p.submitted_by_id IS NULL OR p.submitted_by_id <> %s)
      AND t.id NOT IN (SELECT m.task_id FROM labeling_lease m
                       WHERE m.user_id = %s AND m.status <> 'active')
      AND (SELECT COUNT(*) FROM labeling_lease h WHERE h.task_id = t.id AND {holding}) < t.overlap
    ORDER BY t.priority DESC, t.id
    LIMIT 1{lock}"""

# The task's held slots.
TAKEN = f"SELECT COUNT(*) FROM labeling_lease h WHERE h.task_id = %s AND {HOLDING}"  # noqa: S608

# The user's own expired lease, re-activated in place (after a re-count under the task's lock).
LEASE_REACTIVATE = "UPDATE labeling_lease SET expires_at = %s, heartbeat_at = %s WHERE id = %s"

# The lease, inserted only if the task still has a free slot: the count runs in this statement,
# after the candidate statement took the task's row lock, so it sees every claim committed before
# (READ COMMITTED: a statement's snapshot is taken when it starts). The labeler's order of the
# outputs is shuffled by the database as it copies them (none for a demonstration): `{shuffled}`
# is SHUFFLED_OUTPUTS of the backend, `{returning}` the columns the claim reads back.
SHUFFLED_OUTPUTS = {
    "postgresql": """COALESCE((SELECT json_agg(tc.completion_id ORDER BY random())
                              FROM labeling_taskcompletion tc WHERE tc.task_id = %s), '[]')::jsonb""",
    "sqlite": """(SELECT json_group_array(completion_id) FROM (
                    SELECT tc.completion_id FROM labeling_taskcompletion tc
                    WHERE tc.task_id = %s ORDER BY random()))""",
}
LEASE_INSERT = f"""
    INSERT INTO labeling_lease (task_id, user_id, status, shown_order, created_at, expires_at,
                                heartbeat_at, submitted_at, skip_reason)
    SELECT %s, %s, 'active', {{shuffled}}, %s, %s, %s, NULL, ''
    WHERE ({TAKEN}) < %s
    RETURNING {{returning}}"""  # noqa: S608

# --- what a labeler is asked to do (selectors.lease_task) --------------------------------------

# What a labeler is asked to do under a lease, a row per output of its task (selectors.lease_task
# turns the rows into the API's answer). `{lease}` is the lease relation: the table, or on
# PostgreSQL the claim's INSERT ... RETURNING, so that a claim and its answer are one statement.
LEASE_TASK_COLUMNS = "id, status, expires_at, task_id, shown_order"
LEASE_TASK = """
    SELECT l.id, l.status, l.expires_at, l.task_id, l.shown_order, t.kind, p.id, p.messages,
           pr.flags, pr.k,
           (SELECT d.text FROM labeling_demonstrationdraft d WHERE d.lease_id = l.id),
           c.id, c.text
    FROM {lease} l
    JOIN labeling_task t ON t.id = l.task_id
    JOIN labeling_prompt p ON p.id = t.prompt_id
    JOIN labeling_project pr ON pr.id = t.project_id
    LEFT JOIN labeling_taskcompletion tc ON tc.task_id = t.id
    LEFT JOIN labeling_completion c ON c.id = tc.completion_id
    {where}"""
# One lease's task, read from the table (the lease detail, and `next` when it returns a held lease
# or runs on SQLite).
LEASE_TASK_BY_ID = LEASE_TASK.format(lease="labeling_lease", where="WHERE l.id = %s")
# PostgreSQL: the claim's INSERT (LEASE_INSERT, as `{insert}`) and its answer in one statement.
LEASE_CLAIM = "WITH l AS ({insert}) " + LEASE_TASK.format(lease="l", where="")

# --- who may see or do what (labeling/access.py) -----------------------------------------------

# The caller's membership and its project, by project id or by slug (`{where}` is one of the two
# below): every API call and page of a project starts here (access.membership_require).
MEMBERSHIP = (
    "SELECT {membership}, {project}"
    " FROM labeling_membership m JOIN labeling_project p ON p.id = m.project_id"
    " WHERE m.user_id = %s AND {where}"
)
MEMBERSHIP_BY_ID = "m.project_id = %s"
MEMBERSHIP_BY_SLUG = "p.slug = %s"

# The own-lease rule, the one definition of "this lease is yours" (access.own_lease_row): the
# lease `l` (of task `t`) is the user's and they are still a member of its project, any role;
# anyone else's lease, or one in a project they left, is not found. Parameters: the lease id,
# the user id twice and the three roles (access.own_lease_row).
OWN_LEASE = """l.id = %s AND l.user_id = %s
      AND EXISTS (SELECT 1 FROM labeling_membership m
                  WHERE m.project_id = t.project_id AND m.user_id = %s AND m.role IN (%s, %s, %s))"""

# The user's lease with its task, prompt and project, unlocked (the task page, the API's lease
# detail).
OWN_LEASE_READ = f"""
    SELECT {{lease}}, {{task}}, {{project}}, {{prompt}}
    FROM labeling_lease l
    JOIN labeling_task t ON t.id = l.task_id
    JOIN labeling_project pr ON pr.id = t.project_id
    JOIN labeling_prompt p ON p.id = t.prompt_id
    WHERE {OWN_LEASE}"""  # noqa: S608

# The user's lease, row-locked (`{lock}`: the lease's row, or the lease's and its task's for a
# submit), with its task and the project settings the queue and the submits read (queue.py).
OWN_LEASE_LOCK = f"""
    SELECT {{lease}}, {{task}}, pr.k, pr.flags, pr.lease_seconds
    FROM labeling_lease l
    JOIN labeling_task t ON t.id = l.task_id
    JOIN labeling_project pr ON pr.id = t.project_id
    WHERE {OWN_LEASE}
    {{lock}}"""  # noqa: S608

# --- the submits (queue.insert_ranking, queue.mark_submitted) ---------------------------------

RANKING_INSERT = (
    "INSERT INTO labeling_ranking (task_id, labeler_id, lease_id, none_acceptable, notes,"
    " time_spent_ms, shown_order, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    " RETURNING id"
)
# `{values}`: one row of placeholders per entry.
ENTRIES_INSERT = (
    "INSERT INTO labeling_rankingentry (ranking_id, completion_id, rank, likert, flags)"
    " VALUES {values} RETURNING id, ranking_id"
)
# PostgreSQL: the ranking, its entries and the lease's close in one statement (data-modifying
# WITH). The entries take the new ranking's id from its RETURNING; the foreign keys are checked
# at the end of the statement, when the ranking row exists.
RANKING_SUBMIT_PG = f"""
    WITH r AS ({RANKING_INSERT}),
         u AS (UPDATE labeling_lease SET status = 'submitted', submitted_at = %s WHERE id = %s)
    {ENTRIES_INSERT}"""  # noqa: S608

# A submit closes its lease (the caller holds the lease's row lock).
LEASE_SUBMITTED = "UPDATE labeling_lease SET status = 'submitted', submitted_at = %s WHERE id = %s"

# Marks the task done once every slot is submitted. It runs after lock_for_submit took the task's
# row lock, so its count (a snapshot taken when this statement starts) sees every submit of the
# task that committed before; and the submit after ours waits for our lock and then sees ours.
TASK_DONE = """
    UPDATE labeling_task SET done = %s
    WHERE id = %s AND NOT done
      AND (SELECT COUNT(*) FROM labeling_lease WHERE task_id = %s AND status = 'submitted')
          >= overlap"""

# --- the API's token authentication (labeling/api/authentication.py) --------------------------

# DRF's TokenAuthentication looks up the token, then its user: here one statement, paid by every
# call of the labeler loop. The token is found by the SHA-256 of the key sent (only digests are
# stored: accounts/services.py), through its unique index; expiry is checked on the row read.
# The tables are the models' (`{token_table}`, `{user_table}`).
TOKEN_USER = (
    "SELECT {token}, {user}"  # noqa: S105 - a statement, not a password
    " FROM {token_table} t JOIN {user_table} u ON u.id = t.user_id"
    " WHERE t.digest = %s"
)

# --- the reviewer dashboard's aggregates (training/review.py) ---------------------------------

# Every figure of the evaluation dashboard (win rates, Bradley–Terry ratings, Likert means, flag
# rates) depends on the judgements only through the counts below, grouped here so that 10^6
# comparisons and 4·10^6 ranked outputs never come to Python as rows (labeling/stats.py has the
# count-based statistics and their parity tests). Each counts rows up to a watermark id (`c.id <=
# %s`), the highest id when the snapshot began, so the counts of one snapshot agree and "how many
# since" is an indexed range. Comparisons and outputs are reached through their task's project.

# PostgreSQL only, for the transaction that counts: these few large scans gain nothing from
# JIT compilation, which cost ~4 s per statement at 10^6 comparisons.
NO_JIT = "SET LOCAL jit = off"

# The highest id of a table: the watermark of a snapshot (the primary key's index, one probe).
MAX_COMPARISON_ID = "SELECT COALESCE(MAX(id), 0) FROM labeling_comparison"
MAX_ENTRY_ID = "SELECT COALESCE(MAX(id), 0) FROM labeling_rankingentry"

# Per ordered pair of model versions (side a, side b), outcome and bin of normalised length
# difference d = (len_a − len_b)/(len_a + len_b) (lengths in characters, as Python's len): how
# many, Σd and Σd². Plain Bradley–Terry sums the bins; the length-controlled fit uses each
# group's mean d (stats.bradley_terry_draws). `{bins}` is the bins per unit of d. MATERIALIZED
# (PostgreSQL 12+, SQLite 3.35+): d is computed as the joined rows come, and only the narrow
# rows are grouped; inlined, PostgreSQL sorted the rows with both answers' text in them and
# spilled 0.4 GB to disk at 10^6 comparisons (15 s against 6 s).
REVIEW_VERDICTS = """
    WITH v AS MATERIALIZED (
        SELECT ca.model_version_id AS model_a, cb.model_version_id AS model_b, c.winner,
               CASE WHEN length(ca.text) + length(cb.text) > 0
                    THEN CAST(length(ca.text) - length(cb.text) AS DOUBLE PRECISION)
                         / (length(ca.text) + length(cb.text))
                    ELSE 0 END AS d
        FROM labeling_comparison c
        JOIN labeling_task t ON t.id = c.task_id
        JOIN labeling_completion ca ON ca.id = c.a_completion_id
        JOIN labeling_completion cb ON cb.id = c.b_completion_id
        WHERE t.project_id = %s AND c.id <= %s)
    SELECT v.model_a, v.model_b, v.winner, COUNT(*), SUM(v.d), SUM(v.d * v.d)
    FROM v
    GROUP BY v.model_a, v.model_b, v.winner, ROUND(v.d * {bins})"""

# The prompt clusters of the win-rate bootstrap, per unordered pair of model versions (lo < hi
# by id): each prompt's score of `lo` in half points (2 a win, 1 a tie or both bad) and its
# judgements, then how many prompts share each (score, judgements) signature. Prompts with the
# same signature are exchangeable in the bootstrap (stats.win_rate_from_counts), and there are
# few signatures, where there are as many prompts as comparisons.
REVIEW_CLUSTERS = """
    SELECT s.lo, s.hi, s.half, s.n, COUNT(*)
    FROM (SELECT v.lo, v.hi, v.prompt_id, SUM(v.half) AS half, COUNT(*) AS n
          FROM (SELECT CASE WHEN ca.model_version_id < cb.model_version_id
                            THEN ca.model_version_id ELSE cb.model_version_id END AS lo,
                       CASE WHEN ca.model_version_id < cb.model_version_id
                            THEN cb.model_version_id ELSE ca.model_version_id END AS hi,
                       t.prompt_id,
                       CASE WHEN (c.winner = 'a') = (ca.model_version_id < cb.model_version_id)
                                 AND c.winner IN ('a', 'b') THEN 2
                            WHEN c.winner IN ('a', 'b') THEN 0
                            ELSE 1 END AS half
                FROM labeling_comparison c
                JOIN labeling_task t ON t.id = c.task_id
                JOIN labeling_completion ca ON ca.id = c.a_completion_id
                JOIN labeling_completion cb ON cb.id = c.b_completion_id
                WHERE t.project_id = %s AND c.id <= %s
                  AND ca.model_version_id <> cb.model_version_id) v
          GROUP BY v.lo, v.hi, v.prompt_id) s
    GROUP BY s.lo, s.hi, s.half, s.n"""

# Per model version: the sum of its outputs' Likert scores and how many were rated.
REVIEW_LIKERT = """
    SELECT co.model_version_id, SUM(e.likert), COUNT(*)
    FROM labeling_rankingentry e
    JOIN labeling_ranking r ON r.id = e.ranking_id
    JOIN labeling_task t ON t.id = r.task_id
    JOIN labeling_completion co ON co.id = e.completion_id
    WHERE t.project_id = %s AND e.id <= %s
    GROUP BY co.model_version_id"""

# Per model version and flag: how many rated outputs carry it (an output once, however often it
# repeats the flag: DISTINCT). `{elements}` is REVIEW_FLAG_ELEMENTS of the backend: the flags
# array as rows of a column `value`, and a guard for a value that is not an array. Outputs
# without flags (most) are left out before the joins: 5 s instead of 17 s at 4·10^6 outputs.
REVIEW_FLAGS = """
    SELECT f.model_version_id, f.flag, COUNT(*)
    FROM (SELECT DISTINCT e.id, co.model_version_id, j.value AS flag
          FROM labeling_rankingentry e
          JOIN labeling_ranking r ON r.id = e.ranking_id
          JOIN labeling_task t ON t.id = r.task_id
          JOIN labeling_completion co ON co.id = e.completion_id
          {elements}
          WHERE t.project_id = %s AND e.id <= %s AND e.flags <> '[]') f
    GROUP BY f.model_version_id, f.flag"""
REVIEW_FLAG_ELEMENTS = {
    "postgresql": """CROSS JOIN LATERAL jsonb_array_elements_text(
                         CASE WHEN jsonb_typeof(e.flags) = 'array' THEN e.flags
                              ELSE '[]'::jsonb END) AS j(value)""",
    "sqlite": """JOIN json_each(CASE WHEN json_type(e.flags) = 'array' THEN e.flags
                                     ELSE '[]' END) AS j""",
}

# What came in after a snapshot's watermark, counted up to a cap (`{cap}`): the freshness line
# of the dashboard and the test for "stale". The primary key's range holds only the new rows.
NEW_COMPARISONS = """
    SELECT COUNT(*) FROM (SELECT 1 FROM labeling_comparison c
                          JOIN labeling_task t ON t.id = c.task_id
                          WHERE c.id > %s AND t.project_id = %s LIMIT {cap}) s"""
NEW_ENTRIES = """
    SELECT COUNT(*) FROM (SELECT 1 FROM labeling_rankingentry e
                          JOIN labeling_ranking r ON r.id = e.ranking_id
                          JOIN labeling_task t ON t.id = r.task_id
                          WHERE e.id > %s AND t.project_id = %s LIMIT {cap}) s"""
