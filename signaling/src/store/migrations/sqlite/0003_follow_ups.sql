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
    duration_minutes INTEGER NOT NULL,
    reason TEXT NOT NULL,
    priority TEXT NOT NULL,
    status TEXT NOT NULL,
    visit_id TEXT REFERENCES visits(id),
    created_at BIGINT NOT NULL
);
CREATE INDEX follow_ups_by_clinician ON follow_ups (clinician_id, status, due_at);
