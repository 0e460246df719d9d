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
