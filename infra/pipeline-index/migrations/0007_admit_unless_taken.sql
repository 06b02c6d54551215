-- A start decided in one statement: whether its id already holds a pipeline, and if not, whether
-- the principal may start one more (pipelines.admit_start, made by 0002).
--
-- The gateway used to read the pipeline's root first (a repeat of a start is answered from it, and
-- must not be counted), then ask admit_start, then create: three round trips. A taken id is now
-- told here, and the create that follows answers the repeat (it hands back the stored record):
-- two. Nothing is counted for a taken id, so a client retrying a start is never refused by the
-- limits its first try passed.

CREATE FUNCTION pipelines.pipeline_exists(pipeline_id text) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT EXISTS (SELECT FROM resonate.promises p WHERE p.id = pipeline_id)
$$;
REVOKE ALL ON FUNCTION pipelines.pipeline_exists(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pipelines.pipeline_exists(text) TO pipelines_index;

CREATE FUNCTION pipelines.admit_unless_taken(
    principal text, pipeline_id text, starts_per_minute integer, waiting_limit integer,
    OUT taken boolean, OUT refused text, OUT retry_after_seconds double precision, OUT counted integer
) LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    taken := pipelines.pipeline_exists(admit_unless_taken.pipeline_id);
    IF taken THEN
        RETURN;
    END IF;
    SELECT a.refused, a.retry_after_seconds, a.counted INTO refused, retry_after_seconds, counted
      FROM pipelines.admit_start(admit_unless_taken.principal, admit_unless_taken.pipeline_id,
                                 admit_unless_taken.starts_per_minute, admit_unless_taken.waiting_limit) a;
END
$$;
REVOKE ALL ON FUNCTION pipelines.admit_unless_taken(text, text, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pipelines.admit_unless_taken(text, text, integer, integer) TO pipelines_index;
