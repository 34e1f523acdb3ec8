-- Twice-daily symptom monitoring between visits. An enrolment is opened
-- from a visit for some days; the patient's link (hashed, and sealed for the
-- gateway) opens a short questionnaire each morning and evening, in the
-- enrolment's zone, until the enrolment ends or is revoked.
CREATE TABLE monitoring_enrolments (
    id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL REFERENCES patients(id),
    visit_id TEXT NOT NULL REFERENCES visits(id),
    clinician_id TEXT NOT NULL REFERENCES clinicians(id),
    time_zone TEXT NOT NULL,
    language TEXT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    missed_after INTEGER NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    sealed_token TEXT,
    revoked_at BIGINT,
    missed_flagged_through BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX monitoring_enrolments_by_patient ON monitoring_enrolments (patient_id);
CREATE INDEX monitoring_enrolments_by_end ON monitoring_enrolments (ends_at);
-- One check-in per half-day slot (the slot's start, Unix seconds).
CREATE TABLE monitoring_check_ins (
    enrolment_id TEXT NOT NULL REFERENCES monitoring_enrolments(id),
    slot_start BIGINT NOT NULL,
    answered_at BIGINT NOT NULL,
    answers TEXT NOT NULL,
    red_flags TEXT NOT NULL,
    PRIMARY KEY (enrolment_id, slot_start)
);
