//! `rbee-hive`: see the crate documentation and `rbee-hive --help`.

use clap::Parser;
use rbee_hive::config::{Cli, Command, Config};
use rbee_types::exit;

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
                rbee_http::logging::fatal("rbee-hive", &e.to_string());
                exit::USAGE
            }
        },
    };
    std::process::exit(code);
}

fn init_tracing() {
    rbee_http::logging::init("info");
}
