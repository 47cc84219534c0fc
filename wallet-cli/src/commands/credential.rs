//! `mycel credential …`: consortium membership credentials (VC-JWT).

use std::path::{Path, PathBuf};

use jsonrpsee::core::client::ClientT;
use jsonrpsee::rpc_params;
use mycel_identity::Did;
use mycel_identity::credential::{Expectations, Membership, issue_membership, verify_membership};
use mycel_identity::revocation::Revocation;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Report;
use crate::cli::CredentialCommand;
use crate::context::{Context, read_input};
use crate::error::{CliError, CliResult, Kind, io_error};
use crate::rpc::{Endpoint, runtime};

/// Runs a `credential` subcommand (`node`: where `revoke --publish` submits the revocation).
pub fn run(cmd: CredentialCommand, ctx: &Context, node: &Endpoint) -> CliResult<Report> {
    match cmd {
        CredentialCommand::Issue {
            subject,
            consortium,
            expires,
            key,
            out,
        } => issue(&subject, &consortium, &expires, &key, out, ctx),
        CredentialCommand::Verify {
            file,
            issuer,
            subject,
            consortium,
        } => verify(&file, issuer, subject, consortium),
        CredentialCommand::Revoke {
            subject,
            consortium,
            key,
            out,
            publish,
        } => revoke(
            &subject,
            &consortium,
            &key,
            out,
            publish.then_some(node),
            ctx,
        ),
    }
}

fn revoke(
    subject: &str,
    consortium: &str,
    key: &str,
    out: Option<PathBuf>,
    publish: Option<&Endpoint>,
    ctx: &Context,
) -> CliResult<Report> {
    let subject = Did::parse(subject)?;
    let issuer = ctx.unlock(key)?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let revocation = Revocation::sign(&issuer, &subject, consortium, now)?;
    let json_text = revocation.to_json();
    let mut data = json!({
        "revocation": serde_json::to_value(&revocation).unwrap_or(Value::Null),
        "subject": subject,
        "issuer": revocation.issuer,
        "consortium": consortium,
    });
    let mut text = String::new();
    match out {
        Some(path) => {
            std::fs::write(&path, format!("{json_text}\n"))
                .map_err(|e| io_error("writing", &path, e))?;
            ctx.note(format!("revocation written to {}", path.display()));
        }
        None if publish.is_none() => text = json_text,
        None => {}
    }
    if let Some(node) = publish {
        let status: Value = runtime()?.block_on(async {
            let client = node.http()?;
            client
                .request("mycel_revokeMembership", rpc_params![revocation])
                .await
                .map_err(|e| node.error(e))
        })?;
        let applied = status["status"].as_str().unwrap_or("unknown").to_owned();
        if text.is_empty() {
            text = format!(
                "revocation of {subject} submitted to {}: {applied}",
                node.url
            );
        }
        data["published"] = status;
    }
    Ok(Report::new(text, data))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

fn describe(m: &Membership) -> Value {
    json!({
        "issuer": m.issuer,
        "subject": m.subject,
        "consortium": m.consortium,
        "issued_at": rfc3339(m.issued_at),
        "expires_at": rfc3339(m.expires_at),
        "id": m.id,
    })
}

fn issue(
    subject: &str,
    consortium: &str,
    expires: &str,
    key: &str,
    out: Option<PathBuf>,
    ctx: &Context,
) -> CliResult<Report> {
    let subject = Did::parse(subject)?;
    let expires = OffsetDateTime::parse(expires, &Rfc3339).map_err(|e| {
        CliError::new(
            Kind::Invalid,
            format!("--expires must be an RFC 3339 time such as 2027-01-31T00:00:00Z: {e}"),
        )
    })?;
    let now = OffsetDateTime::now_utc();
    if expires <= now {
        return Err(CliError::new(Kind::Invalid, "--expires is in the past"));
    }
    if consortium.trim().is_empty() {
        return Err(CliError::new(
            Kind::Invalid,
            "--consortium must not be empty",
        ));
    }
    let issuer = ctx.unlock(key)?;
    let jwt = issue_membership(&issuer, &subject, consortium, now, expires)?;
    let issuer_did = Did::from_public_key(issuer.public());
    let data = json!({
        "credential": jwt,
        "issuer": issuer_did,
        "subject": subject,
        "consortium": consortium,
        "expires_at": rfc3339(expires),
    });
    match out {
        Some(path) => {
            std::fs::write(&path, format!("{jwt}\n")).map_err(|e| io_error("writing", &path, e))?;
            ctx.note(format!("credential written to {}", path.display()));
            Ok(Report::new(String::new(), data))
        }
        None => Ok(Report::new(jwt, data)),
    }
}

fn verify(
    file: &Path,
    issuer: Option<String>,
    subject: Option<String>,
    consortium: Option<String>,
) -> CliResult<Report> {
    let issuer = issuer.as_deref().map(Did::parse).transpose()?;
    let subject = subject.as_deref().map(Did::parse).transpose()?;
    let bytes = read_input(file)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| CliError::new(Kind::Invalid, "the credential file is not UTF-8 text"))?;
    let expect = Expectations {
        issuer: issuer.as_ref(),
        subject: subject.as_ref(),
        consortium: consortium.as_deref(),
    };
    let membership = verify_membership(text.trim(), OffsetDateTime::now_utc(), &expect)?;
    let data = describe(&membership);
    let text = format!(
        "valid membership credential\nissuer:     {}\nsubject:    {}\nconsortium: {}\nexpires:    {}",
        membership.issuer,
        membership.subject,
        membership.consortium,
        rfc3339(membership.expires_at)
    );
    Ok(Report::new(text, data))
}
