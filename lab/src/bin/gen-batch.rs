//! Prints a benchmark membership request: `gen-batch [PROFILES=1000] [--seed S=42]`.
//! The same arguments give the same bytes (see `lab::workload`).

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut profiles = 1_000usize;
    let mut seed = 42u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let parsed = match a.as_str() {
            "--seed" => it.next().and_then(|s| s.parse().ok()).map(|s| seed = s),
            n => n.parse().ok().map(|n| profiles = n),
        };
        if parsed.is_none() {
            eprintln!("usage: gen-batch [PROFILES] [--seed S]");
            return std::process::ExitCode::from(2);
        }
    }
    println!("{}", lab::workload::membership_batch(profiles, seed));
    std::process::ExitCode::SUCCESS
}
