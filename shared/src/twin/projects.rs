//! The projects port in memory.

use super::{Keyed, State, Twin, check_item_size};
use crate::domain::auth::{Project, ProjectStatus, StoredPasscode};
use crate::domain::region::Region;
use crate::ports::projects::{ProjectWriteError, Projects};
use crate::ports::{StoreError, Written};
use crate::store::rows::projects as rows;
use crate::store::tables::Table;

pub(super) type Rows = Keyed<String, Project>;

impl State {
    /// Replaces a project (conditions checked by the caller) and logs the change.
    fn put_project(&mut self, project: Project) -> Result<(), StoreError> {
        let item = rows::item(&project)?;
        check_item_size(&item)?;
        let region = project.region;
        let old = self
            .projects
            .insert((region, project.project_id.clone()), project.clone())
            .map(|p| rows::item(&p))
            .transpose()?;
        self.record(
            region,
            Table::Projects,
            rows::key(&project.project_id),
            old,
            Some(item),
        );
        Ok(())
    }

    /// Changes an existing project; `None` if there is none.
    fn change_project(
        &mut self,
        region: Region,
        project_id: &str,
        change: impl FnOnce(&mut Project),
    ) -> Result<Option<()>, StoreError> {
        let Some(project) = self.projects.get(&(region, project_id.to_owned())) else {
            return Ok(None);
        };
        let mut project = project.clone();
        change(&mut project);
        self.put_project(project).map(Some)
    }
}

fn found(changed: Option<()>, project_id: &str) -> Result<(), ProjectWriteError> {
    changed.ok_or_else(|| ProjectWriteError::NotFound(project_id.to_owned()))
}

impl Projects for Twin {
    async fn project(
        &self,
        region: Region,
        project_id: &str,
    ) -> Result<Option<Project>, StoreError> {
        let mut state = self.lock();
        Twin::enter(&mut state, "projects.project")?;
        Ok(state
            .projects
            .get(&(region, project_id.to_owned()))
            .cloned())
    }

    async fn create_project(&self, project: &Project) -> Result<(), ProjectWriteError> {
        const CALL: &str = "projects.create_project";
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        if state
            .projects
            .contains_key(&(project.region, project.project_id.clone()))
        {
            return Err(ProjectWriteError::Exists(project.project_id.clone()));
        }
        state.put_project(project.clone())?;
        Ok(Twin::after_write(&entry, CALL, ())?)
    }

    async fn add_passcode(
        &self,
        region: Region,
        project_id: &str,
        passcode: &StoredPasscode,
    ) -> Result<(), ProjectWriteError> {
        const CALL: &str = "projects.add_passcode";
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let changed =
            state.change_project(region, project_id, |p| p.passcodes.push(passcode.clone()))?;
        found(changed, project_id)?;
        Ok(Twin::after_write(&entry, CALL, ())?)
    }

    async fn remove_passcode_at(
        &self,
        region: Region,
        project_id: &str,
        index: usize,
        passcode_id: &str,
    ) -> Result<Written, StoreError> {
        const CALL: &str = "projects.remove_passcode_at";
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let holds = state
            .projects
            .get(&(region, project_id.to_owned()))
            .and_then(|p| p.passcodes.get(index))
            .is_some_and(|p| p.id == passcode_id);
        if !holds {
            return Ok(Written::ConditionFailed);
        }
        state.change_project(region, project_id, |p| {
            p.passcodes.remove(index);
        })?;
        Twin::after_write(&entry, CALL, Written::Applied)
    }

    async fn set_project_status(
        &self,
        region: Region,
        project_id: &str,
        status: ProjectStatus,
    ) -> Result<(), ProjectWriteError> {
        const CALL: &str = "projects.set_project_status";
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let changed = state.change_project(region, project_id, |p| p.status = status)?;
        found(changed, project_id)?;
        Ok(Twin::after_write(&entry, CALL, ())?)
    }
}
