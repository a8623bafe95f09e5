//! The integration tests, one binary: each module was a test binary of its own, and each linked
//! the AWS SDK. Against DynamoDB Local (`scripts/test` starts it); helpers in `tests/support`.
//! The browser test is `#[ignore]`d here and run by `scripts/console-browser`.

mod answers;
mod authorize;
mod bad_input;
mod console;
mod console_browser;
mod contract;
mod e2e;
mod erasure;
mod events;
mod feed;
mod harness;
mod materialize;
mod metrics;
mod order_independence;
mod preview;
mod read_bounds;
mod resolve;
mod template;
mod ways;
