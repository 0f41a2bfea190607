#!/usr/bin/env bash
# The whole test suite, on a fresh machine as on a developer's: sets up what the tests
# that compare against real components need, then runs every test of the workspace.
#
#   - the Python environment with pinned onnx/onnxruntime/numpy (scripts/python-env.sh),
#     which the ONNX tests compare with; QATC_REQUIRE_PYTHON=1 makes a missing environment
#     a failure;
#   - ../shared/data beside the repository (MNIST, the PyTorch fake-quant vectors);
#   - OpenMPI (installed with apt-get when `mpirun` is missing), for the data-parallel
#     tests, which run in a second `cargo test` with the `mpi` feature of qatc (the
#     workspace build itself needs no MPI).
#
# CI runs exactly this (.ci/run). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d ../shared/data ]; then
  echo "error: ../shared/data is missing (the shared data folder must sit beside the repository)" >&2
  exit 1
fi

QATC_PYTHON="$(scripts/python-env.sh | tail -n 1)"
export QATC_PYTHON
export QATC_REQUIRE_PYTHON=1

if ! command -v mpirun >/dev/null 2>&1; then
  echo "installing OpenMPI for the data-parallel tests" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopenmpi-dev openmpi-bin libclang-dev
fi

cargo test --workspace --locked "$@"
# The MPI tests launch `mpirun --allow-run-as-root --oversubscribe -np 2 qatc train ...`.
# QATC_REQUIRE_MPI=1: a missing MPI build or mpirun is a failure, every MPI test runs.
QATC_REQUIRE_MPI=1 cargo test -p qatc --features mpi --locked --test mpi "$@"
