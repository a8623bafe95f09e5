//! The projects port on DynamoDB: each method is one request; items are mapped in
//! `rows::projects`.

use super::rows::projects as rows;
use super::{Store, StoreError};
use crate::domain::auth::{Project, ProjectStatus, StoredPasscode};
use crate::domain::region::Region;
use crate::ports::Written;
use crate::ports::projects::{ProjectWriteError, Projects};
use crate::store::tables::Table;

impl Store {
    /// An UpdateItem of one project with a row file's expressions; a failed condition means
    /// the project does not exist.
    async fn update_project(
        &self,
        region: Region,
        project_id: &str,
        update: super::rows::UpdateSpec,
    ) -> Result<(), ProjectWriteError> {
        let request = self
            .client(region)
            .update_item()
            .table_name(self.table(region, Table::Projects))
            .set_key(Some(rows::key(project_id)));
        match super::written(update.on(request).send().await)? {
            Written::Applied => Ok(()),
            Written::ConditionFailed => Err(ProjectWriteError::NotFound(project_id.to_owned())),
        }
    }
}

impl Projects for Store {
    async fn project(
        &self,
        region: Region,
        project_id: &str,
    ) -> Result<Option<Project>, StoreError> {
        let out = self
            .client(region)
            .get_item()
            .table_name(self.table(region, Table::Projects))
            .set_key(Some(rows::key(project_id)))
            .consistent_read(true)
            .send()
            .await?;
        out.item.map(rows::project).transpose()
    }

    async fn create_project(&self, project: &Project) -> Result<(), ProjectWriteError> {
        let res = self
            .client(project.region)
            .put_item()
            .table_name(self.table(project.region, Table::Projects))
            .set_item(Some(rows::item(project)?))
            .condition_expression(rows::NEW_PROJECT_ONLY)
            .send()
            .await;
        match super::written(res)? {
            Written::Applied => Ok(()),
            Written::ConditionFailed => Err(ProjectWriteError::Exists(project.project_id.clone())),
        }
    }

    async fn add_passcode(
        &self,
        region: Region,
        project_id: &str,
        passcode: &StoredPasscode,
    ) -> Result<(), ProjectWriteError> {
        self.update_project(region, project_id, rows::passcode_added(passcode)?)
            .await
    }

    async fn remove_passcode_at(
        &self,
        region: Region,
        project_id: &str,
        index: usize,
        passcode_id: &str,
    ) -> Result<Written, StoreError> {
        let request = self
            .client(region)
            .update_item()
            .table_name(self.table(region, Table::Projects))
            .set_key(Some(rows::key(project_id)));
        let update = rows::passcode_removed(index, passcode_id);
        super::written(update.on(request).send().await)
    }

    async fn set_project_status(
        &self,
        region: Region,
        project_id: &str,
        status: ProjectStatus,
    ) -> Result<(), ProjectWriteError> {
        self.update_project(region, project_id, rows::status_set(status)?)
            .await
    }
}
