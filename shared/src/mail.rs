//! Outgoing mail: the welcome mail, sent once per tenant.
//!
//! The `mail_log` row is checked before sending and written after; the Message-ID is
//! derived from the tenant, so in the one window where a crash can cause a resend
//! (after the SMTP server accepted, before the row was written) the copy carries the same
//! Message-ID and mail clients show one message.

use std::path::PathBuf;

use lettre::{
    message::{header::ContentType, Mailbox, MultiPart, SinglePart},
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};
use serde::Serialize;
use sqlx::PgConnection;

use crate::{
    config::{redact_url, Config},
    error::{Context as _, Error, Result},
    tenants::Tenant,
};

/// How a mail left.
#[derive(Debug, Clone, Serialize)]
pub struct Sent {
    /// The Message-ID header it carries.
    pub message_id: String,
    /// `smtp`, or `file` when no SMTP server is configured.
    pub transport: String,
    /// The .eml file, when written to `mail_dir`.
    pub location: Option<String>,
    /// False if the mail log showed it had been sent before.
    pub sent_now: bool,
}

/// The welcome mail's deterministic Message-ID.
pub fn welcome_message_id(config: &Config, tenant: &Tenant) -> String {
    format!("<welcome.{}.{}@{}>", tenant.slug, tenant.id, config.mail.message_id_domain)
}

/// The tenant's login address from the configured pattern.
pub fn login_url(config: &Config, slug: &str) -> String {
    config.mail.login_url_pattern.replace("{slug}", slug)
}

/// Sends the welcome mail unless the mail log says it was sent.
pub async fn send_welcome(conn: &mut PgConnection, config: &Config, tenant: &Tenant) -> Result<Sent> {
    let message_id = welcome_message_id(config, tenant);
    let logged: Option<(String, String, Option<String>)> =
        sqlx::query_as("SELECT message_id, transport, location FROM tenant_master.mail_log WHERE tenant_id = $1 AND kind = 'welcome'")
            .bind(tenant.id)
            .fetch_optional(&mut *conn)
            .await
            .context("failed to read the mail log")?;
    if let Some((message_id, transport, location)) = logged {
        return Ok(Sent { message_id, transport, location, sent_now: false });
    }
    let subject = format!("Welcome to {}: your workspace is ready", tenant.name);
    let message = welcome_message(config, tenant, &subject, &message_id)?;
    let (transport, location) = match &config.mail.smtp_url {
        Some(url) => {
            let smtp = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                .map_err(|e| Error::Invalid(format!("SMTP_URL {} is not valid: {e}", redact_url(url))))?
                .timeout(Some(std::time::Duration::from_secs(20)))
                .build();
            smtp.send(message).await.map_err(|e| {
                Error::transient_because(format!("the SMTP server {} did not take the welcome mail: {e}", redact_url(url)), e)
            })?;
            ("smtp", None)
        }
        None => {
            let path = write_eml(config, tenant, &message).await?;
            tracing::info!(path = %path.display(), "no SMTP_URL configured: welcome mail written to a file");
            ("file", Some(path.display().to_string()))
        }
    };
    sqlx::query(
        "INSERT INTO tenant_master.mail_log (tenant_id, kind, recipient, subject, message_id, transport, location)
         VALUES ($1, 'welcome', $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(tenant.id)
    .bind(&tenant.owner_email)
    .bind(&subject)
    .bind(&message_id)
    .bind(transport)
    .bind(&location)
    .execute(&mut *conn)
    .await
    .context("failed to record the sent mail")?;
    Ok(Sent { message_id, transport: transport.into(), location, sent_now: true })
}

fn welcome_message(config: &Config, tenant: &Tenant, subject: &str, message_id: &str) -> Result<Message> {
    let from: Mailbox =
        config.mail.from.parse().map_err(|e| Error::Invalid(format!("mail.from '{}' is not an address: {e}", config.mail.from)))?;
    let to: Mailbox = tenant
        .owner_email
        .parse()
        .map_err(|e| Error::fatal_because(format!("owner e-mail '{}' is not an address: {e}", tenant.owner_email), e))?;
    let login = login_url(config, &tenant.slug);
    let text = format!(
        "Hello,\n\nyour workspace \"{name}\" is ready.\n\nSign in at {login}\n\nWorkspace id: {slug}\n",
        name = tenant.name,
        slug = tenant.slug
    );
    let html = format!(
        "<p>Hello,</p><p>your workspace <strong>{name}</strong> is ready.</p><p><a href=\"{login}\">Sign in at {login}</a></p><p>Workspace id: {slug}</p>",
        name = html_escape(&tenant.name),
        login = html_escape(&login),
        slug = tenant.slug
    );
    Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .message_id(Some(message_id.to_owned()))
        .multipart(
            MultiPart::alternative()
                .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(text))
                .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(html)),
        )
        .map_err(|e| Error::fatal_because(format!("failed to build the welcome mail: {e}"), e))
}

async fn write_eml(config: &Config, tenant: &Tenant, message: &Message) -> Result<PathBuf> {
    crate::private_files::create_dir(&config.mail_dir, false).await?;
    let path = config.mail_dir.join(format!("welcome-{}.eml", tenant.slug));
    let partial = config.mail_dir.join(format!("welcome-{}.eml.partial", tenant.slug));
    crate::private_files::write(&partial, &message.formatted()).await?;
    tokio::fs::rename(&partial, &path).await.context(format!("failed to write {}", path.display()))?;
    Ok(path)
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
