# The rbee binaries (the worker llm-worker-rbee and the node daemon rbee-hive), CPU build.
{ lib
, stdenv
, rustPlatform
, cmake
, pkg-config
, openssl
, libssh2
, zlib
, llvmPackages
}:

rustPlatform.buildRustPackage {
  pname = "rbee";
  version = (lib.importTOML ../Cargo.toml).workspace.package.version;

  src = lib.cleanSourceWith {
    src = ../.;
    filter = path: type: !(lib.hasSuffix ".gguf" path) && baseNameOf path != "target";
  };
  cargoLock.lockFile = ../Cargo.lock;

  # llama-cpp-sys-2 drives cmake itself and runs bindgen on llama.h.
  # git2 (the hive builds workers from git) links libgit2's https and ssh transports.
  nativeBuildInputs = [ cmake pkg-config rustPlatform.bindgenHook ];
  buildInputs = [ openssl libssh2 zlib ]
    ++ lib.optionals stdenv.cc.isClang [ llvmPackages.openmp ];
  dontUseCmakeConfigure = true;

  cargoBuildFlags = [ "--package" "llm-worker-rbee" "--package" "rbee-hive" ];
  # The test suite starts the real worker on a real model, which the sandbox does not
  # have; it runs as its own flake check once the model is provided as a fixed-output
  # derivation (see the Nix issue).
  doCheck = false;

  meta = {
    description = "rbee: LLM workers (llama.cpp, token streaming over HTTP) run as systemd units by a node daemon";
    license = lib.licenses.gpl3Plus;
    mainProgram = "rbee-hive";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}
