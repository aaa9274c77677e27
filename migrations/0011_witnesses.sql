-- The newest checkpoint with the cosignatures of a quorum of the log's
-- witnesses (C2SP tlog-cosignature), shared by every replica.
CREATE TABLE log_cosigned (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    size       BIGINT  NOT NULL CHECK (size >= 0),
    note       TEXT    NOT NULL
);
