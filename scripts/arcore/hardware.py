"""hardware: check-hardware.sh's logic. Is this machine (and this clone) ready for autoresearch?

Facts are gathered by small probes that run commands found on PATH (``nvidia-smi``, ``rocm-smi``,
``uname``, ``python3``, ``uv``, ``git``, the clone's ``.venv/bin/python``), so tests fake them with
scripts on PATH. ``assess(facts)`` is pure: it turns the facts into the report (blockers, warnings,
route_out, recommended, ready). ``main`` prints the report as one JSON object on stdout and a human
summary on stderr. Exit: 0 ready, 1 not ready, 2 usage.

The report's schema is documented in scripts/check-hardware.sh's usage header.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys

from arcore import presets, session, uvenv

SCHEMA = 1
UPSTREAM_FILES = ("prepare.py", "train.py", "program.md", "pyproject.toml", "uv.lock")
REQUIRED_FILES = ("prepare.py", "train.py", "pyproject.toml")
VAL_SHARD = "shard_06542.parquet"  # upstream prepare.py's pinned validation shard
GPU_FIELDS = "index,name,memory.total,memory.free,compute_cap,driver_version"
HOPPER_KERNEL = "varunneal/flash-attention-3"  # upstream train.py: cap == (9, 0)
COMMUNITY_KERNEL = "kernels-community/flash-attn3"  # every other capability
COMMUNITY_KERNEL_CAPS = ((8, 0), (9, 0))  # the capabilities its build lists (8.0, 9.0a)
MIN_CUDA = (12, 0)  # torch 2.9.1 cu128 wheels; older drivers cannot run them
WANT_CUDA = (12, 8)
LOW_DISK_GB = 10.0
MIN_DISK_GB = 1.0
DEFAULT_TORCH_TIMEOUT = 60.0

FORKS = {
    "macos": [
        ("miolini/autoresearch-macos", "macOS (PyTorch MPS)"),
        ("trevin-creator/autoresearch-mlx", "macOS, Apple Silicon (MLX)"),
    ],
    "windows": [("jsegov/autoresearch-win-rtx", "Windows with an NVIDIA RTX GPU")],
    "amd": [("andyluo7/autoresearch", "AMD GPUs (ROCm)")],
}

# ---------------------------------------------------------------------------
# Running commands (the only impure part besides the file checks)
# ---------------------------------------------------------------------------


def run(argv: list[str], timeout: float = 20.0, cwd: str | None = None) -> dict:
    """{found, rc, out, err, timed_out}; never raises for a missing or hanging command."""
    if shutil.which(argv[0]) is None and not os.path.isfile(argv[0]):
        return {"found": False, "rc": None, "out": "", "err": "", "timed_out": False}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              stdin=subprocess.DEVNULL, errors="replace")
    except subprocess.TimeoutExpired:
        return {"found": True, "rc": None, "out": "", "err": "", "timed_out": True}
    except OSError as err:
        return {"found": True, "rc": 126, "out": "", "err": str(err), "timed_out": False}
    return {"found": True, "rc": done.returncode, "out": done.stdout, "err": done.stderr,
            "timed_out": False}


# ---------------------------------------------------------------------------
# Parsing (pure)
# ---------------------------------------------------------------------------


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def parse_gpu_csv(text: str) -> list[dict]:
    """nvidia-smi --query-gpu=index,name,memory.total,memory.free,compute_cap,driver_version
    --format=csv,noheader,nounits; also accepts the same without compute_cap (5 fields)."""
    gpus = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) not in (5, 6) or not cells[0].isdigit():
            continue
        cap = cells[4] if len(cells) == 6 else ""
        cap_ok = re.fullmatch(r"\d+\.\d+", cap)
        total, free = _number(cells[2]), _number(cells[3])
        gpus.append({
            "index": int(cells[0]),
            "name": cells[1],
            "memory_total_mib": int(total) if total is not None else None,
            "memory_free_mib": int(free) if free is not None else None,
            "compute_capability": cap if cap_ok else None,
            "driver_version": cells[-1] if cells[-1] and not cells[-1].startswith("[") else None,
        })
    return gpus


def parse_cuda_version(text: str) -> str | None:
    match = re.search(r"CUDA Version:\s*([0-9]+(?:\.[0-9]+)*)", text)
    return match.group(1) if match else None


def parse_rocm(text: str) -> list[str]:
    """GPU names from `rocm-smi --showproductname`; one "AMD GPU" per id when no name is shown."""
    names: dict[str, str] = {}
    for match in re.finditer(r"^GPU\[(\d+)\][^\n]*?:\s*(.*)$", text, re.M):
        gpu, rest = match.group(1), match.group(2)
        series = re.match(r"Card [Ss]eries:\s*(.+)", rest)
        if series:
            names[gpu] = series.group(1).strip()
        else:
            names.setdefault(gpu, "AMD GPU")
    return [names[k] for k in sorted(names, key=int)]


def parse_version(text: str) -> str | None:
    match = re.search(r"(\d+\.\d+(?:\.\d+)?)", text or "")
    return match.group(1) if match else None


def _tuple(version: str | None) -> tuple[int, ...] | None:
    if not version:
        return None
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return None


def classify_platform(kernel: str, machine: str, proc_version: str = "") -> dict:
    kernel, machine = kernel.strip(), machine.strip()
    low = kernel.lower()
    if low == "darwin":
        os_name = "macos"
    elif low == "linux":
        os_name = "wsl" if re.search(r"microsoft|wsl", proc_version, re.I) else "linux"
    elif low.startswith(("mingw", "msys", "cygwin")) or low.startswith("windows"):
        os_name = "windows"
    else:
        os_name = "unknown"
    return {"os": os_name, "kernel": kernel or None, "arch": machine or None,
            "apple_silicon": os_name == "macos" and machine in ("arm64", "aarch64")}


def fa3_kernel(capability: str | None) -> str | None:
    """The kernel upstream train.py loads: Hopper (9.0) gets varunneal's, the rest the community's."""
    cap = _tuple(capability)
    if cap is None:
        return None
    return HOPPER_KERNEL if cap == (9, 0) else COMMUNITY_KERNEL


# ---------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------


def probe_platform() -> dict:
    kernel = run(["uname", "-s"])
    machine = run(["uname", "-m"])
    proc_path = os.environ.get("AR_PROC_VERSION", "/proc/version")  # a test hook
    try:
        with open(proc_path, encoding="utf-8", errors="replace") as handle:
            proc = handle.read(4096)
    except OSError:
        proc = ""
    return classify_platform(kernel["out"] or sys.platform, machine["out"], proc)


WSL_NVIDIA_SMI = "/usr/lib/wsl/lib/nvidia-smi"  # where WSL2 puts it, not always on PATH


def probe_nvidia(wsl: bool = False) -> dict:
    facts = {"found": False, "ok": False, "error": None, "cuda_version": None, "gpus": []}
    smi = "nvidia-smi"
    if wsl and shutil.which(smi) is None and os.path.isfile(WSL_NVIDIA_SMI):
        smi = WSL_NVIDIA_SMI
    query = run([smi, f"--query-gpu={GPU_FIELDS}", "--format=csv,noheader,nounits"])
    if not query["found"]:
        return facts
    facts["found"] = True
    if query["rc"] != 0 and re.search(r"not a valid field|compute_cap", query["out"] + query["err"]):
        fields = GPU_FIELDS.replace(",compute_cap", "")  # drivers older than compute_cap
        query = run([smi, f"--query-gpu={fields}", "--format=csv,noheader,nounits"])
    if query["timed_out"] or query["rc"] != 0:
        text = (query["out"] + "\n" + query["err"]).strip()
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        facts["error"] = first or ("timed out" if query["timed_out"] else f"exit {query['rc']}")
        return facts
    facts["ok"] = True
    facts["gpus"] = parse_gpu_csv(query["out"])
    header = run([smi])
    facts["cuda_version"] = parse_cuda_version(header["out"])
    return facts


def probe_amd() -> dict:
    result = run(["rocm-smi", "--showproductname"])
    if not result["found"]:
        return {"found": False, "gpus": []}
    return {"found": True, "gpus": parse_rocm(result["out"]) if result["rc"] == 0 else []}


def probe_tools() -> dict:
    tools = {}
    for name in ("python3", "uv", "git"):
        # uv: found the way every script finds it (arcore.uvenv), on PATH or where it installs
        exe = (uvenv.find_uv()[0] or name) if name == "uv" else name
        result = run([exe, "--version"])
        text = result["out"] + result["err"]
        tools[name] = parse_version(text) if result["found"] and result["rc"] == 0 else None
    return tools


def default_cache_dir() -> str:
    return os.environ.get("AUTORESEARCH_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "autoresearch")


def probe_disk(path: str) -> dict:
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return {"path": probe, "free_gb": None}
    return {"path": probe, "free_gb": round(free / 1024**3, 1)}


def probe_data(cache_dir: str, val_shard: str = VAL_SHARD) -> dict:
    data = os.path.join(cache_dir, "data")
    tok = os.path.join(cache_dir, "tokenizer")
    shards = glob.glob(os.path.join(data, "shard_*.parquet"))
    return {
        "cache_dir": cache_dir,
        "tokenizer": all(os.path.isfile(os.path.join(tok, f))
                         for f in ("tokenizer.pkl", "token_bytes.pt")),
        "train_shards": len([s for s in shards if os.path.basename(s) != val_shard]),
        "val_shard": os.path.isfile(os.path.join(data, val_shard)),
        "val_shard_name": val_shard,
    }


TORCH_PROBE = (
    "import json, torch\n"
    "ok = torch.cuda.is_available()\n"
    "print(json.dumps({'version': torch.__version__, 'cuda_build': torch.version.cuda,"
    " 'cuda_available': ok, 'device_count': torch.cuda.device_count() if ok else 0}))\n"
)


def probe_torch(repo: str, timeout: float) -> dict:
    python = os.path.join(repo, ".venv", "bin", "python")
    if not os.path.exists(python):
        return {"checked": False, "reason": f"{repo}/.venv is missing (the env is not synced)"}
    result = run([python, "-c", TORCH_PROBE], timeout=timeout, cwd=repo)
    if result["timed_out"]:
        return {"checked": False, "reason": f"torch check timed out after {timeout:g} s"}
    if result["rc"] != 0:
        lines = [line for line in result["err"].splitlines() if line.strip()]
        return {"checked": True, "importable": False,
                "error": lines[-1].strip() if lines else f"exit {result['rc']}"}
    try:
        info = json.loads(result["out"].strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"checked": True, "importable": False, "error": "unreadable torch probe output"}
    return {"checked": True, "importable": True, **info}


def probe_repo(repo: str, cache_dir: str | None, torch: bool, timeout: float) -> dict:
    files = {name: os.path.isfile(os.path.join(repo, name)) for name in UPSTREAM_FILES}
    cache, val_shard = session.cache_location(repo)  # prepare.py's CACHE_DIR and VAL_SHARD
    facts = {"path": os.path.abspath(repo), "files": files,
             "missing": [name for name, ok in files.items() if not ok],
             "data": probe_data(cache_dir or cache, val_shard)}
    facts["torch"] = probe_torch(repo, timeout) if torch else {
        "checked": False, "reason": "not requested (--no-torch or --no-gpu)"}
    return facts


def is_clone(path: str) -> bool:
    return all(os.path.isfile(os.path.join(path, f)) for f in ("prepare.py", "train.py"))


def gather(repo: str | None, cache_dir: str | None, torch: bool = True,
           torch_timeout: float = DEFAULT_TORCH_TIMEOUT) -> dict:
    repo_facts = probe_repo(repo, cache_dir, torch, torch_timeout) if repo else None
    disk_at = repo_facts["data"]["cache_dir"] if repo_facts else cache_dir or default_cache_dir()
    plat = probe_platform()
    return {
        "platform": plat,
        "nvidia": probe_nvidia(wsl=plat["os"] == "wsl"),
        "amd": probe_amd(),
        "tools": probe_tools(),
        "uv_found": dict(zip(("path", "where"), uvenv.find_uv())),
        "disk": probe_disk(disk_at),
        "repo": repo_facts,
    }


# ---------------------------------------------------------------------------
# Assessment (pure): facts -> report
# ---------------------------------------------------------------------------


def _route(key: str) -> list[dict]:
    return [{"fork": fork, "url": f"https://github.com/{fork}", "for": why}
            for fork, why in FORKS[key]]


def recommend(gpus: list[dict]) -> dict | None:
    sized = [g for g in gpus if g.get("memory_total_mib")]
    if not sized:
        return None
    smallest = min(sized, key=lambda g: g["memory_total_mib"])
    tier = presets.tier_for_mib(smallest["memory_total_mib"])
    if tier is None:
        return None
    return {"tier": tier.name, "for_gpu": smallest["index"],
            "memory_total_mib": smallest["memory_total_mib"],
            "upstream_default": tier.name == presets.DEFAULT_TIER,
            "prepare_py": tier.prepare_values(), "train_py": tier.train_values()}


def _gpu_checks(gpus: list[dict], cuda_version: str | None, blockers: list, warnings: list):
    for gpu in gpus:
        label = f"GPU {gpu['index']} ({gpu['name']})"
        cap = _tuple(gpu.get("compute_capability"))
        mib = gpu.get("memory_total_mib")
        if cap is None:
            warnings.append(f"{label}: compute capability unknown (old driver?); upstream's FA3 "
                            "kernel needs 8.0 or newer: update the NVIDIA driver to check.")
        elif cap < (8, 0):
            blockers.append(
                f"{label} has compute capability {gpu['compute_capability']}: upstream's FA3 "
                "kernel (built for 8.0 and 9.0a) and bf16 training need 8.0 or newer (Ampere+); "
                "use an Ampere-or-newer GPU, or replace fa3.flash_attn_func with "
                "torch.nn.functional.scaled_dot_product_attention in train.py before the "
                "baseline (upstream issue #87).")
        elif cap[0] >= 10:
            warnings.append(
                f"{label} has compute capability {gpu['compute_capability']}: the community FA3 "
                "kernel upstream loads lists builds for 8.0 and 9.0a only; if train.py crashes "
                "in get_kernel or flash_attn_func, replace it with PyTorch SDPA in train.py.")
        if mib is not None and presets.tier_for_mib(mib) is None:
            blockers.append(f"{label} has {mib} MiB: below the smallest preset "
                            f"({presets.TIERS[-1].min_mib} MiB); use a GPU with at least "
                            f"{presets.TIERS[-1].min_mib // 1024} GiB.")
        free = gpu.get("memory_free_mib")
        if mib and free is not None and free < 0.9 * mib:
            warnings.append(f"{label}: only {free} of {mib} MiB free; other processes hold the "
                            "rest (see `nvidia-smi`); stop them or expect OOM crashes.")
    if len({(g["name"], g.get("memory_total_mib")) for g in gpus}) > 1:
        warnings.append("the GPUs differ; upstream trains on one GPU (cuda:0): pin one with "
                        "CUDA_VISIBLE_DEVICES=N; the recommended preset fits the smallest.")
    cuda = _tuple(cuda_version)
    if gpus and cuda is None:
        warnings.append("nvidia-smi shows no CUDA version; upstream's torch wheels need a "
                        "driver with CUDA 12.8.")
    elif cuda is not None and cuda < MIN_CUDA:
        blockers.append(f"the driver supports CUDA {cuda_version} only; upstream's torch 2.9.1 "
                        "wheels are built for CUDA 12.8: update the NVIDIA driver (570 or newer).")
    elif cuda is not None and cuda < WANT_CUDA:
        warnings.append(f"the driver supports CUDA {cuda_version}; upstream's torch wheels are "
                        "built for 12.8: if torch cannot see the GPU, update the NVIDIA driver "
                        "(570 or newer).")


def _repo_checks(repo: dict, data_blocks: bool, gpu_needed: bool, blockers: list, warnings: list):
    path = repo["path"]
    for name in repo["missing"]:
        if name in REQUIRED_FILES:
            blockers.append(f"{path} has no {name}: this is not an autoresearch clone; run "
                            "scripts/setup.sh or pass --repo DIR.")
        elif name == "program.md":
            warnings.append(f"{path} has no program.md: scripts/setup.sh writes one from "
                            "templates/program.md.")
        else:
            warnings.append(f"{path} has no {name}: `uv sync` will resolve dependencies afresh.")
    data = repo["data"]
    missing = []
    if not data["tokenizer"]:
        missing.append("no tokenizer")
    if not data["train_shards"]:
        missing.append("no training shards")
    if not data["val_shard"]:
        missing.append(f"no pinned validation shard {data.get('val_shard_name', VAL_SHARD)}")
    if missing and gpu_needed:
        text = (f"the data cache {data['cache_dir']} is incomplete ({', '.join(missing)}): "
                f"run `uv run prepare.py` in {path}.")
        (blockers if data_blocks else warnings).append(text)
    torch = repo["torch"]
    if not gpu_needed:
        return
    if not torch.get("checked"):
        if ".venv is missing" in torch.get("reason", ""):
            blockers.append(f"the clone's env is not synced ({path}/.venv is missing): run "
                            f"`uv sync` in {path}.")
        elif "timed out" in torch.get("reason", ""):
            warnings.append(f"{torch['reason']}; run `uv run python -c 'import torch; "
                            "print(torch.cuda.is_available())'` by hand.")
        return
    if not torch.get("importable"):
        blockers.append(f"torch does not import in {path}/.venv ({torch.get('error')}): run "
                        f"`uv sync` in {path}.")
    elif not torch.get("cuda_build"):
        blockers.append(f"torch {torch.get('version')} in {path}/.venv is a CPU-only build: run "
                        f"`uv sync` in {path} (upstream pins the cu128 wheel index).")
    elif not torch.get("cuda_available"):
        blockers.append(f"torch {torch.get('version')} (CUDA {torch.get('cuda_build')}) cannot "
                        "see a GPU: check `nvidia-smi` works, the driver supports CUDA "
                        f"{torch.get('cuda_build')}, and CUDA_VISIBLE_DEVICES is not empty.")


def assess(facts: dict, gpu_needed: bool = True, data_blocks: bool = True) -> dict:
    """The report: facts plus blockers, warnings, route_out, recommended and ready."""
    blockers: list[str] = []
    warnings: list[str] = []
    route_out: list[dict] = []
    plat, nv, amd, tools = facts["platform"], facts["nvidia"], facts["amd"], facts["tools"]
    gpus = nv.get("gpus", []) if nv.get("ok") else []
    for gpu in gpus:
        gpu["fa3_kernel"] = fa3_kernel(gpu.get("compute_capability"))

    # Platform and GPU.
    if plat["os"] == "macos":
        route_out += _route("macos")
        if gpu_needed:
            blockers.append("macOS has no CUDA and upstream needs an NVIDIA GPU: use a macOS "
                            "fork (see route_out: miolini/autoresearch-macos or "
                            "trevin-creator/autoresearch-mlx).")
    elif plat["os"] == "windows":
        route_out += _route("windows")
        if gpu_needed:
            blockers.append("native Windows is not supported by upstream: use WSL2 (Ubuntu) or "
                            "the Windows fork jsegov/autoresearch-win-rtx (see route_out).")
    elif plat["os"] == "wsl":
        warnings.append("WSL: keep the clone and ~/.cache/autoresearch on the Linux filesystem, "
                        "not under /mnt/c, or data loading will be slow.")
    if nv["found"] and not nv["ok"] and gpu_needed:
        blockers.append(f"nvidia-smi failed ({nv['error']}): the NVIDIA driver is not working; "
                        "install or reload it (reboot after a driver update) until `nvidia-smi` "
                        "lists the GPU.")
    if amd["found"] and not gpus:
        route_out += _route("amd")
        if gpu_needed:
            names = ", ".join(amd["gpus"]) or "an AMD GPU"
            blockers.append(f"found {names} (rocm-smi) and no NVIDIA GPU: upstream needs CUDA; "
                            "use the ROCm fork andyluo7/autoresearch (see route_out).")
    if gpu_needed and plat["os"] not in ("macos", "windows") and not amd["found"]:
        if not nv["found"]:
            blockers.append("no NVIDIA GPU found (nvidia-smi is not on PATH): upstream needs one; "
                            "install the NVIDIA driver, or run on a machine with a GPU "
                            "(for a CPU-only target pass --no-gpu).")
        elif nv["ok"] and not gpus:
            blockers.append("nvidia-smi lists no GPU: check the GPU is visible to this machine "
                            "or container (e.g. docker --gpus all).")
    if gpu_needed:
        _gpu_checks(gpus, nv.get("cuda_version"), blockers, warnings)

    # Tools and disk.
    if not tools.get("uv"):
        blockers.append("uv is not installed: run scripts/setup.sh, or "
                        "`curl -LsSf https://astral.sh/uv/install.sh | sh`.")
    elif (facts.get("uv_found") or {}).get("where", "PATH") != "PATH":
        warnings.append(f"uv is not on PATH; the scripts use {facts['uv_found']['path']} (found in "
                        f"{facts['uv_found']['where']}); to use it yourself: export PATH="
                        f"\"{os.path.dirname(facts['uv_found']['path'])}:$PATH\".")
    if not tools.get("git"):
        blockers.append("git is not installed: install it (e.g. `sudo apt-get install git`).")
    if not tools.get("python3"):
        warnings.append("python3 is not on PATH: uv provides the Python the clone pins.")
    free = facts["disk"].get("free_gb")
    if free is not None and free < MIN_DISK_GB:
        blockers.append(f"only {free} GB free at {facts['disk']['path']}: free at least "
                        f"{LOW_DISK_GB:g} GB for the data shards and the torch wheels.")
    elif free is not None and free < LOW_DISK_GB:
        warnings.append(f"only {free} GB free at {facts['disk']['path']}: the data shards and "
                        "the torch wheels need several GB.")

    if facts.get("repo"):
        _repo_checks(facts["repo"], data_blocks, gpu_needed, blockers, warnings)

    report = {"schema": SCHEMA, "ready": not blockers, "blockers": blockers,
              "warnings": warnings, "route_out": route_out,
              "recommended": recommend(gpus) if gpu_needed else None,
              "gpu_needed": gpu_needed, "platform": plat,
              "nvidia_smi": {k: nv.get(k) for k in ("found", "ok", "error", "cuda_version")},
              "gpus": gpus, "amd": amd, "tools": tools, "disk": facts["disk"],
              "repo": facts.get("repo")}
    return report


# ---------------------------------------------------------------------------
# Human summary
# ---------------------------------------------------------------------------


def summary(report: dict) -> list[str]:
    plat = report["platform"]
    lines = [f"platform: {plat['os']} {plat['arch'] or '?'}"]
    for gpu in report["gpus"]:
        lines.append(f"GPU {gpu['index']}: {gpu['name']}, {gpu['memory_total_mib']} MiB "
                     f"({gpu['memory_free_mib']} free), compute {gpu['compute_capability']}, "
                     f"driver {gpu['driver_version']}, CUDA "
                     f"{report['nvidia_smi']['cuda_version']}, FA3 kernel {gpu['fa3_kernel']}")
    if report["amd"]["found"]:
        lines.append(f"AMD: {', '.join(report['amd']['gpus']) or 'rocm-smi found'}")
    if not report["gpus"] and not report["amd"]["found"]:
        lines.append("GPU: none found")
    tools = report["tools"]
    lines.append("tools: " + ", ".join(f"{k} {v or 'missing'}" for k, v in tools.items())
                 + f"; disk: {report['disk']['free_gb']} GB free at {report['disk']['path']}")
    repo = report.get("repo")
    if repo:
        data, torch = repo["data"], repo["torch"]
        torch_text = (f"torch {torch.get('version')} cuda={torch.get('cuda_available')}"
                      if torch.get("importable") else
                      f"torch: {torch.get('reason') or torch.get('error')}")
        lines.append(f"repo: {repo['path']} (missing: {', '.join(repo['missing']) or 'none'}; "
                     f"data: tokenizer {'yes' if data['tokenizer'] else 'no'}, "
                     f"{data['train_shards']} train shards, val shard "
                     f"{'yes' if data['val_shard'] else 'no'}; {torch_text})")
    rec = report.get("recommended")
    if rec:
        values = {**rec["prepare_py"], **rec["train_py"]}
        text = " ".join(f"{k}={presets.render_value(k, v)}" for k, v in values.items())
        lines.append(f"recommended preset: {rec['tier']} for GPU {rec['for_gpu']}"
                     f"{' (upstream defaults)' if rec['upstream_default'] else ''}: {text}")
    for route in report["route_out"]:
        lines.append(f"route out: {route['fork']} ({route['for']}) {route['url']}")
    iso = report.get("isolation")
    if iso:
        tracked = [name for name, key in (("pid namespace", "pid_namespace"),
                                          ("cgroup", "cgroup"), ("environment tag",
                                                                 "environment_tag")) if iso[key]]
        lines.append(f"run isolation: processes tracked by {', '.join(tracked) or 'nothing'}; "
                     + ("--sandbox available (bwrap)" if iso["sandbox"]
                        else f"--sandbox not available: {iso['sandbox_why']}"))
    lines += [f"warning: {w}" for w in report["warnings"]]
    lines += [f"BLOCKER: {b}" for b in report["blockers"]]
    lines.append("ready" if report["ready"] else f"not ready: {len(report['blockers'])} blocker(s)")
    return lines


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def parse_args(argv: list[str]) -> dict:
    opts = {"repo": None, "cache_dir": None, "gpu": True, "data": True, "torch": True,
            "torch_timeout": DEFAULT_TORCH_TIMEOUT}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("--repo", "--cache-dir", "--torch-timeout"):
            if not args:
                raise ValueError(f"{arg} needs a value")
            value = args.pop(0)
            if arg == "--torch-timeout":
                try:
                    opts["torch_timeout"] = float(value)
                except ValueError:
                    raise ValueError(f"--torch-timeout needs seconds, not {value!r}") from None
                if opts["torch_timeout"] <= 0:
                    raise ValueError("--torch-timeout must be positive")
            else:
                opts[arg[2:].replace("-", "_")] = value
        elif arg == "--no-gpu":
            opts["gpu"] = False
        elif arg == "--no-data":
            opts["data"] = False
        elif arg == "--no-torch":
            opts["torch"] = False
        else:
            raise ValueError(f"unknown option {arg!r}")
    return opts


def check(repo: str | None = None, cache_dir: str | None = None, gpu: bool = True,
          data: bool = True, torch: bool = True,
          torch_timeout: float = DEFAULT_TORCH_TIMEOUT, find_repo: bool = True) -> dict:
    """Gathers and assesses; the Python entry point setup uses. Without a repo, the current
    directory is checked when it is a clone (unless find_repo is false)."""
    if repo is None and find_repo and is_clone(os.getcwd()):
        repo = os.getcwd()
    facts = gather(repo, cache_dir, torch=torch and gpu, torch_timeout=torch_timeout)
    return dict(assess(facts, gpu_needed=gpu, data_blocks=data), isolation=probe_isolation())


def probe_isolation() -> dict:
    """What run isolation works here: the --sandbox (bwrap) and how a run's processes are
    tracked (arcore.procs: pid namespace, cgroup, environment tag)."""
    from arcore import procs, sandbox  # only here: the rest of the module needs neither
    works, why = sandbox.probe()
    return dict(procs.describe(), sandbox=works, sandbox_why=why)


def main(argv: list[str]) -> int:
    prog = os.environ.get("AR_NAME", "hardware")
    try:
        opts = parse_args(argv)
    except ValueError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    if opts["repo"] is not None and not os.path.isdir(opts["repo"]):
        print(f"{prog}: --repo {opts['repo']}: no such directory", file=sys.stderr)
        return 2
    report = check(opts["repo"], opts["cache_dir"], opts["gpu"], opts["data"], opts["torch"],
                   opts["torch_timeout"])
    print(json.dumps(report, indent=2))
    for line in summary(report):
        print(f"{prog}: {line}", file=sys.stderr)
    return 0 if report["ready"] else 1
