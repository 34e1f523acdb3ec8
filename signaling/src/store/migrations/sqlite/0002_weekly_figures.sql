CREATE TABLE consultation_totals (
    week_start TEXT PRIMARY KEY,
    total BIGINT NOT NULL
);
CREATE INDEX audit_events_by_action ON audit_events (action, at);
CREATE INDEX visits_by_start ON visits (scheduled_start);
