-- Scrub: stored blobs found not to hash to their digest (or gone) are
-- quarantined until an upload replaces their bytes; the scrub's progress is
-- shared by the replicas (one scrubs at a time).

CREATE TABLE quarantine (
    digest    BYTEA       PRIMARY KEY CHECK (length(digest) = 32),
    reason    TEXT        NOT NULL CHECK (reason IN ('mismatch', 'missing')),
    found_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE scrub_progress (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    progress   JSONB   NOT NULL
);

-- When the scrub last read each blob back and found it hashing right.
CREATE TABLE blob_checks (
    digest       BYTEA       PRIMARY KEY CHECK (length(digest) = 32),
    verified_at  TIMESTAMPTZ NOT NULL
);
