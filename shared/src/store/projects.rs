//! Projects: output credentials, kept in the project's home region.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{Store, StoreError, s};
use crate::auth::{Project, ProjectStatus, StoredPasscode};
use crate::keys;
use crate::region::Region;
use crate::tables::Table;

#[derive(Debug, thiserror::Error)]
pub enum ProjectWriteError {
    #[error("project {0} already exists")]
    Exists(String),
    #[error("project {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

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

    /// Removes the passcode with this id (its public id, not the secret).
    pub async fn revoke_passcode(
        &self,
        region: Region,
        project_id: &str,
        passcode_id: &str,
    ) -> Result<bool, ProjectWriteError> {
        let Some(mut project) = self.get_project(region, project_id).await? else {
            return Err(ProjectWriteError::NotFound(project_id.to_owned()));
        };
        let before = project.passcodes.len();
        project.passcodes.retain(|p| p.id != passcode_id);
        if project.passcodes.len() == before {
            return Ok(false);
        }
        let list =
            serde_dynamo::to_attribute_value(&project.passcodes).map_err(StoreError::from)?;
        self.client(region)
            .update_item()
            .table_name(self.table(region, Table::Projects))
            .key(keys::projects::PROJECT_ID, s(project_id))
            .update_expression("SET passcodes = :p")
            .expression_attribute_values(":p", list)
            .return_values(ReturnValue::None)
            .send()
            .await
            .map_err(StoreError::from)?;
        Ok(true)
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
