//! The simulation's workload: people (by the ladder rung that finds them, with emails and phones
//! drawn from small pools so they overlap) and mParticle's membership messages about them.

use rand::Rng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How the ladder finds a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Person {
    /// Partner ID `CleverTap_User_ID`: this CleverTap ID.
    Partner(String),
    /// Customer ID: an Identity, claimed for a new profile on first sight.
    Customer(String),
    /// mParticle ID only: its Identity when the user carries an email or phone (the ladder's
    /// last rung), anonymous and skipped otherwise.
    Mpid(String),
}

/// One user profile of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Index into the workload's people.
    pub person: usize,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// (audience id, add?) in the order of the message's entries.
    pub entries: Vec<(i64, bool)>,
}

/// One membership message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub ts_ms: i64,
    pub users: Vec<User>,
    /// Stored the bulk way (its chunks queued for the bulk worker) instead of the live way.
    #[serde(default)]
    pub bulk: bool,
}

/// A DSR erasure of one person, by the value the ladder finds them by (their Customer ID or
/// CleverTap ID), as of [`CUT_OFF_MS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dsr {
    pub request_id: String,
    /// Index into the workload's people.
    pub person: usize,
}

/// Everything mParticle will send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    pub people: Vec<Person>,
    pub messages: Vec<Message>,
    /// Kept schedules from before erasures were simulated have none.
    #[serde(default)]
    pub erasures: Vec<Dsr>,
}

/// Every user carries an mParticle ID; the ladder uses it only when nothing better is there.
pub fn mpid_of(person: usize) -> String {
    format!("{}", 9000 + person)
}

pub const BASE_MS: i64 = 1_750_000_000_000;
/// Every erasure's cut-off: messages stamped before it are covered (stamped `BASE_MS` + 0 or 1 s),
/// later ones (+ 2 or 3 s) may bring the person back. mParticle sends those only after the
/// erasure has answered 200 (they are stamped after the DSR arrived).
pub const CUT_OFF_MS: i64 = BASE_MS + 2_000;
const EMAILS: [&str; 3] = ["ann@x.io", "bob@x.io", "shared@x.io"];
const PHONES: [&str; 2] = ["+14155550101", "+14155550102"];
const AUDIENCES: [i64; 2] = [11, 12];

impl Workload {
    pub fn generate(rng: &mut StdRng) -> Self {
        let people: Vec<Person> = (0..rng.random_range(3..=6))
            .map(|i| match rng.random_range(0..6) {
                0 => Person::Mpid(mpid_of(i)),
                1 | 2 => Person::Partner(format!("ct-p{i}")),
                _ => Person::Customer(format!("c-{i}")),
            })
            .collect();
        let messages = (0..rng.random_range(2..=7))
            .map(|i| {
                let mut chosen: Vec<usize> = (0..people.len()).collect();
                let wanted = rng.random_range(1..=3.min(people.len()));
                let users = (0..wanted)
                    .map(|_| {
                        let person = chosen.swap_remove(rng.random_range(0..chosen.len()));
                        // Each profile of a membership message is in one audience at least.
                        let mut audiences: Vec<i64> = AUDIENCES
                            .iter()
                            .copied()
                            .filter(|_| rng.random_bool(0.6))
                            .collect();
                        if audiences.is_empty() {
                            audiences.push(AUDIENCES[rng.random_range(0..AUDIENCES.len())]);
                        }
                        User {
                            person,
                            email: rng
                                .random_bool(0.5)
                                .then(|| EMAILS[rng.random_range(0..EMAILS.len())].to_owned()),
                            phone: rng
                                .random_bool(0.3)
                                .then(|| PHONES[rng.random_range(0..PHONES.len())].to_owned()),
                            entries: audiences
                                .into_iter()
                                .map(|aud| (aud, rng.random_bool(0.6)))
                                .collect(),
                        }
                    })
                    .collect();
                Message {
                    id: format!("m{i}"),
                    // Ties happen: the message id breaks them.
                    ts_ms: BASE_MS + rng.random_range(0..4) * 1000,
                    users,
                    bulk: rng.random_bool(0.4),
                }
            })
            .collect();
        let erasable: Vec<usize> = (0..people.len())
            .filter(|&i| !matches!(people[i], Person::Mpid(_)))
            .collect();
        let erasures = match erasable.is_empty() || rng.random_bool(0.5) {
            true => Vec::new(),
            false => (0..rng.random_range(1..=2.min(erasable.len())))
                .map(|i| Dsr {
                    request_id: format!("r{i}"),
                    person: erasable[rng.random_range(0..erasable.len())],
                })
                .collect(),
        };
        Workload {
            people,
            messages,
            erasures,
        }
    }

    /// Whether mParticle may send this message only once every erasure has answered.
    pub fn after_erasures(&self, message: &Message) -> bool {
        !self.erasures.is_empty() && message.ts_ms >= CUT_OFF_MS
    }

    /// The erasure request mParticle's DSR asks for.
    pub fn erasure_request(&self, dsr: &Dsr) -> crate::stages::erasure::ErasureRequest {
        use crate::domain::erasure::SubjectKey;
        let key = match &self.people[dsr.person] {
            Person::Partner(ct) => SubjectKey::CleverTapId(ct.clone()),
            Person::Customer(id) => SubjectKey::Identity(id.clone()),
            Person::Mpid(m) => SubjectKey::Identity(m.clone()),
        };
        crate::stages::erasure::ErasureRequest {
            request_id: dsr.request_id.clone(),
            regulation: crate::domain::protocol::Regulation::Gdpr,
            source: crate::domain::erasure::ErasureSource::Mparticle,
            erased_ms: CUT_OFF_MS,
            submitted_ms: None,
            keys: [key].into(),
            ignored_identities: 0,
        }
    }

    /// The body mParticle POSTs for a message.
    pub fn body(&self, message: &Message) -> String {
        let users: Vec<Value> = message
            .users
            .iter()
            .map(|u| {
                let mut identities = Vec::new();
                let mut partners = Vec::new();
                match &self.people[u.person] {
                    Person::Partner(ct) => partners
                        .push(json!({"type": "CleverTap_User_ID", "encoding": "raw", "value": ct})),
                    Person::Customer(id) => {
                        identities.push(json!({"type": "customer", "encoding": "raw", "value": id}))
                    }
                    Person::Mpid(_) => {}
                }
                if let Some(e) = &u.email {
                    identities.push(json!({"type": "email", "encoding": "raw", "value": e}));
                }
                if let Some(p) = &u.phone {
                    identities
                        .push(json!({"type": "mobile_number", "encoding": "raw", "value": p}));
                }
                let audiences: Vec<Value> = u
                    .entries
                    .iter()
                    .map(|(aud, add)| {
                        json!({"audience_id": aud, "audience_name": format!("Audience {aud}"),
                               "action": if *add { "add" } else { "delete" }})
                    })
                    .collect();
                json!({"user_identities": identities, "partner_identities": partners,
                       "audiences": audiences, "mpid": mpid_of(u.person)})
            })
            .collect();
        json!({"type": "audience_membership_change_request", "id": message.id,
               "timestamp_ms": message.ts_ms, "account": {"account_id": 1},
               "user_profiles": users})
        .to_string()
    }
}
