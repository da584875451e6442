//! `rbee-keeper`: the rbee command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rbee_keeper::config::Config;
use rbee_keeper::infer::{self, InferArgs};
use rbee_keeper::install::{self, InstallArgs};
use rbee_keeper::manage::{self, HiveCommand, ModelsCommand, WorkersCommand};
use rbee_keeper::paths;
use rbee_keeper::registry::Registry;
use rbee_keeper::report::Failure;
use rbee_keeper::run::{self as run_cmd, RunArgs};
use rbee_keeper::setup::{self, SetupCommand};
use rbee_keeper::ssh::Ssh;

/// rbee's command line: register the machines you own as nodes, then run models on them.
///
///   rbee-keeper run hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_K_M "Write a haiku"
///   rbee-keeper run smollm2-135m-instruct:q4_k_m          # a chat, by the model's name
///   rbee-keeper setup add-node --name workstation --ssh-host 192.168.1.20 \
///       --ssh-user bee --ssh-key ~/.ssh/id_ed25519
///   rbee-keeper run --node workstation smollm2-135m-instruct:q4_k_m < question.txt
///
/// Nodes live in $XDG_DATA_HOME/rbee/beehives.db (~/.local/share/rbee); the config is
/// $RBEE_CONFIG, else $XDG_CONFIG_HOME/rbee/config.toml, else /etc/rbee/config.toml.
/// Exit status: 0 success, 1 failure, 130 interrupted (Ctrl+C).
#[derive(Debug, Parser)]
#[command(name = "rbee-keeper", version, about, long_about, verbatim_doc_comment)]
struct Cli {
    /// One JSON document on stdout instead of text (errors too, as {"error": {…}});
    /// progress stays on stderr.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Talk to a model: `run MODEL "prompt"` streams one answer; without a prompt, a chat
    /// (in a terminal) or the prompt read from stdin. Starts what is missing on the way.
    Run(RunArgs),
    /// Run a prompt on a node: starts what is missing (hive, download, worker) and streams
    /// the answer to stdout; progress and errors go to stderr. Exit 0, 1, or 130 (Ctrl+C).
    Infer(InferArgs),
    /// Register, change, list and remove nodes.
    #[command(subcommand)]
    Setup(SetupCommand),
    /// List, check and stop workers.
    #[command(subcommand)]
    Workers(WorkersCommand),
    /// List, download and remove models on a node.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// A node's hive.
    #[command(subcommand)]
    Hive(HiveCommand),
    /// A worker's log through its hive, or without --worker the hive's own journal on its
    /// node (`--follow` until it stops, or Ctrl+C).
    Logs {
        /// The node [default: the config's `[defaults] node`, else localhost].
        #[arg(long)]
        node: Option<String>,
        /// The worker's id (from `workers list`); without it, the hive's log.
        #[arg(long)]
        worker: Option<String>,
        /// Keep printing new lines.
        #[arg(long)]
        follow: bool,
        /// How many of the last lines.
        #[arg(long, default_value_t = 100)]
        lines: usize,
    },
    /// Install the three binaries (~/.local/bin, or /usr/local/bin with --system), the
    /// config and data directories, and the hive's systemd unit (the user unit; with
    /// --system the system units, polkit rule, sysusers and tmpfiles entries).
    Install(InstallArgs),
    /// Print a shell completion script (bash, zsh, fish, …) to stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.render().to_string();
            let text = format!(
                "[rbee-keeper] ❌ Error: {}",
                text.strip_prefix("error: ").unwrap_or(&text)
            );
            eprint!("{}", rbee_keeper::report::for_stderr(&text));
            // --json promises one JSON document on stdout, errors included.
            if std::env::args().any(|a| a == "--json") {
                let first = e.to_string();
                let first = first.lines().next().unwrap_or_default();
                let f = rbee_keeper::report::Failure::new(
                    "rbee-keeper",
                    first.strip_prefix("error: ").unwrap_or(first),
                )
                .code("USAGE")
                .suggest(["see the commands and options: rbee-keeper --help".to_owned()]);
                println!("{}", f.to_json());
            }
            return ExitCode::from(1);
        }
    };
    let json = cli.json;
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprint!("{f}");
            if json {
                println!("{}", f.to_json());
            }
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<u8, Failure> {
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory;
        use std::io::Write;
        let script = rbee_keeper::completions::script(shell, &mut Cli::command());
        std::io::stdout()
            .write_all(&script)
            .map_err(|e| Failure::new("rbee-keeper", format!("cannot write the script: {e}")))?;
        return Ok(0);
    }
    let config = Config::load(paths::config_file().as_deref())
        .map_err(|e| Failure::new("rbee-keeper", format!("{e:#}")))?;
    let ssh = Ssh {
        options: config.ssh.options.clone(),
    };
    let db = paths::registry_db();
    let mut reg = Registry::open(&db).map_err(|e| {
        Failure::new("rbee-keeper", e.to_string())
            .suggest([format!("check that {} is writable", db.display())])
    })?;
    let json = cli.json;
    match cli.command {
        Command::Run(args) => run_cmd::run(args, json, &config, &reg),
        Command::Infer(args) => infer::run(args, json, &config, &reg),
        Command::Setup(cmd) => setup::run(cmd, json, &config, &mut reg, &ssh).map(|()| 0),
        Command::Workers(cmd) => manage::workers(cmd, json, &config, &reg).map(|()| 0),
        Command::Models(cmd) => manage::models(cmd, json, &config, &reg).map(|()| 0),
        Command::Hive(cmd) => manage::hive_cmd(cmd, json, &config, &reg).map(|()| 0),
        Command::Logs {
            node,
            worker,
            follow,
            lines,
        } => manage::logs(
            &config.node_or_default(node),
            worker.as_deref(),
            (follow, lines, json),
            &config,
            &reg,
        )
        .map(|()| 0),
        Command::Install(args) => install::run(&args).map(|done| {
            if json {
                rbee_keeper::report::print_json(&serde_json::json!({ "done": done }));
            }
            0
        }),
        Command::Completions { .. } => unreachable!("handled before the config is read"),
    }
}
