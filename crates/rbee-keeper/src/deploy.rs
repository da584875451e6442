//! `rbee-keeper setup install --node`: puts rbee on a node by building it there. Over SSH,
//! one script clones the node's registered repository and branch into its install path (or
//! fetches, when a checkout is there), builds `rbee-hive`, `llm-worker-rbee` and
//! `rbee-keeper` with the node's own cargo, then runs the new `rbee-keeper install` on the
//! node (binaries to `[remote] binary_path`, the hive's config with the registered port,
//! the user unit), and restarts the hive if it was running. Everything the node prints is
//! streamed, prefixed with the node's name.

use clap::Args;
use rbee_types::Backend;

use crate::config::Config;
use crate::registry::{Node, Registry};
use crate::report::Failure;
use crate::shell::{quote, NodeShell, Output};

/// `setup install`'s arguments.
#[derive(Debug, Args)]
pub struct InstallNodeArgs {
    /// The registered node.
    #[arg(long)]
    pub node: String,
    /// Which worker to build: `cpu`, `cuda` (needs the CUDA toolkit on the node) or `metal`
    /// (macOS) [default: the config's `[defaults] backend`, else cpu].
    #[arg(long, value_parser = backend_parser())]
    pub backend: Option<Backend>,
}

/// Backends, with clap listing the possible values in its errors and `--help`.
fn backend_parser() -> impl clap::builder::TypedValueParser<Value = Backend> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Backend::ALL.map(Backend::as_str))
        .map(|s| s.parse::<Backend>().expect("one of the possible values"))
}

/// The script, with the node's values in it.
fn script(n: &Node, bin_dir: &str, backend: Backend) -> String {
    let backend = backend.as_str();
    let features = match backend {
        "cuda" => "--features llm-worker-rbee/cuda",
        "metal" => "--features llm-worker-rbee/metal",
        _ => "",
    };
    format!(
        "node={node} repo={repo} branch={branch} dir={dir} bindir={bindir} port={port} features={features} backend={backend}\n{SCRIPT}",
        node = quote(&n.node_name),
        repo = quote(&n.git_repo_url),
        branch = quote(&n.git_branch),
        dir = quote(&n.install_path),
        bindir = quote(bin_dir),
        port = n.hive_port,
        features = quote(features),
        backend = quote(backend),
    )
}

/// The steps on the node (POSIX sh; the variables above come first).
const SCRIPT: &str = r#"set -u
fail() {
    echo "rbee-error: $1" >&2
    shift
    for h in "$@"; do echo "rbee-hint: $h" >&2; done
    exit 3
}
step() { echo "==> $*" >&2; }
home_path() { case $1 in "~") echo "$HOME" ;; "~/"*) echo "$HOME/${1#"~/"}" ;; *) echo "$1" ;; esac; }
dir=$(home_path "$dir")
bindir=$(home_path "$bindir")

command -v git >/dev/null 2>&1 || fail "git is not installed on node $node" \
    "install it there (Debian/Ubuntu: sudo apt-get install git)"
command -v cargo >/dev/null 2>&1 || fail "cargo is not on the PATH of an SSH login on node $node" \
    "install Rust there: curl https://sh.rustup.rs -sSf | sh" \
    "a login that is not interactive must find it too: put ~/.cargo/bin on PATH in ~/.profile or ~/.ssh/environment"
command -v cmake >/dev/null 2>&1 || fail "cmake is not installed on node $node (llama.cpp is built with it)" \
    "install the build tools there (Debian/Ubuntu: sudo apt-get install cmake clang libclang-dev pkg-config libssl-dev)"
if [ "$backend" = cuda ] && ! command -v nvcc >/dev/null 2>&1 && [ ! -x /usr/local/cuda/bin/nvcc ]; then
    fail "the CUDA toolkit (nvcc) is not installed on node $node" \
        "install it there (NVIDIA's CUDA toolkit, or your distribution's nvidia-cuda-toolkit), or build for the CPU: --backend cpu"
fi

if [ -d "$dir/.git" ]; then
    step "fetching $branch from $repo into $dir"
    git -C "$dir" fetch --progress "$repo" "+refs/heads/$branch:refs/remotes/rbee/$branch" ||
        fail "cannot fetch branch $branch of $repo on node $node" \
            "check the repository and branch: rbee-keeper setup update-node --name $node --git-repo … --git-branch …"
    git -C "$dir" checkout --quiet --force --detach "refs/remotes/rbee/$branch" ||
        fail "cannot check out $branch in $dir on node $node"
elif [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
    fail "$dir on node $node is not empty and not a git checkout; nothing was changed" \
        "choose another path: rbee-keeper setup update-node --name $node --install-path …"
else
    step "cloning $repo (branch $branch) into $dir"
    mkdir -p "$(dirname "$dir")" || fail "cannot create $(dirname "$dir") on node $node"
    git clone --progress --branch "$branch" "$repo" "$dir" ||
        fail "cannot clone branch $branch of $repo on node $node" \
            "check the repository and branch: rbee-keeper setup update-node --name $node --git-repo … --git-branch …"
fi
cd "$dir" || fail "cannot enter $dir on node $node"
commit=$(git rev-parse HEAD)
step "building rbee-hive, llm-worker-rbee ($backend) and rbee-keeper at $commit (the first build takes minutes)"
# shellcheck disable=SC2086
cargo build --release --locked --target-dir target --bin rbee-hive --bin llm-worker-rbee --bin rbee-keeper $features ||
    fail "the build of $commit failed on node $node (the compiler's messages are above)" \
        "fix the branch, or build another one: rbee-keeper setup update-node --name $node --git-branch …"
step "installing into $bindir"
mkdir -p "$bindir" || fail "cannot create $bindir on node $node"
./target/release/rbee-keeper install --from target/release --bin-dir "$bindir" --hive-port "$port" --no-next-steps ||
    fail "the install on node $node failed (see above)"
if systemctl --user is-active --quiet rbee-hive.service 2>/dev/null; then
    step "restarting the running hive onto the new binaries"
    systemctl --user restart rbee-hive.service || fail "the hive did not restart on node $node" \
        "look at its log: rbee-keeper logs --node $node"
fi
echo "rbee-done: $commit" >&2
"#;

/// Runs `setup install`.
/// Runs `setup install`; the commit installed.
pub(crate) fn run(
    a: &InstallNodeArgs,
    cfg: &Config,
    reg: &mut Registry,
) -> Result<String, Failure> {
    let db = |e: rbee_sqlite::DbError| Failure::new("rbee-keeper", e.to_string());
    if a.node == "localhost" {
        return Err(Failure::new(
            "rbee-keeper",
            "setup install is for registered nodes; this machine is installed from its checkout",
        )
        .suggest(["cargo build --release && target/release/rbee-keeper install".to_string()]));
    }
    let Some(mut n) = reg.get(&a.node).map_err(db)? else {
        return Err(crate::registry::not_registered(&a.node));
    };
    let backend = match a.backend {
        Some(b) => b,
        None => cfg.default_backend()?.unwrap_or_default(),
    };
    let shell = NodeShell::open(&n.node_name, cfg, reg)?;
    crate::say!(
        "📦 installing rbee on {} from {} ({}) into {}",
        n.node_name,
        n.git_repo_url,
        n.git_branch,
        n.install_path
    );
    let commit = shell
        .run(
            &n.node_name,
            &script(&n, &cfg.remote.binary_path, backend),
            Output::Progress,
        )?
        .check(
            "rbee-keeper",
            &format!("the install on node {}", n.node_name),
        )?;
    n.last_connected_unix = Some(rbee_types::now_unix());
    n.status = "installed".into();
    reg.update(&n).map_err(db)?;
    crate::say!(
        "✅ rbee {} installed on {} ({})",
        &commit[..commit.len().min(12)],
        n.node_name,
        cfg.remote.binary_path
    );
    eprintln!(
        "    start its hive: rbee-keeper hive start --node {}",
        n.node_name
    );
    Ok(commit)
}
