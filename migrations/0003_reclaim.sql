-- Reclaim: stored bytes no repository links are deleted after a grace, never
-- while an upload of them is being linked. Digests waiting for reclaim, and
-- the leases uploads hold between storing their bytes and linking them.

CREATE INDEX blob_links_by_digest ON blob_links (digest);

-- A digest no repository links: since when, and whether a run has marked it
-- (its bytes are being deleted; uploads of it wait until the row is gone).
CREATE TABLE reclaim (
    digest  BYTEA       PRIMARY KEY CHECK (length(digest) = 32),
    size    BIGINT      NOT NULL CHECK (size >= 0),
    since   TIMESTAMPTZ NOT NULL,
    marked  BOOLEAN     NOT NULL DEFAULT false
);

-- An upload's lease on a digest, from just before its bytes are stored under
-- it until it is linked; one left by a crashed replica expires.
CREATE TABLE blob_leases (
    id          TEXT        PRIMARY KEY,
    digest      BYTEA       NOT NULL CHECK (length(digest) = 32),
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX blob_leases_by_digest ON blob_leases (digest);
