-- The transparency log's origin, unique to each store and fixed at its first
-- start (from --log-origin or --public-url, else chosen at random), so that
-- every replica signs under one name and a client never mistakes two stores'
-- logs for one. A store that signed before this migration keeps the origin of
-- its checkpoints (amberd stores it at start).
CREATE TABLE log_origin (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    origin     TEXT    NOT NULL CHECK (length(origin) BETWEEN 1 AND 256)
);
