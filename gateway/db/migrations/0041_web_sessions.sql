-- The back office's sessions. The cookie holds an opaque random token; only its
-- SHA-256 is stored, so a copy of this table opens no session. A session ends
-- at expires_at, or at once when revoked (logout, the user disabled).
-- csrf_token is the session's anti-CSRF token, sent back with every form and
-- htmx request.
CREATE TABLE web_sessions (
    token_sha256 bytea PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES web_users (id),
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX web_sessions_user ON web_sessions (user_id) WHERE revoked_at IS NULL;
