-- Group sessions: a recurring class (adapted physical activity, therapeutic
-- education) led by one clinician for up to twelve enrolled patients.
-- Each occurrence is a visit of kind 'group' on the leader's calendar (so
-- the one overlap rule holds for classes too); the visit's patient is the
-- class's roster record, a patients row named after the class that never
-- gets a link of its own.
CREATE TABLE group_sessions (
    id TEXT PRIMARY KEY,
    leader_id TEXT NOT NULL REFERENCES clinicians(id),
    roster_patient_id TEXT NOT NULL REFERENCES patients(id),
    title TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    -- ISO weekdays as a sorted list, 1 = Monday: '2,5' is Tuesdays and Fridays.
    weekdays TEXT NOT NULL,
    -- Local start, minutes after midnight in time_zone.
    local_minute INTEGER NOT NULL CHECK (local_minute BETWEEN 0 AND 1439),
    duration_minutes INTEGER NOT NULL,
    first_day TEXT NOT NULL,
    weeks INTEGER NOT NULL CHECK (weeks BETWEEN 1 AND 52),
    capacity INTEGER NOT NULL CHECK (capacity BETWEEN 1 AND 12),
    created_at BIGINT NOT NULL
);
CREATE INDEX group_sessions_by_leader ON group_sessions (leader_id);

CREATE TABLE group_occurrences (
    visit_id TEXT PRIMARY KEY REFERENCES visits(id),
    session_id TEXT NOT NULL REFERENCES group_sessions(id)
);
CREATE INDEX group_occurrences_by_session ON group_occurrences (session_id);

CREATE TABLE group_enrolments (
    session_id TEXT NOT NULL REFERENCES group_sessions(id),
    patient_id TEXT NOT NULL REFERENCES patients(id),
    enrolled_at BIGINT NOT NULL,
    withdrawn_at BIGINT,
    PRIMARY KEY (session_id, patient_id)
);

-- A class holds at most its capacity of enrolled (not withdrawn) patients,
-- however many enrol at once. Writers hold SQLite's write lock (BEGIN
-- IMMEDIATE), so the count and the insert cannot interleave.
CREATE TRIGGER group_enrolments_capacity_on_insert BEFORE INSERT ON group_enrolments
WHEN NEW.withdrawn_at IS NULL AND (
    SELECT count(*) FROM group_enrolments WHERE session_id = NEW.session_id AND withdrawn_at IS NULL
) >= (SELECT capacity FROM group_sessions WHERE id = NEW.session_id)
BEGIN
    SELECT RAISE(ABORT, 'class_full');
END;

CREATE TRIGGER group_enrolments_capacity_on_update BEFORE UPDATE OF withdrawn_at ON group_enrolments
WHEN OLD.withdrawn_at IS NOT NULL AND NEW.withdrawn_at IS NULL AND (
    SELECT count(*) FROM group_enrolments WHERE session_id = NEW.session_id AND withdrawn_at IS NULL
) >= (SELECT capacity FROM group_sessions WHERE id = NEW.session_id)
BEGIN
    SELECT RAISE(ABORT, 'class_full');
END;

-- A class link names its enrolled patient (a visit's own links name none:
-- they belong to the visit's patient, or are guests').
ALTER TABLE links ADD COLUMN patient_id TEXT REFERENCES patients(id);
CREATE INDEX links_by_patient ON links (patient_id);

-- Who came to each occurrence: one row per enrolled patient admitted.
CREATE TABLE group_attendance (
    visit_id TEXT NOT NULL REFERENCES visits(id),
    patient_id TEXT NOT NULL REFERENCES patients(id),
    admitted_at BIGINT NOT NULL,
    PRIMARY KEY (visit_id, patient_id)
);
