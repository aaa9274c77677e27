-- Runs of retention, reclaim, scrub passes and fsck: one active (running)
-- run per kind in the whole store, whichever replica started it.
CREATE TABLE runs (
    id          TEXT        PRIMARY KEY,
    kind        TEXT        NOT NULL,
    state       TEXT        NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    updated_at  TIMESTAMPTZ NOT NULL,
    record      TEXT        NOT NULL
);
CREATE UNIQUE INDEX runs_one_active ON runs (kind) WHERE state = 'running';
CREATE INDEX runs_by_kind ON runs (kind, id);
