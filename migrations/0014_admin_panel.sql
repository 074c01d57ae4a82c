-- The admin panel (`tenantctl admin serve`): its users, their sessions, and failed logins
-- (the rate limit's memory). Passwords are stored only as argon2 hashes (PHC strings);
-- sessions only as the SHA-256 of their cookie, so a read of this table logs nobody in.
CREATE TABLE tenant_master.admin_users (
    name          text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    role          text NOT NULL CHECK (role IN ('admin', 'viewer')),
    password_hash text NOT NULL CHECK (password_hash LIKE '$argon2%'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenant_master.admin_sessions (
    token_sha256 bytea PRIMARY KEY,
    user_name    text NOT NULL REFERENCES tenant_master.admin_users (name) ON DELETE CASCADE,
    -- The session's CSRF proof: every state-changing form carries it back.
    csrf_token   text NOT NULL,
    client_ip    text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX admin_sessions_user_idx ON tenant_master.admin_sessions (user_name);

-- One row per refused password, kept a day: logins are refused once a user, or an
-- address, has too many in the window (see the panel's auth module).
CREATE TABLE tenant_master.admin_login_failures (
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    user_name text NOT NULL,
    client_ip text NOT NULL
);
CREATE INDEX admin_login_failures_user_idx ON tenant_master.admin_login_failures (user_name, at);
CREATE INDEX admin_login_failures_ip_idx ON tenant_master.admin_login_failures (client_ip, at);
