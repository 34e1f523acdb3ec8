-- A patient link's token sealed under the server's key (AES-256-GCM), so a
-- reminder resends the visit's link instead of minting one per attempt.
ALTER TABLE links ADD COLUMN sealed_token TEXT;
-- The start a reminder speaks of: a reminder queued for an earlier start is
-- stale once the visit moves, and is dropped rather than sent.
ALTER TABLE outbox ADD COLUMN scheduled_start BIGINT;
-- What a message that is not a visit reminder carries (ids and codes only).
ALTER TABLE outbox ADD COLUMN payload TEXT;
-- One patient per hospital number: imports look the number up.
CREATE INDEX patients_by_hospital_id ON patients (hospital_id);
