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

# The claim's plans (PostgreSQL only, for the claim's transaction): the prepared statements' generic
# plan, built without sequential scans. The claim's statements have one right plan whatever the
# values and the table sizes (walk the project's open queue in order, probe each task's leases
# through the (task, user) index), so they are held to it (tests/labeling/test_scale_paths.py):
# - by default PostgreSQL re-plans a prepared statement for each call's values while it expects
#   that to pay; at 10^6 tasks it kept re-planning the candidate statement, 0.3 ms of planning
#   for 0.03 ms of execution, which made a claim 50% slower than in a project of 10^3;
# - a plan made while labeling_lease was small (a new project, a fresh install) probed it by
#   sequential scan per task, and a connection kept that plan as the table grew: claims slowed to
#   10-70 ms within a minute of a new project's work (bench/labeler_loop.py, issue 15).
CLAIM_PLANS = "SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off"

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
# prompt of; `mine` is the user's own lease on it, if any (an expired, still active one is
# re-activated). The walk goes down the open queue (index task_open_queue) and probes each
# candidate's lease of this user through the unique (task, user) index, which carries the lease's
# status (INCLUDE), so the probe is one index-only lookup. Both probes are scalar subqueries: the
# planner always runs them per candidate (a SubPlan), never as a join that would first read the
# user's whole history (the old `t.id NOT IN (SELECT task_id FROM labeling_lease WHERE user_id =
# ...)` hashed all of a labeler's leases, in every project and kind, on every claim: 0.6-1.6 s for
# a labeler with 47k finished leases, issue 15). The cost is now the number of open tasks walked,
# not the labeler's past. `{tried}` excludes tasks this claim already found full, `{holding}` is
# HOLDING, `{lock}` the row lock (FOR UPDATE OF t, with or without SKIP LOCKED).
MINE = "(SELECT m.{column} FROM labeling_lease m WHERE m.task_id = t.id AND m.user_id = %s)"
CANDIDATE = f"""
    SELECT t.id, t.overlap, {MINE.format(column="id")} AS mine
    FROM labeling_task t JOIN labeling_prompt p ON p.id = t.prompt_id
    WHERE t.project_id = %s AND t.kind = %s AND NOT t.done {{tried}}
      AND (p.submitted_by_id IS NULL OR p.submitted_by_id <> %s)
      AND COALESCE({MINE.format(column="status")}, 'active') = 'active'
      AND (SELECT COUNT(*) FROM labeling_lease h WHERE h.task_id = t.id AND {{holding}}) < t.overlap
    ORDER BY t.priority DESC, t.id
    LIMIT 1{{lock}}"""  # noqa: S608

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

# --- counters (labeling/tally.py; the triggers that keep them: migration labeling 0010) --------

# Shards of labeling_tasktally: a task counts in shard id % TASK_TALLY_SHARDS.
TASK_TALLY_SHARDS = 16

# A project's counters recounted from its rows (after a bulk load with triggers off, or to check
# the triggers): the rows are deleted and written anew, in one transaction (the caller's).
TALLY_DELETE = (
    "DELETE FROM labeling_tasktally WHERE project_id = %s;"
    " DELETE FROM labeling_labelertally WHERE project_id = %s"
)
TASK_TALLY_REBUILD = f"""
    INSERT INTO labeling_tasktally (project_id, kind, shard, tasks, done, wanted)
    SELECT project_id, kind, id %% {TASK_TALLY_SHARDS}, COUNT(*),
           COUNT(*) FILTER (WHERE done), SUM(overlap)
    FROM labeling_task WHERE project_id = %s
    GROUP BY 1, 2, 3"""  # noqa: S608
LABELER_TALLY_REBUILD = """
    INSERT INTO labeling_labelertally (project_id, user_id, kind, submitted, skipped)
    SELECT t.project_id, l.user_id, t.kind,
           COUNT(*) FILTER (WHERE l.status = 'submitted'),
           COUNT(*) FILTER (WHERE l.status = 'skipped')
    FROM labeling_lease l JOIN labeling_task t ON t.id = l.task_id
    WHERE t.project_id = %s AND l.status IN ('submitted', 'skipped')
    GROUP BY 1, 2, 3"""

# Progress per task kind from the counters: tasks, done, wanted (TaskTally), submitted
# (LabelerTally): at most 16 + labelers rows a kind.
PROGRESS_TALLIED = """
    SELECT kind, SUM(tasks), SUM(done), SUM(wanted), 0 FROM labeling_tasktally
    WHERE project_id = %s GROUP BY kind
    UNION ALL
    SELECT kind, 0, 0, 0, SUM(submitted) FROM labeling_labelertally
    WHERE project_id = %s GROUP BY kind"""
# The same, counted from the rows (SQLite, which keeps no counters; and the parity tests).
PROGRESS_COUNTED = """
    SELECT kind, COUNT(*), SUM(CASE WHEN done THEN 1 ELSE 0 END), SUM(overlap), 0
    FROM labeling_task WHERE project_id = %s GROUP BY kind
    UNION ALL
    SELECT t.kind, 0, 0, 0, COUNT(*) FROM labeling_lease l JOIN labeling_task t ON t.id = l.task_id
    WHERE t.project_id = %s AND l.status = 'submitted' GROUP BY t.kind"""

# Per labeler and kind: leases submitted and skipped.
LABELER_TALLIED = """
    SELECT user_id, kind, submitted, skipped FROM labeling_labelertally WHERE project_id = %s"""
LABELER_COUNTED = """
    SELECT l.user_id, t.kind, SUM(CASE WHEN l.status = 'submitted' THEN 1 ELSE 0 END),
           SUM(CASE WHEN l.status = 'skipped' THEN 1 ELSE 0 END)
    FROM labeling_lease l JOIN labeling_task t ON t.id = l.task_id
    WHERE t.project_id = %s AND l.status IN ('submitted', 'skipped')
    GROUP BY l.user_id, t.kind"""

# --- labeler agreement (selectors.labeler_agreement) --------------------------------------------

# Per pair of labelers (a < b): of the completion pairs both ordered strictly on a task both
# ranked, how many they ordered the same way, and how many there were (stats.pairwise_agreement's
# counts, done by the database: at 10^6 rankings, loading all 4 x 10^6 entries into Python took
# 75 s and 567 MB, issue 15). Only tasks with overlap > 1 can have two rankings (a task never
# takes more labelers than its overlap, which is fixed when it is made), and the partial index
# task_shared finds them. `p` is each labeler's strict order of each completion pair (c1 < c2):
# +1 when c1 was ranked better. Entries up to a watermark id (the review snapshot's; everything:
# ALL_IDS).
ALL_IDS = 2**63 - 1
# AGREEMENT_PAIRS runs with nested loops off (PostgreSQL). Its last step joins the labelers'
# pair preferences to themselves on (task, pair): with statistics that lag the tables (a project
# whose work came in within minutes; a server with autovacuum off, as the closed-loop bench's)
# the planner expected one row there and chose a nested loop, which took 156 s over 2,420
# rankings with overlap 2 (29,000 preferences compared with each other); a hash join takes
# 0.07 s. At 10^5 rankings with fresh statistics it costs nothing (118 ms against 132 ms).
AGREEMENT_PLANS = "SET LOCAL enable_nestloop = off"
AGREEMENT_PAIRS = """
    WITH e AS (
        SELECT r.task_id, r.labeler_id, re.completion_id, re.rank
        FROM labeling_task t
        JOIN labeling_ranking r ON r.task_id = t.id
        JOIN labeling_rankingentry re ON re.ranking_id = r.id
        WHERE t.project_id = %s AND t.overlap > 1 AND re.id <= %s
    ),
    p AS (
        SELECT a.task_id, a.labeler_id, a.completion_id AS c1, b.completion_id AS c2,
               CASE WHEN a.rank < b.rank THEN 1 ELSE -1 END AS pref
        FROM e a JOIN e b ON b.task_id = a.task_id AND b.labeler_id = a.labeler_id
                         AND b.completion_id > a.completion_id
        WHERE a.rank <> b.rank
    )
    SELECT x.labeler_id, y.labeler_id, SUM(CASE WHEN x.pref = y.pref THEN 1 ELSE 0 END), COUNT(*)
    FROM p x JOIN p y ON y.task_id = x.task_id AND y.c1 = x.c1 AND y.c2 = x.c2
                     AND y.labeler_id > x.labeler_id
    GROUP BY x.labeler_id, y.labeler_id"""

# --- the labeler's home page (selectors.home_rows) ----------------------------------------------

# Home shows how many tasks wait for the labeler, per project and kind, counted up to WAITING_CAP
# + 1 ("1000+"): a labeler needs to know there is work, not how much past that, and counting
# every open task cost the page 0.3-0.9 s at 10^6 tasks. Each count walks the open queue (index
# task_open_queue) and stops at the cap; the rule for "waiting" is the claim's (CANDIDATE): not
# done, a free slot, no lease of theirs, not a prompt they wrote. One row per membership and kind.
WAITING_CAP = 1000
WAITING = f"""
    SELECT m.project_id, k.kind, (
        SELECT COUNT(*) FROM (
            SELECT 1 FROM labeling_task t JOIN labeling_prompt p ON p.id = t.prompt_id
            WHERE t.project_id = m.project_id AND t.kind = k.kind AND NOT t.done
              AND (p.submitted_by_id IS NULL OR p.submitted_by_id <> %s)
              AND NOT EXISTS (SELECT 1 FROM labeling_lease l
                              WHERE l.task_id = t.id AND l.user_id = %s)
              AND (SELECT COUNT(*) FROM labeling_lease h WHERE h.task_id = t.id AND {HOLDING})
                  < t.overlap
            LIMIT {WAITING_CAP + 1}) w)
    FROM labeling_membership m CROSS JOIN (
        SELECT 'demonstration' AS kind UNION ALL SELECT 'ranking' UNION ALL SELECT 'comparison'
    ) k
    WHERE m.user_id = %s"""  # noqa: S608

# --- the reviewer dashboard's aggregates (training/review.py) ---------------------------------

# Every figure of the evaluation dashboard (win rates, Bradley–Terry ratings, Likert means, flag
# rates) depends on the judgements only through the counts below, grouped here so that 10^6
# comparisons and 4·10^6 ranked outputs never come to Python as rows (labeling/stats.py has the
# count-based statistics and their parity tests). Each counts rows up to a watermark id (`c.id <=
# %s`), the highest id when the snapshot began, so the counts of one snapshot agree and "how many
# since" is an indexed range. Comparisons and outputs are reached through their task's project.

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

# --- the exports (labeling/exports.py) ----------------------------------------------------------

# Training-ready exports read plain rows, never model instances: through the ORM an export built
# seven instances per ranking (ranking, task, prompt, labeler, entries, completions, model
# versions) and ran at 353 rankings/s at 10^6. Each statement reads one keyset page: rows after
# the last id sent (`id > %s ORDER BY id LIMIT %s`), so memory stays one page whatever the size,
# no cursor outlives a page, and a client resumes an interrupted export from the last id it got.
# `{filters}` is nothing or EXPORT_SPLIT.
EXPORT_SPLIT = " AND p.split = %s"

# SFT: a demonstration with its prompt (the project is the prompt's, as the ORM export filtered).
EXPORT_DEMONSTRATIONS = """
    SELECT d.id, d.prompt_id, p.split, p.messages, d.text
    FROM labeling_demonstration d JOIN labeling_prompt p ON p.id = d.prompt_id
    WHERE p.project_id = %s AND d.id > %s{filters}
    ORDER BY d.id LIMIT %s"""

# Rankings: one row per ranking with its prompt and labeler; its entries come from
# EXPORT_RANKING_ENTRIES, one statement per page (K rows per ranking, the prompt sent once).
# `{user_table}` is the user model's table.
EXPORT_RANKINGS = """
    SELECT r.id, r.task_id, t.prompt_id, p.split, r.labeler_id, u.username, p.messages,
           r.none_acceptable, r.notes, r.time_spent_ms, r.shown_order, r.created_at
    FROM labeling_ranking r
    JOIN labeling_task t ON t.id = r.task_id
    JOIN labeling_prompt p ON p.id = t.prompt_id
    JOIN {user_table} u ON u.id = r.labeler_id
    WHERE t.project_id = %s AND r.id > %s{filters}
    ORDER BY r.id LIMIT %s"""

# A page's entries, each ranking's in completion id order (the order the records list them in).
# `{ids}`: the page's ranking ids, from the first to the last. The range is for the planner: with
# the `IN` list alone PostgreSQL estimated a few thousand of 400,000 entries as a large share and
# scanned the whole table for every page (100 ms a page at 10^5 rankings, growing with the
# table); the range makes it an index range scan.
ENTRIES_OF_PAGE = "e.ranking_id BETWEEN %s AND %s AND e.ranking_id IN ({ids})"
EXPORT_RANKING_ENTRIES = f"""
    SELECT e.ranking_id, e.completion_id, c.text, e.rank, e.likert, e.flags, v.name
    FROM labeling_rankingentry e
    JOIN labeling_completion c ON c.id = e.completion_id
    JOIN labeling_modelversion v ON v.id = c.model_version_id
    WHERE {ENTRIES_OF_PAGE}
    ORDER BY e.ranking_id, e.completion_id"""  # noqa: S608

# Preferences need only each ranking's prompt and its entries' texts and ranks: the same pages,
# without the columns (and the joins) that the pairs do not carry.
EXPORT_RANKING_PROMPTS = """
    SELECT r.id, p.messages
    FROM labeling_ranking r
    JOIN labeling_task t ON t.id = r.task_id
    JOIN labeling_prompt p ON p.id = t.prompt_id
    WHERE t.project_id = %s AND r.id > %s{filters}
    ORDER BY r.id LIMIT %s"""
EXPORT_RANKING_TEXTS = f"""
    SELECT e.ranking_id, c.text, e.rank
    FROM labeling_rankingentry e JOIN labeling_completion c ON c.id = e.completion_id
    WHERE {ENTRIES_OF_PAGE}
    ORDER BY e.ranking_id, e.completion_id"""  # noqa: S608
