-- Who claimed a queued acknowledgement: a daemon that restarts after a crash gives its
-- dead predecessor's claims back at once instead of waiting for them to run out.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
