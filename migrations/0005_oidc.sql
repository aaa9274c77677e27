-- Trusted publishing: publishers (admin-made trust policies for CI ID
-- tokens) and the ID tokens already exchanged, refused a second time until
-- they could no longer pass the time checks anyway.

CREATE TABLE publishers (
    id          TEXT        PRIMARY KEY,
    publisher   JSONB       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE oidc_replays (
    issuer  TEXT        NOT NULL,
    jti     TEXT        NOT NULL,
    until   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX oidc_replays_until ON oidc_replays (until);
