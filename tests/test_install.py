"""arcore.install: the plan (add, update, remove, conflicts) and the swap that never half-installs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from arcore import install

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def make_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


BASE = {
    "SKILL.md": "---\nname: autoresearch\n---\n",
    "scripts/run.sh": "echo run\n",
    "scripts/arcore/__init__.py": "",
    "references/a.md": "a\n",
    "templates/results.tsv": "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n",
}


def run(source: Path, skills: Path, *extra: str) -> int:
    return install.main(["--skills-dir", str(skills), "--source", str(source), *extra])


# ---------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------

def test_a_fresh_destination_gets_every_file_added():
    plan = install.make_plan({"a": "1", "b": "2"}, {}, {})
    assert plan.add == ["a", "b"] and not plan.update and not plan.conflicts


def test_a_file_changed_since_the_last_install_is_a_conflict_but_one_equal_to_the_new_version_is_not():
    package = {"edited": "new", "same-as-new": "new", "untouched": "new"}
    manifest = {"edited": "old", "same-as-new": "old", "untouched": "old"}
    present = {"edited": "mine", "same-as-new": "new", "untouched": "old"}
    plan = install.make_plan(package, present, manifest)
    assert plan.conflicts == ["edited"]
    assert plan.update == ["edited", "untouched"]
    assert plan.unchanged == ["same-as-new"]


def test_a_file_the_package_dropped_is_removed_unless_the_user_edited_it():
    manifest = {"gone": "h1", "gone-edited": "h2"}
    present = {"gone": "h1", "gone-edited": "mine"}
    plan = install.make_plan({}, present, manifest)
    assert plan.remove == ["gone", "gone-edited"]
    assert plan.conflicts == ["gone-edited"]


def test_manifest_paths_that_leave_the_folder_are_ignored():
    digest = "0" * 64
    text = f"{digest}  ok.md\n{digest}  ../../etc/passwd\n{digest}  /etc/passwd\nnot a line\n"
    assert install.parse_manifest(text) == {"ok.md": digest}


def test_the_manifest_round_trips():
    files = {"b/c.md": "1" * 64, "a.md": "2" * 64}
    assert install.parse_manifest(install.format_manifest(files)) == files


def test_package_files_skip_caches_and_anything_outside_the_runtime_parts(tmp_path):
    make_package(tmp_path, {**BASE, "README.md": "x", "scripts/arcore/__pycache__/m.pyc": "x",
                            "scripts/x.pyc": "x", "tests/t.py": "x"})
    assert sorted(install.package_files(tmp_path)) == sorted(BASE)


def test_skill_folders_follow_each_agents_documented_locations(tmp_path):
    home, project = tmp_path / "home", tmp_path / "proj"
    assert install.skills_dir("claude", "user", home, project) == home / ".claude/skills"
    assert install.skills_dir("claude", "project", home, project) == project / ".claude/skills"
    assert install.skills_dir("codex", "user", home, project) == home / ".agents/skills"
    assert install.skills_dir("codex", "project", home, project) == project / ".agents/skills"


# ---------------------------------------------------------------------------
# Install, upgrade, refuse
# ---------------------------------------------------------------------------

def test_an_upgrade_updates_changed_files_and_removes_dropped_ones(tmp_path):
    v1 = make_package(tmp_path / "v1", {**BASE, "references/old.md": "old\n"})
    v2 = make_package(tmp_path / "v2", {**BASE, "references/a.md": "a v2\n"})
    skills = tmp_path / "skills"
    assert run(v1, skills) == 0
    (skills / "autoresearch" / "references" / "mine.md").write_text("user's own\n")
    assert run(v2, skills) == 0
    dest = skills / "autoresearch"
    assert (dest / "references" / "a.md").read_text() == "a v2\n"
    assert not (dest / "references" / "old.md").exists()
    assert (dest / "references" / "mine.md").read_text() == "user's own\n"
    assert install.parse_manifest((dest / install.MANIFEST).read_text()) == install.package_files(v2)


def test_an_upgrade_over_a_local_edit_is_refused_and_writes_nothing(tmp_path, capsys):
    v1 = make_package(tmp_path / "v1", BASE)
    v2 = make_package(tmp_path / "v2", {**BASE, "SKILL.md": BASE["SKILL.md"] + "v2\n"})
    skills = tmp_path / "skills"
    assert run(v1, skills) == 0
    edited = skills / "autoresearch" / "references" / "a.md"
    edited.write_text("my edit\n")
    before = {p: p.read_bytes() for p in (skills / "autoresearch").rglob("*") if p.is_file()}
    capsys.readouterr()
    assert run(v2, skills) == install.EXIT_LOCAL_EDITS
    out = capsys.readouterr()
    assert "conflict: references/a.md" in out.out
    assert "--force" in out.err
    after = {p: p.read_bytes() for p in (skills / "autoresearch").rglob("*") if p.is_file()}
    assert after == before


def test_an_interrupted_install_leaves_the_old_tree_whole_and_no_staging_folder(tmp_path, monkeypatch):
    v1 = make_package(tmp_path / "v1", BASE)
    v2 = make_package(tmp_path / "v2", {k: v + "v2\n" for k, v in BASE.items()})
    skills = tmp_path / "skills"
    assert run(v1, skills) == 0
    before = {p.relative_to(skills): p.read_bytes() for p in skills.rglob("*") if p.is_file()}
    calls = []

    def copy_then_interrupt(src, dst, *args, **kwargs):
        calls.append(src)
        if len(calls) == 2:
            raise install.Interrupted(2)
        return shutil.copy2(src, dst)

    monkeypatch.setattr(install.shutil, "copy2", copy_then_interrupt)
    assert run(v2, skills) == install.EXIT_INTERRUPTED
    after = {p.relative_to(skills): p.read_bytes() for p in skills.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in skills.iterdir()) == ["autoresearch"]


@pytest.mark.parametrize("argv", [["--target", "emacs"], [], ["--target", "claude", "--project", "x"],
                                  ["--target", "claude", "--bogus"]])
def test_bad_options_are_exit_2_with_one_line(argv, capsys):
    assert install.main(argv) == install.EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
