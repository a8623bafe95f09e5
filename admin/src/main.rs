//! `scripts/admin`: operator CLI for projects and erasures, against DYNAMODB_ENDPOINT (local) or AWS.
//!
//!   project create --region R [--id ID] [--passcode P] [--token T] [--passcode-expires RFC3339]
//!   project show   --region R --id ID
//!   passcode add    --region R --id ID [--passcode P] [--expires RFC3339]
//!   passcode revoke --region R --id ID --passcode-id PID
//!   profile erase   --region R --id ID (--identity I | --email E | --phone P | --clevertap-id C)
//!                   [--regulation gdpr|ccpa] [--request-id RID]
//!   holders backfill --region R   (once, before deploying the stack without email/phone indexes)
//!
//! Secrets are printed once, when created; stored passcodes are salted hashes.

use std::collections::HashMap;
use std::process::ExitCode;

use serde_json::json;
use shared::config::Config;
use shared::domain::auth::{
    Project, ProjectStatus, StoredPasscode, generate_secret, valid_project_id,
};
use shared::domain::protocol::Regulation;
use shared::domain::region::Region;
use shared::ports::projects::{Projects, revoke_passcode};
use shared::stages::erasure::{ErasureOutcome, ErasureRequest};

const USAGE: &str = "usage:
  admin project create --region R [--id ID] [--passcode P] [--token T] [--passcode-expires RFC3339]
  admin project show --region R --id ID
  admin passcode add --region R --id ID [--passcode P] [--expires RFC3339]
  admin passcode revoke --region R --id ID --passcode-id PID
  admin profile erase --region R --id ID (--identity I | --email E | --phone P | --clevertap-id C) [--regulation gdpr|ccpa] [--request-id RID]
  admin holders backfill --region R";

/// Why an erasure is refused before anything is written.
const NO_TOMBSTONE_KEYS: &str = "no tombstone keys: set TOMBSTONE_KEYS_SECRET to the region stack's \
     TombstoneKeysSecretArn output (or run against DynamoDB Local with DYNAMODB_ENDPOINT)";

/// `--passcode` if given and strong enough (as strong as a generated one), else a generated one.
fn chosen_or_generated_passcode(flags: &HashMap<String, String>) -> Result<String, String> {
    match flags.get("passcode") {
        Some(p) => {
            shared::domain::auth::check_passcode_strength(p)?;
            Ok(p.clone())
        }
        None => Ok(generate_secret()),
    }
}

fn parse_flags(args: &[String]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {flag:?}"))?;
        let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
        out.insert(name.to_owned(), value.clone());
    }
    Ok(out)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` into epoch milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, sec) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(|c| c.is_ascii_digit()).collect();
        millis = format!("{:0<3}", &digits[..digits.len().min(3)])
            .parse()
            .ok()?;
        rest = &frac[digits.len()..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 60 + o[4..6].parse::<i64>().ok()?)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant).
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60) * 1000) + millis)
}

async fn run(args: Vec<String>) -> Result<serde_json::Value, String> {
    let (noun, verb) = (
        args.first().map(String::as_str),
        args.get(1).map(String::as_str),
    );
    let flags = parse_flags(args.get(2..).unwrap_or_default())?;
    let region: Region = flags
        .get("region")
        .ok_or("--region is required")?
        .parse()
        .map_err(|e| format!("{e}"))?;
    let config = Config::from_env().map_err(|e| e.to_string())?;
    // The function's own configuration: the stack's tombstone keys (TOMBSTONE_KEYS_SECRET), or
    // the local ones only against DynamoDB Local; never the public keys against AWS.
    let store = config.store().await;
    let expires = |key: &str| -> Result<Option<i64>, String> {
        flags
            .get(key)
            .map(|v| {
                parse_rfc3339(v)
                    .ok_or_else(|| format!("--{key} must be RFC 3339, e.g. 2027-01-31T00:00:00Z"))
            })
            .transpose()
    };
    let id = || -> Result<String, String> {
        flags
            .get("id")
            .cloned()
            .ok_or_else(|| "--id is required".to_owned())
    };
    match (noun, verb) {
        (Some("project"), Some("create")) => {
            let id = flags
                .get("id")
                .cloned()
                .unwrap_or_else(|| format!("P-{}", &generate_secret()[..12].to_uppercase()));
            if !valid_project_id(&id) {
                return Err("--id may use letters, digits, - and _ only (64 at most)".into());
            }
            let passcode = chosen_or_generated_passcode(&flags)?;
            let token = flags.get("token").cloned().unwrap_or_else(generate_secret);
            let project = Project {
                project_id: id.clone(),
                region,
                account_token: token.clone(),
                passcodes: vec![StoredPasscode::new(&passcode, expires("passcode-expires")?)],
                status: ProjectStatus::Active,
                created_ms: shared::domain::protocol::now_ms(),
            };
            store
                .create_project(&project)
                .await
                .map_err(|e| e.to_string())?;
            Ok(
                json!({"account_id": id, "passcode": passcode, "account_token": token, "region": region.as_str()}),
            )
        }
        (Some("project"), Some("show")) => {
            let p = store
                .project(region, &id()?)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no such project")?;
            let passcodes: Vec<_> = p
                .passcodes
                .iter()
                .map(|c| json!({"passcode_id": c.id, "expires_ms": c.expires_ms}))
                .collect();
            Ok(
                json!({"account_id": p.project_id, "region": p.region.as_str(), "status": p.status,
                      "account_token": p.account_token, "passcodes": passcodes, "created_ms": p.created_ms}),
            )
        }
        (Some("passcode"), Some("add")) => {
            let passcode = chosen_or_generated_passcode(&flags)?;
            let stored = StoredPasscode::new(&passcode, expires("expires")?);
            store
                .add_passcode(region, &id()?, &stored)
                .await
                .map_err(|e| e.to_string())?;
            Ok(
                json!({"passcode_id": stored.id, "passcode": passcode, "expires_ms": stored.expires_ms}),
            )
        }
        (Some("passcode"), Some("revoke")) => {
            let pid = flags
                .get("passcode-id")
                .ok_or("--passcode-id is required")?;
            let revoked = revoke_passcode(&store, region, &id()?, pid)
                .await
                .map_err(|e| e.to_string())?;
            Ok(json!({"revoked": revoked}))
        }
        (Some("profile"), Some("erase")) => {
            let id = id()?;
            // Tombstones hashed with any other key than the pipeline's are never found, so
            // older batches would bring the person back: no keys, no erasure.
            if !store.checks_tombstones() {
                return Err(NO_TOMBSTONE_KEYS.to_owned());
            }
            store
                .project(region, &id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no such project")?;
            let (kind, value) = ["identity", "email", "phone", "clevertap-id"]
                .into_iter()
                .find_map(|k| flags.get(k).map(|v| (k, v)))
                .ok_or("one of --identity, --email, --phone or --clevertap-id is required")?;
            let request = ErasureRequest::by_operator(
                kind,
                value,
                flags.get("request-id").cloned(),
                Regulation::parse(flags.get("regulation").map(String::as_str)),
            )
            .ok_or_else(|| format!("--{kind} {value:?} is not a value this output stores"))?;
            let outcome = shared::stages::erasure::erase(&store, region, &id, &request)
                .await
                .map_err(|e| e.to_string())?;
            Ok(match outcome {
                ErasureOutcome::Erased(audit) => serde_json::to_value(audit).expect("serializes"),
                ErasureOutcome::AlreadyErased => {
                    json!({"request_id": request.request_id, "already_erased": true})
                }
            })
        }
        (Some("holders"), Some("backfill")) => {
            let (first, second) = shared::stages::holders_backfill::backfill_region(&store, region)
                .await
                .map_err(|e| e.to_string())?;
            Ok(json!({"profiles": first, "holders": second}))
        }
        _ => Err(USAGE.to_owned()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
        eprintln!("{USAGE}");
        return ExitCode::from(if args.is_empty() { 2 } else { 0 });
    }
    match run(args).await {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("admin: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_rfc3339;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2024-05-01T19:45:44.065Z"),
            Some(1_714_592_744_065)
        );
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("tomorrow"), None);
    }
}
