-- Amber metadata, PostgreSQL backend. Migrations are append-only: a change is a
-- new file, never an edit. Write-once rules live in constraints here, so racing
-- replicas get exactly one winner from the database itself.

-- A blob made visible in a repository (storage itself is shared).
CREATE TABLE blob_links (
    repository  TEXT        NOT NULL,
    digest      BYTEA       NOT NULL CHECK (length(digest) = 32),
    size        BIGINT      NOT NULL CHECK (size >= 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repository, digest)
);

-- Tokens: the public record as JSON, and only a hash of the secret.
CREATE TABLE tokens (
    id          TEXT  PRIMARY KEY,
    secret_hash TEXT  NOT NULL UNIQUE,
    info        JSONB NOT NULL
);

-- Signing keys; at most one is active at a time.
CREATE TABLE signing_keys (
    keyid       TEXT        PRIMARY KEY,
    private_key TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    status      TEXT        NOT NULL CHECK (status IN ('active', 'retired'))
);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((true)) WHERE status = 'active';

-- Signed manifests, visible per repository, and tags bound once.
CREATE TABLE manifests (
    repository  TEXT  NOT NULL,
    digest      BYTEA NOT NULL CHECK (length(digest) = 32),
    envelope    TEXT  NOT NULL,
    PRIMARY KEY (repository, digest)
);

CREATE TABLE tags (
    repository  TEXT        NOT NULL,
    tag         TEXT        NOT NULL,
    digest      BYTEA       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (repository, tag),
    FOREIGN KEY (repository, digest) REFERENCES manifests (repository, digest)
);

-- The hash-chained audit log and its head (one row, locked to append).
CREATE TABLE audit_log (
    seq    BIGINT PRIMARY KEY CHECK (seq > 0),
    hash   TEXT   NOT NULL,
    entry  TEXT   NOT NULL
);

CREATE TABLE audit_head (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    seq        BIGINT  NOT NULL,
    hash       TEXT    NOT NULL,
    checkpoint TEXT
);
INSERT INTO audit_head (seq, hash) VALUES (0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Nothing may rewrite history: tags, manifests and audit entries are immutable.
CREATE FUNCTION amber_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER tags_immutable BEFORE UPDATE OR DELETE ON tags FOR EACH ROW EXECUTE FUNCTION amber_refuse_change();
CREATE TRIGGER manifests_immutable BEFORE UPDATE OR DELETE ON manifests FOR EACH ROW EXECUTE FUNCTION amber_refuse_change();
CREATE TRIGGER audit_log_immutable BEFORE UPDATE OR DELETE ON audit_log FOR EACH ROW EXECUTE FUNCTION amber_refuse_change();
CREATE TRIGGER blob_links_immutable BEFORE UPDATE OR DELETE ON blob_links FOR EACH ROW EXECUTE FUNCTION amber_refuse_change();
