-- The web page's sessions that were signed out before they expired.
--
-- A session is a signed cookie (services/api ui/sessions.py) naming a random
-- session id; nothing else about it is kept here. Signing out records the id,
-- and every gateway refuses a cookie whose id is recorded, so a copy of the
-- cookie taken before signing out is worthless afterwards, whichever replica
-- it is shown to. A row is needed only until the session would have expired
-- by itself (its cookie is refused then anyway): the gateway deletes rows past
-- ends_at (and a margin for clocks) whenever it records a sign-out, so the
-- table holds about a working day's sign-outs.
--
-- The id is not a secret on its own: a cookie cannot be made from it without
-- the gateway's signing secret.

CREATE TABLE pipelines.ended_ui_session (
    session_id text PRIMARY KEY,
    -- When the session would have expired had it not been signed out.
    ends_at    timestamptz NOT NULL
);
CREATE INDEX ended_ui_session_by_end ON pipelines.ended_ui_session (ends_at);
GRANT SELECT, INSERT, DELETE ON pipelines.ended_ui_session TO pipelines_index;
