ALTER TABLE visits ADD COLUMN provisioned_at BIGINT;
CREATE TABLE outbox (
    idempotency_key TEXT PRIMARY KEY,
    visit_id TEXT NOT NULL REFERENCES visits(id),
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    attempts INTEGER NOT NULL,
    delivered_at BIGINT,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox (delivered_at, next_attempt_at);
CREATE TABLE calendar_tokens (
    clinician_id TEXT PRIMARY KEY REFERENCES clinicians(id),
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
