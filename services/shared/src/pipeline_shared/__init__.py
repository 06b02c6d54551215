"""What the pipeline services agree on.

The gateway, the worker and the notifier never import each other. Everything
they must agree on lives here and nowhere else: the Resonate group and
function names they call each other by (:mod:`.names`), the payloads that
cross the durability boundary (:mod:`.models`), the ids derived from a
pipeline id (:mod:`.ids`) and the callback signing scheme (:mod:`.signing`).
The small runtime pieces every service needs the same way (settings, the
Resonate connection, the ops endpoints, structured logs) sit beside them so
that each exists once.
"""
