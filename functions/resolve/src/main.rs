//! Lambda entry point for `resolve`; the handler is built in later steps (logic lives in `shared`).
fn main() {}
