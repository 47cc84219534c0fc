//! `mycel did …`.

use mycel_identity::{Did, DocumentFormat};
use serde_json::json;

use crate::Report;
use crate::cli::{DidCommand, DocFormat};
use crate::context::Context;
use crate::error::{CliError, CliResult, Kind};

/// Runs a `did` subcommand.
pub fn run(cmd: DidCommand, ctx: &Context) -> CliResult<Report> {
    match cmd {
        DidCommand::Show { key } => {
            let info = ctx.keystore()?.info(&key)?;
            Ok(Report::new(
                info.did.to_string(),
                json!({ "name": key, "did": info.did }),
            ))
        }
        DidCommand::Resolve { did, format } => {
            let did = Did::parse(&did)?;
            let format = match format {
                DocFormat::Multikey => DocumentFormat::Multikey,
                DocFormat::Ed25519_2018 => DocumentFormat::Ed25519VerificationKey2018,
            };
            let document = did.document(format);
            let text = serde_json::to_string_pretty(&document)
                .map_err(|e| CliError::new(Kind::Internal, e.to_string()))?;
            Ok(Report::new(text, document))
        }
    }
}
