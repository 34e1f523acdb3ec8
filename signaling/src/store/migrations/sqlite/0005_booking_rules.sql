-- A clinician has at most one live (scheduled or running) visit at any
-- moment. Every way a visit reaches a calendar (create, reschedule, import,
-- follow-up placement, assignment) is checked here, by the database, not
-- by each caller. Writers take SQLite's write lock first (BEGIN IMMEDIATE),
-- so the check and the write cannot interleave with another writer.
CREATE TRIGGER visits_no_overlap_on_insert BEFORE INSERT ON visits
WHEN NEW.status IN ('scheduled', 'in_progress') AND EXISTS (
    SELECT 1 FROM visits AS v
    WHERE v.clinician_id = NEW.clinician_id
      AND v.status IN ('scheduled', 'in_progress')
      AND v.scheduled_start < NEW.scheduled_start + NEW.duration_minutes * 60
      AND v.scheduled_start + v.duration_minutes * 60 > NEW.scheduled_start
)
BEGIN
    SELECT RAISE(ABORT, 'visit_overlap');
END;

-- Only a change that could create an overlap is checked, so a visit booked
-- before this rule existed can still be started, ended or cancelled.
CREATE TRIGGER visits_no_overlap_on_update
BEFORE UPDATE OF clinician_id, scheduled_start, duration_minutes, status ON visits
WHEN NEW.status IN ('scheduled', 'in_progress')
  AND (NEW.clinician_id <> OLD.clinician_id
       OR NEW.scheduled_start <> OLD.scheduled_start
       OR NEW.duration_minutes <> OLD.duration_minutes
       OR OLD.status NOT IN ('scheduled', 'in_progress'))
  AND EXISTS (
    SELECT 1 FROM visits AS v
    WHERE v.id <> NEW.id
      AND v.clinician_id = NEW.clinician_id
      AND v.status IN ('scheduled', 'in_progress')
      AND v.scheduled_start < NEW.scheduled_start + NEW.duration_minutes * 60
      AND v.scheduled_start + v.duration_minutes * 60 > NEW.scheduled_start
)
BEGIN
    SELECT RAISE(ABORT, 'visit_overlap');
END;

-- Answers to requests sent with an Idempotency-Key, kept 24 hours. The
-- response is sealed (AES-256-GCM) because it can carry a patient link.
CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status_code BIGINT NOT NULL,
    sealed_response TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, idempotency_key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
CREATE INDEX follow_ups_by_patient ON follow_ups (patient_id, status);
