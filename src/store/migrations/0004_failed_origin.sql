-- Where a failed message came from, for humans: a file path, "stdin", or "mailbox UID n".
ALTER TABLE failed_messages ADD COLUMN origin TEXT NOT NULL DEFAULT '';
