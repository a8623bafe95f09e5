//! The mParticle endpoint (`POST /mparticle`): authentication, registration, subscriptions,
//! heartbeats and the durable enqueue of membership batches. Status codes follow docs/contract.md §2.6.

use std::sync::Arc;

use tracing::{info, warn};

use crate::bulk::{BulkQueue, QueuedChunk};
use crate::config::Config;
use crate::domain::auth::{
    self, CredentialError, ErasureAuthority, OutputCredentials, Project, setting_ids,
};
use crate::domain::batch::{ChunkBuilder, ChunkError};
use crate::domain::protocol::{
    self, AudienceMembershipChangeRequest, AudienceMembershipChangeResponse,
    AudienceProcessingRegistration, AudienceSubscriptionRequest, AudienceSubscriptionResponse,
    DsrProcessingRegistration, DsrProcessingRequest, DsrRequestType, Encoding, IdentityPermission,
    ModuleRegistrationResponse, Permissions, Request, ResponseEnvelope, Setting, Settings,
    SubscriptionAction, UserIdentityType,
};
use crate::domain::records::InboxStatus;
use crate::domain::region::Region;
use crate::domain::ways::{Way, way_of_request};
use crate::ports::inbox::{BatchMeta, ChunkKey, Inbox, PutBatchOutcome};
use crate::ports::projects::ProjectCache;
use crate::stages::erasure::{self, ErasureOutcome, ErasureRequest};
use crate::stages::http::{HttpReply, Outcome, into_response, storage_failure};
use crate::stages::metrics::Metrics;
use crate::store::segment_item::SegmentKey;
use crate::store::segments::SubscriptionChange;
use crate::store::{Store, StoreError};

/// Our registered partner identity: the CleverTap ID, exported to mParticle by CleverTap.
pub use crate::domain::protocol::PARTNER_IDENTITY;

/// The largest body parsed without the caller token: a registration request is a few hundred
/// bytes.
pub const MAX_UNAUTHENTICATED_BODY_BYTES: usize = 64 * 1024;

/// Output credentials resolved against the store: the project and its home region.
struct Authenticated {
    project_id: String,
    region: Region,
    /// An erasure authorized despite a lapsed passcode or a disabled project (why).
    lapsed: Option<CredentialError>,
}

/// Why a request with otherwise valid syntax could not be served.
enum OutputCheck {
    Ok(Authenticated),
    Invalid(CredentialError),
    Unavailable(StoreError),
}

pub struct Endpoint {
    caller_token: String,
    max_body_bytes: usize,
    store: Store,
    projects: ProjectCache<Store>,
    metrics: Metrics,
    eraser: erasure::Eraser,
    /// The bulk way's queue; none: every chunk goes the live way.
    bulk: Option<BulkQueue>,
    live_max_profiles: usize,
}

impl Endpoint {
    pub fn new(config: &Config, store: Store) -> Self {
        Self {
            caller_token: config.caller_token.clone(),
            max_body_bytes: config.max_body_bytes,
            projects: ProjectCache::new(store.clone(), config.project_cache_ttl),
            eraser: erasure::Eraser::InProcess(store.clone()),
            store,
            metrics: crate::stages::metrics::Metrics::for_function(config, "authorize"),
            bulk: None,
            live_max_profiles: config.live_max_profiles,
        }
    }

    /// Large requests go the bulk way, through `queue` (`domain::ways`).
    pub fn with_bulk_queue(mut self, queue: BulkQueue) -> Self {
        self.bulk = Some(queue);
        self
    }

    /// Erasures carried out by `eraser` (the home region's `erase` function in AWS).
    pub fn with_eraser(mut self, eraser: erasure::Eraser) -> Self {
        self.eraser = eraser;
        self
    }

    /// Serves one request. Never panics on input; every failure is a precise status.
    pub async fn handle(
        &self,
        method: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> HttpReply {
        if !method.eq_ignore_ascii_case("POST") {
            return HttpReply::error(405, "only POST is accepted");
        }
        if body.len() > self.max_body_bytes {
            return HttpReply::error(
                413,
                format!(
                    "body of {} bytes exceeds the limit of {} bytes",
                    body.len(),
                    self.max_body_bytes
                ),
            );
        }
        let caller_ok = auth::caller_token_matches(authorization, &self.caller_token);
        // Without the caller token only a (small) registration is answered: anything else gets
        // its 401 after reading no more than the message type, so no body can cost memory.
        if !caller_ok
            && (body.len() > MAX_UNAUTHENTICATED_BODY_BYTES
                || protocol::peek_type(body).as_deref() != Some(protocol::REGISTRATION_TYPE))
        {
            return unauthorized();
        }
        // A membership request's profiles are chunked and compressed as they are read: the
        // parsed profiles never exist all at once.
        let request = match protocol::parse_request_into(body, ChunkBuilder::new()) {
            Ok(r) => r,
            // Without a valid caller token nothing about the body is disclosed.
            Err(_) if !caller_ok => return unauthorized(),
            Err(e) => {
                return HttpReply::json(
                    400,
                    &serde_json::json!({ "error": e.reason, "path": e.path }),
                );
            }
        };
        match request {
            // mParticle imports the registration without authentication.
            Request::ModuleRegistration(r) => {
                HttpReply::json(200, &registration_response(&r.envelope.id))
                    .with(Outcome::Registration)
            }
            _ if !caller_ok => unauthorized(),
            Request::AudienceSubscription(r) => self.subscription(r).await,
            Request::AudienceMembershipChange(r) => self.membership(r).await,
            Request::DsrProcessing(r) => self.dsr(r).await,
        }
    }

    /// A data subject request: an erasure is carried out before the answer (a failure is a 503,
    /// and mParticle sends the request again); access and portability are not supported.
    async fn dsr(&self, r: DsrProcessingRequest) -> HttpReply {
        let check = |creds: &OutputCredentials<'_>, project: Option<&Project>, now| {
            match auth::check_erasure_credentials(creds, project, now)? {
                ErasureAuthority::Full => Ok(None),
                ErasureAuthority::Lapsed(why) => Ok(Some(why)),
            }
        };
        let out = match self
            .check_output_with(&r.account.account_settings, check)
            .await
        {
            OutputCheck::Ok(a) => a,
            OutputCheck::Invalid(e) => {
                info!(request_id = %r.subject_request_id, reason = e.code(), "erasure refused: output credentials");
                return HttpReply::error(403, auth::CREDENTIALS_REJECTED);
            }
            OutputCheck::Unavailable(e) => return unavailable(&e),
        };
        if let DsrRequestType::Other(kind) = &r.request_type {
            return HttpReply::error(
                400,
                format!(
                    "subject_request_type {kind:?} is not supported: this output carries out erasure requests only"
                ),
            );
        }
        let request = ErasureRequest::from_dsr(&r, protocol::now_ms());
        match self
            .eraser
            .erase(out.region, &out.project_id, &request)
            .await
        {
            Ok(outcome) => {
                match &outcome {
                    ErasureOutcome::Erased(a) => info!(
                        project_id = %out.project_id, request_id = %r.subject_request_id,
                        regulation = a.regulation, profiles = a.removed.profiles,
                        memberships = a.removed.memberships, events = a.removed.events,
                        "erasure carried out"
                    ),
                    ErasureOutcome::AlreadyErased => info!(
                        project_id = %out.project_id, request_id = %r.subject_request_id,
                        "erasure redelivered: carried out before"
                    ),
                }
                let reply = HttpReply::json(
                    200,
                    &ResponseEnvelope::reply("dsr_processing_response", &r.envelope.id),
                );
                match &out.lapsed {
                    None => reply.with(Outcome::Erasure),
                    // Carried out, and alarmed: the customer's output credentials need fixing.
                    Some(why) => {
                        warn!(project_id = %out.project_id, request_id = %r.subject_request_id,
                              reason = why.code(), "erasure carried out on lapsed output credentials");
                        reply.with(Outcome::ErasureWithoutPasscode)
                    }
                }
            }
            Err(e) => unavailable(&e),
        }
    }

    async fn check_output(&self, settings: &Settings) -> OutputCheck {
        let check = |creds: &OutputCredentials<'_>, project: Option<&Project>, now| {
            auth::check_credentials(creds, project, now).map(|()| None)
        };
        self.check_output_with(settings, check).await
    }

    /// Reads the output's credentials and checks them with `check` against the project they
    /// name (`Ok(Some(why))`: accepted although `why` failed).
    async fn check_output_with(
        &self,
        settings: &Settings,
        check: impl Fn(
            &OutputCredentials<'_>,
            Option<&Project>,
            i64,
        ) -> Result<Option<CredentialError>, CredentialError>,
    ) -> OutputCheck {
        let creds = match auth::read_credentials(settings) {
            Ok(c) => c,
            Err(e) => return OutputCheck::Invalid(e),
        };
        if !auth::valid_project_id(creds.account_id) {
            return OutputCheck::Invalid(CredentialError::UnknownProject);
        }
        let project = match self.project(&creds).await {
            Ok(p) => p,
            Err(e) => return OutputCheck::Unavailable(e),
        };
        match check(&creds, project.as_deref(), protocol::now_ms()) {
            Ok(lapsed) => OutputCheck::Ok(Authenticated {
                project_id: creds.account_id.to_owned(),
                region: creds.region,
                lapsed,
            }),
            Err(e) => OutputCheck::Invalid(e),
        }
    }

    async fn project(
        &self,
        creds: &OutputCredentials<'_>,
    ) -> Result<Option<Arc<Project>>, StoreError> {
        self.projects.get(creds.region, creds.account_id).await
    }

    async fn subscription(&self, r: AudienceSubscriptionRequest) -> HttpReply {
        let out = match self.check_output(&r.account.account_settings).await {
            OutputCheck::Ok(a) => a,
            OutputCheck::Invalid(e) => {
                info!(
                    audience_id = r.audience_id,
                    reason = e.code(),
                    "subscription refused: output credentials"
                );
                return HttpReply::error(403, auth::CREDENTIALS_REJECTED);
            }
            OutputCheck::Unavailable(e) => return unavailable(&e),
        };
        let now = protocol::now_ms();
        let ts = r.envelope.timestamp_ms;
        let name = r.audience_name.as_deref();
        let segment = SegmentKey {
            region: out.region,
            project_id: &out.project_id,
            audience_id: r.audience_id,
        };
        let result = match r.action {
            SubscriptionAction::Add | SubscriptionAction::Update => {
                let change = if r.action == SubscriptionAction::Add {
                    SubscriptionChange::Connect
                } else {
                    SubscriptionChange::Update
                };
                self.store
                    .upsert_segment(&segment, name, change, ts, now)
                    .await
                    .map(Some)
            }
            SubscriptionAction::Remove => self
                .store
                .archive_segment(&segment, ts, now)
                .await
                .map(|_| None),
            // The parser refuses unknown subscription actions.
            SubscriptionAction::Unknown(_) => Ok(None),
        };
        match result {
            Ok(segment_id) => {
                info!(project_id = %out.project_id, region = %out.region, audience_id = r.audience_id,
                      action = %r.action, "subscription applied");
                let settings = segment_id.filter(|s| !s.is_empty()).map(|id| {
                    let mut s = Settings::new();
                    s.insert(setting_ids::SEGMENT_ID.to_owned(), id);
                    s
                });
                HttpReply::json(
                    200,
                    &AudienceSubscriptionResponse::new(&r.envelope.id, settings),
                )
                .with(Outcome::Subscription)
            }
            Err(e) => unavailable(&e),
        }
    }

    async fn membership(&self, r: AudienceMembershipChangeRequest<ChunkBuilder>) -> HttpReply {
        let id = &r.envelope.id;
        let out = match self.check_output(&r.account.account_settings).await {
            OutputCheck::Ok(a) => a,
            OutputCheck::Invalid(e) => {
                info!(message_id = %id, reason = e.code(), "membership refused: suspending the connection");
                return HttpReply::json(200, &AudienceMembershipChangeResponse::new(id, true))
                    .with(Outcome::CredentialsRejected);
            }
            OutputCheck::Unavailable(e) => return unavailable(&e),
        };
        let Some(profiles) = r.user_profiles.filter(|p| p.profile_count() > 0) else {
            return HttpReply::json(200, &AudienceMembershipChangeResponse::new(id, false))
                .with(Outcome::Heartbeat);
        };
        let profile_count = profiles.profile_count();
        let way = match self.bulk {
            Some(_) => way_of_request(profile_count, self.live_max_profiles),
            None => Way::Live,
        };
        let chunks = match profiles.finish() {
            Ok(c) => c,
            Err(e @ ChunkError::ProfileTooLarge(i)) => {
                return HttpReply::json(
                    413,
                    &serde_json::json!({ "error": e.to_string(), "path": format!("user_profiles[{i}]") }),
                );
            }
            Err(e @ (ChunkError::BatchTooLarge(_) | ChunkError::TooManyChunks)) => {
                return HttpReply::error(413, e.to_string());
            }
        };
        let meta = BatchMeta {
            project_id: &out.project_id,
            message_id: id,
            message_ts: r.envelope.timestamp_ms,
            received_ms: protocol::now_ms(),
            way,
        };
        let stored = match store_batch(&self.store, out.region, &meta, &chunks).await {
            Ok(duplicate) => self
                .queue_bulk(out.region, &meta, &chunks, duplicate)
                .await
                .map(|()| duplicate),
            Err(e) => Err(e),
        };
        match stored {
            Ok(duplicate) => {
                info!(message_id = %id, project_id = %out.project_id, region = %out.region,
                      profiles = profile_count, chunks = chunks.len(), way = way.as_str(),
                      duplicate, "membership batch stored");
                let (profiles, chunks) = (profile_count as u32, chunks.len() as u32);
                HttpReply::json(200, &AudienceMembershipChangeResponse::new(id, false)).with(
                    if duplicate {
                        Outcome::Duplicate { profiles, chunks }
                    } else {
                        Outcome::Stored { profiles, chunks }
                    },
                )
            }
            Err(e) => unavailable(&e),
        }
    }
}

impl Endpoint {
    /// Queues a stored batch's bulk chunks ([`chunks_to_queue`]).
    async fn queue_bulk(
        &self,
        region: Region,
        meta: &BatchMeta<'_>,
        chunks: &[crate::domain::batch::Chunk],
        duplicate: bool,
    ) -> Result<(), StoreError> {
        let Some(queue) = &self.bulk else {
            return Ok(());
        };
        let queued = chunks_to_queue(&self.store, region, meta, chunks, duplicate).await?;
        queue.enqueue(&queued).await
    }
}

/// The chunks of a stored batch to queue for the bulk way: all of a new bulk batch's. A
/// redelivery (`duplicate`) queues again those of its chunks the first delivery stored the bulk
/// way and that are not done: that delivery may have failed between storing and queueing (it was
/// not answered 200). A chunk queued twice is worked once (the worker goes by the row's status).
pub(crate) async fn chunks_to_queue(
    inbox: &impl Inbox,
    region: Region,
    meta: &BatchMeta<'_>,
    chunks: &[crate::domain::batch::Chunk],
    duplicate: bool,
) -> Result<Vec<QueuedChunk>, StoreError> {
    if !duplicate && meta.way != Way::Bulk {
        return Ok(Vec::new());
    }
    let mut queued = Vec::new();
    for chunk in chunks {
        if duplicate {
            let key = ChunkKey {
                project_id: meta.project_id,
                message_id: meta.message_id,
                chunk: chunk.index,
            };
            let Some(row) = inbox.chunk_row(region, key).await? else {
                continue;
            };
            let done = matches!(row.status, InboxStatus::Materialized | InboxStatus::Failed);
            if row.way != Way::Bulk || done {
                continue;
            }
        }
        queued.push(QueuedChunk {
            region,
            project_id: meta.project_id.to_owned(),
            message_id: meta.message_id.to_owned(),
            chunk: chunk.index,
        });
    }
    Ok(queued)
}

/// Stores a batch's chunks; `true` if the message was stored before. Concurrent deliveries of
/// the same message contend for its keys: one wins, the others try again and see a duplicate.
pub(crate) async fn store_batch(
    inbox: &impl Inbox,
    region: Region,
    meta: &BatchMeta<'_>,
    chunks: &[crate::domain::batch::Chunk],
) -> Result<bool, StoreError> {
    const ATTEMPTS: u32 = 5;
    for attempt in 1..=ATTEMPTS {
        match inbox.put_batch(region, meta, chunks).await? {
            PutBatchOutcome::Stored { .. } => return Ok(false),
            PutBatchOutcome::Duplicate => return Ok(true),
            PutBatchOutcome::Contended if attempt < ATTEMPTS => {
                crate::store::stats::note_retry();
                tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
            }
            PutBatchOutcome::Contended => {}
        }
    }
    Err(StoreError::Unavailable(format!(
        "storing message {} kept conflicting with concurrent deliveries",
        meta.message_id
    )))
}

fn unauthorized() -> HttpReply {
    HttpReply::error(
        401,
        "missing or invalid caller token (Authorization: Token …)",
    )
}

/// A storage error as mParticle must see it (`http::storage_failure`): it retries a 5xx, never
/// a 400, so only what DynamoDB refused outright is a 400.
fn unavailable(e: &StoreError) -> HttpReply {
    let (status, message) = storage_failure(e, "stored");
    warn!(error = %e, status, "storage failed the request");
    let reply = HttpReply::error(status, message);
    if status == 400 {
        reply.with(Outcome::Refused)
    } else {
        reply
    }
}

fn text_setting(
    id: &str,
    name: &str,
    description: &str,
    required: bool,
    confidential: bool,
) -> Setting {
    Setting::Text {
        id: id.to_owned(),
        name: name.to_owned(),
        description: Some(description.to_owned()),
        visible: true,
        required,
        confidential,
        default_value: None,
    }
}

/// What we declare to mParticle: account settings, connection settings and permissions.
pub fn registration_response(request_id: &str) -> ModuleRegistrationResponse {
    let raw = |kind: UserIdentityType| IdentityPermission {
        kind,
        encoding: Encoding::Raw,
        required: false,
    };
    use UserIdentityType as U;
    ModuleRegistrationResponse {
        envelope: ResponseEnvelope::reply("module_registration_response", request_id),
        sdk_version: Some(protocol::FIREHOSE_VERSION.to_owned()),
        name: "CleverTap".to_owned(),
        description: Some(
            "Import mParticle audiences into CleverTap as Partner - mParticle segments, with a Partner Sync event for every membership change. Honours GDPR and CCPA erasure requests."
                .to_owned(),
        ),
        version: "1.0".to_owned(),
        permissions: Some(Permissions {
            user_identities: [
                U::Customer, U::Email, U::MobileNumber, U::Other, U::Other2, U::Other3, U::Other4,
                U::Other5, U::Other6, U::Other7, U::Other8, U::Other9, U::Other10,
            ]
            .into_iter()
            .map(raw)
            .collect(),
            device_identities: vec![],
            partner_identities: vec![IdentityPermission {
                kind: PARTNER_IDENTITY.to_owned(),
                encoding: Encoding::Raw,
                required: false,
            }],
            allow_access_mpid: true,
            allow_audience_user_attributes: true,
        }),
        audience_processing_registration: Some(AudienceProcessingRegistration {
            account_settings: account_settings(),
            audience_subscription_settings: vec![
                Setting::Text {
                    id: setting_ids::USER_ID_TYPE.to_owned(),
                    name: "User ID".to_owned(),
                    description: Some(
                        "mParticle identity mapped to the CleverTap Identity: customer, email, other, other2 to other10"
                            .to_owned(),
                    ),
                    visible: true,
                    required: false,
                    confidential: false,
                    default_value: Some("customer".to_owned()),
                },
                Setting::Text {
                    id: setting_ids::SEGMENT_ID.to_owned(),
                    name: "Segment ID".to_owned(),
                    description: None,
                    visible: false,
                    required: false,
                    confidential: false,
                    default_value: None,
                },
            ],
        }),
        // GDPR and CCPA erasure (the request's `regulation`); the same credentials find the project.
        dsr_processing_registration: Some(DsrProcessingRegistration {
            account_settings: account_settings(),
            supported_dsr_types: vec!["erasure".to_owned()],
        }),
    }
}

/// The output's settings: they authenticate every message, audience and DSR alike.
fn account_settings() -> Vec<Setting> {
    vec![
        text_setting(
            setting_ids::ACCOUNT_ID,
            "Account ID",
            "Your CleverTap Project ID",
            true,
            false,
        ),
        text_setting(
            setting_ids::PASSCODE,
            "Passcode",
            "Your CleverTap account passcode",
            true,
            true,
        ),
        text_setting(
            setting_ids::ACCOUNT_TOKEN,
            "Account Token",
            "Your CleverTap Project Token",
            true,
            false,
        ),
        text_setting(
            setting_ids::REGION,
            "Region",
            "Your CleverTap region: eu1, in1, sg1, us1, aps3, mec1 or sk1",
            true,
            false,
        ),
    ]
}

/// The Lambda edge: an API Gateway (HTTP API v2 or REST v1) event in, an HTTP response out.
pub async fn handle_http(
    endpoint: &Endpoint,
    req: lambda_http::Request,
) -> Result<lambda_http::Response<lambda_http::Body>, std::convert::Infallible> {
    let authorization = req
        .headers()
        .get(lambda_http::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let started = std::time::Instant::now();
    let reply = endpoint
        .handle(req.method().as_str(), authorization, req.body().as_ref())
        .await;
    let metrics = &endpoint.metrics;
    metrics.emit(&metrics.request(&reply, started.elapsed()));
    Ok(into_response(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_declares_the_contract() {
        let r = serde_json::to_value(registration_response("req-1")).unwrap();
        assert_eq!(r["type"], "module_registration_response");
        assert_eq!(r["id"], "req-1");
        assert!(r["description"].as_str().unwrap().chars().count() < 230);
        let ids = |path: &str| -> Vec<String> {
            r["audience_processing_registration"][path]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            ids("account_settings"),
            ["accountId", "passcode", "accountToken", "region"]
        );
        assert_eq!(
            ids("audience_subscription_settings"),
            ["userIdType", "segmentId"]
        );
        let account = &r["audience_processing_registration"]["account_settings"];
        assert_eq!(account[1]["confidential"], true);
        assert!(
            account
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["required"] == true)
        );
        let conn = &r["audience_processing_registration"]["audience_subscription_settings"];
        assert_eq!(conn[0]["default_value"], "customer");
        assert_eq!(conn[1]["visible"], false);
        let p = &r["permissions"];
        assert_eq!(p["allow_access_mpid"], true);
        assert_eq!(p["allow_audience_user_attributes"], true);
        assert_eq!(p["partner_identities"][0]["type"], "CleverTap_User_ID");
        let users: Vec<&str> = p["user_identities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                assert_eq!(u["encoding"], "raw");
                u["type"].as_str().unwrap()
            })
            .collect();
        for t in [
            "customer",
            "email",
            "mobile_number",
            "other",
            "other2",
            "other10",
        ] {
            assert!(users.contains(&t), "{t}");
        }
        let v: Vec<u32> = r["sdk_version"]
            .as_str()
            .unwrap()
            .split('.')
            .map(|x| x.parse().unwrap())
            .collect();
        assert!(v[0] >= 2);
    }

    /// The stage's storing of a batch, on the twin: what mParticle's retries and concurrent
    /// deliveries meet between its requests.
    mod storing_a_batch {
        use super::*;
        use crate::domain::batch::Chunk;
        use crate::domain::records::InboxStatus;
        use crate::ports::inbox::ChunkKey;
        use crate::twin::{Fault, Twin};

        const PUT: &str = "inbox.put_batch";

        fn meta() -> BatchMeta<'static> {
            BatchMeta {
                project_id: "P1",
                message_id: "m-1",
                message_ts: 1_700_000_000_000,
                received_ms: 1_700_000_000_100,
                way: Default::default(),
            }
        }

        fn chunks() -> Vec<Chunk> {
            (0..3)
                .map(|index| Chunk {
                    index,
                    profile_count: 1,
                    payload: vec![index as u8; 8],
                    audiences: Default::default(),
                })
                .collect()
        }

        async fn stored(twin: &Twin) -> usize {
            let mut n = 0;
            for chunk in 0..3 {
                let key = ChunkKey {
                    project_id: "P1",
                    message_id: "m-1",
                    chunk,
                };
                if let Some(row) = twin.chunk_row(Region::Eu1, key).await.unwrap() {
                    assert_eq!(row.status, InboxStatus::Received);
                    n += 1;
                }
            }
            n
        }

        #[tokio::test]
        async fn a_contended_batch_is_tried_again_until_it_is_stored() {
            let twin = Twin::new();
            twin.inject(PUT, Fault::TransactionConflict);
            twin.inject(PUT, Fault::TransactionConflict);
            let duplicate = store_batch(&twin, Region::Eu1, &meta(), &chunks()).await;
            assert!(!duplicate.unwrap(), "stored, not a duplicate");
            assert_eq!(twin.calls().iter().filter(|c| **c == PUT).count(), 3);
            assert_eq!(stored(&twin).await, 3);
        }

        #[tokio::test]
        async fn contention_that_never_ends_is_unavailable_and_stores_nothing() {
            let twin = Twin::new();
            for _ in 0..5 {
                twin.inject(PUT, Fault::TransactionConflict);
            }
            let err = store_batch(&twin, Region::Eu1, &meta(), &chunks()).await;
            assert!(matches!(err, Err(StoreError::Unavailable(_))), "{err:?}");
            assert_eq!(stored(&twin).await, 0);
        }

        #[tokio::test]
        async fn a_batch_whose_answer_was_lost_is_a_duplicate_when_it_comes_again() {
            let twin = Twin::new();
            twin.inject(PUT, Fault::TimeoutAfterCommit);
            // The write stood but the answer was lost: mParticle gets a 5xx and sends it again.
            let lost = store_batch(&twin, Region::Eu1, &meta(), &chunks()).await;
            assert!(matches!(&lost, Err(e) if e.is_transient()), "{lost:?}");
            assert_eq!(stored(&twin).await, 3);
            let again = store_batch(&twin, Region::Eu1, &meta(), &chunks()).await;
            assert!(
                again.unwrap(),
                "the redelivery is a duplicate, nothing is lost"
            );
            assert_eq!(
                twin.changes(Region::Eu1, crate::store::tables::Table::Inbox)
                    .len(),
                3,
                "each chunk was written once"
            );
        }

        #[tokio::test]
        async fn a_throttled_or_failing_store_is_a_transient_error_not_a_duplicate() {
            for fault in [Fault::Throttle, Fault::Transient] {
                let twin = Twin::new();
                twin.inject(PUT, fault);
                let err = store_batch(&twin, Region::Eu1, &meta(), &chunks()).await;
                assert!(
                    matches!(&err, Err(e) if e.is_transient()),
                    "{fault:?}: {err:?}"
                );
                assert_eq!(stored(&twin).await, 0);
                let retried = store_batch(&twin, Region::Eu1, &meta(), &chunks()).await;
                assert!(!retried.unwrap(), "the retry stores it");
            }
        }
    }
}
