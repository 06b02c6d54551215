-- Which pipelines have a schedule of ours in Resonate.
--
-- A catalogue's [pipelines.NAME.schedule] is kept as the Resonate schedule
-- pipeline-schedule.NAME (services/shared pipeline_shared/schedules.py). The
-- gateway makes Resonate's schedules match the catalogue at each start; to
-- delete the schedule of a pipeline the catalogue no longer declares it must
-- know it was there, and resonate-pg cannot list its schedules
-- (schedule.search answers 501). A name is recorded before its schedule is
-- created and removed after its schedule is deleted, so no schedule of ours
-- is ever unrecorded.

CREATE TABLE pipelines.schedule (
    pipeline    text PRIMARY KEY,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, DELETE ON pipelines.schedule TO pipelines_index;
