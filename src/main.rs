//! driftwatch command line (src/cli/); the agent lives in the library (src/agent.rs).

fn main() -> std::process::ExitCode {
    driftwatch::cli::main()
}
