//! Lambda entry point for `materialize`; the handler is built in later steps (logic lives in `shared`).
fn main() {}
