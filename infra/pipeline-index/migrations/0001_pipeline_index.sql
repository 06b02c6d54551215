-- The pipeline index: what GET /pipelines lists and what a pipeline's
-- timeline shows, kept beside resonate-pg's own tables in the same database.
--
-- Resonate's tables stay the one source of truth. A trigger on
-- resonate.promises notes, in the same transaction as Resonate's own write,
-- that a pipeline changed (pipelines.changes); the gateway's projector then
-- reads the pipeline's promises and writes its row and its events, and
-- deletes the notes it has handled. A note is never lost (it commits or rolls
-- back with the change it notes), so the index always catches up, and the
-- projector rewrites a pipeline from Resonate's state as it then is, so the
-- index never holds a state Resonate does not.
--
-- Applied by the resonate-pg image's entrypoint (infra/resonate-pg), in one
-- transaction, as the superuser, into the schema it made for the migrations'
-- own record (pipelines.schema_migrations); see infra/pipeline-index/README.md.

-- Granted by the bootstrap to the logins named in RESONATE_PG_INDEX_LOGINS
-- (the gateway's): read one pipeline's promises (pipelines.promises_of, not
-- Resonate's tables themselves), keep the index.
-- Roles belong to the cluster, not the database: one may be there already.
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pipelines_index') THEN
        CREATE ROLE pipelines_index NOLOGIN;
    END IF;
END $$;
GRANT USAGE ON SCHEMA pipelines TO pipelines_index;
GRANT SELECT ON pipelines.schema_migrations TO pipelines_index;

-- Every pipeline's place in the index's history: a row's version and an
-- event's seq both come from here, so "what changed after N" is one number.
CREATE SEQUENCE pipelines.history;
GRANT USAGE ON SEQUENCE pipelines.history TO pipelines_index;

-- One note per promise write of a pipeline (its root or any child: every
-- promise of a pipeline carries the pipeline's id as its resonate:origin).
CREATE TABLE pipelines.changes (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline_id text NOT NULL,
    noted_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX changes_by_pipeline ON pipelines.changes (pipeline_id, seq);
GRANT SELECT, DELETE ON pipelines.changes TO pipelines_index;

CREATE TABLE pipelines.pipeline (
    id           text PRIMARY KEY,
    -- The principal that started it (the root promise's pipeline:owner tag).
    owner        text,
    job          text NOT NULL,
    state        text NOT NULL CHECK (state IN ('starting', 'waiting', 'awaiting_repair', 'notifying',
                                                'succeeded', 'failed', 'cancelled', 'timed_out')),
    email        text NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    run_id       bigint,
    run_page_url text,
    version      bigint NOT NULL DEFAULT nextval('pipelines.history')
);
-- Newest first, for everyone (admin) and per owner; the list's cursor is (created_at, id).
CREATE INDEX pipeline_newest ON pipelines.pipeline (created_at DESC, id DESC);
CREATE INDEX pipeline_newest_by_owner ON pipelines.pipeline (owner, created_at DESC, id DESC);
CREATE INDEX pipeline_by_version ON pipelines.pipeline (version);
GRANT SELECT, INSERT, UPDATE, DELETE ON pipelines.pipeline TO pipelines_index;

CREATE TABLE pipelines.event (
    pipeline_id text NOT NULL REFERENCES pipelines.pipeline (id) ON DELETE CASCADE,
    -- What it is an event of, so that projecting a pipeline again writes each event once.
    key         text NOT NULL,
    seq         bigint NOT NULL DEFAULT nextval('pipelines.history'),
    at          timestamptz NOT NULL,
    kind        text NOT NULL,
    summary     text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (pipeline_id, key)
);
CREATE INDEX event_by_seq ON pipelines.event (pipeline_id, seq);
GRANT SELECT, INSERT, UPDATE, DELETE ON pipelines.event TO pipelines_index;

-- One pipeline's promises, its root and every child: what the projector reads.
-- The index's role may read Resonate's promises this way only, one pipeline at a time.
CREATE FUNCTION pipelines.promises_of(pipeline_id text) RETURNS SETOF resonate.promises
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT * FROM resonate.promises WHERE origin_id = pipeline_id
$$;
REVOKE ALL ON FUNCTION pipelines.promises_of(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pipelines.promises_of(text) TO pipelines_index;

-- Runs as its owner (the superuser), so that a write by any service's role
-- notes its change; it touches nothing but pipelines.changes.
CREATE FUNCTION pipelines.note_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    origin text := CASE WHEN TG_OP = 'DELETE' THEN OLD.origin_id ELSE NEW.origin_id END;
BEGIN
    IF origin IS NOT NULL THEN
        INSERT INTO pipelines.changes (pipeline_id) VALUES (origin);
        -- One notification per transaction and channel, however many rows.
        PERFORM pg_notify('pipelines_changed', '');
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION pipelines.note_change() FROM PUBLIC;

CREATE TRIGGER pipelines_note_created_or_deleted
    AFTER INSERT OR DELETE ON resonate.promises
    FOR EACH ROW EXECUTE FUNCTION pipelines.note_change();
CREATE TRIGGER pipelines_note_settled
    AFTER UPDATE ON resonate.promises
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION pipelines.note_change();

-- Pipelines that existed before the index: noted once, projected like any change.
INSERT INTO pipelines.changes (pipeline_id)
SELECT id FROM resonate.promises WHERE origin_id = id;
