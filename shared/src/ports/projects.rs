//! The projects port: each project's output credentials, kept in its home region.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::auth::{Project, ProjectStatus, StoredPasscode};
use crate::domain::region::Region;
use crate::ports::{StoreError, Written};

#[derive(Debug, thiserror::Error)]
pub enum ProjectWriteError {
    #[error("project {0} already exists")]
    Exists(String),
    #[error("project {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The projects table.
pub trait Projects: Send + Sync {
    /// A project, strongly consistent.
    fn project(
        &self,
        region: Region,
        project_id: &str,
    ) -> impl Future<Output = Result<Option<Project>, StoreError>> + Send;

    /// Creates a project; never overwrites one (`Exists`).
    fn create_project(
        &self,
        project: &Project,
    ) -> impl Future<Output = Result<(), ProjectWriteError>> + Send;

    /// Appends a passcode to an existing project (`NotFound` if there is none).
    fn add_passcode(
        &self,
        region: Region,
        project_id: &str,
        passcode: &StoredPasscode,
    ) -> impl Future<Output = Result<(), ProjectWriteError>> + Send;

    /// Removes the passcode at `index` of the list, on condition that the entry there is still
    /// the one with `passcode_id` (`ConditionFailed` otherwise: the list moved, read it again).
    fn remove_passcode_at(
        &self,
        region: Region,
        project_id: &str,
        index: usize,
        passcode_id: &str,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;

    /// Sets an existing project's status (`NotFound` if there is none).
    fn set_project_status(
        &self,
        region: Region,
        project_id: &str,
        status: ProjectStatus,
    ) -> impl Future<Output = Result<(), ProjectWriteError>> + Send;
}

/// Re-reads of a passcode list whose entry moved while revoking.
const MAX_PASSCODE_RETRIES: u32 = 10;

/// Revokes the passcode with this id (its public id, not the secret): reads the project, then
/// removes the entry on condition that it is still that passcode, so a concurrent add or revoke
/// is never undone (a lost condition reads the list again). `false` if no passcode has this id.
pub async fn revoke_passcode(
    projects: &impl Projects,
    region: Region,
    project_id: &str,
    passcode_id: &str,
) -> Result<bool, ProjectWriteError> {
    for _ in 0..MAX_PASSCODE_RETRIES {
        let Some(project) = projects.project(region, project_id).await? else {
            return Err(ProjectWriteError::NotFound(project_id.to_owned()));
        };
        let Some(index) = project.passcodes.iter().position(|p| p.id == passcode_id) else {
            return Ok(false);
        };
        if projects
            .remove_passcode_at(region, project_id, index, passcode_id)
            .await?
            .applied()
        {
            return Ok(true);
        }
    }
    Err(StoreError::Unavailable(format!(
        "revoking a passcode of {project_id} kept racing other changes"
    ))
    .into())
}

type CacheKey = (Region, String);

/// Projects cached for a short time: a revoked passcode keeps working at most `ttl`.
/// Unknown projects are not cached, so a new project works at once.
pub struct ProjectCache<P> {
    projects: P,
    ttl: Duration,
    entries: Mutex<HashMap<CacheKey, (Instant, Arc<Project>)>>,
}

impl<P: Projects> ProjectCache<P> {
    pub fn new(projects: P, ttl: Duration) -> Self {
        Self {
            projects,
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
        let Some(found) = self.projects.project(region, id).await? else {
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
