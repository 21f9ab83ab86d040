#!/usr/bin/env bats
# scripts/check-hardware.sh: JSON on stdout, summary on stderr, exit 0 ready / 1 not ready /
# 2 usage, driven by fake nvidia-smi, rocm-smi and uname on PATH.

bats_require_minimum_version 1.5.0

load helpers

setup() {
  ar_setup_env
  CHECK="${AR_SCRIPTS}/check-hardware.sh"
  NVSMI="${AR_ROOT}/tests/fixtures/nvidia-smi"
  PLATFORM="${AR_ROOT}/tests/fixtures/platform"
  REAL_PYTHON="$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')"
  # The interpreter itself: a pyenv shim would put its own directory (and a real uv) first.
  ln -s "${REAL_PYTHON}" "${AR_FAKE_BIN}/python3"
  ln -s "${PLATFORM}/fake-uname" "${AR_FAKE_BIN}/uname"
  ar_fake uv 'echo "uv 0.9.7 (fake)"'
  export AR_PROC_VERSION="${BATS_TEST_TMPDIR}/no-proc-version"
  cd "${BATS_TEST_TMPDIR}"
}

use_gpu() {
  ln -sf "${NVSMI}/fake-nvidia-smi" "${AR_FAKE_BIN}/nvidia-smi"
  export FAKE_NVIDIA_SMI="${NVSMI}/$1"
}

# json EXPR: evaluates a Python expression on the JSON object in $output (as `j`).
json() {
  python3 -c 'import json, sys; j = json.loads(sys.stdin.read()); print(eval(sys.argv[1]))' \
    "$1" <<<"${output}"
}

@test "help documents the options, the JSON schema and the exit codes" {
  run --separate-stderr bash "${CHECK}" --help
  [ "${status}" -eq 0 ]
  [[ "${output}" == "Usage: check-hardware.sh"* ]]
  [[ "${output}" == *"--no-gpu"* ]]
  [[ "${output}" == *"route_out"* && *"recommended"* ]]
  [[ "${output}" == *"Exit codes:"* && "${output}" == *"1  not ready"* ]]
}

@test "an H100 is ready: one JSON object on stdout, the summary on stderr" {
  use_gpu h100-80gb
  run --separate-stderr bash "${CHECK}" --no-torch
  [ "${status}" -eq 0 ]
  [ "$(json 'j["ready"]')" = True ]
  [ "$(json 'j["recommended"]["tier"]')" = 80gb ]
  [ "$(json 'j["gpus"][0]["fa3_kernel"]')" = varunneal/flash-attention-3 ]
  [[ "${stderr}" == *"NVIDIA H100 80GB HBM3"* && "${stderr}" == *"ready"* ]]
  while IFS= read -r line; do
    [[ "${line}" == "check-hardware.sh: "* ]]
  done <<<"${stderr}"
}

@test "an RTX 3060 is ready with the 12gb tier" {
  use_gpu rtx3060-12gb
  run --separate-stderr bash "${CHECK}"
  [ "${status}" -eq 0 ]
  [ "$(json 'j["recommended"]["tier"]')" = 12gb ]
  [ "$(json 'j["recommended"]["prepare_py"]["MAX_SEQ_LEN"]')" = 512 ]
}

@test "two different GPUs get the tier of the smaller one" {
  use_gpu two-different
  run --separate-stderr bash "${CHECK}"
  [ "$(json 'j["recommended"]["for_gpu"]')" = 1 ]
  [ "$(json 'len(j["gpus"])')" = 2 ]
}

@test "a failed driver is a blocker and exit 1, not a crash" {
  use_gpu failed-driver
  run --separate-stderr bash "${CHECK}"
  [ "${status}" -eq 1 ]
  [ "$(json 'j["ready"]')" = False ]
  [[ "$(json 'j["blockers"][0]')" == "nvidia-smi failed (NVIDIA-SMI has failed"* ]]
  [[ "${stderr}" == *"BLOCKER: nvidia-smi failed"* ]]
  [[ "${stderr}" != *"Traceback"* ]]
}

@test "a GTX 1660 Ti is not ready because of its compute capability" {
  use_gpu gtx1660ti-6gb
  run --separate-stderr bash "${CHECK}"
  [ "${status}" -eq 1 ]
  [[ "$(json 'j["blockers"]')" == *"compute capability 7.5"* ]]
  [ "$(json 'j["recommended"]["tier"]')" = 6gb ]
}

@test "no GPU blocks, unless the target needs none" {
  run --separate-stderr bash "${CHECK}"
  [ "${status}" -eq 1 ]
  [[ "$(json 'j["blockers"]')" == *"no NVIDIA GPU found"* ]]
  run --separate-stderr bash "${CHECK}" --no-gpu
  [ "${status}" -eq 0 ]
  [ "$(json 'j["recommended"]')" = None ]
}

@test "a Mac is routed out to the macOS and MLX forks" {
  export FAKE_UNAME_S=Darwin FAKE_UNAME_M=arm64
  run --separate-stderr bash "${CHECK}"
  [ "${status}" -eq 1 ]
  [ "$(json 'j["platform"]["os"]')" = macos ]
  [ "$(json '" ".join(r["fork"] for r in j["route_out"])')" = \
    "miolini/autoresearch-macos trevin-creator/autoresearch-mlx" ]
  [[ "${stderr}" == *"route out: miolini/autoresearch-macos"* ]]
}

@test "an AMD GPU is routed out to the ROCm fork" {
  ln -s "${PLATFORM}/fake-rocm-smi" "${AR_FAKE_BIN}/rocm-smi"
  export FAKE_ROCM_SMI="${PLATFORM}/rocm-mi300x.txt"
  run --separate-stderr bash "${CHECK}"
  [ "${status}" -eq 1 ]
  [ "$(json 'j["route_out"][0]["fork"]')" = andyluo7/autoresearch ]
  [ "$(json 'j["amd"]["gpus"][0]')" = "AMD Instinct MI300X" ]
}

@test "missing uv and git are blockers with their fixes" {
  use_gpu h100-80gb
  local only="${BATS_TEST_TMPDIR}/only"
  mkdir -p "${only}"
  local tool
  for tool in bash dirname cat env sed; do
    ln -s "$(command -v "${tool}")" "${only}/${tool}"
  done
  rm "${AR_FAKE_BIN}/uv"
  run --separate-stderr "$(command -v env)" PATH="${AR_FAKE_BIN}:${only}" bash "${CHECK}"
  [ "${status}" -eq 1 ]
  [ "$(json 'j["tools"]["uv"]')" = None ]
  [ "$(json 'j["tools"]["git"]')" = None ]
  [[ "${stderr}" == *"BLOCKER: uv is not installed"* ]]
  [[ "${stderr}" == *"BLOCKER: git is not installed"* ]]
}

@test "a clone without data or env is reported with prepare and uv sync as fixes" {
  use_gpu h100-80gb
  ar_make_repo
  run --separate-stderr bash "${CHECK}" --repo "${REPO}"
  [ "${status}" -eq 1 ]
  [ "$(json 'j["repo"]["data"]["val_shard"]')" = False ]
  [ "$(json 'j["repo"]["data"]["cache_dir"]')" = "${AUTORESEARCH_CACHE_DIR}" ]
  [[ "${stderr}" == *"uv run prepare.py"* && "${stderr}" == *"uv sync"* ]]
}

@test "a bad option is a usage error with one line and no JSON" {
  run --separate-stderr bash "${CHECK}" --frobnicate
  [ "${status}" -eq 2 ]
  [ -z "${output}" ]
  [ "$(printf '%s\n' "${stderr}" | wc -l)" -eq 1 ]
  [[ "${stderr}" == "check-hardware.sh: unknown option '--frobnicate'" ]]
}
