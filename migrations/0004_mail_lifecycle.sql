-- Mail sent per tenant (at most one per kind) and the lifecycle job types.
CREATE TABLE tenant_master.mail_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenant_master.tenants (id),
    kind        text NOT NULL,
    recipient   text NOT NULL,
    subject     text NOT NULL,
    message_id  text NOT NULL UNIQUE,
    transport   text NOT NULL CHECK (transport IN ('smtp', 'file')),
    -- The .eml file when no SMTP server is configured.
    location    text,
    sent_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, kind)
);

INSERT INTO tenant_master.job_types (job_type, max_attempts, description) VALUES
    ('SendWelcomeMail', 6, 'the welcome mail to a new tenant''s owner, once'),
    ('PauseTenant', 5, 'pause or suspend: the tenant role loses LOGIN, its sessions end'),
    ('ResumeTenant', 5, 'give a paused or suspended tenant its LOGIN back'),
    ('DeleteTenant', 5, 'verified pre_delete backup, then drop schema or database and role');
