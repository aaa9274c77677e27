-- Retention: tags may be held and may expire (for good); blob links that no
-- live manifest references may be removed; policies per repository or owner.
-- A tag's binding row is still never updated or deleted: holds and expiries
-- live in tables of their own.

-- Links may now be removed (by retention, checked in the removing
-- transaction), never updated.
DROP TRIGGER blob_links_immutable ON blob_links;
CREATE TRIGGER blob_links_never_updated BEFORE UPDATE ON blob_links FOR EACH ROW EXECUTE FUNCTION amber_refuse_change();

-- Which blobs each manifest's files name, so an unlink can ask "does a live
-- manifest of this repository reference it?" in one indexed query.
CREATE TABLE manifest_blobs (
    repository  TEXT  NOT NULL,
    blob        BYTEA NOT NULL CHECK (length(blob) = 32),
    manifest    BYTEA NOT NULL,
    PRIMARY KEY (repository, blob, manifest),
    FOREIGN KEY (repository, manifest) REFERENCES manifests (repository, digest)
);
INSERT INTO manifest_blobs (repository, blob, manifest)
SELECT DISTINCT m.repository, decode(substr(f->>'digest', 8), 'hex'), m.digest
FROM manifests m,
     jsonb_array_elements(convert_from(decode(m.envelope::jsonb->>'payload', 'base64'), 'UTF8')::jsonb->'files') AS f;
CREATE TRIGGER manifest_blobs_immutable BEFORE UPDATE OR DELETE ON manifest_blobs FOR EACH ROW EXECUTE FUNCTION amber_refuse_change();

CREATE INDEX tags_by_manifest ON tags (repository, digest);

-- A hold on a live tag (JSON: reason, at, by); released by deleting the row.
CREATE TABLE tag_holds (
    repository  TEXT  NOT NULL,
    tag         TEXT  NOT NULL,
    hold        JSONB NOT NULL,
    PRIMARY KEY (repository, tag),
    FOREIGN KEY (repository, tag) REFERENCES tags (repository, tag)
);

-- An expiry is final: once per tag, never updated or deleted (JSON: at,
-- tombstone).
CREATE TABLE tag_expiries (
    repository  TEXT  NOT NULL,
    tag         TEXT  NOT NULL,
    expiry      JSONB NOT NULL,
    PRIMARY KEY (repository, tag),
    FOREIGN KEY (repository, tag) REFERENCES tags (repository, tag)
);
CREATE TRIGGER tag_expiries_immutable BEFORE UPDATE OR DELETE ON tag_expiries FOR EACH ROW EXECUTE FUNCTION amber_refuse_change();

-- Retention policies by scope (`owner/name` or `owner/*`); JSON as served.
CREATE TABLE retention_policies (
    scope  TEXT  PRIMARY KEY,
    info   JSONB NOT NULL
);
