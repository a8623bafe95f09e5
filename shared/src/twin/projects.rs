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

impl Twin {
    /// An active project without passcodes put in place as a setup: no port call, so no chaos
    /// and no call counted.
    pub fn setup_project(&self, region: Region, project_id: &str) {
        let project = Project {
            project_id: project_id.to_owned(),
            region,
            account_token: "t".into(),
            passcodes: vec![],
            status: crate::domain::auth::ProjectStatus::Active,
            created_ms: 0,
        };
        self.lock()
            .put_project(project)
            .expect("a project item fits");
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
        self.pause("projects.project").await;
        let mut state = self.lock();
        Twin::enter(&mut state, "projects.project")?;
        Ok(state
            .projects
            .get(&(region, project_id.to_owned()))
            .cloned())
    }

    async fn create_project(&self, project: &Project) -> Result<(), ProjectWriteError> {
        const CALL: &str = "projects.create_project";
        self.pause(CALL).await;
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
        self.pause(CALL).await;
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
        self.pause(CALL).await;
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
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let changed = state.change_project(region, project_id, |p| p.status = status)?;
        found(changed, project_id)?;
        Ok(Twin::after_write(&entry, CALL, ())?)
    }
}

/// `revoke_passcode` on the twin, with a concurrent change between its read and its write.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::projects::revoke_passcode;
    use crate::twin::Fault;

    const HOME: Region = Region::Eu1;

    async fn project_with(twin: &Twin, passcodes: &[&str]) -> Vec<StoredPasscode> {
        let passcodes: Vec<StoredPasscode> = passcodes
            .iter()
            .map(|p| StoredPasscode::new(p, None))
            .collect();
        twin.create_project(&Project {
            project_id: "P1".into(),
            region: HOME,
            account_token: "t".into(),
            passcodes: passcodes.clone(),
            status: ProjectStatus::Active,
            created_ms: 0,
        })
        .await
        .unwrap();
        passcodes
    }

    /// The twin, with another operator's revoke of the first passcode landing between this
    /// caller's read and its first conditional write.
    struct RevokedMeanwhile {
        twin: Twin,
        first: std::sync::Mutex<Option<String>>,
    }

    impl Projects for RevokedMeanwhile {
        async fn project(&self, region: Region, id: &str) -> Result<Option<Project>, StoreError> {
            self.twin.project(region, id).await
        }
        async fn create_project(&self, project: &Project) -> Result<(), ProjectWriteError> {
            self.twin.create_project(project).await
        }
        async fn add_passcode(
            &self,
            region: Region,
            id: &str,
            passcode: &StoredPasscode,
        ) -> Result<(), ProjectWriteError> {
            self.twin.add_passcode(region, id, passcode).await
        }
        async fn remove_passcode_at(
            &self,
            region: Region,
            id: &str,
            index: usize,
            passcode_id: &str,
        ) -> Result<Written, StoreError> {
            let other = self.first.lock().unwrap().take();
            if let Some(other) = other {
                let written = self.twin.remove_passcode_at(region, id, 0, &other).await?;
                assert!(written.applied());
            }
            self.twin
                .remove_passcode_at(region, id, index, passcode_id)
                .await
        }
        async fn set_project_status(
            &self,
            region: Region,
            id: &str,
            status: ProjectStatus,
        ) -> Result<(), ProjectWriteError> {
            self.twin.set_project_status(region, id, status).await
        }
    }

    #[tokio::test]
    async fn a_revoke_whose_list_moved_meanwhile_reads_again_and_removes_only_its_own() {
        let twin = Twin::new();
        let codes = project_with(&twin, &["first", "second", "third"]).await;
        let racing = RevokedMeanwhile {
            twin: twin.clone(),
            first: std::sync::Mutex::new(Some(codes[0].id.clone())),
        };
        assert!(
            revoke_passcode(&racing, HOME, "P1", &codes[2].id)
                .await
                .unwrap()
        );
        let left = twin.project(HOME, "P1").await.unwrap().unwrap().passcodes;
        assert_eq!(
            left,
            vec![codes[1].clone()],
            "both revokes stand, the second is kept"
        );
        let removes = twin
            .calls()
            .into_iter()
            .filter(|c| *c == "projects.remove_passcode_at")
            .count();
        assert_eq!(
            removes, 3,
            "the other revoke, the lost condition, the retry"
        );
    }

    #[tokio::test]
    async fn a_revoke_whose_answer_was_lost_finds_nothing_to_revoke_when_retried() {
        let twin = Twin::new();
        let codes = project_with(&twin, &["first", "second"]).await;
        twin.inject("projects.remove_passcode_at", Fault::TimeoutAfterCommit);
        let lost = revoke_passcode(&twin, HOME, "P1", &codes[0].id).await;
        assert!(matches!(lost, Err(ProjectWriteError::Store(e)) if e.is_transient()));
        assert!(
            !revoke_passcode(&twin, HOME, "P1", &codes[0].id)
                .await
                .unwrap()
        );
        let left = twin.project(HOME, "P1").await.unwrap().unwrap().passcodes;
        assert_eq!(left, vec![codes[1].clone()]);
    }

    #[tokio::test]
    async fn revoking_on_a_missing_project_says_so() {
        let twin = Twin::new();
        assert!(matches!(
            revoke_passcode(&twin, HOME, "nobody", "abcd").await,
            Err(ProjectWriteError::NotFound(_))
        ));
    }
}
