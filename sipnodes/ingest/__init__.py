"""The ingest consumer: worker events from the Redis Stream into PostgreSQL.

Workers never touch the database; they append events to `sipcloud:events`
(the contract is `sipnodes.engine.events`, described in `docs/events.md`).
The consumer group `ingest` reads them and writes each batch in one
transaction, idempotently: CDRs are unique by UUID and server activity only
ever moves forward, so a batch that is read twice (a crash between the commit
and XACK, a claim from a consumer that looked dead) changes nothing the second
time. Entries are acknowledged only after the commit; malformed ones go to a
dead-letter stream instead of blocking the ones behind them.

Three modules, one per seam: `parse` (pure: bytes in, a typed `Event` or
`MalformedEvent` out, and a CDR's column values), `batch` (`ingest_batch`,
one database transaction) and `consumer` (`IngestConsumer`, the Redis loop).
"""
