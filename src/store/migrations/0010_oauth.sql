-- OAuth2 sign-in (issue 16): for each [oauth2.NAME] provider, the tokens IMAP and SMTP
-- sign in with, and how their last renewal went. A refresh token is as secret as a
-- password: it is kept here and nowhere else (never in a log, never in the config).
CREATE TABLE oauth_tokens (
    provider        TEXT PRIMARY KEY,
    -- None for client credentials (the application signs in with its secret).
    refresh_token   TEXT,
    access_token    TEXT,
    issued_at       TEXT,
    expires_at      TEXT,
    -- 'ok'; 'needs_sign_in': the provider refused the sign-in (revoked, expired,
    -- password changed): nothing is tried until the next `oauth login`; 'failing': the
    -- last renewal failed in a way that may pass (the network, the server).
    state           TEXT NOT NULL CHECK (state IN ('ok', 'needs_sign_in', 'failing')),
    last_refresh_at TEXT,
    last_result     TEXT,
    -- A renewal under way (a claim, as the outbox's): until then no other process sends
    -- the same refresh token, which providers that rotate them take for a stolen one.
    renewing_until  TEXT
) STRICT;
