# The project's CI on a machine with Nix: `nix flake check` builds these (and the VM tests
# in ./tests). Lints and tests reuse the package's vendored dependencies.
{ lib, pkgs, rbee, smollm2, cargo-nextest, clippy, rustfmt, findutils }:

{
  # rustfmt on every source file (no dependencies needed).
  rustfmt = pkgs.runCommand "rbee-rustfmt" { nativeBuildInputs = [ rustfmt findutils ]; } ''
    cd ${rbee.src}
    find . -name '*.rs' -not -path './target/*' -print0 \
      | xargs -0 rustfmt --check --edition 2021
    touch $out
  '';

  clippy = rbee.overrideAttrs (old: {
    pname = "rbee-clippy";
    nativeBuildInputs = old.nativeBuildInputs ++ [ clippy ];
    buildPhase = ''
      runHook preBuild
      cargo clippy --release --locked --offline --workspace --all-targets -- -D warnings
      runHook postBuild
    '';
    installPhase = "touch $out";
    doCheck = false;
  });

  # The whole suite with the real worker on the real model. Tests that need a systemd
  # manager, root (sshd, containers) or the network skip inside the sandbox, each saying
  # why in the log (RBEE_TEST_STRICT is not set here).
  tests = rbee.overrideAttrs (old: {
    pname = "rbee-tests";
    nativeBuildInputs = old.nativeBuildInputs ++ [ cargo-nextest ];
    RBEE_TEST_MODEL = smollm2;
    buildPhase = ''
      runHook preBuild
      cargo build --release --locked --offline --workspace
      runHook postBuild
    '';
    doCheck = true;
    checkPhase = ''
      runHook preCheck
      cargo nextest run --release --locked --offline --workspace --no-fail-fast
      runHook postCheck
    '';
    installPhase = "touch $out";
  });
}
