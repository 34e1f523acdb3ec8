-- Retention: when a patient's identifying data was purged (the row stays,
-- with its random id as a pseudonym, so visits still count in the figures).
ALTER TABLE patients ADD COLUMN purged_at BIGINT;
-- What the purge job looks things up by.
CREATE INDEX IF NOT EXISTS visits_by_patient ON visits (patient_id);
CREATE INDEX IF NOT EXISTS links_by_valid_until ON links (valid_until);
CREATE INDEX IF NOT EXISTS refresh_tokens_by_expiry ON refresh_tokens (expires_at);
CREATE INDEX IF NOT EXISTS audit_events_by_at ON audit_events (at);
CREATE INDEX IF NOT EXISTS patients_by_purge ON patients (purged_at, created_at);
