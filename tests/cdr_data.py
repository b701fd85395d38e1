"""Many CDRs of one server, made by PostgreSQL itself (generate_series): 1,000,000 in seconds.

The rows look like a busy PBX's week: one call every `spacing` seconds going back from
`newest`, 500 users calling each other, 70 % answered (callTag 1, cause 16), the rest busy,
unanswered, unknown, refused or cancelled, each with the callTag and cause the engine
gives it.
"""

from datetime import datetime

from django.db import connection

# (status, call_tag, cause) of the unanswered calls, in turn.
FAILURES = [(486, 4, 17), (480, 4, 18), (408, 5, 19), (404, 9, 1), (603, 4, 21), (487, 3, 16)]


def _pick(column: int) -> str:
    """SQL for the failure table's `column` of row i (`FAILURES[i % 6]`)."""
    whens = " ".join(f"WHEN {n} THEN {row[column]}" for n, row in enumerate(FAILURES))
    return f"CASE (i / 10) %% {len(FAILURES)} {whens} END"


def insert_cdrs(*, server_id: int, count: int, newest: datetime, spacing: float = 0.6) -> None:
    """Insert `count` CDRs of server `server_id`, the newest started at `newest`."""
    answered = "(i %% 10 < 7)"
    sql = f"""
        INSERT INTO sipnodes_cdr (
            uuid, server_id, call_id, caller, dialed, callee, route, started_at, ring_at,
            answered_at, released_at, talk_seconds, released_by, status, answered, fci,
            cause, call_tag)
        SELECT (lpad(to_hex(%(server)s), 8, '0') || '-0000-4000-8000-'
                || lpad(to_hex(i), 12, '0'))::uuid,
            %(server)s, 'gen-' || i || '@127.0.0.1',
            (100 + (i * 7) %% 500)::text, (100 + (i * 13) %% 500)::text,
            (100 + (i * 13) %% 500)::text, 'local_user', t, t + interval '0.2 s',
            CASE WHEN a THEN t + interval '2 s' END,
            t + CASE WHEN a THEN interval '1 s' * (2 + i %% 300) ELSE interval '3 s' END,
            CASE WHEN a THEN i %% 300 ELSE 0 END,
            CASE WHEN a THEN 'caller' ELSE 'callee' END,
            CASE WHEN a THEN 200 ELSE {_pick(0)} END, a,
            'callTag=' || CASE WHEN a THEN 1 ELSE {_pick(1)} END
                || ';cause=' || CASE WHEN a THEN 16 ELSE {_pick(2)} END,
            CASE WHEN a THEN 16 ELSE {_pick(2)} END, CASE WHEN a THEN 1 ELSE {_pick(1)} END
        FROM (
            SELECT i, %(newest)s - i * interval '1 s' * %(spacing)s AS t, {answered} AS a
            FROM generate_series(0, %(count)s - 1) AS i
        ) AS calls
    """
    with connection.cursor() as cursor:
        cursor.execute(
            sql, {"server": server_id, "newest": newest, "spacing": spacing, "count": count}
        )
        cursor.execute("ANALYZE sipnodes_cdr")
