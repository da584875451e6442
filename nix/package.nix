# The rbee binaries: rbee-hive (the node daemon), llm-worker-rbee (the worker; llama.cpp
# inside) and rbee-keeper (the command line). CPU by default; `cudaSupport` builds the
# worker with CUDA, `metalSupport` (the default on Darwin) with Metal.
{ lib
, stdenv
, rustPlatform
, cmake
, pkg-config
, openssl
, libssh2
, zlib
, llvmPackages
, cudaPackages ? { }
, autoAddDriverRunpath ? null
, cudaSupport ? false
, metalSupport ? stdenv.hostPlatform.isDarwin
}:

rustPlatform.buildRustPackage {
  pname = if cudaSupport then "rbee-cuda" else "rbee";
  version = (lib.importTOML ../Cargo.toml).workspace.package.version;

  src = lib.cleanSourceWith {
    src = ../.;
    filter = path: type:
      !(lib.hasSuffix ".gguf" path) && baseNameOf path != "target" && baseNameOf path != "result";
  };
  # Cargo.lock is the source of truth for every dependency.
  cargoLock.lockFile = ../Cargo.lock;

  # llama-cpp-sys-2 drives cmake itself and runs bindgen on llama.h (the bindgen hook
  # gives it libclang); git2 (the hive builds workers from git) links libgit2's https and
  # ssh transports.
  nativeBuildInputs = [ cmake pkg-config rustPlatform.bindgenHook ]
    ++ lib.optionals cudaSupport [ cudaPackages.cuda_nvcc autoAddDriverRunpath ];
  buildInputs = [ openssl libssh2 zlib ]
    # llama.cpp's CPU backend uses OpenMP: libgomp with gcc, libomp with clang.
    ++ lib.optionals stdenv.cc.isClang [ llvmPackages.openmp ]
    ++ lib.optionals cudaSupport (with cudaPackages; [ cuda_cudart cuda_cccl libcublas ]);
  dontUseCmakeConfigure = true;

  cargoBuildFlags = [ "--package" "llm-worker-rbee" "--package" "rbee-hive" "--package" "rbee-keeper" ];
  buildFeatures = lib.optionals cudaSupport [ "llm-worker-rbee/cuda" ]
    ++ lib.optionals metalSupport [ "llm-worker-rbee/metal" ];

  env = lib.optionalAttrs cudaSupport {
    # The GPU generations nixpkgs' CUDA set is configured for (cudaCapabilities); CMake
    # reads CUDAARCHS for CMAKE_CUDA_ARCHITECTURES.
    CUDAARCHS = cudaPackages.flags.cmakeCudaArchitecturesString;
  };

  # The test suite runs as its own check (nix/checks.nix) with the test model provided.
  doCheck = false;

  # The NixOS module checks that acceleration = "cuda" comes with a CUDA build.
  passthru = { inherit cudaSupport; };

  meta = {
    description = "rbee: the machines you own as one pool for running open LLMs (llama.cpp workers as systemd units)";
    homepage = "https://github.com/rbee-project/rbee";
    license = lib.licenses.gpl3Plus;
    mainProgram = "rbee-keeper";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}
