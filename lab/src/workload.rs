//! The benchmark workload: Firehose membership requests shaped like a real mParticle audience
//! sync, generated deterministically from a seed.
//!
//! Each profile has 2–4 user identities (a customer id, a raw email, a mobile number, sometimes a
//! hashed email), 2–4 device identities of one platform, a `CleverTap_User_ID` partner identity
//! for about 30 % of users, an mParticle id, and 1–3 audience entries, each with connection
//! settings and a few user attributes (upserts, list values and deletes).

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const GIVEN: &[&str] = &[
    "ada", "bo", "chen", "dara", "eli", "femi", "gus", "hiro", "ines", "jun", "kai", "lena",
    "milo", "nia", "oscar", "pia", "quinn", "rosa", "sven", "tara", "uma", "vik", "wren", "yara",
];
const FAMILY: &[&str] = &[
    "adams",
    "berg",
    "costa",
    "dubois",
    "eze",
    "fischer",
    "gupta",
    "haas",
    "ito",
    "jovanovic",
    "kowalski",
    "lindqvist",
    "moreau",
    "nakamura",
    "ortiz",
    "petrov",
    "quist",
    "reyes",
];
const MAIL_HOSTS: &[&str] = &[
    "mail.example",
    "inbox.example",
    "post.example",
    "web.example",
];
const AUDIENCES: &[(i64, &str)] = &[
    (20101, "Browsed, Not Bought 14d"),
    (20102, "Top Spenders"),
    (20113, "Basket Left Behind"),
    (20127, "Push Enabled - iOS"),
    (20140, "Weekly Digest Readers"),
    (20155, "Likely To Churn"),
    (20161, "Members - Gold"),
    (20162, "Members - Platinum"),
    (20178, "Setup Not Finished"),
    (20190, "Heavy Android Users"),
    (20203, "Come Back Campaign"),
    (20219, "Football Fans"),
    (20224, "Trial Ends Soon"),
    (20236, "New Installs"),
    (20247, "Concierge Tier"),
];
const SCALAR_KEYS: &[&str] = &[
    "$FirstName",
    "$LastName",
    "$City",
    "$Country",
    "$Age",
    "tier",
    "lifetime_value",
    "last_order_at",
    "preferred_category",
    "push_allowed",
    "subscription",
    "acquired_via",
    "churn_risk",
];
const CATEGORIES: &[&str] = &[
    "apparel", "gadgets", "garden", "games", "travel", "kitchen", "audio",
];
const CITIES: &[&str] = &[
    "Lisbon", "Osaka", "Nairobi", "Toronto", "Munich", "Lima", "Austin",
];
const COUNTRIES: &[&str] = &["PT", "JP", "KE", "CA", "DE", "PE", "US"];

fn hex(rng: &mut StdRng, digits: usize) -> String {
    (0..digits)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap())
        .collect()
}

fn uuid(rng: &mut StdRng) -> String {
    let h = hex(rng, 32);
    format!(
        "{}-{}-4{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[16..20],
        &h[20..]
    )
}

fn attribute_value(rng: &mut StdRng, key: &str, given: &str, family: &str) -> String {
    match key {
        "$FirstName" => capitalize(given),
        "$LastName" => capitalize(family),
        "$City" => CITIES.choose(rng).unwrap().to_string(),
        "$Country" => COUNTRIES.choose(rng).unwrap().to_string(),
        "$Age" => rng.random_range(16..90).to_string(),
        "tier" => ["basic", "silver", "gold", "platinum"]
            .choose(rng)
            .unwrap()
            .to_string(),
        "lifetime_value" => format!("{:.2}", rng.random_range(0.0..8_000.0)),
        "last_order_at" => format!(
            "2026-{:02}-{:02}T{:02}:{:02}:00Z",
            rng.random_range(1..=12),
            rng.random_range(1..=28),
            rng.random_range(0..24),
            rng.random_range(0..60)
        ),
        "push_allowed" => rng.random_bool(0.5).to_string(),
        "subscription" => ["none", "trial", "monthly", "yearly"]
            .choose(rng)
            .unwrap()
            .to_string(),
        "acquired_via" => ["search", "social", "friend", "newsletter", "store"]
            .choose(rng)
            .unwrap()
            .to_string(),
        "churn_risk" => format!("{:.3}", rng.random_range(0.0..1.0)),
        _ => CATEGORIES.choose(rng).unwrap().to_string(),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn user_attributes(rng: &mut StdRng, given: &str, family: &str) -> Vec<Value> {
    let mut keys: Vec<&str> = SCALAR_KEYS.to_vec();
    keys.shuffle(rng);
    let mut out: Vec<Value> = keys
        .into_iter()
        .take(rng.random_range(1..=4))
        .map(|key| {
            if rng.random_bool(0.12) {
                json!({"key": key, "action": "delete"})
            } else {
                json!({"key": key, "value": attribute_value(rng, key, given, family), "action": "upsert"})
            }
        })
        .collect();
    if rng.random_bool(0.2) {
        let mut cats = CATEGORIES.to_vec();
        cats.shuffle(rng);
        let n = rng.random_range(1..=3);
        out.push(json!({"key": "interests", "list_value": &cats[..n], "action": "upsert"}));
    }
    out
}

fn user_identities(rng: &mut StdRng, given: &str, family: &str) -> Vec<Value> {
    let email = format!(
        "{given}.{family}{}@{}",
        rng.random_range(0..10_000),
        MAIL_HOSTS.choose(rng).unwrap()
    );
    let mut out = vec![json!({"type": "customer", "encoding": "raw",
                              "value": format!("C{:010}", rng.random_range(0..10_000_000_000u64))})];
    let extra = rng.random_range(1..=3);
    let mut kinds = vec!["email", "mobile_number", "email_sha256"];
    kinds.shuffle(rng);
    for kind in kinds.into_iter().take(extra) {
        out.push(match kind {
            "email" => json!({"type": "email", "encoding": "raw", "value": email}),
            "mobile_number" => json!({"type": "mobile_number", "encoding": "raw",
                "value": format!("+44 7{:03} {:06}", rng.random_range(0..1000), rng.random_range(0..1_000_000))}),
            _ => json!({"type": "email", "encoding": "sha256", "value": hex(rng, 64)}),
        });
    }
    out
}

fn device_identities(rng: &mut StdRng) -> Vec<Value> {
    let ios = rng.random_bool(0.5);
    let mut pool: Vec<(&str, String)> = if ios {
        vec![
            ("ios_advertising_id", uuid(rng).to_uppercase()),
            ("ios_vendor_id", uuid(rng).to_uppercase()),
            ("apple_push_notification_token", hex(rng, 64)),
            ("google_advertising_id", uuid(rng)),
        ]
    } else {
        vec![
            ("android_id", hex(rng, 16)),
            ("google_advertising_id", uuid(rng)),
            (
                "google_cloud_messaging_token",
                format!("{}:APA91b{}", hex(rng, 22), hex(rng, 100)),
            ),
            ("fire_advertising_id", uuid(rng)),
        ]
    };
    pool.shuffle(rng);
    pool.into_iter()
        .take(rng.random_range(2..=4))
        .map(|(kind, value)| json!({"type": kind, "encoding": "raw", "value": value}))
        .collect()
}

fn profile(rng: &mut StdRng) -> Value {
    let given = *GIVEN.choose(rng).unwrap();
    let family = *FAMILY.choose(rng).unwrap();
    let mut audiences: Vec<&(i64, &str)> = AUDIENCES.iter().collect();
    audiences.shuffle(rng);
    let entries: Vec<Value> = audiences
        .into_iter()
        .take(rng.random_range(1..=3))
        .map(|(id, name)| {
            let action = if rng.random_bool(0.8) {
                "add"
            } else {
                "delete"
            };
            json!({"audience_id": id, "audience_name": name, "action": action,
                   "audience_subscription_settings": {"userIdType": "customer"},
                   "user_attributes": user_attributes(rng, given, family)})
        })
        .collect();
    let mut p = json!({
        "user_identities": user_identities(rng, given, family),
        "device_identities": device_identities(rng),
        "mpid": rng.random::<i64>().to_string(),
        "audiences": entries,
    });
    if rng.random_bool(0.3) {
        p["partner_identities"] = json!([{"type": "CleverTap_User_ID", "encoding": "raw", "value": format!("__{}", hex(rng, 32))}]);
    }
    p
}

/// A membership request of `profiles` users, the same for the same `(profiles, seed)`. The
/// `account` is left to the caller (it holds a project's credentials).
pub fn membership_batch(profiles: usize, seed: u64) -> Value {
    let mut rng = StdRng::seed_from_u64(seed);
    json!({
        "type": "audience_membership_change_request",
        "id": uuid(&mut rng),
        "timestamp_ms": 1_764_000_000_000i64 + rng.random_range(0..86_400_000i64),
        "firehose_version": "3.2.0",
        "user_profiles": (0..profiles).map(|_| profile(&mut rng)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_bytes_and_the_shape_holds() {
        let a = membership_batch(300, 42).to_string();
        assert_eq!(a, membership_batch(300, 42).to_string());
        assert_ne!(a, membership_batch(300, 43).to_string());
        let batch = membership_batch(1_000, 42);
        let profiles = batch["user_profiles"].as_array().unwrap();
        assert_eq!(profiles.len(), 1_000);
        let partner = profiles
            .iter()
            .filter(|p| p.get("partner_identities").is_some())
            .count();
        assert!(
            (220..380).contains(&partner),
            "~30 % partner ids: {partner}"
        );
        for p in profiles {
            let n = |k: &str| p[k].as_array().map_or(0, Vec::len);
            assert!((2..=4).contains(&n("user_identities")));
            assert!((2..=4).contains(&n("device_identities")));
            assert!((1..=3).contains(&n("audiences")));
        }
        // It is what the parser takes.
        let mut body = batch.clone();
        body["account"] = json!({"account_id": 1});
        assert!(shared::domain::protocol::parse_request(body.to_string().as_bytes()).is_ok());
    }
}
