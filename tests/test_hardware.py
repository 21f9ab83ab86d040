"""arcore.hardware and arcore.presets: parsing, the tier table, and the readiness report,
driven by fake nvidia-smi / rocm-smi / uname scripts on PATH."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from arcore import hardware, presets

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
NVSMI = FIXTURES / "nvidia-smi"
PLATFORM = FIXTURES / "platform"
MIRROR = Path("/work/.mirror/karpathy+autoresearch/repo")
BASE_TOOLS = ("bash", "cat", "env", "sleep")


# ---------------------------------------------------------------------------
# Fake PATH
# ---------------------------------------------------------------------------


@pytest.fixture
def fakebin(tmp_path, monkeypatch):
    """A PATH made only of the tools a test asks for, plus fakes; HOME in tmp_path."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setenv("AR_PROC_VERSION", str(tmp_path / "no-proc-version"))
    for name in ("FAKE_NVIDIA_SMI", "FAKE_ROCM_SMI", "FAKE_UNAME_S", "FAKE_UNAME_M",
                 "AUTORESEARCH_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)

    class Bin:
        path = bindir

        def real(self, *names):
            for name in names:
                found = shutil.which(name, path=os.environ.get("AR_REAL_PATH", _REAL_PATH))
                if found:
                    (bindir / name).symlink_to(found)

        def fake(self, name, script):
            (bindir / name).symlink_to(script)

        def gpu(self, fixture):
            self.fake("nvidia-smi", NVSMI / "fake-nvidia-smi")
            monkeypatch.setenv("FAKE_NVIDIA_SMI", str(NVSMI / fixture))

    b = Bin()
    b.real(*BASE_TOOLS, "python3", "git")
    (bindir / "uv").write_text("#!/usr/bin/env bash\necho 'uv 0.9.7 (fake)'\n")
    (bindir / "uv").chmod(0o755)
    b.fake("uname", PLATFORM / "fake-uname")
    return b


_REAL_PATH = os.environ.get("PATH", "")


def report_for(fixture=None, fakebin=None, **kwargs) -> dict:
    if fixture:
        fakebin.gpu(fixture)
    kwargs.setdefault("repo", None)
    return hardware.check(**kwargs)


def mentions(items, *words) -> bool:
    return any(all(w.lower() in item.lower() for w in words) for item in items)


# ---------------------------------------------------------------------------
# The tier table
# ---------------------------------------------------------------------------


def test_every_tier_keeps_upstreams_divisibility_assertions():
    for tier in presets.TIERS:
        assert presets.check_values(tier.values) == [], tier.name


def test_tiers_run_from_the_most_memory_to_the_least():
    floors = [t.min_mib for t in presets.TIERS]
    assert floors == sorted(floors, reverse=True)
    assert len(set(presets.tier_names())) == len(presets.TIERS)


@pytest.mark.parametrize("mib, tier", [
    (143771, "80gb"), (81559, "80gb"), (40960, "40gb"), (40536, "40gb"), (24564, "24gb"),
    (32607, "24gb"), (12288, "12gb"), (10240, "12gb"), (8192, "6gb"), (6144, "6gb"),
    (4096, "6gb"),
])
def test_a_gpu_gets_the_largest_tier_its_memory_reaches(mib, tier):
    assert presets.tier_for_mib(mib).name == tier


def test_a_gpu_below_the_smallest_tier_gets_none():
    assert presets.tier_for_mib(2048) is None
    assert presets.tier_for_mib(None) is None


def test_the_largest_tier_is_exactly_upstreams_defaults():
    if not MIRROR.exists():
        pytest.skip("the upstream mirror is not on this machine")
    show = lambda f: subprocess.run(["git", "-C", str(MIRROR), "show", f"HEAD:{f}"],  # noqa: E731
                                    capture_output=True, text=True, check=True).stdout
    tier = presets.get_tier(presets.DEFAULT_TIER)
    prepare, train = show("prepare.py"), show("train.py")
    for key, value in tier.prepare_values().items():
        assert presets.read_constant(prepare, key) == value, key
    for key, value in tier.train_values().items():
        assert presets.read_constant(train, key) == value, key


def test_check_values_names_a_total_batch_that_does_not_divide():
    values = dict(presets.get_tier("12gb").values, TOTAL_BATCH_SIZE=3 * 2**13)
    assert mentions(presets.check_values(values), "TOTAL_BATCH_SIZE", "multiple")


def test_an_unknown_preset_name_is_a_key_error_naming_the_choices():
    with pytest.raises(KeyError, match="80gb"):
        presets.get_tier("huge")


# ---------------------------------------------------------------------------
# Reading and writing constants
# ---------------------------------------------------------------------------

SOURCE = """\
MAX_SEQ_LEN = 2048       # context length
TIME_BUDGET = 300        # training time budget in seconds (5 minutes)
EVAL_TOKENS = 40 * 524288  # number of tokens for val eval
def f():
    MAX_SEQ_LEN = 1
WINDOW_PATTERN = "SSSL" # sliding window pattern
TOTAL_BATCH_SIZE = 2**19 # ~524K tokens per optimizer step
"""


def test_constants_are_read_as_their_values():
    assert presets.read_constant(SOURCE, "MAX_SEQ_LEN") == 2048
    assert presets.read_constant(SOURCE, "EVAL_TOKENS") == 40 * 524288
    assert presets.read_constant(SOURCE, "TOTAL_BATCH_SIZE") == 2**19
    assert presets.read_constant(SOURCE, "WINDOW_PATTERN") == "SSSL"
    assert presets.read_constant(SOURCE, "DEPTH") is None


def test_setting_a_constant_keeps_its_comment_and_touches_no_other_line():
    new = presets.set_constant(SOURCE, "EVAL_TOKENS", 4 * 524288)
    assert "EVAL_TOKENS = 4 * 524288  # number of tokens for val eval\n" in new
    assert [a for a, b in zip(SOURCE.splitlines(), new.splitlines()) if a != b] == [
        "EVAL_TOKENS = 40 * 524288  # number of tokens for val eval"]


def test_only_the_module_level_line_is_rewritten():
    new = presets.set_constant(SOURCE, "MAX_SEQ_LEN", 512)
    assert new.startswith("MAX_SEQ_LEN = 512       # context length\n")
    assert "    MAX_SEQ_LEN = 1\n" in new


def test_values_are_written_in_upstreams_style():
    new, missing = presets.apply(SOURCE, {"TOTAL_BATCH_SIZE": 2**14, "WINDOW_PATTERN": "L"})
    assert missing == []
    assert "TOTAL_BATCH_SIZE = 2**14 # ~16K tokens" in new  # the size comment follows the value
    assert 'WINDOW_PATTERN = "L" # sliding' in new


def test_apply_reports_the_constants_a_file_does_not_define():
    new, missing = presets.apply(SOURCE, {"DEPTH": 4, "MAX_SEQ_LEN": 256})
    assert missing == ["DEPTH"]
    assert presets.read_constant(new, "MAX_SEQ_LEN") == 256


def test_differs_lists_only_the_constants_that_change():
    assert presets.differs(SOURCE, {"MAX_SEQ_LEN": 2048, "EVAL_TOKENS": 524288}) == {
        "EVAL_TOKENS": (40 * 524288, 524288)}


# ---------------------------------------------------------------------------
# The table in the docs agrees with the Python table
# ---------------------------------------------------------------------------


def test_the_snippet_file_is_the_rendered_table():
    snippet = FIXTURES / "presets-table.md"
    assert snippet.read_text() == presets.render_table(), (
        "regenerate: PYTHONPATH=scripts python3 -m arcore presets table > "
        "tests/fixtures/presets-table.md")


def test_hardware_config_md_holds_the_same_table():
    doc = ROOT / "references" / "hardware-config.md"
    if not doc.exists():
        pytest.skip("references/hardware-config.md is not written yet")
    assert presets.render_table() in doc.read_text(), (
        "references/hardware-config.md must contain `python3 -m arcore presets table` verbatim")


def test_presets_cli_prints_the_table_and_one_tier():
    env = dict(os.environ, PYTHONPATH=str(ROOT / "scripts"))
    table = subprocess.run(["python3", "-m", "arcore", "presets", "table"], env=env,
                           capture_output=True, text=True)
    assert table.returncode == 0 and table.stdout == presets.render_table()
    show = subprocess.run(["python3", "-m", "arcore", "presets", "show", "12gb", "--json"],
                          env=env, capture_output=True, text=True)
    assert json.loads(show.stdout)["prepare_py"] == {"MAX_SEQ_LEN": 512, "EVAL_TOKENS": 4 * 524288}
    bad = subprocess.run(["python3", "-m", "arcore", "presets", "show", "huge"], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "huge" in bad.stderr


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


def test_the_gpu_query_is_parsed_into_numbers():
    gpus = hardware.parse_gpu_csv((NVSMI / "two-different" / "query.csv").read_text())
    assert gpus == [
        {"index": 0, "name": "NVIDIA GeForce RTX 4090", "memory_total_mib": 24564,
         "memory_free_mib": 23988, "compute_capability": "8.9", "driver_version": "575.57.08"},
        {"index": 1, "name": "NVIDIA GeForce RTX 3060", "memory_total_mib": 12288,
         "memory_free_mib": 11918, "compute_capability": "8.6", "driver_version": "575.57.08"},
    ]


def test_not_available_fields_become_none_and_garbage_lines_are_skipped():
    text = "No devices were found\n0, Tesla X, [N/A], [N/A], [N/A], [N/A]\n1, Old, 8192, 8000, 550.1\n"
    gpus = hardware.parse_gpu_csv(text)
    assert [g["index"] for g in gpus] == [0, 1]
    assert gpus[0]["memory_total_mib"] is None and gpus[0]["compute_capability"] is None
    assert gpus[0]["driver_version"] is None
    assert gpus[1]["compute_capability"] is None and gpus[1]["driver_version"] == "550.1"


def test_the_cuda_version_comes_from_the_plain_header():
    assert hardware.parse_cuda_version((NVSMI / "h100-80gb" / "header.txt").read_text()) == "12.8"
    assert hardware.parse_cuda_version("No devices were found") is None


def test_rocm_smi_product_names_are_read_per_gpu():
    text = (PLATFORM / "rocm-mi300x.txt").read_text()
    assert hardware.parse_rocm(text) == ["AMD Instinct MI300X", "AMD Instinct MI300X"]
    assert hardware.parse_rocm("GPU[0] : something else\n") == ["AMD GPU"]


@pytest.mark.parametrize("kernel, machine, proc, os_name, apple", [
    ("Darwin", "arm64", "", "macos", True),
    ("Darwin", "x86_64", "", "macos", False),
    ("Linux", "x86_64", "Linux version 6.8.0-45-generic (buildd@lcy02)", "linux", False),
    ("Linux", "x86_64", (PLATFORM / "proc-version-wsl.txt").read_text(), "wsl", False),
    ("MINGW64_NT-10.0-22631", "x86_64", "", "windows", False),
    ("FreeBSD", "amd64", "", "unknown", False),
])
def test_the_platform_is_classified_from_uname_and_proc_version(kernel, machine, proc, os_name,
                                                                 apple):
    plat = hardware.classify_platform(kernel + "\n", machine + "\n", proc)
    assert plat["os"] == os_name and plat["apple_silicon"] is apple


@pytest.mark.parametrize("cap, kernel", [
    ("9.0", "varunneal/flash-attention-3"), ("8.0", "kernels-community/flash-attn3"),
    ("8.9", "kernels-community/flash-attn3"), ("12.0", "kernels-community/flash-attn3"),
    (None, None),
])
def test_the_fa3_kernel_follows_upstreams_hopper_test(cap, kernel):
    assert hardware.fa3_kernel(cap) == kernel


def test_upstream_train_py_still_chooses_the_kernel_this_way():
    if not MIRROR.exists():
        pytest.skip("the upstream mirror is not on this machine")
    train = subprocess.run(["git", "-C", str(MIRROR), "show", "HEAD:train.py"],
                           capture_output=True, text=True, check=True).stdout
    assert (f'repo = "{hardware.HOPPER_KERNEL}" if cap == (9, 0) else '
            f'"{hardware.COMMUNITY_KERNEL}"') in train


# ---------------------------------------------------------------------------
# Reports from fake machines
# ---------------------------------------------------------------------------


def test_an_h100_is_ready_with_upstreams_defaults_and_the_hopper_kernel(fakebin):
    report = report_for("h100-80gb", fakebin)
    assert report["ready"] is True and report["blockers"] == []
    assert report["gpus"][0]["fa3_kernel"] == "varunneal/flash-attention-3"
    assert report["nvidia_smi"]["cuda_version"] == "12.8"
    rec = report["recommended"]
    assert rec["tier"] == "80gb" and rec["upstream_default"] is True
    assert rec["prepare_py"] == {"MAX_SEQ_LEN": 2048, "EVAL_TOKENS": 40 * 524288}


@pytest.mark.parametrize("fixture, tier", [
    ("a100-40gb", "40gb"), ("rtx4090-24gb", "24gb"), ("rtx3060-12gb", "12gb"),
])
def test_smaller_ampere_or_newer_gpus_are_ready_with_a_smaller_tier(fakebin, fixture, tier):
    report = report_for(fixture, fakebin)
    assert report["ready"] is True, report["blockers"]
    assert report["recommended"]["tier"] == tier
    assert report["recommended"]["upstream_default"] is False
    assert report["gpus"][0]["fa3_kernel"] == "kernels-community/flash-attn3"


def test_a_gtx_1660_ti_is_blocked_by_its_compute_capability_yet_gets_the_smallest_tier(fakebin):
    report = report_for("gtx1660ti-6gb", fakebin)
    assert report["ready"] is False
    assert mentions(report["blockers"], "compute capability 7.5", "scaled_dot_product_attention")
    assert report["recommended"]["tier"] == "6gb"


def test_two_different_gpus_get_the_tier_of_the_smaller_and_a_warning(fakebin):
    report = report_for("two-different", fakebin)
    assert report["recommended"]["for_gpu"] == 1
    assert report["recommended"]["tier"] == "12gb"
    assert mentions(report["warnings"], "CUDA_VISIBLE_DEVICES")


def test_a_failed_driver_is_a_blocker_not_a_crash(fakebin):
    report = report_for("failed-driver", fakebin)
    assert report["ready"] is False
    assert report["nvidia_smi"] == {"found": True, "ok": False, "cuda_version": None,
                                    "error": report["nvidia_smi"]["error"]}
    assert "NVIDIA-SMI has failed" in report["nvidia_smi"]["error"]
    assert mentions(report["blockers"], "nvidia-smi failed", "driver")
    assert report["recommended"] is None


def test_nvidia_smi_listing_no_gpu_is_a_blocker(fakebin):
    report = report_for("no-gpus", fakebin)
    assert mentions(report["blockers"], "lists no GPU")


def test_no_gpu_at_all_is_a_blocker_unless_the_target_needs_none(fakebin):
    assert mentions(report_for(None, fakebin)["blockers"], "no NVIDIA GPU found")
    cpu = report_for(None, fakebin, gpu=False)
    assert cpu["ready"] is True and cpu["recommended"] is None and cpu["gpu_needed"] is False


def test_an_old_driver_is_a_blocker_that_names_the_update(fakebin):
    report = report_for("old-driver", fakebin)
    assert mentions(report["blockers"], "CUDA 11.4", "update the NVIDIA driver")


def test_a_driver_without_compute_cap_is_queried_again_without_it(fakebin):
    report = report_for("old-driver-no-cap", fakebin)
    assert report["gpus"][0]["name"] == "Tesla V100-SXM2-16GB"
    assert report["gpus"][0]["compute_capability"] is None
    assert mentions(report["warnings"], "compute capability unknown")
    assert mentions(report["blockers"], "CUDA 10.1", "update the NVIDIA driver")


def test_a_gpu_held_by_other_processes_is_a_warning(fakebin):
    report = report_for("busy", fakebin)
    assert report["ready"] is True
    assert mentions(report["warnings"], "30122 of 81920 MiB free")


def test_an_amd_gpu_routes_out_to_the_rocm_fork(fakebin, monkeypatch):
    fakebin.fake("rocm-smi", PLATFORM / "fake-rocm-smi")
    monkeypatch.setenv("FAKE_ROCM_SMI", str(PLATFORM / "rocm-mi300x.txt"))
    report = report_for(None, fakebin)
    assert report["amd"] == {"found": True, "gpus": ["AMD Instinct MI300X"] * 2}
    assert [r["fork"] for r in report["route_out"]] == ["andyluo7/autoresearch"]
    assert mentions(report["blockers"], "MI300X", "andyluo7/autoresearch")
    assert not mentions(report["blockers"], "no NVIDIA GPU found")


def test_a_mac_routes_out_to_the_macos_and_mlx_forks(fakebin, monkeypatch):
    monkeypatch.setenv("FAKE_UNAME_S", "Darwin")
    monkeypatch.setenv("FAKE_UNAME_M", "arm64")
    report = report_for(None, fakebin)
    assert report["platform"]["os"] == "macos" and report["platform"]["apple_silicon"]
    assert [r["fork"] for r in report["route_out"]] == [
        "miolini/autoresearch-macos", "trevin-creator/autoresearch-mlx"]
    assert report["route_out"][0]["url"] == "https://github.com/miolini/autoresearch-macos"
    assert mentions(report["blockers"], "macOS has no CUDA")
    assert not mentions(report["blockers"], "no NVIDIA GPU found")


def test_native_windows_routes_out_to_the_windows_fork(fakebin, monkeypatch):
    monkeypatch.setenv("FAKE_UNAME_S", "MINGW64_NT-10.0-22631")
    fakebin.gpu("rtx4090-24gb")
    report = report_for(None, fakebin)
    assert [r["fork"] for r in report["route_out"]] == ["jsegov/autoresearch-win-rtx"]
    assert mentions(report["blockers"], "WSL2")


def test_wsl_with_a_gpu_is_ready_with_a_filesystem_warning(fakebin, monkeypatch):
    monkeypatch.setenv("AR_PROC_VERSION", str(PLATFORM / "proc-version-wsl.txt"))
    report = report_for("rtx4090-24gb", fakebin)
    assert report["platform"]["os"] == "wsl" and report["ready"] is True
    assert mentions(report["warnings"], "/mnt/c")


def test_missing_uv_and_git_are_blockers_with_their_fixes(fakebin):
    (fakebin.path / "uv").unlink()
    (fakebin.path / "git").unlink()
    report = report_for("h100-80gb", fakebin)
    assert report["tools"]["uv"] is None and report["tools"]["git"] is None
    assert mentions(report["blockers"], "uv is not installed", "install.sh")
    assert mentions(report["blockers"], "git is not installed")


def test_tool_versions_are_reported(fakebin):
    report = report_for("h100-80gb", fakebin)
    assert report["tools"]["uv"] == "0.9.7"
    assert report["tools"]["python3"] and report["tools"]["git"]
    assert report["disk"]["free_gb"] is not None


# ---------------------------------------------------------------------------
# The target repository
# ---------------------------------------------------------------------------


def make_clone(root: Path) -> Path:
    root.mkdir()
    for name in hardware.UPSTREAM_FILES:
        (root / name).write_text("# stand-in\n")
    return root


def fill_cache(home: Path, shards: int = 2, val: bool = True, tokenizer: bool = True) -> Path:
    cache = home / ".cache" / "autoresearch"
    (cache / "data").mkdir(parents=True)
    (cache / "tokenizer").mkdir()
    for i in range(shards):
        (cache / "data" / f"shard_{i:05d}.parquet").write_bytes(b"x")
    if val:
        (cache / "data" / hardware.VAL_SHARD).write_bytes(b"x")
    if tokenizer:
        (cache / "tokenizer" / "tokenizer.pkl").write_bytes(b"x")
        (cache / "tokenizer" / "token_bytes.pt").write_bytes(b"x")
    return cache


def fake_venv_python(repo: Path, body: str) -> None:
    bindir = repo / ".venv" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python").write_text("#!/usr/bin/env bash\n" + body + "\n")
    (bindir / "python").chmod(0o755)


TORCH_OK = ("echo '{\"version\": \"2.9.1+cu128\", \"cuda_build\": \"12.8\", "
            "\"cuda_available\": true, \"device_count\": 1}'")


def test_a_synced_clone_with_data_on_an_h100_is_ready(fakebin, tmp_path):
    repo = make_clone(tmp_path / "ar")
    fill_cache(tmp_path / "home")
    fake_venv_python(repo, TORCH_OK)
    report = report_for("h100-80gb", fakebin, repo=str(repo))
    assert report["ready"] is True, report["blockers"]
    assert report["repo"]["data"] == {
        "cache_dir": str(tmp_path / "home" / ".cache" / "autoresearch"),
        "tokenizer": True, "train_shards": 2, "val_shard": True,
        "val_shard_name": "shard_06542.parquet"}
    assert report["repo"]["torch"]["cuda_available"] is True


def test_the_current_directory_is_checked_when_it_is_a_clone(fakebin, tmp_path, monkeypatch):
    repo = make_clone(tmp_path / "ar")
    monkeypatch.chdir(repo)
    report = report_for("h100-80gb", fakebin)
    assert report["repo"]["path"] == str(repo)


def test_an_incomplete_data_cache_is_a_blocker_naming_prepare(fakebin, tmp_path):
    repo = make_clone(tmp_path / "ar")
    fill_cache(tmp_path / "home", shards=3, val=False)
    fake_venv_python(repo, TORCH_OK)
    report = report_for("h100-80gb", fakebin, repo=str(repo))
    assert report["repo"]["data"]["train_shards"] == 3
    assert mentions(report["blockers"], "shard_06542.parquet", "uv run prepare.py")
    relaxed = report_for(None, fakebin, repo=str(repo), data=False)
    assert relaxed["ready"] is True and mentions(relaxed["warnings"], "uv run prepare.py")


def test_an_unsynced_clone_is_a_blocker_naming_uv_sync(fakebin, tmp_path):
    repo = make_clone(tmp_path / "ar")
    fill_cache(tmp_path / "home")
    report = report_for("h100-80gb", fakebin, repo=str(repo))
    assert report["repo"]["torch"]["checked"] is False
    assert mentions(report["blockers"], ".venv is missing", "uv sync")


def test_torch_that_cannot_see_the_gpu_is_a_blocker(fakebin, tmp_path):
    repo = make_clone(tmp_path / "ar")
    fill_cache(tmp_path / "home")
    fake_venv_python(repo, TORCH_OK.replace("true", "false"))
    report = report_for("h100-80gb", fakebin, repo=str(repo))
    assert mentions(report["blockers"], "cannot see a GPU")


def test_a_cpu_only_torch_build_is_a_blocker(fakebin, tmp_path):
    repo = make_clone(tmp_path / "ar")
    fill_cache(tmp_path / "home")
    fake_venv_python(repo, TORCH_OK.replace('"12.8"', "null").replace("true", "false"))
    assert mentions(report_for("h100-80gb", fakebin, repo=str(repo))["blockers"], "CPU-only")


def test_torch_that_does_not_import_is_a_blocker_quoting_the_error(fakebin, tmp_path):
    repo = make_clone(tmp_path / "ar")
    fill_cache(tmp_path / "home")
    fake_venv_python(repo, "echo \"ModuleNotFoundError: No module named 'torch'\" >&2; exit 1")
    report = report_for("h100-80gb", fakebin, repo=str(repo))
    assert mentions(report["blockers"], "No module named 'torch'", "uv sync")


def test_a_hanging_torch_check_is_cut_off_and_only_warned_about(fakebin, tmp_path):
    repo = make_clone(tmp_path / "ar")
    fill_cache(tmp_path / "home")
    fake_venv_python(repo, "exec sleep 30")
    report = report_for("h100-80gb", fakebin, repo=str(repo), torch_timeout=0.3)
    assert report["repo"]["torch"] == {"checked": False,
                                       "reason": "torch check timed out after 0.3 s"}
    assert report["ready"] is True and mentions(report["warnings"], "timed out")


def test_a_directory_without_upstreams_files_is_a_blocker(fakebin, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    report = report_for("h100-80gb", fakebin, repo=str(empty), torch=False)
    assert mentions(report["blockers"], "has no prepare.py")
    assert set(report["repo"]["missing"]) == set(hardware.UPSTREAM_FILES)


def test_a_cpu_target_is_ready_without_gpu_data_or_torch(fakebin, tmp_path):
    repo = make_clone(tmp_path / "ar")
    report = report_for(None, fakebin, repo=str(repo), gpu=False)
    assert report["ready"] is True, report["blockers"]
    assert report["repo"]["torch"]["checked"] is False


def test_the_human_summary_names_the_gpu_the_tier_and_each_blocker(fakebin):
    report = report_for("gtx1660ti-6gb", fakebin)
    text = "\n".join(hardware.summary(report))
    assert "GTX 1660 Ti" in text and "recommended preset: 6gb" in text
    assert text.count("BLOCKER:") == len(report["blockers"])
    assert text.endswith(f"not ready: {len(report['blockers'])} blocker(s)")


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def test_main_prints_json_on_stdout_and_exits_by_readiness(fakebin, capsys):
    fakebin.gpu("h100-80gb")
    assert hardware.main([]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["ready"] is True and "ready" in out.err
    os.environ["FAKE_NVIDIA_SMI"] = str(NVSMI / "failed-driver")
    assert hardware.main([]) == 1
    assert json.loads(capsys.readouterr().out)["ready"] is False


@pytest.mark.parametrize("argv", [["--bogus"], ["--repo"], ["--torch-timeout", "soon"],
                                  ["--torch-timeout", "0"], ["--repo", "/no/such/dir"]])
def test_bad_options_exit_2_with_one_line(argv, capsys):
    assert hardware.main(argv) == 2
    err = capsys.readouterr()
    assert err.out == "" and len(err.err.strip().splitlines()) == 1
