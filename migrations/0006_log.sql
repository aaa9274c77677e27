-- The transparency log: every audit entry is a leaf of one RFC 6962 tree.
-- Its right edge lives in the audit head (locked by every append, so the
-- tree grows in the transaction of the entry), the tree's stored hashes
-- (Go sumdb/tlog indexing) are written once, and each tag's tag_bound entry
-- is found by its log index. Entries from before this migration are added
-- to the tree by amberd when it starts.

ALTER TABLE audit_head ADD COLUMN log_tree BYTEA NOT NULL DEFAULT '\x0000000000000000'::bytea;

CREATE TABLE log_hashes (
    idx   BIGINT PRIMARY KEY CHECK (idx >= 0),
    hash  BYTEA  NOT NULL CHECK (length(hash) = 32)
);
CREATE TRIGGER log_hashes_immutable BEFORE UPDATE OR DELETE ON log_hashes FOR EACH ROW EXECUTE FUNCTION amber_refuse_change();

CREATE TABLE tag_log (
    repository  TEXT   NOT NULL,
    tag         TEXT   NOT NULL,
    log_index   BIGINT NOT NULL CHECK (log_index >= 0),
    PRIMARY KEY (repository, tag)
);
CREATE TRIGGER tag_log_immutable BEFORE UPDATE OR DELETE ON tag_log FOR EACH ROW EXECUTE FUNCTION amber_refuse_change();

-- The newest signed checkpoint; replaced only by a larger tree.
CREATE TABLE log_checkpoint (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    size       BIGINT  NOT NULL CHECK (size >= 0),
    note       TEXT    NOT NULL
);

-- Log keys are kept beside the manifest keys: one active key per purpose.
ALTER TABLE signing_keys ADD COLUMN purpose TEXT NOT NULL DEFAULT 'manifest' CHECK (purpose IN ('manifest', 'log'));
DROP INDEX signing_keys_one_active;
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (purpose) WHERE status = 'active';
