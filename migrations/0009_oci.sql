-- The OCI front door (/v2/): which sha256 (or sha512) names which stored
-- blob (one index for the store, as storage is shared), OCI manifests stored
-- byte-exact per repository, and the referrers of each subject.
CREATE TABLE oci_aliases (
    alias   TEXT  PRIMARY KEY CHECK (length(alias) BETWEEN 8 AND 140),
    digest  BYTEA NOT NULL CHECK (length(digest) = 32)
);

-- The way back: the sha256 of a stored blob, for OCI views of /v1/ tags.
CREATE TABLE oci_sha256 (
    digest  BYTEA PRIMARY KEY CHECK (length(digest) = 32),
    sha256  TEXT  NOT NULL
);

CREATE TABLE oci_manifests (
    repository  TEXT  NOT NULL,
    digest      TEXT  NOT NULL,
    -- OciManifest as JSON: media type, the bytes as pushed, subject, blobs.
    record      BYTEA NOT NULL,
    PRIMARY KEY (repository, digest)
);

CREATE TABLE oci_referrers (
    repository  TEXT  NOT NULL,
    subject     TEXT  NOT NULL,
    digest      TEXT  NOT NULL,
    descriptor  BYTEA NOT NULL,
    PRIMARY KEY (repository, subject, digest)
);

-- The first tag bound to each OCI manifest: a referrer pushed later (a
-- signature, an SBOM) shares that binding's life in retention.
CREATE TABLE oci_tags (
    repository  TEXT NOT NULL,
    digest      TEXT NOT NULL,
    tag         TEXT NOT NULL,
    PRIMARY KEY (repository, digest)
);
