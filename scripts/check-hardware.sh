#!/usr/bin/env bash
# Usage: check-hardware.sh [--repo DIR] [--cache-dir DIR] [--no-gpu] [--no-data] [--no-torch]
#                          [--torch-timeout SEC]
#
# Is this machine (and the autoresearch clone) ready? Prints one JSON object on stdout and a
# human summary on stderr. Changes nothing.
#
# Options:
#   --repo DIR           the clone to check (default: the current directory when it holds
#                        prepare.py and train.py; otherwise no clone is checked)
#   --cache-dir DIR      the data cache (default: prepare.py's CACHE_DIR, $AUTORESEARCH_CACHE_DIR
#                        or ~/.cache/autoresearch)
#   --no-gpu             the target runs on CPU (e.g. examples/cpu-target): no GPU, CUDA, torch
#                        or data-cache blockers
#   --no-data            report the data cache without counting it as a blocker
#   --no-torch           skip the torch.cuda.is_available() check in the clone's .venv
#   --torch-timeout SEC  bound on that check (default 60); a timeout is a warning
#
# JSON (schema 1):
#   schema       1
#   ready        true when blockers is empty
#   blockers     [sentence, each naming its fix]
#   warnings     [sentence]
#   route_out    [{fork, url, for}]: community forks to use where upstream's CUDA assumptions
#                fail (macOS/MLX, Windows, AMD ROCm)
#   recommended  null or {tier, for_gpu, memory_total_mib, upstream_default,
#                prepare_py: {MAX_SEQ_LEN, EVAL_TOKENS},
#                train_py: {DEPTH, DEVICE_BATCH_SIZE, TOTAL_BATCH_SIZE, WINDOW_PATTERN}}:
#                the preset tier for the GPU with the least memory
#   gpu_needed   false with --no-gpu
#   platform     {os: linux|wsl|macos|windows|unknown, kernel, arch, apple_silicon}
#   nvidia_smi   {found, ok, error, cuda_version}
#   gpus         [{index, name, memory_total_mib, memory_free_mib, compute_capability,
#                driver_version, fa3_kernel}]
#   amd          {found, gpus: [name]}
#   tools        {python3, uv, git}: version strings, null when missing
#   disk         {path, free_gb}: where the data cache lives
#   repo         null or {path, files: {name: bool}, missing: [name],
#                data: {cache_dir, tokenizer, train_shards, val_shard, val_shard_name},
#                torch: {checked, reason} or {checked, importable, error} or
#                {checked, importable, version, cuda_build, cuda_available, device_count}}
#
# Exit codes:
#   0  ready
#   1  not ready (see blockers)
#   2  usage
set -euo pipefail

AR_NAME="check-hardware.sh"
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

main() {
  ar_help_if_asked "$@"
  export AR_NAME
  ar_core hardware "$@"
}

main "$@"
