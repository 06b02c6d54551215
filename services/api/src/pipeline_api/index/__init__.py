"""The pipeline index: the gateway's own read model of every pipeline, kept in the resonate-pg database.

Its projector follows Resonate's promises into it (:mod:`.projector`), its queries answer the list and
the timeline (:mod:`.queries`), and :mod:`.events` reads a pipeline's promises into timeline events.
Resonate stays the source of truth; the index trails it by one projection.
"""
