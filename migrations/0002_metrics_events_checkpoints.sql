-- 0002_metrics_events_checkpoints.sql — what a running job produces.
-- metrics: one row per (job, step, train|eval); a resumed run that rewrites a
-- step replaces the row (upsert on the primary key), so there are no duplicates.
CREATE TABLE metrics (
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    step        INTEGER NOT NULL CHECK (step >= 0),
    is_eval     INTEGER NOT NULL CHECK (is_eval IN (0, 1)),
    values_json TEXT NOT NULL CHECK (json_type(values_json) = 'object'),
    created_at  TEXT NOT NULL,
    PRIMARY KEY (job_id, step, is_eval)
) WITHOUT ROWID;

-- events: the per-job log the SSE stream replays after Last-Event-ID; seq is
-- 1, 2, 3, ... per job in commit order.
CREATE TABLE events (
    job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL CHECK (seq >= 1),
    type       TEXT NOT NULL CHECK (type IN ('metrics', 'status', 'log')),
    data_json  TEXT NOT NULL CHECK (json_valid(data_json)),
    created_at TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

-- checkpoints: files a job saved, newest is where a re-queued job resumes.
CREATE TABLE checkpoints (
    job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    step       INTEGER NOT NULL CHECK (step >= 0),
    path       TEXT NOT NULL,
    bytes      INTEGER NOT NULL CHECK (bytes >= 0),
    created_at TEXT NOT NULL,
    PRIMARY KEY (job_id, step)
) WITHOUT ROWID;
