//! Lambda entry point for `query`; the handler is built in later steps (logic lives in `shared`).
fn main() {}
