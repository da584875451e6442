//! Entry point of `llm-worker-rbee`; see the library for the parts.

use clap::Parser;

fn main() {
    let args = llm_worker_rbee::cli::Args::parse();
    std::process::exit(llm_worker_rbee::lifecycle::run(args));
}
