-- 0001_jobs.sql — the job table: one row per submitted recipe.
-- id is "job_" + 16 hex; seq orders jobs by submission (ids are random) and is
-- the pagination key. JSON columns are checked with json_valid so a bad write
-- fails loudly instead of poisoning the API later.
CREATE TABLE jobs (
    id                  TEXT PRIMARY KEY
                        CHECK (length(id) = 20 AND id GLOB 'job_[0-9a-f]*'
                               AND substr(id, 5) NOT GLOB '*[^0-9a-f]*'),
    seq                 INTEGER NOT NULL UNIQUE,
    status              TEXT NOT NULL
                        CHECK (status IN ('queued', 'running', 'succeeded', 'failed',
                                          'cancelled', 'blocked')),
    method              TEXT NOT NULL CHECK (method IN ('sft', 'dpo', 'orpo')),
    recipe_json         TEXT NOT NULL CHECK (json_valid(recipe_json)),
    recipe_text         TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    started_at          TEXT,
    finished_at         TEXT,
    step                INTEGER NOT NULL DEFAULT 0 CHECK (step >= 0),
    total_steps         INTEGER NOT NULL DEFAULT 0 CHECK (total_steps >= 0),
    epoch               REAL NOT NULL DEFAULT 0,
    latest_metrics_json TEXT CHECK (latest_metrics_json IS NULL OR json_valid(latest_metrics_json)),
    summary_json        TEXT CHECK (summary_json IS NULL OR json_valid(summary_json)),
    blockers_json       TEXT CHECK (blockers_json IS NULL OR json_type(blockers_json) = 'array'),
    warnings_json       TEXT CHECK (warnings_json IS NULL OR json_type(warnings_json) = 'array'),
    error_json          TEXT CHECK (error_json IS NULL OR json_valid(error_json)),
    output_dir          TEXT,
    depends_on          TEXT REFERENCES jobs (id),
    -- Idempotency-Key of the creating request and a hash of its body: a retry
    -- with the same key and body returns this job, a different body conflicts.
    idempotency_key     TEXT UNIQUE,
    request_hash        TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    cancel_requested    INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1))
);

-- Listing by status, newest first, and the scheduler's oldest-queued scan.
CREATE INDEX jobs_status_seq ON jobs (status, seq);
-- Finding the jobs that wait for one that just finished.
CREATE INDEX jobs_depends_on ON jobs (depends_on) WHERE depends_on IS NOT NULL;
