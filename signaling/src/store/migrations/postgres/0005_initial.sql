-- The whole schema at version 5, for a new PostgreSQL database. (SQLite
-- reached version 5 in steps 1 to 5; PostgreSQL starts here, so both
-- backends share version numbers from now on.)
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE clinicians (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    specialty TEXT NOT NULL,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE patients (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    hospital_id TEXT,
    contact TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE visits (
    id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL REFERENCES patients(id),
    clinician_id TEXT NOT NULL REFERENCES clinicians(id),
    scheduled_start BIGINT NOT NULL,
    duration_minutes BIGINT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    questionnaire TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    ended_at BIGINT,
    cancelled_at BIGINT,
    provisioned_at BIGINT,
    -- A clinician has at most one live visit at any moment, whoever books it.
    CONSTRAINT visits_no_overlap EXCLUDE USING gist (
        clinician_id WITH =,
        int8range(scheduled_start, scheduled_start + duration_minutes * 60) WITH &&
    ) WHERE (status IN ('scheduled', 'in_progress'))
);
CREATE INDEX visits_by_clinician_and_start ON visits (clinician_id, scheduled_start);
CREATE INDEX visits_by_start ON visits (scheduled_start);
CREATE INDEX visits_by_patient ON visits (patient_id);

CREATE TABLE links (
    id TEXT PRIMARY KEY,
    visit_id TEXT NOT NULL REFERENCES visits(id),
    role TEXT NOT NULL,
    label TEXT,
    token_hash TEXT NOT NULL UNIQUE,
    valid_from BIGINT NOT NULL,
    valid_until BIGINT NOT NULL,
    revoked_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX links_by_visit ON links (visit_id);

CREATE TABLE refresh_tokens (
    id TEXT PRIMARY KEY,
    clinician_id TEXT NOT NULL REFERENCES clinicians(id),
    family_id TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    revoked_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_by_clinician ON refresh_tokens (clinician_id);

CREATE TABLE audit_events (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    visit_id TEXT,
    detail TEXT
);
CREATE INDEX audit_events_by_visit ON audit_events (visit_id, at);
CREATE INDEX audit_events_by_action ON audit_events (action, at);

CREATE TABLE consultation_totals (
    week_start TEXT PRIMARY KEY,
    total BIGINT NOT NULL
);

CREATE TABLE availability (
    clinician_id TEXT PRIMARY KEY REFERENCES clinicians(id),
    settings TEXT NOT NULL
);

CREATE TABLE follow_ups (
    id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL REFERENCES patients(id),
    from_visit_id TEXT NOT NULL REFERENCES visits(id),
    clinician_id TEXT NOT NULL REFERENCES clinicians(id),
    due_at BIGINT NOT NULL,
    duration_minutes BIGINT NOT NULL,
    reason TEXT NOT NULL,
    priority TEXT NOT NULL,
    status TEXT NOT NULL,
    visit_id TEXT REFERENCES visits(id),
    created_at BIGINT NOT NULL
);
CREATE INDEX follow_ups_by_clinician ON follow_ups (clinician_id, status, due_at);
CREATE INDEX follow_ups_by_patient ON follow_ups (patient_id, status);
CREATE INDEX follow_ups_by_visit ON follow_ups (visit_id);

CREATE TABLE outbox (
    idempotency_key TEXT PRIMARY KEY,
    visit_id TEXT NOT NULL REFERENCES visits(id),
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    delivered_at BIGINT,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox (delivered_at, next_attempt_at);

CREATE TABLE calendar_tokens (
    clinician_id TEXT PRIMARY KEY REFERENCES clinicians(id),
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

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
