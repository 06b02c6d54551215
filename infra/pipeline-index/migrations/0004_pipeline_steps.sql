-- Pipelines run by their code (issue 22): each one's steps, and the state of
-- waiting at an approval gate.
--
-- A pipeline whose code runs several steps (job steps, approval gates,
-- emails) keeps, in its row, one brief entry per step in the order of the
-- code's calls: [{"id": "1", "kind": "job", "name": "ingest-upload",
-- "state": "succeeded"}, ...], written by the projector from the same reading
-- of its promises as GET /pipelines/{id}'s "steps" (PipelineTree.steps()). A
-- pipeline of one job started before pipelines were code has none ('[]').
-- The list filters on them (a step's name; pipelines waiting for an approval
-- or a repair) through one GIN index, whatever the number of pipelines.

ALTER TABLE pipelines.pipeline DROP CONSTRAINT pipeline_state_check;
ALTER TABLE pipelines.pipeline ADD CONSTRAINT pipeline_state_check
    CHECK (state IN ('starting', 'waiting', 'awaiting_repair', 'awaiting_approval', 'notifying',
                     'succeeded', 'failed', 'cancelled', 'timed_out'));

ALTER TABLE pipelines.pipeline ADD COLUMN steps jsonb NOT NULL DEFAULT '[]'
    CHECK (jsonb_typeof(steps) = 'array');
-- Answers `steps @> '[{"name": "risk-score"}]'` and `steps @> '[{"state": "awaiting_approval"}]'`.
CREATE INDEX pipeline_steps ON pipelines.pipeline USING gin (steps jsonb_path_ops);

-- The start limits' waiting quota counts a pipeline waiting at a gate like any
-- other that has not ended (0002): the index that finds them and the function
-- that counts them, with the new state.
DROP INDEX pipelines.pipeline_waiting_by_owner;
CREATE INDEX pipeline_waiting_by_owner ON pipelines.pipeline (owner)
    WHERE state IN ('starting', 'waiting', 'awaiting_repair', 'awaiting_approval', 'notifying');

CREATE OR REPLACE FUNCTION pipelines.admit_start(
    principal text, pipeline_id text, starts_per_minute integer, waiting_limit integer,
    decided_at timestamptz DEFAULT clock_timestamp(),
    OUT refused text, OUT retry_after_seconds double precision, OUT counted integer
) LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    window_start timestamptz := decided_at - interval '1 minute';
    oldest timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('pipelines.start_log:' || principal, 0));
    DELETE FROM pipelines.start_log l WHERE l.principal = admit_start.principal AND l.started_at <= window_start;
    IF EXISTS (SELECT FROM pipelines.start_log l
               WHERE l.principal = admit_start.principal AND l.pipeline_id = admit_start.pipeline_id) THEN
        RETURN;
    END IF;
    IF waiting_limit > 0 THEN
        SELECT (SELECT count(*) FROM pipelines.pipeline p
                WHERE p.owner = admit_start.principal
                  AND p.state IN ('starting', 'waiting', 'awaiting_repair', 'awaiting_approval', 'notifying'))
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
            refused := 'rate';
            retry_after_seconds := extract(epoch FROM oldest + interval '1 minute' - decided_at);
            RETURN;
        END IF;
    END IF;
    INSERT INTO pipelines.start_log VALUES (principal, pipeline_id, decided_at);
    refused := NULL;
END
$$;
