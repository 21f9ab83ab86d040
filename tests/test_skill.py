"""The skill's static side: SKILL.md, references/, templates/ and README.

The Agent Skills reference validator (PyPI skills-ref, `agentskills`) runs on a copy of the package
in a folder named `autoresearch`, as an agent's skill folder would hold it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKILL_MD = ROOT / "SKILL.md"
RUNTIME_PARTS = ("SKILL.md", "scripts", "references", "templates")
USER_WORDS = ("autoresearch", "train.py", "val_bpb", "program.md", "results.tsv", "overnight GPU loop")
CRASH_CLASSES = ("oom", "nan", "timeout", "syntax", "import", "compile", "kernel", "data", "killed",
                 "truncated", "unknown")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def agentskills() -> str:
    exe = Path(sys.executable).parent / "agentskills"
    found = str(exe) if exe.exists() else shutil.which("agentskills")
    if not found:
        pytest.skip("agentskills (PyPI skills-ref, Python >= 3.11) is not installed")
    return found


def skill_copy(parent: Path, name: str = "autoresearch") -> Path:
    dest = parent / name
    dest.mkdir()
    for part in RUNTIME_PARTS:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / part)
    return dest


def frontmatter() -> dict:
    parser = pytest.importorskip("skills_ref.parser", reason="skills-ref needs Python >= 3.11")
    metadata, _body = parser.parse_frontmatter(SKILL_MD.read_text(encoding="utf-8"))
    return metadata


def relative_links(md: Path) -> list[str]:
    text = md.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # links inside code blocks are examples
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z]+:|^#", t)]


def table_first_cells(md: Path) -> list[str]:
    cells = []
    for line in md.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\|\s*`([^`]+)`\s*\|", line)
        if match:
            cells.append(match.group(1))
    return cells


# ---------------------------------------------------------------------------
# The validator
# ---------------------------------------------------------------------------

def test_the_package_copied_into_a_folder_named_autoresearch_passes_the_agent_skills_validator(tmp_path):
    exe = agentskills()
    skill = skill_copy(tmp_path)
    result = subprocess.run([exe, "validate", str(skill)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid skill" in result.stdout


def test_the_validator_rejects_the_same_package_in_a_folder_with_another_name(tmp_path):
    exe = agentskills()
    skill = skill_copy(tmp_path, "autoresearch-copy")
    result = subprocess.run([exe, "validate", str(skill)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "must match skill name" in result.stdout + result.stderr


# ---------------------------------------------------------------------------
# SKILL.md
# ---------------------------------------------------------------------------

def test_skill_md_is_under_200_lines():
    assert len(SKILL_MD.read_text(encoding="utf-8").splitlines()) < 200


def test_the_description_fits_1024_characters_and_has_the_words_a_user_types():
    meta = frontmatter()
    description = meta["description"]
    assert meta["name"] == "autoresearch"
    assert len(description) <= 1024
    missing = [w for w in USER_WORDS if w not in description]
    assert not missing, f"description lacks {missing}"


def test_compatibility_names_the_gpu_uv_bash_git_and_python():
    compatibility = frontmatter()["compatibility"]
    assert len(compatibility) <= 500
    for word in ("NVIDIA", "uv", "bash", "git", "python3"):
        assert word in compatibility


def test_every_reference_file_is_linked_from_skill_md_with_a_line_saying_when_to_open_it():
    lines = SKILL_MD.read_text(encoding="utf-8").splitlines()
    references = sorted(p.name for p in (ROOT / "references").glob("*.md"))
    assert references, "references/ is empty"
    for name in references:
        target = f"](references/{name})"
        linked = [line for line in lines if target in line]
        assert linked, f"SKILL.md does not link references/{name}"
        assert any(re.search(r"\bwhen\b", line, re.I) for line in linked), \
            f"no line linking references/{name} says when to open it"


def test_every_relative_link_in_the_docs_resolves():
    docs = [SKILL_MD, ROOT / "README.md", *sorted((ROOT / "references").glob("*.md")),
            *sorted((ROOT / "templates").glob("*.md"))]
    broken = []
    for md in docs:
        for target in relative_links(md):
            path = (md.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{md.relative_to(ROOT)} -> {target}")
    assert not broken, "broken links: " + ", ".join(broken)


def test_skill_md_names_every_script_and_says_to_run_it_with_help_first():
    text = SKILL_MD.read_text(encoding="utf-8")
    scripts = sorted(p.name for p in (ROOT / "scripts").glob("*.sh") if p.name != "common.sh")
    missing = [s for s in scripts if f"`{s}`" not in text]
    assert not missing, f"SKILL.md's script table lacks {missing}"
    assert "--help" in text and "black box" in text


def test_skill_md_routes_to_five_modes_and_the_intake_packet():
    text = SKILL_MD.read_text(encoding="utf-8")
    for mode in ("Setup readiness", "program.md authoring", "Bounded run loop",
                 "Results interpretation", "Constrained-hardware adaptation"):
        assert mode in text
    for fact in ("Mode asked for", "Repository state", "Hardware state", "Session state",
                 "Constraint state"):
        assert fact in text


# ---------------------------------------------------------------------------
# References and templates
# ---------------------------------------------------------------------------

def test_troubleshooting_has_exactly_one_row_per_crash_class():
    rows = [c for c in table_first_cells(ROOT / "references" / "troubleshooting.md")
            if c in CRASH_CLASSES]
    assert rows == list(CRASH_CLASSES)


def test_the_crash_classes_documented_are_the_ones_runlog_names():
    runlog = pytest.importorskip("arcore.runlog")
    assert tuple(runlog.CLASSES) == CRASH_CLASSES


def test_hardware_config_contains_the_presets_table_verbatim():
    presets = pytest.importorskip("arcore.presets")
    text = (ROOT / "references" / "hardware-config.md").read_text(encoding="utf-8")
    assert presets.render_table() in text


def test_the_results_template_is_upstreams_header_only():
    assert (ROOT / "templates" / "results.tsv").read_bytes() == \
        b"commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"


def test_the_program_template_has_the_guides_sections_and_constraints():
    text = (ROOT / "templates" / "program.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings == ["Goal", "Current baseline", "Directions, in priority order",
                        "What has been tried", "Constraints"]
    for constraint in ("TIME_BUDGET = 300", "prepare.py", "No new packages", "Peak memory",
                       "One meaningful change per experiment"):
        assert constraint in text


def test_the_agent_snippet_points_at_the_skill_and_is_short():
    text = (ROOT / "templates" / "agent-snippet.md").read_text(encoding="utf-8")
    assert "SKILL.md" in text and "autoresearch" in text
    assert len(text.splitlines()) <= 20


def test_the_route_out_table_names_the_tools_and_upstreams_forks():
    text = (ROOT / "references" / "operating-modes-and-route-outs.md").read_text(encoding="utf-8")
    for name in ("LangSmith", "Braintrust", "Weave", "Promptfoo", "miolini/autoresearch-macos",
                 "trevin-creator/autoresearch-mlx", "jsegov/autoresearch-win-rtx",
                 "andyluo7/autoresearch"):
        assert name in text


# ---------------------------------------------------------------------------
# README
# ---------------------------------------------------------------------------

def test_readme_set_up_section_has_exactly_the_demo_and_the_test_suite_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Set up\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, "README has no '## Set up' section"
    commands = re.findall(r"^(?: {4}|\t)(\S.*)$", section.group(1), re.M)
    commands += re.findall(r"^```(?:bash|sh)?\n(.*?)```", section.group(1), re.S | re.M)
    commands = [c.strip() for block in commands for c in block.splitlines() if c.strip()]
    assert commands == ["bash scripts/demo.sh", "bash tests/run.sh"]


# ---------------------------------------------------------------------------
# The docs stay true to the scripts
# ---------------------------------------------------------------------------

OWN_DOCS = ("SKILL.md", "README.md", "references/architecture.md", "references/hardware-config.md",
            "references/operating-modes-and-route-outs.md", "references/program-md-guide.md",
            "references/troubleshooting.md")


def script_mentions(md: Path) -> list[tuple[str, str]]:
    """(script name, the text after it) for each code span or indented line naming scripts/X.sh."""
    text = md.read_text(encoding="utf-8")
    found = []
    for span in re.findall(r"`([^`\n]+)`", text) + re.findall(r"^ {4}(\S.*)$", text, re.M):
        match = re.search(r"\b([a-z][a-z-]*\.sh)\b(.*)", span)
        if match and (ROOT / "scripts" / match.group(1)).is_file():
            found.append((match.group(1), match.group(2)))
    return found


def test_every_option_the_docs_give_a_script_is_in_that_scripts_help():
    helps: dict[str, str] = {}
    unknown = []
    for doc in OWN_DOCS:
        for script, rest in script_mentions(ROOT / doc):
            if script not in helps:
                helps[script] = subprocess.run(["bash", str(ROOT / "scripts" / script), "--help"],
                                               capture_output=True, text=True, timeout=60).stdout
            for option in re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest):
                if option not in helps[script]:
                    unknown.append(f"{doc}: {script} {option}")
    assert helps, "no script mentioned in the docs"
    assert not unknown, "options missing from --help: " + ", ".join(unknown)


# ---------------------------------------------------------------------------
# The front door (issue 13)
# ---------------------------------------------------------------------------

def test_every_script_skill_md_tells_to_run_with_help_is_executable_in_git():
    listing = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-s", "scripts/*.sh"],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    modes = {line.split("\t")[1]: line.split()[0] for line in listing}
    not_exec = [p for p, mode in modes.items() if mode != "100755" and not p.endswith("common.sh")]
    assert modes and not not_exec, f"not executable in git: {not_exec}"


def test_the_prompt_route_out_names_anthropics_skill_creator_and_its_description_loop():
    for md in (SKILL_MD, ROOT / "references" / "operating-modes-and-route-outs.md"):
        row = next(line for line in md.read_text(encoding="utf-8").splitlines()
                   if line.startswith("|") and "SKILL.md" in line and "prompt" in line)
        assert "skill-creator" in row and "Anthropic" in row, (md.name, row)
        assert "description" in row and "optimi" in row, (md.name, row)


def test_the_route_out_check_comes_before_the_intake_and_runs_no_script():
    ops = (ROOT / "references" / "operating-modes-and-route-outs.md").read_text(encoding="utf-8")
    section = ops.split("## 1.", 1)[1].split("\n", 1)[1].split("| #", 1)[0]
    assert section.index("route") < section.index("intake"), section
    text = SKILL_MD.read_text(encoding="utf-8")
    intake = text.split("## Intake packet", 1)[1].split("\n## ", 1)[0]
    assert "route" in intake.split("1.", 1)[0].lower(), intake[:300]


def test_results_interpretation_lists_as_many_things_as_it_says():
    ops = (ROOT / "references" / "operating-modes-and-route-outs.md").read_text(encoding="utf-8")
    head, body = ops.split("**D. Results interpretation**", 1)
    title, body = body.split("\n", 1)
    bullets = [line for line in body.split("\n\n", 1)[0].splitlines() if line.startswith("- ")]
    numbers = {"three": 3, "four": 4, "five": 5, "six": 6}
    said = [n for w, n in numbers.items() if w in title]
    assert said == [len(bullets)], (title, len(bullets))


def test_hardware_config_says_the_smaller_tiers_lower_device_batch_size_as_its_table_does():
    sys.path.insert(0, str(ROOT / "scripts"))
    from arcore import presets
    batches = [t.values["DEVICE_BATCH_SIZE"] for t in presets.TIERS]
    assert batches == sorted(batches, reverse=True) and batches[-1] < batches[0]
    text = (ROOT / "references" / "hardware-config.md").read_text(encoding="utf-8")
    assert not re.search(r"rais\w* `?DEVICE_BATCH_SIZE`? to compensate", text)
