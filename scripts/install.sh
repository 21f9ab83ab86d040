#!/usr/bin/env bash
# Usage: install.sh --target claude|codex [--scope user|project] [--project DIR]
#                   [--skills-dir DIR] [--force] [--dry-run]
#
# Copies this skill's runtime parts (SKILL.md, scripts/ with arcore/, references/, templates/, and
# examples/ for demo.sh) into an agent's skill folder as <skills folder>/autoresearch, where the
# agent finds it:
#
#   --target claude --scope user      ~/.claude/skills/autoresearch
#   --target claude --scope project   DIR/.claude/skills/autoresearch
#                                     (Claude Code: https://code.claude.com/docs/en/skills)
#   --target codex  --scope user      ~/.agents/skills/autoresearch
#   --target codex  --scope project   DIR/.agents/skills/autoresearch
#                                     (Codex: https://developers.openai.com/codex/skills,
#                                     "Where to save skills"; Codex reads .agents/skills from the
#                                     working directory up to the repository root)
#   --skills-dir DIR                  DIR/autoresearch, for any other folder, e.g. older Codex
#                                     releases' $CODEX_HOME/skills (~/.codex/skills)
#
# Options:
#   --project DIR  the project for --scope project (default: the current directory)
#   --force        overwrite local edits (files changed since the last install)
#   --dry-run      print the plan, write nothing
#   -h, --help     this text
#
# The destination keeps .autoresearch-install.sha256, the sha256 of every file the last install
# wrote. A file that differs from it (and from the new version) is a local edit: the install refuses
# and writes nothing unless --force. Files you added that the skill does not ship are kept. The new
# tree is built beside the destination and renamed into place, so an interrupted install leaves the
# old one whole. Re-running an install that is up to date changes nothing.
#
# Output (stdout): one "add: PATH", "update: PATH", "remove: PATH" or "conflict: PATH" line per
# change, then dest, status (installed, up-to-date, dry-run, refused) and the counts added, updated,
# removed, unchanged, conflicts.
#
# Exit codes:
#   0    installed, up to date, or dry run planned
#   1    failure: no SKILL.md beside this script, the destination is a link or a file, cannot write
#   2    usage
#   4    refused: local edits in the destination would be overwritten (nothing written; --force)
#   130  interrupted (the destination is left as it was)
set -euo pipefail

AR_NAME="install.sh"
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

main() {
  ar_help_if_asked "$@"
  ar_core install "$@"
}

main "$@"
