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

let
  # nixpkgs' llama-cpp builds CUDA with the CUDA set's stdenv (the host compiler nvcc
  # supports); so does this package.
  buildRustPackage =
    if cudaSupport
    then rustPlatform.buildRustPackage.override { stdenv = cudaPackages.backendStdenv; }
    else rustPlatform.buildRustPackage;
  # llama-cpp-sys-2 links cudart_static, cublas_static, cublasLt_static and culibos as
  # static archives (rustc looks for them itself, so they go on its -L) and libcuda
  # dynamically; nixpkgs keeps the archives in the `static` outputs and the libcuda stub in
  # cuda_cudart's `stubs` output. Its own search (CUDA_LIBRARY_PATH, /usr/local/cuda)
  # finds none of them in the sandbox.
  cudaLinkDirs = with cudaPackages; [
    "${lib.getOutput "static" cuda_cudart}/lib"
    "${lib.getOutput "static" libcublas}/lib"
    "${lib.getOutput "stubs" cuda_cudart}/lib/stubs"
    "${lib.getOutput "stubs" cuda_cudart}/lib"
  ];
in
buildRustPackage {
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
    # llama.cpp's CPU backend uses OpenMP when CMake finds it. llama-cpp-sys-2 links the
    # runtime only for GNU targets (libgomp), so on Darwin libomp would leave ___kmpc_*
    # undefined: there ggml's own thread pool is used instead (no OpenMP found).
    ++ lib.optionals (stdenv.cc.isClang && !stdenv.hostPlatform.isDarwin) [ llvmPackages.openmp ]
    ++ lib.optionals cudaSupport (with cudaPackages; [ cuda_cudart cuda_cccl libcublas ]);
  dontUseCmakeConfigure = true;

  cargoBuildFlags = [ "--package" "llm-worker-rbee" "--package" "rbee-hive" "--package" "rbee-keeper" ];
  buildFeatures = lib.optionals cudaSupport [ "llm-worker-rbee/cuda" ]
    ++ lib.optionals metalSupport [ "llm-worker-rbee/metal" ];

  env = lib.optionalAttrs cudaSupport {
    # The GPU generations nixpkgs' CUDA set is configured for (cudaCapabilities), as
    # nixpkgs' llama-cpp passes them. CUDAARCHS had no effect: ggml's CMakeLists sets
    # CMAKE_CUDA_ARCHITECTURES itself unless it is defined, and llama-cpp-sys-2 passes
    # every CMAKE_* variable of its environment to cmake as a definition.
    CMAKE_CUDA_ARCHITECTURES = cudaPackages.flags.cmakeCudaArchitecturesString;
    RUSTFLAGS = lib.concatMapStringsSep " " (d: "-L native=${d}") cudaLinkDirs;
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
