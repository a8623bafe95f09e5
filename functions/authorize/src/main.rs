//! Lambda entry point for `authorize`; the handler is built in later steps (logic lives in `shared`).
fn main() {}
