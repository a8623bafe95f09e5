//! The projects port's contract.

use shared::domain::auth::{Project, ProjectStatus, StoredPasscode};
use shared::ports::Written;
use shared::ports::projects::{ProjectWriteError, Projects};

use super::{HOME, OTHER, contract_cases};

contract_cases!(
    a_project_is_created_once_and_read_back_whole,
    a_passcode_is_removed_only_while_its_entry_is_the_one_named,
    writes_to_a_missing_project_say_so_and_create_nothing,
    a_status_is_set_and_passcodes_appended_in_order,
);

fn project(id: &str) -> Project {
    Project {
        project_id: id.to_owned(),
        region: HOME,
        account_token: "token".into(),
        passcodes: vec![StoredPasscode::new("first-passcode", None)],
        status: ProjectStatus::Active,
        created_ms: 42,
    }
}

async fn a_project_is_created_once_and_read_back_whole(projects: &impl Projects) {
    let p = project("P1");
    projects.create_project(&p).await.unwrap();
    assert_eq!(projects.project(HOME, "P1").await.unwrap(), Some(p.clone()));
    let mut other = p.clone();
    other.account_token = "another".into();
    assert!(matches!(
        projects.create_project(&other).await,
        Err(ProjectWriteError::Exists(id)) if id == "P1"
    ));
    assert_eq!(projects.project(HOME, "P1").await.unwrap(), Some(p));
    assert_eq!(projects.project(OTHER, "P1").await.unwrap(), None);
}

async fn a_passcode_is_removed_only_while_its_entry_is_the_one_named(projects: &impl Projects) {
    let p = project("P1");
    projects.create_project(&p).await.unwrap();
    let second = StoredPasscode::new("second-passcode", Some(99));
    projects.add_passcode(HOME, "P1", &second).await.unwrap();
    let first_id = p.passcodes[0].id.clone();

    for (index, id) in [(0, &second.id), (1, &first_id), (2, &second.id)] {
        assert_eq!(
            projects
                .remove_passcode_at(HOME, "P1", index, id)
                .await
                .unwrap(),
            Written::ConditionFailed,
            "entry {index} is not {id}"
        );
    }
    assert_eq!(
        projects
            .remove_passcode_at(HOME, "P1", 0, &first_id)
            .await
            .unwrap(),
        Written::Applied
    );
    let left = projects
        .project(HOME, "P1")
        .await
        .unwrap()
        .unwrap()
        .passcodes;
    assert_eq!(left, vec![second.clone()]);
    assert_eq!(
        projects
            .remove_passcode_at(HOME, "P1", 0, &second.id)
            .await
            .unwrap(),
        Written::Applied
    );
    assert!(
        projects
            .project(HOME, "P1")
            .await
            .unwrap()
            .unwrap()
            .passcodes
            .is_empty()
    );
}

async fn writes_to_a_missing_project_say_so_and_create_nothing(projects: &impl Projects) {
    let passcode = StoredPasscode::new("some-passcode", None);
    assert!(matches!(
        projects.add_passcode(HOME, "nobody", &passcode).await,
        Err(ProjectWriteError::NotFound(id)) if id == "nobody"
    ));
    assert!(matches!(
        projects
            .set_project_status(HOME, "nobody", ProjectStatus::Disabled)
            .await,
        Err(ProjectWriteError::NotFound(_))
    ));
    assert_eq!(
        projects
            .remove_passcode_at(HOME, "nobody", 0, &passcode.id)
            .await
            .unwrap(),
        Written::ConditionFailed
    );
    assert_eq!(projects.project(HOME, "nobody").await.unwrap(), None);
}

async fn a_status_is_set_and_passcodes_appended_in_order(projects: &impl Projects) {
    projects.create_project(&project("P1")).await.unwrap();
    projects
        .set_project_status(HOME, "P1", ProjectStatus::Disabled)
        .await
        .unwrap();
    let added: Vec<StoredPasscode> = (0..3)
        .map(|i| StoredPasscode::new(&format!("passcode-{i}"), Some(i)))
        .collect();
    for a in &added {
        projects.add_passcode(HOME, "P1", a).await.unwrap();
    }
    let stored = projects.project(HOME, "P1").await.unwrap().unwrap();
    assert_eq!(stored.status, ProjectStatus::Disabled);
    assert_eq!(stored.passcodes[1..], added[..]);
}
