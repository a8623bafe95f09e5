//! mParticle Firehose audience protocol: the messages mParticle sends us and the answers we send back.
//!
//! Parsing is tolerant (see the protocol reference, §11): every field but `type` is optional on the
//! wire, unknown fields are ignored, unknown identity types and actions are kept as `Unknown`, empty
//! `{}` user-attribute entries are skipped, `mpid` is a string (a JSON number is accepted) and the
//! legacy `added_audiences` / `removed_audiences` arrays become `add` / `delete` entries.
//! A parse failure is a [`ParseError`] naming the JSON path and the reason; parsing never panics.
//!
//! The request is parsed in a single pass into one "wire" struct that is the union of all request
//! shapes, then checked per `type`: an internally tagged serde enum would buffer the whole body first.
//! Profiles borrow their strings from the body (`Cow`: only a string with escapes is copied), and
//! each one is handed to a [`ProfileSink`] as soon as it is read: authorize's sink compresses it
//! into its chunk, so at most one profile is alive at a time ([`parse_request_into`]);
//! [`parse_request`] collects them into a `Vec`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// The Firehose version we write on every response.
pub const FIREHOSE_VERSION: &str = "3.2.0";

/// The partner identity this output declares at registration: a profile's CleverTap ID.
pub const PARTNER_IDENTITY: &str = "CleverTap_User_ID";

/// `submitted_time` (epoch seconds with a fraction, as mParticle sends it) in milliseconds.
pub fn submitted_ms(seconds: f64) -> Option<i64> {
    (seconds.is_finite() && seconds > 0.0).then(|| (seconds * 1000.0).round() as i64)
}

/// Connection and account settings: setting id → value (always strings on the wire).
pub type Settings = BTreeMap<String, String>;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// What kind of problem a body has; the HTTP edge maps every kind to 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// Not JSON, truncated JSON, or trailing bytes.
    Syntax,
    /// A value of the wrong JSON type, or out of range.
    InvalidValue,
    /// `type` names no message we handle.
    UnknownType,
    /// A field the message cannot be handled without.
    MissingField,
}

/// A body that could not be read as a Firehose message: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (at {path})")]
pub struct ParseError {
    pub kind: ParseErrorKind,
    /// JSON path of the offending value, `$` for the whole body, e.g. `user_profiles[3].mpid`.
    pub path: String,
    pub reason: String,
}

impl ParseError {
    fn missing(path: &str) -> Self {
        Self {
            kind: ParseErrorKind::MissingField,
            path: path.to_owned(),
            reason: format!("missing required field `{path}`"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Open enums: known values plus whatever mParticle may add later
// ---------------------------------------------------------------------------------------------

macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($variant,)+
            /// A value this version does not know; kept so it can be counted and reported.
            Unknown(String),
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)+
                    Self::Unknown(s) => s,
                }
            }

            pub fn from_wire(s: &str) -> Self {
                match s {
                    $($wire => Self::$variant,)+
                    other => Self::Unknown(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a string")
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        Ok($name::from_wire(v))
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

open_enum!(
    /// mParticle user identity types (protocol §3.6).
    UserIdentityType {
        Other => "other", Customer => "customer", Facebook => "facebook", Twitter => "twitter",
        Google => "google", Microsoft => "microsoft", Yahoo => "yahoo", Email => "email",
        Other2 => "other2", Other3 => "other3", Other4 => "other4", Other5 => "other5",
        Other6 => "other6", Other7 => "other7", Other8 => "other8", Other9 => "other9",
        Other10 => "other10", MobileNumber => "mobile_number", PhoneNumber2 => "phone_number_2",
        PhoneNumber3 => "phone_number_3",
    }
);

open_enum!(
    /// How an identity value was encoded by mParticle before sending.
    Encoding { Raw => "raw", Md5 => "md5", Sha1 => "sha1", Sha256 => "sha256" }
);

impl Encoding {
    /// Only raw values can be matched or merged; hashes (and anything unknown) cannot.
    pub fn is_raw(&self) -> bool {
        matches!(self, Encoding::Raw)
    }
}

open_enum!(
    /// Membership action of one audience entry of a user profile.
    AudienceAction { Add => "add", Delete => "delete", AttributeUpdate => "attribute_update" }
);

open_enum!(
    /// Subscription action: connect, rename/re-configure, disconnect.
    SubscriptionAction { Add => "add", Update => "update", Remove => "remove" }
);

open_enum!(
    /// What to do with one shared user attribute.
    AttributeAction { Upsert => "upsert", Delete => "delete" }
);

// ---------------------------------------------------------------------------------------------
// Lenient scalar helpers
// ---------------------------------------------------------------------------------------------

/// A string, or any JSON scalar turned into its string form (numbers, booleans); null is `None`.
/// Borrowed from the body unless the string has escapes.
fn lenient_opt_cow<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a number")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(V)
        }
    }
    d.deserialize_any(V)
}

/// [`lenient_opt_cow`], owned: for the few top-level strings of a message.
fn lenient_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(lenient_opt_cow(d)?.map(Cow::into_owned))
}

/// A number given as a JSON number or a numeric string.
fn lenient_opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match lenient_opt_cow(d)? {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("expected a number, found {v:?}"))),
    }
}

/// An integer id given as a JSON number or a numeric string.
fn lenient_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom("integer out of range"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| E::custom(format!("expected an integer, found string {v:?}")))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(V)
        }
    }
    d.deserialize_any(V)
}

/// A settings map whose values may be any scalar; nulls are dropped, scalars stringified.
fn lenient_settings<'de, D: Deserializer<'de>>(d: D) -> Result<Settings, D::Error> {
    #[derive(Deserialize)]
    struct Value(#[serde(deserialize_with = "lenient_opt_string")] Option<String>);
    let raw: Option<BTreeMap<String, Value>> = Option::deserialize(d)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, Value(v))| v.map(|v| (k, v)))
        .collect())
}

/// The connection settings this output declared at registration. Membership entries repeat their
/// connection's settings for every user; only ours are kept, the rest is skipped unread.
pub const DECLARED_CONNECTION_SETTINGS: [&str; 2] = ["userIdType", "segmentId"];

/// The declared connection settings of one membership entry (scalars stringified, nulls absent).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionSettings<'a> {
    /// `userIdType`: which user identity type is the CleverTap Identity.
    pub user_id_type: Option<Cow<'a, str>>,
    /// `segmentId`: the segment id we returned when the audience was connected.
    pub segment_id: Option<Cow<'a, str>>,
}

impl ConnectionSettings<'_> {
    /// A declared setting by its id.
    pub fn get(&self, id: &str) -> Option<&str> {
        match id {
            "userIdType" => self.user_id_type.as_deref(),
            "segmentId" => self.segment_id.as_deref(),
            _ => None,
        }
    }

    pub fn into_owned(self) -> ConnectionSettings<'static> {
        ConnectionSettings {
            user_id_type: self.user_id_type.map(|v| Cow::Owned(v.into_owned())),
            segment_id: self.segment_id.map(|v| Cow::Owned(v.into_owned())),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ConnectionSettings<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(field_identifier)]
        enum Key {
            #[serde(rename = "userIdType")]
            UserIdType,
            #[serde(rename = "segmentId")]
            SegmentId,
            #[serde(other)]
            Other,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ConnectionSettings<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of settings")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(ConnectionSettings::default())
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = ConnectionSettings::default();
                // A repeated key: the last value wins, as in any settings map.
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::UserIdType => out.user_id_type = map.next_value::<LenientStr>()?.0,
                        Key::SegmentId => out.segment_id = map.next_value::<LenientStr>()?.0,
                        // Checked like any setting (a scalar), but not copied.
                        Key::Other => {
                            map.next_value::<Scalar>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

/// A lenient string (see [`lenient_opt_cow`]) as a type, for `next_value` and list items.
#[derive(Deserialize)]
struct LenientStr<'a>(#[serde(borrow, deserialize_with = "lenient_opt_cow")] Option<Cow<'a, str>>);

/// Accepts a JSON scalar (string, number, boolean, null) without keeping it.
struct Scalar;

/// Accepts a JSON string without keeping it.
struct Text;

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number, boolean or null")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Scalar, E> {
                Ok(Scalar)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Scalar, E> {
                Ok(Scalar)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Scalar, E> {
                Ok(Scalar)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar, E> {
                Ok(Scalar)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
                Ok(Scalar)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Text, E> {
                Ok(Text)
            }
        }
        d.deserialize_str(V)
    }
}

/// A device identity, validated like any identity but not copied.
#[derive(Deserialize)]
struct DeviceIdentityCheck {
    #[serde(rename = "type")]
    _kind: Text,
    #[serde(rename = "encoding", default)]
    _encoding: Option<Text>,
    #[serde(rename = "value", default)]
    _value: Option<Scalar>,
}

/// Device identities are not requested at registration: validated and counted, not kept.
fn count_only<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    Ok(objects::<D, DeviceIdentityCheck>(d)?.len())
}

/// Reads `T` only from a JSON object. Serde's derived structs also accept an array (fields by
/// position), which would let `"account": []` pass as an empty account.
struct MapOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData)).map(MapOnly)
    }
}

/// An optional object (`null` or absent is `None`).
fn opt_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Ok(Option::<MapOnly<T>>::deserialize(d)?.map(|m| m.0))
}

/// Objects one request may hold in its lists (profiles, identities, audience entries), all lists
/// together: a body of a few MiB of `{}` must not become millions of parsed structs. A request of
/// 10,000 real profiles holds well under 100,000.
pub const MAX_LIST_ELEMENTS: usize = 250_000;

thread_local! {
    /// What is left of [`MAX_LIST_ELEMENTS`] for the parse running on this thread (a parse is
    /// synchronous: it never moves between threads).
    static ELEMENT_BUDGET: std::cell::Cell<usize> = const { std::cell::Cell::new(MAX_LIST_ELEMENTS) };
}

/// Takes one object from the parse's element budget, or fails once it is spent.
fn charge_element<E: de::Error>() -> Result<(), E> {
    let left = ELEMENT_BUDGET.with(|b| b.get());
    if left == 0 {
        return Err(E::custom(format!(
            "the request holds more than {MAX_LIST_ELEMENTS} objects in its lists"
        )));
    }
    ELEMENT_BUDGET.with(|b| b.set(left - 1));
    Ok(())
}

/// An array of objects, each charged to the parse's element budget.
struct Budgeted<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Budgeted<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of objects")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(MapOnly(item)) = seq.next_element::<MapOnly<T>>()? {
                    charge_element()?;
                    out.push(item);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData)).map(Budgeted)
    }
}

/// An array of objects; `null` or absent is empty.
fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Budgeted<T>>::deserialize(d)?
        .map(|b| b.0)
        .unwrap_or_default())
}

/// Runs one parse with a full element budget.
fn with_element_budget<R>(parse: impl FnOnce() -> R) -> R {
    ELEMENT_BUDGET.with(|b| b.set(MAX_LIST_ELEMENTS));
    let out = parse();
    ELEMENT_BUDGET.with(|b| b.set(MAX_LIST_ELEMENTS));
    out
}

// ---------------------------------------------------------------------------------------------
// Request types
// ---------------------------------------------------------------------------------------------

/// Fields every message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: String,
    pub timestamp_ms: i64,
    pub firehose_version: Option<String>,
}

/// The customer's configured instance of our output.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Account {
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub account_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient_settings")]
    pub account_settings: Settings,
}

/// One identity of a user: `{type, encoding, value}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Identity<'a, T> {
    #[serde(rename = "type")]
    pub kind: T,
    /// A missing encoding is read as `raw`, the SDK's default.
    #[serde(default = "raw_encoding", deserialize_with = "null_as_raw")]
    pub encoding: Encoding,
    #[serde(default, borrow, deserialize_with = "lenient_opt_cow")]
    pub value: Option<Cow<'a, str>>,
}

fn raw_encoding() -> Encoding {
    Encoding::Raw
}

fn null_as_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Encoding, D::Error> {
    Ok(Option::<Encoding>::deserialize(d)?.unwrap_or(Encoding::Raw))
}

/// A JSON string borrowed from the body (copied only when it has escapes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Name<'a>(pub Cow<'a, str>);

impl Name<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

pub type UserIdentity<'a> = Identity<'a, UserIdentityType>;
/// Partner identity types are free strings (ours is `CleverTap_User_ID`).
pub type PartnerIdentity<'a> = Identity<'a, Name<'a>>;

/// One shared user attribute change; entries without `key` or `action` are skipped while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAttribute<'a> {
    pub key: Cow<'a, str>,
    pub value: Option<Cow<'a, str>>,
    pub list_value: Option<Vec<Cow<'a, str>>>,
    pub action: AttributeAction,
}

#[derive(Deserialize)]
struct WireUserAttribute<'a> {
    #[serde(default, borrow, deserialize_with = "lenient_opt_cow")]
    key: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "lenient_opt_cow")]
    value: Option<Cow<'a, str>>,
    /// List items may be null or non-strings in sloppy payloads: nulls dropped, scalars stringified.
    #[serde(default, borrow)]
    list_value: Option<Vec<LenientStr<'a>>>,
    #[serde(default)]
    action: Option<AttributeAction>,
}

fn user_attributes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<UserAttribute<'de>>, D::Error> {
    let raw: Vec<WireUserAttribute<'de>> = objects(d)?;
    Ok(raw
        .into_iter()
        .filter_map(|a| {
            Some(UserAttribute {
                key: a.key?,
                value: a.value,
                list_value: a
                    .list_value
                    .map(|l| l.into_iter().filter_map(|LenientStr(v)| v).collect()),
                action: a.action?,
            })
        })
        .collect())
}

/// One audience change for one user.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Audience<'a> {
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub audience_id: Option<i64>,
    #[serde(default, borrow, deserialize_with = "lenient_opt_cow")]
    pub audience_name: Option<Cow<'a, str>>,
    /// Only the settings this output declared (`userIdType`, `segmentId`).
    #[serde(default, borrow)]
    pub audience_subscription_settings: ConnectionSettings<'a>,
    /// Missing on legacy entries until mapped; a missing action elsewhere is `Unknown("")`.
    #[serde(default = "missing_action")]
    pub action: AudienceAction,
    #[serde(default, borrow, deserialize_with = "user_attributes")]
    pub user_attributes: Vec<UserAttribute<'a>>,
}

fn missing_action() -> AudienceAction {
    AudienceAction::Unknown(String::new())
}

/// One user and the audience changes that concern them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserProfile<'a> {
    pub user_identities: Vec<UserIdentity<'a>>,
    /// Device identities are not requested at registration, so they are counted and skipped.
    pub device_identity_count: usize,
    pub partner_identities: Vec<PartnerIdentity<'a>>,
    pub audiences: Vec<Audience<'a>>,
    /// mParticle ID: a signed 64-bit integer carried as a string.
    pub mpid: Option<Cow<'a, str>>,
}

fn owned(s: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(s.into_owned())
}

impl<'a, T> Identity<'a, T> {
    fn into_owned_with<U>(self, kind: impl FnOnce(T) -> U) -> Identity<'static, U> {
        Identity {
            kind: kind(self.kind),
            encoding: self.encoding,
            value: self.value.map(owned),
        }
    }
}

impl UserProfile<'_> {
    /// The same profile, no longer borrowing from the body.
    pub fn into_owned(self) -> UserProfile<'static> {
        UserProfile {
            user_identities: (self.user_identities.into_iter())
                .map(|i| i.into_owned_with(|k| k))
                .collect(),
            device_identity_count: self.device_identity_count,
            partner_identities: (self.partner_identities.into_iter())
                .map(|i| i.into_owned_with(|k| Name(owned(k.0))))
                .collect(),
            audiences: self
                .audiences
                .into_iter()
                .map(|a| Audience {
                    audience_id: a.audience_id,
                    audience_name: a.audience_name.map(owned),
                    audience_subscription_settings: a.audience_subscription_settings.into_owned(),
                    action: a.action,
                    user_attributes: (a.user_attributes.into_iter())
                        .map(|u| UserAttribute {
                            key: owned(u.key),
                            value: u.value.map(owned),
                            list_value: u.list_value.map(|l| l.into_iter().map(owned).collect()),
                            action: u.action,
                        })
                        .collect(),
                })
                .collect(),
            mpid: self.mpid.map(owned),
        }
    }
}

#[derive(Deserialize)]
struct WireUserProfile<'a> {
    #[serde(default, borrow, deserialize_with = "objects")]
    user_identities: Vec<UserIdentity<'a>>,
    #[serde(default, deserialize_with = "count_only")]
    device_identities: usize,
    #[serde(default, borrow, deserialize_with = "objects")]
    partner_identities: Vec<PartnerIdentity<'a>>,
    #[serde(default, borrow, deserialize_with = "objects")]
    audiences: Vec<Audience<'a>>,
    /// Pre-2.0 payloads: membership additions, no `action` field.
    #[serde(default, borrow, deserialize_with = "objects")]
    added_audiences: Vec<Audience<'a>>,
    /// Pre-2.0 payloads: membership removals, no `action` field.
    #[serde(default, borrow, deserialize_with = "objects")]
    removed_audiences: Vec<Audience<'a>>,
    #[serde(default, borrow, deserialize_with = "lenient_opt_cow")]
    mpid: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for UserProfile<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WireUserProfile::deserialize(d)?;
        let mut audiences = w.audiences;
        let legacy = |list: Vec<Audience<'a>>, action: AudienceAction| {
            list.into_iter().map(move |mut a| {
                a.action = action.clone();
                a
            })
        };
        audiences.extend(legacy(w.added_audiences, AudienceAction::Add));
        audiences.extend(legacy(w.removed_audiences, AudienceAction::Delete));
        Ok(UserProfile {
            user_identities: w.user_identities,
            device_identity_count: w.device_identities,
            partner_identities: w.partner_identities,
            audiences,
            mpid: w.mpid,
        })
    }
}

/// Where the parser hands each profile of a membership request, in request order, as soon as it
/// is read. Nothing a sink does can fail the parse: a sink that cannot take a profile records why
/// and says so after the parse, so a bad profile later in the body is still the 400 it would be.
pub trait ProfileSink<'de> {
    fn push(&mut self, profile: UserProfile<'de>);
}

/// Collects every profile (tests, tools, the preview).
impl<'de> ProfileSink<'de> for Vec<UserProfile<'de>> {
    fn push(&mut self, profile: UserProfile<'de>) {
        Vec::push(self, profile);
    }
}

/// Validates and drops every profile (the second, path-tracking parse of a bad body).
struct Discard;

impl<'de> ProfileSink<'de> for Discard {
    fn push(&mut self, _: UserProfile<'de>) {}
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRegistrationRequest {
    pub envelope: Envelope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudienceSubscriptionRequest {
    pub envelope: Envelope,
    pub account: Account,
    pub audience_id: i64,
    pub audience_name: Option<String>,
    pub audience_description: Option<String>,
    pub audience_subscription_settings: Settings,
    pub previous_audience_subscription_settings: Option<Settings>,
    pub action: SubscriptionAction,
}

/// A membership request; `P` holds its profiles: a `Vec` ([`parse_request`]) or whatever sink
/// took them ([`parse_request_into`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudienceMembershipChangeRequest<P> {
    pub envelope: Envelope,
    pub account: Account,
    /// `None` on verification (heartbeat) requests.
    pub user_profiles: Option<P>,
}

impl<P> AudienceMembershipChangeRequest<P> {
    /// A verification request carries no `user_profiles`; it only checks the connection.
    pub fn is_heartbeat(&self) -> bool {
        self.user_profiles.is_none()
    }
}

/// What a data subject request asks for (`subject_request_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DsrRequestType {
    Erasure,
    /// `access` or `portability`: answered as not supported.
    Other(String),
}

/// The law a data subject request is made under (`regulation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Regulation {
    Gdpr,
    Ccpa,
    Unknown,
}

impl Regulation {
    pub fn parse(s: Option<&str>) -> Self {
        match s.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            Some("gdpr") => Regulation::Gdpr,
            Some("ccpa") => Regulation::Ccpa,
            _ => Regulation::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Regulation::Gdpr => "gdpr",
            Regulation::Ccpa => "ccpa",
            Regulation::Unknown => "unknown",
        }
    }
}

/// One of `subject_identities`: `{"<type>": {"encoding": "raw", "value": "…"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectIdentity {
    pub kind: String,
    pub encoding: Encoding,
    pub value: String,
}

/// A data subject request (GDPR / CCPA) forwarded by mParticle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsrProcessingRequest {
    pub envelope: Envelope,
    pub account: Account,
    /// mParticle's id of the request: the idempotency key of the erasure.
    pub subject_request_id: String,
    pub request_type: DsrRequestType,
    /// When the person asked, in epoch ms (`submitted_time`), if given: recorded in the audit
    /// row; the erasure's cut-off is the time the request reached this service (docs/contract.md
    /// §2.8).
    pub submitted_ms: Option<i64>,
    pub subject_identities: Vec<SubjectIdentity>,
    pub regulation: Regulation,
}

/// A membership request with its profiles collected.
pub type MembershipRequest<'a> = AudienceMembershipChangeRequest<Vec<UserProfile<'a>>>;

/// Every message mParticle sends to an audience output; `P` as in [`AudienceMembershipChangeRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<P> {
    ModuleRegistration(ModuleRegistrationRequest),
    AudienceSubscription(AudienceSubscriptionRequest),
    AudienceMembershipChange(AudienceMembershipChangeRequest<P>),
    DsrProcessing(DsrProcessingRequest),
}

/// A request with its profiles collected, borrowing from the body.
pub type ParsedRequest<'a> = Request<Vec<UserProfile<'a>>>;

impl<P> Request<P> {
    pub fn envelope(&self) -> &Envelope {
        match self {
            Request::ModuleRegistration(r) => &r.envelope,
            Request::AudienceSubscription(r) => &r.envelope,
            Request::AudienceMembershipChange(r) => &r.envelope,
            Request::DsrProcessing(r) => &r.envelope,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Request::ModuleRegistration(_) => "module_registration_request",
            Request::AudienceSubscription(_) => "audience_subscription_request",
            Request::AudienceMembershipChange(_) => "audience_membership_change_request",
            Request::DsrProcessing(_) => DSR_TYPE,
        }
    }
}

impl ParsedRequest<'_> {
    /// The same request, no longer borrowing from the body.
    pub fn into_owned(self) -> ParsedRequest<'static> {
        match self {
            Request::ModuleRegistration(r) => Request::ModuleRegistration(r),
            Request::AudienceSubscription(r) => Request::AudienceSubscription(r),
            Request::AudienceMembershipChange(m) => {
                Request::AudienceMembershipChange(AudienceMembershipChangeRequest {
                    envelope: m.envelope,
                    account: m.account,
                    user_profiles: m
                        .user_profiles
                        .map(|ps| ps.into_iter().map(UserProfile::into_owned).collect()),
                })
            }
            Request::DsrProcessing(r) => Request::DsrProcessing(r),
        }
    }
}

/// The union of every request shape, read in one pass; `user_profiles` went to the sink `P`.
struct WireMessage<P> {
    message_type: Option<String>,
    id: Option<String>,
    timestamp_ms: Option<i64>,
    firehose_version: Option<String>,
    account: Option<Account>,
    audience_id: Option<i64>,
    audience_name: Option<String>,
    audience_description: Option<String>,
    audience_subscription_settings: Settings,
    previous_audience_subscription_settings: Option<Settings>,
    action: Option<SubscriptionAction>,
    user_profiles: Option<P>,
    subject_request_id: Option<String>,
    subject_request_type: Option<String>,
    submitted_time: Option<f64>,
    subject_identities: Option<BTreeMap<String, WireSubjectIdentity>>,
    regulation: Option<String>,
}

/// A subject identity as sent; an identity without a value is dropped.
#[derive(Deserialize)]
struct WireSubjectIdentity {
    #[serde(default)]
    encoding: Option<Encoding>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    value: Option<String>,
}

/// The top-level keys of a message; anything else is skipped unread.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    Type,
    Id,
    TimestampMs,
    FirehoseVersion,
    Account,
    AudienceId,
    AudienceName,
    AudienceDescription,
    AudienceSubscriptionSettings,
    PreviousAudienceSubscriptionSettings,
    Action,
    UserProfiles,
    SubjectRequestId,
    SubjectRequestType,
    SubmittedTime,
    SubjectIdentities,
    Regulation,
    #[serde(other)]
    Other,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Type => "type",
            Field::Id => "id",
            Field::TimestampMs => "timestamp_ms",
            Field::FirehoseVersion => "firehose_version",
            Field::Account => "account",
            Field::AudienceId => "audience_id",
            Field::AudienceName => "audience_name",
            Field::AudienceDescription => "audience_description",
            Field::AudienceSubscriptionSettings => "audience_subscription_settings",
            Field::PreviousAudienceSubscriptionSettings => {
                "previous_audience_subscription_settings"
            }
            Field::Action => "action",
            Field::UserProfiles => "user_profiles",
            Field::SubjectRequestId => "subject_request_id",
            Field::SubjectRequestType => "subject_request_type",
            Field::SubmittedTime => "submitted_time",
            Field::SubjectIdentities => "subject_identities",
            Field::Regulation => "regulation",
            Field::Other => "",
        }
    }
}

/// Newtypes over the lenient readers, for `next_value`.
#[derive(Deserialize)]
struct LenientString(#[serde(deserialize_with = "lenient_opt_string")] Option<String>);
#[derive(Deserialize)]
struct LenientI64(#[serde(deserialize_with = "lenient_opt_i64")] Option<i64>);
/// A number, or a numeric string (`submitted_time`: epoch seconds with a fraction).
#[derive(Deserialize)]
struct LenientF64(#[serde(deserialize_with = "lenient_opt_f64")] Option<f64>);
#[derive(Deserialize)]
struct LenientSettings(#[serde(deserialize_with = "lenient_settings")] Settings);
#[derive(Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
struct OptObject<T>(#[serde(deserialize_with = "opt_object")] Option<T>);

/// Reads a whole message, handing `user_profiles` to the sink as they come.
struct MessageSeed<S>(S);

impl<'de, S: ProfileSink<'de>> DeserializeSeed<'de> for MessageSeed<S> {
    type Value = WireMessage<S>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, S: ProfileSink<'de>> Visitor<'de> for MessageSeed<S> {
    type Value = WireMessage<S>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Firehose message object")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut sink = self.0;
        let mut seen = 0u32;
        let mut w = WireMessage {
            message_type: None,
            id: None,
            timestamp_ms: None,
            firehose_version: None,
            account: None,
            audience_id: None,
            audience_name: None,
            audience_description: None,
            audience_subscription_settings: Settings::new(),
            previous_audience_subscription_settings: None,
            action: None,
            user_profiles: None,
            subject_request_id: None,
            subject_request_type: None,
            submitted_time: None,
            subject_identities: None,
            regulation: None,
        };
        let mut profiles_present = false;
        while let Some(field) = map.next_key::<Field>()? {
            if field != Field::Other {
                // As serde's derived structs do: a repeated key is an error, not a silent overwrite.
                let bit = 1u32 << (field as u32);
                if seen & bit != 0 {
                    return Err(de::Error::duplicate_field(field.name()));
                }
                seen |= bit;
            }
            match field {
                Field::Type => w.message_type = map.next_value()?,
                Field::Id => w.id = map.next_value::<LenientString>()?.0,
                Field::TimestampMs => w.timestamp_ms = map.next_value::<LenientI64>()?.0,
                Field::FirehoseVersion => w.firehose_version = map.next_value::<LenientString>()?.0,
                Field::Account => w.account = map.next_value::<OptObject<Account>>()?.0,
                Field::AudienceId => w.audience_id = map.next_value::<LenientI64>()?.0,
                Field::AudienceName => w.audience_name = map.next_value::<LenientString>()?.0,
                Field::AudienceDescription => {
                    w.audience_description = map.next_value::<LenientString>()?.0
                }
                Field::AudienceSubscriptionSettings => {
                    w.audience_subscription_settings = map.next_value::<LenientSettings>()?.0
                }
                Field::PreviousAudienceSubscriptionSettings => {
                    w.previous_audience_subscription_settings =
                        Some(map.next_value::<LenientSettings>()?.0)
                }
                Field::Action => w.action = map.next_value()?,
                Field::UserProfiles => {
                    profiles_present = map.next_value_seed(ProfilesSeed(&mut sink))?
                }
                Field::SubjectRequestId => {
                    w.subject_request_id = map.next_value::<LenientString>()?.0
                }
                Field::SubjectRequestType => {
                    w.subject_request_type = map.next_value::<LenientString>()?.0
                }
                Field::SubmittedTime => w.submitted_time = map.next_value::<LenientF64>()?.0,
                Field::SubjectIdentities => {
                    w.subject_identities = map.next_value::<OptObject<_>>()?.0
                }
                Field::Regulation => w.regulation = map.next_value::<LenientString>()?.0,
                Field::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        w.user_profiles = profiles_present.then_some(sink);
        Ok(w)
    }
}

/// `user_profiles`: `null` (or absent) is a heartbeat; each profile, an object, goes to the sink.
/// Answers whether the list was there.
struct ProfilesSeed<'s, S>(&'s mut S);

impl<'de, S: ProfileSink<'de>> DeserializeSeed<'de> for ProfilesSeed<'_, S> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: ProfileSink<'de>> Visitor<'de> for ProfilesSeed<'_, S> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of objects")
    }

    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while let Some(MapOnly(profile)) = seq.next_element::<MapOnly<UserProfile<'de>>>()? {
            charge_element()?;
            self.0.push(profile);
        }
        Ok(true)
    }
}

/// Bounds at the door, in one place (docs/contract.md lists them). A request beyond a
/// request-level bound is a 400 naming the field; a profile beyond a profile-level bound is
/// skipped by resolve and counted (`too_long`), and the rest of its chunk goes on. Every value
/// that reaches a DynamoDB key stays well inside DynamoDB's key limits (2,048 bytes for a
/// partition key, 1,024 for a sort key) with the project id and separators added.
pub mod limits {
    use super::{ParseError, ParseErrorKind};

    /// A membership request's `id`: part of every inbox sort key.
    pub const MAX_MESSAGE_ID_BYTES: usize = 200;
    /// How far in the future a `timestamp_ms` may be (clock skew): a later one would make every
    /// later change of its pairs stale.
    pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;
    /// A partner id (the CleverTap ID) or an identity value: part of profile, membership and
    /// event keys.
    pub const MAX_IDENTITY_BYTES: usize = 512;
    /// An audience name (stored on the segment and on every Partner Sync event).
    pub const MAX_AUDIENCE_NAME_BYTES: usize = 1024;
    /// A profile attribute key and value (list values: each item, and the whole list).
    pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 255;
    pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 4096;
    /// Attributes of one audience entry.
    pub const MAX_ATTRIBUTES_PER_ENTRY: usize = 100;

    fn invalid(path: &str, reason: String) -> ParseError {
        ParseError {
            kind: ParseErrorKind::InvalidValue,
            path: path.to_owned(),
            reason,
        }
    }

    /// Request-level bounds of a membership request.
    pub fn check_message(id: &str, timestamp_ms: i64, now_ms: i64) -> Result<(), ParseError> {
        if id.is_empty() || id.len() > MAX_MESSAGE_ID_BYTES {
            return Err(invalid(
                "id",
                format!(
                    "`id` must be 1 to {MAX_MESSAGE_ID_BYTES} bytes, got {}",
                    id.len()
                ),
            ));
        }
        check_time("timestamp_ms", timestamp_ms, now_ms)
    }

    /// A time a message carries (epoch ms at `path`): not negative, and not more than the clock
    /// skew ahead of this service's clock.
    pub fn check_time(path: &str, ms: i64, now_ms: i64) -> Result<(), ParseError> {
        if ms < 0 || ms > now_ms + MAX_CLOCK_SKEW_MS {
            return Err(invalid(
                path,
                format!(
                    "`{path}` {ms} is negative or more than {} minutes ahead of this \
                     service's clock",
                    MAX_CLOCK_SKEW_MS / 60_000
                ),
            ));
        }
        Ok(())
    }
}

/// A data subject request (erasure; access and portability are answered as not supported).
pub const DSR_TYPE: &str = "dsr_processing_request";

/// The message type of the only request answered without the caller token.
pub const REGISTRATION_TYPE: &str = "module_registration_request";

/// The `type` of a body, read without building anything else (every other value is skipped, not
/// kept): what an unauthenticated request may cost. `None` if the body is not a JSON object with
/// a string `type`.
pub fn peek_type(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct TypeOnly<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<TypeOnly<'_>>(body)
        .ok()?
        .kind
        .map(|k| k.into_owned())
}

/// Parse one Firehose request body.
///
/// Registration needs nothing but `type`; a missing `id` or `timestamp_ms` there is filled in.
/// Subscription requests need `account` and `audience_id` and a known `action`. Membership
/// requests need `account`, `id` (the idempotency key) and `timestamp_ms` (the ordering key).
/// Profiles are collected into a `Vec`, borrowing from `body`.
pub fn parse_request(body: &[u8]) -> Result<ParsedRequest<'_>, ParseError> {
    parse_request_into(body, Vec::new())
}

/// [`parse_request`], handing each profile to `sink` as soon as it is read; a membership request
/// carries the sink back (`None` for a heartbeat). A request that fails to parse leaves whatever
/// the sink took behind with the error: the sink is dropped.
pub fn parse_request_into<'de, S: ProfileSink<'de>>(
    body: &'de [u8],
    sink: S,
) -> Result<Request<S>, ParseError> {
    let wire = parse_wire(body, sink)?;
    let message_type = wire
        .message_type
        .ok_or_else(|| ParseError::missing("type"))?;
    match message_type.as_str() {
        "module_registration_request" => {
            Ok(Request::ModuleRegistration(ModuleRegistrationRequest {
                envelope: Envelope {
                    id: wire.id.unwrap_or_else(new_message_id),
                    timestamp_ms: wire.timestamp_ms.unwrap_or_else(now_ms),
                    firehose_version: wire.firehose_version,
                },
            }))
        }
        "audience_subscription_request" => {
            let account = wire.account.ok_or_else(|| ParseError::missing("account"))?;
            let audience_id = wire
                .audience_id
                .ok_or_else(|| ParseError::missing("audience_id"))?;
            let action = wire.action.ok_or_else(|| ParseError::missing("action"))?;
            if let SubscriptionAction::Unknown(a) = &action {
                return Err(ParseError {
                    kind: ParseErrorKind::InvalidValue,
                    path: "action".into(),
                    reason: format!(
                        "unknown subscription action {a:?} (expected add, update or remove)"
                    ),
                });
            }
            Ok(Request::AudienceSubscription(AudienceSubscriptionRequest {
                envelope: Envelope {
                    id: wire.id.unwrap_or_else(new_message_id),
                    timestamp_ms: wire.timestamp_ms.unwrap_or_else(now_ms),
                    firehose_version: wire.firehose_version,
                },
                account,
                audience_id,
                audience_name: wire.audience_name,
                audience_description: wire.audience_description,
                audience_subscription_settings: wire.audience_subscription_settings,
                previous_audience_subscription_settings: wire
                    .previous_audience_subscription_settings,
                action,
            }))
        }
        "audience_membership_change_request" => {
            let account = wire.account.ok_or_else(|| ParseError::missing("account"))?;
            let id = wire.id.ok_or_else(|| ParseError::missing("id"))?;
            let timestamp_ms = wire
                .timestamp_ms
                .ok_or_else(|| ParseError::missing("timestamp_ms"))?;
            limits::check_message(&id, timestamp_ms, now_ms())?;
            Ok(Request::AudienceMembershipChange(
                AudienceMembershipChangeRequest {
                    envelope: Envelope {
                        id,
                        timestamp_ms,
                        firehose_version: wire.firehose_version,
                    },
                    account,
                    user_profiles: wire.user_profiles,
                },
            ))
        }
        DSR_TYPE => {
            let account = wire.account.ok_or_else(|| ParseError::missing("account"))?;
            let request_id = wire
                .subject_request_id
                .filter(|id| !id.trim().is_empty())
                .ok_or_else(|| ParseError::missing("subject_request_id"))?;
            if request_id.len() > limits::MAX_MESSAGE_ID_BYTES {
                return Err(ParseError {
                    kind: ParseErrorKind::InvalidValue,
                    path: "subject_request_id".into(),
                    reason: format!(
                        "`subject_request_id` must be at most {} bytes",
                        limits::MAX_MESSAGE_ID_BYTES
                    ),
                });
            }
            let request_type = match wire
                .subject_request_type
                .ok_or_else(|| ParseError::missing("subject_request_type"))?
                .trim()
                .to_ascii_lowercase()
            {
                t if t == "erasure" => DsrRequestType::Erasure,
                t => DsrRequestType::Other(t),
            };
            let now = now_ms();
            let timestamp_ms = wire.timestamp_ms.unwrap_or(now);
            limits::check_time("timestamp_ms", timestamp_ms, now)?;
            let submitted = match wire.submitted_time {
                None => None,
                Some(seconds) => {
                    let ms = submitted_ms(seconds).ok_or_else(|| ParseError {
                        kind: ParseErrorKind::InvalidValue,
                        path: "submitted_time".into(),
                        reason: format!(
                            "`submitted_time` {seconds} is not a time in epoch seconds"
                        ),
                    })?;
                    limits::check_time("submitted_time", ms, now)?;
                    Some(ms)
                }
            };
            let subject_identities = wire
                .subject_identities
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(kind, i)| {
                    i.value.map(|value| SubjectIdentity {
                        kind,
                        encoding: i.encoding.unwrap_or(Encoding::Raw),
                        value,
                    })
                })
                .collect();
            Ok(Request::DsrProcessing(DsrProcessingRequest {
                envelope: Envelope {
                    id: wire.id.unwrap_or_else(new_message_id),
                    timestamp_ms,
                    firehose_version: wire.firehose_version,
                },
                account,
                subject_request_id: request_id,
                request_type,
                submitted_ms: submitted,
                subject_identities,
                regulation: Regulation::parse(wire.regulation.as_deref()),
            }))
        }
        other => Err(ParseError {
            kind: ParseErrorKind::UnknownType,
            path: "type".into(),
            reason: format!(
                "unsupported message type {other:?} (this audience output handles module_registration_request, \
                 audience_subscription_request, audience_membership_change_request and dsr_processing_request)"
            ),
        }),
    }
}

fn parse_wire<'de, S: ProfileSink<'de>>(
    body: &'de [u8],
    sink: S,
) -> Result<WireMessage<S>, ParseError> {
    // Invalid UTF-8 is refused even inside fields we would otherwise skip unread.
    if let Err(e) = std::str::from_utf8(body) {
        return Err(ParseError {
            kind: ParseErrorKind::Syntax,
            path: "$".into(),
            reason: format!("the body is not valid UTF-8 (byte {})", e.valid_up_to()),
        });
    }
    // serde would also read a struct from a JSON array, by position: a message is an object.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ParseError {
            kind: ParseErrorKind::Syntax,
            path: "$".into(),
            reason: "the body must be a JSON object".into(),
        });
    }
    // Fast path: plain serde. Only a body that fails is parsed again with path tracking (and a
    // sink that keeps nothing), which costs a third more and is needed only to say where the
    // problem is.
    let mut de = serde_json::Deserializer::from_slice(body);
    let fast = with_element_budget(|| MessageSeed(sink).deserialize(&mut de))
        .and_then(|wire| de.end().map(|()| wire));
    let fast_error = match fast {
        Ok(wire) => return Ok(wire),
        Err(e) => e,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut track = serde_path_to_error::Track::new();
    let tracked = with_element_budget(|| {
        MessageSeed(Discard)
            .deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track))
    });
    let (path, inner) = match tracked {
        Err(e) => (track.path().to_string(), e),
        // Only the end check is left to fail (the same parse without tracking failed).
        Ok(_) => ("$".to_owned(), de.end().err().unwrap_or(fast_error)),
    };
    Err(ParseError {
        kind: match inner.classify() {
            serde_json::error::Category::Data => ParseErrorKind::InvalidValue,
            _ => ParseErrorKind::Syntax,
        },
        path: if path == "." || path.is_empty() {
            "$".into()
        } else {
            path
        },
        reason: inner.to_string(),
    })
}

fn new_message_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Response types
// ---------------------------------------------------------------------------------------------

/// The envelope of every response: always type, id, timestamp_ms and firehose_version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    #[serde(rename = "type")]
    pub message_type: String,
    pub id: String,
    pub timestamp_ms: i64,
    pub firehose_version: String,
}

impl ResponseEnvelope {
    /// A response envelope that echoes the request id (allowed by mParticle, useful in their logs).
    pub fn reply(message_type: &str, request_id: &str) -> Self {
        Self {
            message_type: message_type.to_owned(),
            id: request_id.to_owned(),
            timestamp_ms: now_ms(),
            firehose_version: FIREHOSE_VERSION.to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleRegistrationResponse {
    #[serde(flatten)]
    pub envelope: ResponseEnvelope,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdk_version: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Permissions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience_processing_registration: Option<AudienceProcessingRegistration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsr_processing_registration: Option<DsrProcessingRegistration>,
}

/// Declares that data subject requests are handled, and which (`erasure`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DsrProcessingRegistration {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub account_settings: Vec<Setting>,
    pub supported_dsr_types: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityPermission<T> {
    #[serde(rename = "type")]
    pub kind: T,
    pub encoding: Encoding,
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Permissions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_identities: Vec<IdentityPermission<UserIdentityType>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_identities: Vec<IdentityPermission<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partner_identities: Vec<IdentityPermission<String>>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_access_mpid: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_audience_user_attributes: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AudienceProcessingRegistration {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub account_settings: Vec<Setting>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audience_subscription_settings: Vec<Setting>,
}

/// A setting declared at registration; `type` selects the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Setting {
    Text {
        id: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(default = "yes")]
        visible: bool,
        #[serde(default)]
        required: bool,
        #[serde(default)]
        confidential: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default_value: Option<String>,
    },
    Integer {
        id: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(default = "yes")]
        visible: bool,
        #[serde(default)]
        required: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default_value: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_value: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_value: Option<i64>,
    },
    Float {
        id: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(default = "yes")]
        visible: bool,
        #[serde(default)]
        required: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default_value: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_value: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_value: Option<f64>,
    },
    Boolean {
        id: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(default = "yes")]
        visible: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default_value: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checked: Option<bool>,
    },
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudienceSubscriptionResponse {
    #[serde(flatten)]
    pub envelope: ResponseEnvelope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience_subscription_settings: Option<Settings>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudienceMembershipChangeResponse {
    #[serde(flatten)]
    pub envelope: ResponseEnvelope,
    /// Always written (the SDK writes `false` too): `true` faults the connection in mParticle.
    #[serde(default)]
    pub suspend_subscription: bool,
}

impl AudienceSubscriptionResponse {
    pub fn new(request_id: &str, settings: Option<Settings>) -> Self {
        Self {
            envelope: ResponseEnvelope::reply("audience_subscription_response", request_id),
            audience_subscription_settings: settings,
        }
    }
}

impl AudienceMembershipChangeResponse {
    pub fn new(request_id: &str, suspend_subscription: bool) -> Self {
        Self {
            envelope: ResponseEnvelope::reply("audience_membership_change_response", request_id),
            suspend_subscription,
        }
    }
}

#[cfg(test)]
mod peek_tests {
    use super::*;

    #[test]
    fn a_flood_of_empty_objects_stops_at_the_element_budget() {
        let mut body = r#"{"type":"audience_membership_change_request","id":"f","timestamp_ms":1,"account":{"account_id":1},"user_profiles":[{"audiences":["#
            .to_string();
        body.push_str(&vec!["{}"; MAX_LIST_ELEMENTS + 10].join(","));
        body.push_str("]}]}");
        let e = parse_request(body.as_bytes()).unwrap_err();
        assert!(e.reason.contains("objects in its lists"), "{}", e.reason);
        assert!(
            e.path.starts_with("user_profiles[0].audiences"),
            "{}",
            e.path
        );
        // The budget is per request: the next one starts full.
        let ok = r#"{"type":"audience_membership_change_request","id":"g","timestamp_ms":1,"account":{"account_id":1},"user_profiles":[{"audiences":[{}]}]}"#;
        assert!(parse_request(ok.as_bytes()).is_ok());
    }

    #[test]
    fn membership_ids_and_times_are_bounded_at_the_door() {
        let body = |id: &str, ts: i64| {
            format!(
                r#"{{"type":"audience_membership_change_request","id":"{id}","timestamp_ms":{ts},"account":{{"account_id":1}}}}"#
            )
        };
        let now = now_ms();
        assert!(parse_request(body("m", now).as_bytes()).is_ok());
        let long = "x".repeat(2_000);
        let e = parse_request(body(&long, now).as_bytes()).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.kind),
            ("id", ParseErrorKind::InvalidValue)
        );
        let e = parse_request(body("m", 9_999_999_999_999).as_bytes()).unwrap_err();
        assert_eq!(e.path, "timestamp_ms");
        assert!(
            parse_request(body("m", now + 60_000).as_bytes()).is_ok(),
            "clock skew is fine"
        );
        assert!(
            parse_request(body("m", 1).as_bytes()).is_ok(),
            "old messages are retries"
        );
    }

    #[test]
    fn the_type_is_read_and_nothing_else_is_kept() {
        assert_eq!(
            peek_type(br#"{"id":"x","user_profiles":[{"a":[1,{}]}],"type":"module_registration_request"}"#)
                .as_deref(),
            Some(REGISTRATION_TYPE)
        );
        assert_eq!(peek_type(br#"{"type":"a\u0062c"}"#).as_deref(), Some("abc"));
        assert_eq!(peek_type(br#"{"id":"x"}"#), None);
        assert_eq!(peek_type(br#"{"type":3}"#), None);
        assert_eq!(
            peek_type(br#"[{"type":"module_registration_request"}]"#),
            None
        );
        assert_eq!(peek_type(b"{not json"), None);
        assert_eq!(peek_type(br#"{"type":"x"} trailing"#), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> ParseError {
        parse_request(body.as_bytes()).expect_err("should fail")
    }

    fn membership(body: &str) -> MembershipRequest<'static> {
        match parse_request(body.as_bytes()).expect("parses").into_owned() {
            Request::AudienceMembershipChange(m) => m,
            other => panic!("unexpected {other:?}"),
        }
    }

    const HEAD: &str = r#""type":"audience_membership_change_request","id":"m1","timestamp_ms":5,"account":{"account_id":1}"#;

    #[test]
    fn malformed_json_is_a_syntax_error_at_root() {
        let e = err("{\"type\":");
        assert_eq!(e.kind, ParseErrorKind::Syntax);
        let e = err("not json");
        assert_eq!(e.kind, ParseErrorKind::Syntax);
        assert_eq!(e.path, "$");
        let e = err(r#"{"type":"module_registration_request"} trailing"#);
        assert_eq!(e.kind, ParseErrorKind::Syntax);
    }

    #[test]
    fn arrays_are_not_objects_and_utf8_is_checked() {
        let e = err(
            r#"{"type":"audience_membership_change_request","id":"m","timestamp_ms":1,"account":[]}"#,
        );
        assert_eq!(
            (e.kind, e.path.as_str()),
            (ParseErrorKind::InvalidValue, "account")
        );
        let e = err(&format!(r#"{{{HEAD},"user_profiles":[["x"]]}}"#));
        assert_eq!(e.path, "user_profiles[0]");
        let e = err(&format!(
            r#"{{{HEAD},"user_profiles":[{{"audiences":[[1,"n"]]}}]}}"#
        ));
        assert_eq!(e.path, "user_profiles[0].audiences[0]");
        let mut body = br#"{"type":"module_registration_request","x":""#.to_vec();
        body.extend_from_slice(&[0xff, 0xfe]);
        body.extend_from_slice(br#""}"#);
        assert_eq!(
            parse_request(&body).unwrap_err().kind,
            ParseErrorKind::Syntax
        );
    }

    #[test]
    fn wrong_value_types_name_their_path() {
        let e = err(&format!(
            r#"{{{HEAD},"user_profiles":[{{}},{{"audiences":[{{"audience_id":{{}}}}]}}]}}"#
        ));
        assert_eq!(e.kind, ParseErrorKind::InvalidValue);
        assert_eq!(e.path, "user_profiles[1].audiences[0].audience_id");
        let e = err(&format!(r#"{{{HEAD},"user_profiles":{{}}}}"#));
        assert_eq!(e.path, "user_profiles");
    }

    #[test]
    fn unknown_and_missing_type_are_rejected() {
        let e = err(r#"{"type":"event_processing_request","id":"x"}"#);
        assert_eq!(e.kind, ParseErrorKind::UnknownType);
        assert_eq!(e.path, "type");
        let e = err(r#"{"id":"x"}"#);
        assert_eq!(e.kind, ParseErrorKind::MissingField);
        assert_eq!(e.path, "type");
    }

    #[test]
    fn required_fields_per_type() {
        let e = err(
            r#"{"type":"audience_subscription_request","id":"x","account":{"account_id":1},"action":"add"}"#,
        );
        assert_eq!(
            (e.kind, e.path.as_str()),
            (ParseErrorKind::MissingField, "audience_id")
        );
        let e = err(
            r#"{"type":"audience_subscription_request","id":"x","audience_id":1,"action":"add"}"#,
        );
        assert_eq!(e.path, "account");
        let e = err(
            r#"{"type":"audience_subscription_request","account":{},"audience_id":1,"action":"rename"}"#,
        );
        assert_eq!(
            (e.kind, e.path.as_str()),
            (ParseErrorKind::InvalidValue, "action")
        );
        let e =
            err(r#"{"type":"audience_membership_change_request","timestamp_ms":1,"account":{}}"#);
        assert_eq!(e.path, "id");
        let e = err(r#"{"type":"audience_membership_change_request","id":"a","account":{}}"#);
        assert_eq!(e.path, "timestamp_ms");
    }

    #[test]
    fn mpid_number_or_string_and_unknown_values_kept() {
        let m = membership(&format!(
            r#"{{{HEAD},"user_profiles":[{{"mpid":-12,"user_identities":[{{"type":"other11","encoding":"sha512","value":"v"}}],
            "audiences":[{{"audience_id":"7","action":"merge"}}]}},{{"mpid":"-6964353745838423734"}}]}}"#
        ));
        let p = m.user_profiles.unwrap();
        assert_eq!(p[0].mpid.as_deref(), Some("-12"));
        assert_eq!(p[1].mpid.as_deref(), Some("-6964353745838423734"));
        assert_eq!(
            p[0].user_identities[0].kind,
            UserIdentityType::Unknown("other11".into())
        );
        assert_eq!(
            p[0].user_identities[0].encoding,
            Encoding::Unknown("sha512".into())
        );
        assert_eq!(p[0].audiences[0].audience_id, Some(7));
        assert_eq!(
            p[0].audiences[0].action,
            AudienceAction::Unknown("merge".into())
        );
    }

    #[test]
    fn empty_attribute_entries_are_skipped_and_settings_stringified() {
        let m = membership(&format!(
            r#"{{{HEAD},"user_profiles":[{{"audiences":[{{"audience_id":1,"action":"attribute_update",
            "audience_subscription_settings":{{"userIdType":5,"segmentId":true,"z":null,"s":"x"}},
            "user_attributes":[{{}},{{"key":"k"}},{{"key":"t","value":null,"action":"upsert"}},
            {{"key":"l","list_value":["a",null,3],"action":"upsert"}}]}}]}}]}}"#
        ));
        let a = &m.user_profiles.unwrap()[0].audiences[0];
        assert_eq!(a.user_attributes.len(), 2);
        assert_eq!(a.user_attributes[0].key, "t");
        assert_eq!(a.user_attributes[0].value, None);
        assert_eq!(
            a.user_attributes[1].list_value,
            Some(vec![Cow::from("a"), Cow::from("3")])
        );
        let s = &a.audience_subscription_settings;
        assert_eq!(s.get("userIdType"), Some("5"));
        assert_eq!(s.get("segmentId"), Some("true"));
        assert_eq!(s.get("s"), None, "undeclared settings are skipped unread");
        assert_eq!(
            s,
            &ConnectionSettings {
                user_id_type: Some("5".into()),
                segment_id: Some("true".into())
            }
        );
    }

    #[test]
    fn strings_are_borrowed_from_the_body_unless_escaped() {
        let body = format!(
            r#"{{{HEAD},"user_profiles":[{{"mpid":"7","user_identities":[{{"type":"customer","value":"plain"}},
            {{"type":"email","value":"a\u0040b.c"}}],"partner_identities":[{{"type":"CleverTap_User_ID","value":"ct"}}]}}]}}"#
        );
        let Ok(Request::AudienceMembershipChange(m)) = parse_request(body.as_bytes()) else {
            panic!("parses");
        };
        let p = &m.user_profiles.unwrap()[0];
        assert!(matches!(
            p.user_identities[0].value,
            Some(Cow::Borrowed("plain"))
        ));
        assert!(matches!(&p.user_identities[1].value, Some(Cow::Owned(v)) if v == "a@b.c"));
        assert!(matches!(p.mpid, Some(Cow::Borrowed("7"))));
        assert!(matches!(
            p.partner_identities[0].kind,
            Name(Cow::Borrowed(PARTNER_IDENTITY))
        ));
    }

    #[test]
    fn a_repeated_top_level_key_is_refused() {
        // HEAD has `id` and `account`; the body below has `user_profiles` once already.
        for extra in [
            r#""id":"again""#,
            r#""account":{}"#,
            r#""user_profiles":[]"#,
        ] {
            let e = err(&format!(r#"{{{HEAD},"user_profiles":[],{extra}}}"#));
            assert_eq!(e.kind, ParseErrorKind::InvalidValue, "{extra}");
            assert!(
                e.reason.starts_with("duplicate field"),
                "{extra}: {}",
                e.reason
            );
        }
        // Unknown keys may repeat: they are skipped unread.
        assert!(membership(&format!(r#"{{{HEAD},"x":1,"x":2}}"#)).is_heartbeat());
    }

    #[test]
    fn a_sink_gets_every_profile_in_order_and_nothing_on_a_heartbeat() {
        #[derive(Debug)]
        struct Mpids(Vec<String>);
        impl<'de> ProfileSink<'de> for Mpids {
            fn push(&mut self, p: UserProfile<'de>) {
                self.0.push(p.mpid.unwrap_or_default().into_owned());
            }
        }
        let body = format!(r#"{{{HEAD},"user_profiles":[{{"mpid":"1"}},{{"mpid":2}},{{}}]}}"#);
        match parse_request_into(body.as_bytes(), Mpids(Vec::new())) {
            Ok(Request::AudienceMembershipChange(m)) => {
                assert_eq!(m.user_profiles.unwrap().0, ["1", "2", ""]);
            }
            other => panic!("{other:?}"),
        }
        match parse_request_into(format!("{{{HEAD}}}").as_bytes(), Mpids(Vec::new())) {
            Ok(Request::AudienceMembershipChange(m)) => assert!(m.is_heartbeat()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn legacy_audience_arrays_become_add_and_delete() {
        let m = membership(&format!(
            r#"{{{HEAD},"user_profiles":[{{"added_audiences":[{{"audience_id":1}}],"removed_audiences":[{{"audience_id":2}}]}}]}}"#
        ));
        let a = &m.user_profiles.unwrap()[0].audiences;
        assert_eq!(a[0].audience_id, Some(1));
        assert_eq!(a[0].action, AudienceAction::Add);
        assert_eq!(a[1].audience_id, Some(2));
        assert_eq!(a[1].action, AudienceAction::Delete);
    }

    #[test]
    fn heartbeat_has_no_profiles_and_null_arrays_are_empty() {
        assert!(membership(&format!("{{{HEAD}}}")).is_heartbeat());
        let m = membership(&format!(
            r#"{{{HEAD},"user_profiles":[{{"user_identities":null,"audiences":null,"mpid":null}}]}}"#
        ));
        assert!(!m.is_heartbeat());
        assert_eq!(m.user_profiles.unwrap()[0], UserProfile::default());
    }

    #[test]
    fn responses_omit_nulls_and_carry_the_envelope() {
        let r = serde_json::to_value(AudienceSubscriptionResponse::new("abc", None)).unwrap();
        let o = r.as_object().unwrap();
        assert_eq!(o["type"], "audience_subscription_response");
        assert_eq!(o["id"], "abc");
        assert_eq!(o["firehose_version"], FIREHOSE_VERSION);
        assert!(o["timestamp_ms"].as_i64().unwrap() > 1_600_000_000_000);
        assert!(!o.contains_key("audience_subscription_settings"));
        let r = serde_json::to_value(AudienceMembershipChangeResponse::new("abc", false)).unwrap();
        assert_eq!(r["suspend_subscription"], false);
    }
}
