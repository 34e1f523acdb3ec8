-- A clinician's "deny" keeps a link out until a clinician lets it back in.
ALTER TABLE links ADD COLUMN denied_at BIGINT;
