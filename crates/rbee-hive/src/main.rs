//! `rbee-hive`: see the crate documentation and `rbee-hive --help`.

use clap::Parser;
use rbee_hive::config::{Cli, Command, Config};
use rbee_types::{env, exit};

fn main() {
    let cli = Cli::parse();
    init_tracing();
    let code = match cli.command {
        Some(Command::CheckConfig { path }) => match Config::load(&path) {
            Ok(_) => {
                println!("{}: valid", path.display());
                exit::OK
            }
            Err(e) => {
                eprintln!("rbee-hive: {e}");
                exit::USAGE
            }
        },
        None => match Config::resolve(&cli.options) {
            Ok(config) => rbee_hive::daemon::run(config),
            Err(e) => {
                eprintln!("rbee-hive: {e}");
                exit::USAGE
            }
        },
    };
    std::process::exit(code);
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(env::LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Under systemd the journal adds its own timestamps.
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    if under_systemd {
        builder.without_time().init();
    } else {
        builder.init();
    }
}
