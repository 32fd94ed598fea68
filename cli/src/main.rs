//! `ferry`, the operator CLI: see `ferry --help` and docs/operations.md.

use std::io::IsTerminal;
use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let aws = ferry::adapters::aws::sdk_config().await;
    let stdout = std::io::stdout();
    let term = ferry_cli::Term::detect(stdout.is_terminal(), std::env::var_os("NO_COLOR").is_some());
    let mut out = stdout.lock();
    match ferry_cli::run(std::env::args_os(), &aws, &mut out, term).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("ferry: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
