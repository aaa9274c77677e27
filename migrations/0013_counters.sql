-- Counters kept in the transactions that change what they count, so that a
-- listing reads its page and no more: per repository (links and their
-- bytes, tags, live tags, last push) and for the store (links, their bytes,
-- digests waiting for reclaim and their bytes). Triggers keep them: every
-- change of blob_links, tags, tag_expiries and reclaim counts itself, in its
-- own transaction. `amberd fsck` recounts and compares.
--
-- Lock order, to keep clear of deadlocks: a repository's row, then the
-- store's row, then audit_head (every audited change appends last).
CREATE TABLE repo_stats (
    repository    TEXT        COLLATE "C" PRIMARY KEY,
    links         BIGINT      NOT NULL DEFAULT 0,
    bytes         BIGINT      NOT NULL DEFAULT 0,
    tags          BIGINT      NOT NULL DEFAULT 0,
    live_tags     BIGINT      NOT NULL DEFAULT 0,
    last_push_at  TIMESTAMPTZ
);

CREATE TABLE store_stats (
    singleton              BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    links                  BIGINT  NOT NULL,
    bytes                  BIGINT  NOT NULL,
    pending_reclaim        BIGINT  NOT NULL,
    pending_reclaim_bytes  BIGINT  NOT NULL
);

INSERT INTO repo_stats (repository, links, bytes, tags, live_tags, last_push_at)
SELECT repository, sum(links), sum(bytes), sum(tags), sum(live_tags), max(last_push_at)
FROM (
    SELECT repository, count(*) AS links, sum(size) AS bytes, 0 AS tags, 0 AS live_tags, max(created_at) AS last_push_at
    FROM blob_links GROUP BY repository
    UNION ALL
    SELECT t.repository, 0, 0, count(*), count(*) FILTER (WHERE e.tag IS NULL), max(t.created_at)
    FROM tags t LEFT JOIN tag_expiries e ON e.repository = t.repository AND e.tag = t.tag
    GROUP BY t.repository
) c
GROUP BY repository;

INSERT INTO store_stats (links, bytes, pending_reclaim, pending_reclaim_bytes)
SELECT (SELECT count(*) FROM blob_links), (SELECT coalesce(sum(size), 0) FROM blob_links),
       (SELECT count(*) FROM reclaim), (SELECT coalesce(sum(size), 0) FROM reclaim);

CREATE FUNCTION amber_count_link() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO repo_stats AS r (repository, links, bytes, last_push_at)
        VALUES (NEW.repository, 1, NEW.size, NEW.created_at)
        ON CONFLICT (repository) DO UPDATE
            SET links = r.links + 1, bytes = r.bytes + NEW.size,
                last_push_at = greatest(r.last_push_at, NEW.created_at);
        UPDATE store_stats SET links = links + 1, bytes = bytes + NEW.size;
    ELSE
        UPDATE repo_stats SET links = links - 1, bytes = bytes - OLD.size WHERE repository = OLD.repository;
        DELETE FROM repo_stats WHERE repository = OLD.repository AND links = 0 AND tags = 0;
        UPDATE store_stats SET links = links - 1, bytes = bytes - OLD.size;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER blob_links_counted AFTER INSERT OR DELETE ON blob_links
    FOR EACH ROW EXECUTE FUNCTION amber_count_link();

CREATE FUNCTION amber_count_tag() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO repo_stats AS r (repository, tags, live_tags, last_push_at)
    VALUES (NEW.repository, 1, 1, NEW.created_at)
    ON CONFLICT (repository) DO UPDATE
        SET tags = r.tags + 1, live_tags = r.live_tags + 1,
            last_push_at = greatest(r.last_push_at, NEW.created_at);
    RETURN NULL;
END;
$$;
CREATE TRIGGER tags_counted AFTER INSERT ON tags FOR EACH ROW EXECUTE FUNCTION amber_count_tag();

CREATE FUNCTION amber_count_expiry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE repo_stats SET live_tags = live_tags - 1 WHERE repository = NEW.repository;
    RETURN NULL;
END;
$$;
CREATE TRIGGER tag_expiries_counted AFTER INSERT ON tag_expiries FOR EACH ROW EXECUTE FUNCTION amber_count_expiry();

CREATE FUNCTION amber_count_reclaim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE store_stats SET pending_reclaim = pending_reclaim + 1, pending_reclaim_bytes = pending_reclaim_bytes + NEW.size;
    ELSE
        UPDATE store_stats SET pending_reclaim = pending_reclaim - 1, pending_reclaim_bytes = pending_reclaim_bytes - OLD.size;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER reclaim_counted AFTER INSERT OR DELETE ON reclaim FOR EACH ROW EXECUTE FUNCTION amber_count_reclaim();
