-- Start limits: how many pipelines a principal may start per minute, and how
-- many of its pipelines may be waiting (not yet final) at once.
--
-- Kept here, in the database every gateway replica shares, so that a limit
-- holds across replicas. One call of pipelines.admit_start decides a start
-- (one round trip from the gateway), and records it only when it admits it:
-- a refused start leaves nothing behind.
--
-- The rate is a sliding log: the starts admitted in the last minute, one row
-- each, keyed by the pipeline id they were for. A start of an id already in
-- the log (a client retrying the same request, or many identical requests
-- racing) is admitted again without being counted twice. Rows older than a
-- minute are deleted by the next start of the same principal, so the log holds
-- at most a minute's worth per principal.
--
-- The waiting quota counts the principal's pipelines the index shows as not
-- final (pipelines.pipeline), plus its logged starts admitted after the newest
-- pipeline the index shows for it was created: those the index does not show
-- yet (the projector trails Resonate by a fraction of a second, and a burst
-- must not slip through that gap). Found through two indexes, however many
-- pipelines the principal has.

CREATE TABLE pipelines.start_log (
    principal   text NOT NULL,
    pipeline_id text NOT NULL,
    started_at  timestamptz NOT NULL,
    PRIMARY KEY (principal, pipeline_id)
);
CREATE INDEX start_log_by_time ON pipelines.start_log (principal, started_at);
GRANT SELECT, INSERT, DELETE ON pipelines.start_log TO pipelines_index;

-- What the quota counts, found without reading a principal's finished pipelines.
CREATE INDEX pipeline_waiting_by_owner ON pipelines.pipeline (owner)
    WHERE state IN ('starting', 'waiting', 'awaiting_repair', 'notifying');

-- Admit or refuse one start of pipeline_id by principal.
--   starts_per_minute, waiting_limit: the principal's limits; 0 = no limit.
--   Returns refused: NULL (admitted and logged), 'rate' or 'waiting';
--   retry_after_seconds: when the rate admits a start again (rate only);
--   counted: the starts in the last minute (rate) or the pipelines waiting (waiting).
CREATE FUNCTION pipelines.admit_start(
    principal text, pipeline_id text, starts_per_minute integer, waiting_limit integer,
    decided_at timestamptz DEFAULT clock_timestamp(),
    OUT refused text, OUT retry_after_seconds double precision, OUT counted integer
) LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    window_start timestamptz := decided_at - interval '1 minute';
    oldest timestamptz;
BEGIN
    -- One decision at a time per principal, so that concurrent starts cannot all see room for one more.
    PERFORM pg_advisory_xact_lock(hashtextextended('pipelines.start_log:' || principal, 0));
    DELETE FROM pipelines.start_log l WHERE l.principal = admit_start.principal AND l.started_at <= window_start;
    IF EXISTS (SELECT FROM pipelines.start_log l
               WHERE l.principal = admit_start.principal AND l.pipeline_id = admit_start.pipeline_id) THEN
        RETURN;  -- already admitted within the minute: a repeat of the same start
    END IF;
    IF waiting_limit > 0 THEN
        SELECT (SELECT count(*) FROM pipelines.pipeline p
                WHERE p.owner = admit_start.principal
                  AND p.state IN ('starting', 'waiting', 'awaiting_repair', 'notifying'))
             + (SELECT count(*) FROM pipelines.start_log l
                WHERE l.principal = admit_start.principal
                  AND l.started_at > coalesce((SELECT max(p.created_at) FROM pipelines.pipeline p
                                               WHERE p.owner = admit_start.principal), '-infinity'))
          INTO counted;
        IF counted >= waiting_limit THEN
            refused := 'waiting';
            RETURN;
        END IF;
    END IF;
    IF starts_per_minute > 0 THEN
        SELECT count(*), min(l.started_at) INTO counted, oldest
        FROM pipelines.start_log l WHERE l.principal = admit_start.principal;
        IF counted >= starts_per_minute THEN
            -- Room for one more once the oldest start leaves the minute.
            refused := 'rate';
            retry_after_seconds := extract(epoch FROM oldest + interval '1 minute' - decided_at);
            RETURN;
        END IF;
    END IF;
    INSERT INTO pipelines.start_log VALUES (principal, pipeline_id, decided_at);
    refused := NULL;
END
$$;
REVOKE ALL ON FUNCTION pipelines.admit_start(text, text, integer, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pipelines.admit_start(text, text, integer, integer, timestamptz) TO pipelines_index;
