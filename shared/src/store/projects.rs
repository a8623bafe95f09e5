//! Projects: output credentials, kept in the project's home region.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{Store, StoreError, s};
use crate::domain::auth::{Project, ProjectStatus, StoredPasscode};
use crate::domain::region::Region;
use crate::store::keys;
use crate::store::tables::Table;

#[derive(Debug, thiserror::Error)]
pub enum ProjectWriteError {
    #[error("project {0} already exists")]
    Exists(String),
    #[error("project {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Re-reads of a passcode list whose entry moved while revoking.
const MAX_PASSCODE_RETRIES: u32 = 10;

impl Store {
    pub async fn get_project(
        &self,
        region: Region,
        project_id: &str,
    ) -> Result<Option<Project>, StoreError> {
        let out = self
            .client(region)
            .get_item()
            .table_name(self.table(region, Table::Projects))
            .key(keys::projects::PROJECT_ID, s(project_id))
            .consistent_read(true)
            .send()
            .await?;
        Ok(match out.item {
            Some(item) => Some(serde_dynamo::from_item(item)?),
            None => None,
        })
    }

    /// Creates a project; never overwrites one.
    pub async fn create_project(&self, project: &Project) -> Result<(), ProjectWriteError> {
        let item = serde_dynamo::to_item(project).map_err(StoreError::from)?;
        let res = self
            .client(project.region)
            .put_item()
            .table_name(self.table(project.region, Table::Projects))
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", keys::projects::PROJECT_ID)
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(ProjectWriteError::Exists(project.project_id.clone()))
            }
            Err(e) => Err(StoreError::from(e).into()),
        }
    }

    /// Adds a passcode to an existing project.
    pub async fn add_passcode(
        &self,
        region: Region,
        project_id: &str,
        passcode: &StoredPasscode,
    ) -> Result<(), ProjectWriteError> {
        let entry = serde_dynamo::to_attribute_value(passcode).map_err(StoreError::from)?;
        let res = self
            .client(region)
            .update_item()
            .table_name(self.table(region, Table::Projects))
            .key(keys::projects::PROJECT_ID, s(project_id))
            .update_expression("SET passcodes = list_append(passcodes, :p)")
            .condition_expression("attribute_exists(passcodes)")
            .expression_attribute_values(":p", AttributeValue::L(vec![entry]))
            .send()
            .await;
        not_found_on_condition(res.map(|_| ()), project_id)
    }

    /// Removes the passcode with this id (its public id, not the secret). Conditional on the
    /// list entry still being that passcode, so a concurrent add or revoke is never undone (a
    /// lost condition reads the list again). Returns false if no passcode has this id.
    pub async fn revoke_passcode(
        &self,
        region: Region,
        project_id: &str,
        passcode_id: &str,
    ) -> Result<bool, ProjectWriteError> {
        for _ in 0..MAX_PASSCODE_RETRIES {
            let Some(project) = self.get_project(region, project_id).await? else {
                return Err(ProjectWriteError::NotFound(project_id.to_owned()));
            };
            let Some(index) = project.passcodes.iter().position(|p| p.id == passcode_id) else {
                return Ok(false);
            };
            let res = self
                .client(region)
                .update_item()
                .table_name(self.table(region, Table::Projects))
                .key(keys::projects::PROJECT_ID, s(project_id))
                .update_expression(format!("REMOVE passcodes[{index}]"))
                .condition_expression(format!("passcodes[{index}].id = :pid"))
                .expression_attribute_values(":pid", s(passcode_id))
                .return_values(ReturnValue::None)
                .send()
                .await;
            if super::conditional(res)? {
                return Ok(true);
            }
        }
        Err(StoreError::Unavailable(format!(
            "revoking a passcode of {project_id} kept racing other changes"
        ))
        .into())
    }

    pub async fn set_project_status(
        &self,
        region: Region,
        project_id: &str,
        status: ProjectStatus,
    ) -> Result<(), ProjectWriteError> {
        let status = serde_dynamo::to_attribute_value(status).map_err(StoreError::from)?;
        let res = self
            .client(region)
            .update_item()
            .table_name(self.table(region, Table::Projects))
            .key(keys::projects::PROJECT_ID, s(project_id))
            .update_expression("SET #st = :s")
            .condition_expression("attribute_exists(passcodes)")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":s", status)
            .send()
            .await;
        not_found_on_condition(res.map(|_| ()), project_id)
    }
}

fn not_found_on_condition<E>(
    res: Result<
        (),
        aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
    >,
    project_id: &str,
) -> Result<(), ProjectWriteError>
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + 'static,
{
    match res {
        Ok(()) => Ok(()),
        Err(e)
            if e.as_service_error().and_then(|e| e.code())
                == Some("ConditionalCheckFailedException") =>
        {
            Err(ProjectWriteError::NotFound(project_id.to_owned()))
        }
        Err(e) => Err(StoreError::from(e).into()),
    }
}

/// Projects cached for a short time: a revoked passcode keeps working at most `ttl`.
/// Unknown projects are not cached, so a new project works at once.
pub struct ProjectCache {
    store: Store,
    ttl: Duration,
    entries: Mutex<HashMap<ProjectKey, Cached>>,
}

type ProjectKey = (Region, String);
type Cached = (Instant, Arc<Project>);

impl ProjectCache {
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub async fn get(&self, region: Region, id: &str) -> Result<Option<Arc<Project>>, StoreError> {
        {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, p)) = entries.get(&(region, id.to_owned()))
                && at.elapsed() < self.ttl
            {
                return Ok(Some(p.clone()));
            }
        }
        let Some(found) = self.store.get_project(region, id).await? else {
            return Ok(None);
        };
        let found = Arc::new(found);
        if !self.ttl.is_zero() {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if entries.len() > 10_000 {
                entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
            }
            entries.insert((region, id.to_owned()), (Instant::now(), found.clone()));
        }
        Ok(Some(found))
    }
}
