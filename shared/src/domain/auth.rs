//! Authentication, pure: the caller token, hashed passcodes and the output-credential check.
//!
//! Passcodes are stored as SHA-256 over a random 16-byte salt and the passcode. Generated passcodes
//! carry 128 bits of randomness, so a slow KDF would add latency to every uncached request without
//! adding safety; every comparison of secrets runs in constant time.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::region::Region;

/// Checks `Authorization: Token <token>` against the configured caller token, in constant time.
pub fn caller_token_matches(authorization: Option<&str>, expected: &str) -> bool {
    let Some(given) = authorization.and_then(|h| {
        let h = h.trim();
        let (scheme, rest) = h.split_once(char::is_whitespace)?;
        scheme.eq_ignore_ascii_case("token").then(|| rest.trim())
    }) else {
        return false;
    };
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// One passcode of a project, as stored: never the passcode itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPasscode {
    /// Short public id, to revoke one passcode without knowing it.
    pub id: String,
    pub salt: String,
    pub hash: String,
    /// Epoch ms after which the passcode no longer works; `None` is "forever".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
}

impl StoredPasscode {
    pub fn new(passcode: &str, expires_ms: Option<i64>) -> Self {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let mut id = [0u8; 4];
        rand::rng().fill_bytes(&mut id);
        Self {
            id: hex::encode(id),
            salt: hex::encode(salt),
            hash: hash_passcode(&salt, passcode),
            expires_ms,
        }
    }

    /// Constant-time comparison of the candidate's hash with the stored one.
    pub fn matches(&self, candidate: &str) -> bool {
        let Ok(salt) = hex::decode(&self.salt) else {
            return false;
        };
        let computed = hash_passcode(&salt, candidate);
        bool::from(computed.as_bytes().ct_eq(self.hash.as_bytes()))
    }

    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_ms.is_some_and(|e| e <= now_ms)
    }
}

fn hash_passcode(salt: &[u8], passcode: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(passcode.as_bytes());
    hex::encode(h.finalize())
}

/// Random secret for generated passcodes and tokens: 128 bits, hex.
pub fn generate_secret() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The least strength a passcode chosen by an operator must have: as much as a generated one
/// (128 random bits). Passcodes are stored as one salted SHA-256, which is only safe for secrets
/// that cannot be guessed; refusing weak ones is simpler than a memory-hard KDF behind the cache.
pub const MIN_PASSCODE_BITS: f64 = 128.0;

/// An upper estimate of a passcode's strength in bits: its length times the bits of the
/// character classes it uses (lower case, upper case, digits, others). A passcode made by
/// [`generate_secret`] has 32 hex digits: 165 by this estimate, 128 truly.
pub fn passcode_strength_bits(passcode: &str) -> f64 {
    let has = |f: fn(&char) -> bool| passcode.chars().any(|c| f(&c));
    let alphabet = [
        (has(char::is_ascii_lowercase), 26),
        (has(char::is_ascii_uppercase), 26),
        (has(char::is_ascii_digit), 10),
        (has(|c| !c.is_ascii_alphanumeric()), 33),
    ]
    .iter()
    .filter(|(used, _)| *used)
    .map(|(_, n)| *n)
    .sum::<u32>();
    if alphabet == 0 {
        return 0.0;
    }
    passcode.chars().count() as f64 * f64::from(alphabet).log2()
}

/// Refuses a passcode an operator chose if it is weaker than [`MIN_PASSCODE_BITS`].
pub fn check_passcode_strength(passcode: &str) -> Result<(), String> {
    let bits = passcode_strength_bits(passcode);
    if bits < MIN_PASSCODE_BITS {
        return Err(format!(
            "the passcode is too weak (about {bits:.0} bits; at least {MIN_PASSCODE_BITS:.0} are \
             needed: e.g. 22 random letters and digits, or leave --passcode out to generate one)"
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProjectStatus {
    Active,
    Disabled,
}

/// A project as stored in its home region's `projects` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub project_id: String,
    pub region: Region,
    pub account_token: String,
    pub passcodes: Vec<StoredPasscode>,
    pub status: ProjectStatus,
    pub created_ms: i64,
}

/// Project ids go into every key, so they are restricted to characters that cannot forge a key.
pub fn valid_project_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Output credentials as mParticle sends them in `account.account_settings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputCredentials<'a> {
    pub account_id: &'a str,
    pub passcode: &'a str,
    pub account_token: &'a str,
    pub region: Region,
}

/// Why output credentials can never work; mParticle is told to suspend (or gets 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("account setting `{0}` is missing")]
    MissingSetting(&'static str),
    #[error("region {0:?} is not one of eu1, in1, sg1, us1, aps3, mec1, sk1")]
    UnknownRegion(String),
    #[error("unknown project in this region")]
    UnknownProject,
    #[error("the project is disabled")]
    ProjectDisabled,
    #[error("passcode does not match")]
    WrongPasscode,
    #[error("passcode has expired")]
    ExpiredPasscode,
    #[error("account token does not match")]
    WrongToken,
}

impl CredentialError {
    /// A short code for logs: which check failed, without echoing what the caller sent.
    pub fn code(&self) -> &'static str {
        match self {
            CredentialError::MissingSetting(_) => "missing_setting",
            CredentialError::UnknownRegion(_) => "unknown_region",
            CredentialError::UnknownProject => "unknown_project",
            CredentialError::ProjectDisabled => "project_disabled",
            CredentialError::WrongPasscode => "wrong_passcode",
            CredentialError::ExpiredPasscode => "expired_passcode",
            CredentialError::WrongToken => "wrong_token",
        }
    }
}

/// The one answer to a subscription whose output credentials fail, whichever check failed: a
/// caller must not learn which projects exist or which setting was wrong.
pub const CREDENTIALS_REJECTED: &str = "output credentials rejected";

pub mod setting_ids {
    pub const ACCOUNT_ID: &str = "accountId";
    pub const PASSCODE: &str = "passcode";
    pub const ACCOUNT_TOKEN: &str = "accountToken";
    pub const REGION: &str = "region";
    pub const USER_ID_TYPE: &str = "userIdType";
    pub const SEGMENT_ID: &str = "segmentId";
}

/// Reads the four account settings; the region selects which tables to look in.
pub fn read_credentials(
    settings: &crate::domain::protocol::Settings,
) -> Result<OutputCredentials<'_>, CredentialError> {
    let get = |id: &'static str| {
        settings
            .get(id)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .ok_or(CredentialError::MissingSetting(id))
    };
    let region_text = get(setting_ids::REGION)?;
    let region = Region::parse(region_text)
        .ok_or_else(|| CredentialError::UnknownRegion(region_text.to_owned()))?;
    Ok(OutputCredentials {
        account_id: get(setting_ids::ACCOUNT_ID)?,
        passcode: get(setting_ids::PASSCODE)?,
        account_token: get(setting_ids::ACCOUNT_TOKEN)?,
        region,
    })
}

/// Checks a passcode against a project's live passcodes. Every passcode is compared (no early
/// exit), so timing does not reveal which one matched.
pub fn check_passcode(
    project: &Project,
    passcode: &str,
    now_ms: i64,
) -> Result<(), CredentialError> {
    let mut matched_live = false;
    let mut matched_expired = false;
    for p in &project.passcodes {
        if p.matches(passcode) {
            if p.is_expired(now_ms) {
                matched_expired = true;
            } else {
                matched_live = true;
            }
        }
    }
    match (matched_live, matched_expired) {
        (true, _) => Ok(()),
        (false, true) => Err(CredentialError::ExpiredPasscode),
        (false, false) => Err(CredentialError::WrongPasscode),
    }
}

/// Checks credentials against the project found in their region (`None`: no such project).
pub fn check_credentials(
    creds: &OutputCredentials<'_>,
    project: Option<&Project>,
    now_ms: i64,
) -> Result<(), CredentialError> {
    let project = project.ok_or(CredentialError::UnknownProject)?;
    if project.region != creds.region {
        return Err(CredentialError::UnknownProject);
    }
    let passcode = check_passcode(project, creds.passcode, now_ms);
    let token_ok = bool::from(
        creds
            .account_token
            .as_bytes()
            .ct_eq(project.account_token.as_bytes()),
    );
    passcode?;
    if !token_ok {
        return Err(CredentialError::WrongToken);
    }
    if project.status != ProjectStatus::Active {
        return Err(CredentialError::ProjectDisabled);
    }
    Ok(())
}

/// What a data subject request's output credentials allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErasureAuthority {
    /// Every setting checks out.
    Full,
    /// The project exists in the region and the account token matches, but the passcode is wrong
    /// (revoked), expired, or the project is disabled: the erasure is carried out all the same,
    /// and alarmed. mParticle never retries a 403, so refusing would lose the person's request
    /// for good (docs/contract.md §2.6).
    Lapsed(CredentialError),
}

/// Checks a data subject request's credentials: as [`check_credentials`], except that a lapsed
/// passcode or a disabled project does not stop an erasure once the project and its account
/// token match.
pub fn check_erasure_credentials(
    creds: &OutputCredentials<'_>,
    project: Option<&Project>,
    now_ms: i64,
) -> Result<ErasureAuthority, CredentialError> {
    let lapsed = match check_credentials(creds, project, now_ms) {
        Ok(()) => return Ok(ErasureAuthority::Full),
        Err(
            e @ (CredentialError::WrongPasscode
            | CredentialError::ExpiredPasscode
            | CredentialError::ProjectDisabled),
        ) => e,
        Err(e) => return Err(e),
    };
    let project = project.ok_or(CredentialError::UnknownProject)?;
    let token_ok = bool::from(
        creds
            .account_token
            .as_bytes()
            .ct_eq(project.account_token.as_bytes()),
    );
    if !token_ok {
        return Err(CredentialError::WrongToken);
    }
    Ok(ErasureAuthority::Lapsed(lapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> Project {
        Project {
            project_id: "p1".into(),
            region: Region::Eu1,
            account_token: "tok".into(),
            passcodes: vec![
                StoredPasscode::new("old", Some(1_000)),
                StoredPasscode::new("live", None),
            ],
            status: ProjectStatus::Active,
            created_ms: 0,
        }
    }

    fn creds<'a>(passcode: &'a str, token: &'a str) -> OutputCredentials<'a> {
        OutputCredentials {
            account_id: "p1",
            passcode,
            account_token: token,
            region: Region::Eu1,
        }
    }

    #[test]
    fn operator_passcodes_need_as_much_strength_as_generated_ones() {
        assert!(check_passcode_strength(&generate_secret()).is_ok());
        assert!(check_passcode_strength("hunter2").is_err());
        assert!(check_passcode_strength("Summer2026!").is_err());
        assert!(
            check_passcode_strength("Xk9vQ2mL7pR4tW8zN3bF6h").is_ok(),
            "22 mixed"
        );
        assert!(
            check_passcode_strength(&"a".repeat(26)).is_err(),
            "26 × 4.7 bits"
        );
        assert_eq!(passcode_strength_bits(""), 0.0);
    }

    #[test]
    fn caller_token_header_forms() {
        assert!(caller_token_matches(Some("Token abc"), "abc"));
        assert!(caller_token_matches(Some("token   abc "), "abc"));
        assert!(!caller_token_matches(Some("Bearer abc"), "abc"));
        assert!(!caller_token_matches(Some("Token abd"), "abc"));
        assert!(!caller_token_matches(Some("Token"), "abc"));
        assert!(!caller_token_matches(None, "abc"));
        assert!(!caller_token_matches(Some("Token "), ""));
    }

    #[test]
    fn passcodes_are_salted_and_checked() {
        let a = StoredPasscode::new("same", None);
        let b = StoredPasscode::new("same", None);
        assert_ne!(
            a.hash, b.hash,
            "salt makes equal passcodes hash differently"
        );
        assert!(!a.hash.contains("same"));
        assert!(a.matches("same") && !a.matches("Same"));
    }

    #[test]
    fn credential_outcomes() {
        let p = project();
        assert_eq!(
            check_credentials(&creds("live", "tok"), Some(&p), 5_000),
            Ok(())
        );
        assert_eq!(
            check_credentials(&creds("old", "tok"), Some(&p), 5_000),
            Err(CredentialError::ExpiredPasscode)
        );
        assert_eq!(
            check_credentials(&creds("old", "tok"), Some(&p), 500),
            Ok(())
        );
        assert_eq!(
            check_credentials(&creds("nope", "tok"), Some(&p), 0),
            Err(CredentialError::WrongPasscode)
        );
        assert_eq!(
            check_credentials(&creds("live", "tik"), Some(&p), 0),
            Err(CredentialError::WrongToken)
        );
        assert_eq!(
            check_credentials(&creds("live", "tok"), None, 0),
            Err(CredentialError::UnknownProject)
        );
        let mut disabled = p.clone();
        disabled.status = ProjectStatus::Disabled;
        assert_eq!(
            check_credentials(&creds("live", "tok"), Some(&disabled), 0),
            Err(CredentialError::ProjectDisabled)
        );
    }

    #[test]
    fn reads_settings_with_region_normalised() {
        let mut s = crate::domain::protocol::Settings::new();
        s.insert("accountId".into(), " p1 ".into());
        s.insert("passcode".into(), "x".into());
        s.insert("accountToken".into(), "t".into());
        s.insert("region".into(), " US1".into());
        let c = read_credentials(&s).unwrap();
        assert_eq!((c.account_id, c.region), ("p1", Region::Us1));
        s.insert("region".into(), "eu".into());
        assert_eq!(
            read_credentials(&s),
            Err(CredentialError::UnknownRegion("eu".into()))
        );
        s.remove("region");
        assert_eq!(
            read_credentials(&s),
            Err(CredentialError::MissingSetting("region"))
        );
    }

    #[test]
    fn project_ids_cannot_forge_keys() {
        assert!(valid_project_id("TEST-123_x"));
        assert!(!valid_project_id("a#b"));
        assert!(!valid_project_id(""));
    }

    #[test]
    fn an_erasure_goes_ahead_on_a_lapsed_passcode_but_never_without_the_account_token() {
        let p = project();
        let creds = |passcode: &'static str, token: &'static str| OutputCredentials {
            account_id: "p1",
            passcode,
            account_token: token,
            region: Region::Eu1,
        };
        assert_eq!(
            check_erasure_credentials(&creds("live", "tok"), Some(&p), 5_000),
            Ok(ErasureAuthority::Full)
        );
        for (passcode, why) in [
            ("old", CredentialError::ExpiredPasscode),
            ("revoked", CredentialError::WrongPasscode),
        ] {
            assert_eq!(
                check_erasure_credentials(&creds(passcode, "tok"), Some(&p), 5_000),
                Ok(ErasureAuthority::Lapsed(why))
            );
        }
        let mut disabled = p.clone();
        disabled.status = ProjectStatus::Disabled;
        assert_eq!(
            check_erasure_credentials(&creds("live", "tok"), Some(&disabled), 5_000),
            Ok(ErasureAuthority::Lapsed(CredentialError::ProjectDisabled))
        );
        assert_eq!(
            check_erasure_credentials(&creds("revoked", "nope"), Some(&p), 5_000),
            Err(CredentialError::WrongToken)
        );
        assert_eq!(
            check_erasure_credentials(&creds("live", "tok"), None, 5_000),
            Err(CredentialError::UnknownProject)
        );
        let elsewhere = OutputCredentials {
            region: Region::Us1,
            ..creds("live", "tok")
        };
        assert_eq!(
            check_erasure_credentials(&elsewhere, Some(&p), 5_000),
            Err(CredentialError::UnknownProject)
        );
    }
}
