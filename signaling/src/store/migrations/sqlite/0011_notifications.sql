-- A clinician's inbox: red flags, follow-ups booked sooner or handed over,
-- missed monitoring check-ins. Ids and codes only; the console shows them
-- until read, and each is also sent to the gateway as a staff message.
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    clinician_id TEXT NOT NULL REFERENCES clinicians(id),
    kind TEXT NOT NULL,
    visit_id TEXT REFERENCES visits(id),
    follow_up_id TEXT,
    detail TEXT,
    created_at BIGINT NOT NULL,
    read_at BIGINT
);
CREATE INDEX notifications_by_clinician ON notifications (clinician_id, read_at, created_at);
