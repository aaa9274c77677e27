-- Attestations of bindings (in-toto statements in DSSE envelopes, as a JSON
-- list), stored in the binding's transaction and never changed.
CREATE TABLE attestations (
    repository  TEXT  NOT NULL,
    manifest    BYTEA NOT NULL CHECK (length(manifest) = 32),
    envelopes   TEXT  NOT NULL,
    PRIMARY KEY (repository, manifest)
);
