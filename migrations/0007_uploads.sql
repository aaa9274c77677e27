-- Resumable uploads (tus): one row per upload in progress (or finished and
-- not yet forgotten). Unlike the rest of the schema these rows change: an
-- upload's offset advances by compare-and-set on upload_offset, and the row
-- is deleted when the upload is finished with, expires or is terminated.
-- The record (JSON) holds everything a replica needs to continue it.

CREATE TABLE uploads (
    id             TEXT        PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),
    token_id       TEXT        NOT NULL,
    upload_offset  BIGINT      NOT NULL CHECK (upload_offset >= 0),
    expires_at     TIMESTAMPTZ NOT NULL,
    record         JSONB       NOT NULL
);
CREATE INDEX uploads_by_token ON uploads (token_id);
