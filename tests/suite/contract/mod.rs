//! The contract suite: one module per port, each case a generic function run on both
//! implementations, the DynamoDB adapter on DynamoDB Local (`on_dynamodb`) and the in-memory
//! twin (`on_twin`). A twin that drifts from DynamoDB fails here; so does an adapter that stops
//! doing what the stages rely on. It lives in this binary so its DynamoDB half never skips.

use integration_tests::{fresh_tables_in, store};
use shared::domain::region::Region;
use shared::store::Store;

mod bus;
mod inbox;
mod memberships;
mod profiles;
mod projects;

/// The regions the cases use: a home region and another one (rows never cross regions).
const HOME: Region = Region::Eu1;
const OTHER: Region = Region::Us1;

/// A store over fresh tables of both regions on DynamoDB Local.
async fn dynamodb(case: &str) -> Store {
    let (client, names) = fresh_tables_in(case, &[HOME, OTHER]).await;
    store(&client, &names)
}

/// Runs each named case (an `async fn(&impl Port)`) on both implementations.
macro_rules! contract_cases {
    ($($case:ident),+ $(,)?) => {
        mod on_dynamodb {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&crate::contract::dynamodb(stringify!($case)).await).await;
                }
            )+
        }
        mod on_twin {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&shared::twin::Twin::new()).await;
                }
            )+
        }
    };
}
pub(crate) use contract_cases;
