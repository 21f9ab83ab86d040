"""The optional OS sandbox for a run (``--sandbox``): bubblewrap (``bwrap``, Debian package
``bubblewrap``).

Inside it the training command sees the whole filesystem read-only (the repository, its
``.venv``, the data cache, the home folder) except its own run folder (the disposable checkout,
its bytecode cache and a scratch folder, which is ``TMPDIR`` and the uv/torch/triton/XDG
cache location for the run); a fresh ``/dev`` with the GPU devices (``/dev/nvidia*``,
``/dev/dri``) passed through and a fresh ``/dev/shm``; its own ``/proc``; a private pid
namespace that dies with the run (``--unshare-pid --die-with-parent``); no network
(``--unshare-net``: only a loopback device). ``probe()`` says whether it works here and, if
not, why (bwrap missing; user namespaces disabled for this user, e.g.
``kernel.unprivileged_userns_clone=0`` or an AppArmor/seccomp policy of a container).

A sandboxed run needs an environment that is already synced (``setup.sh`` syncs it): there is
no network to install anything.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

PROBE = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid",
         "--unshare-net", "--die-with-parent", "--", "true"]


def probe() -> tuple[bool, str]:
    """(works, why not) for this machine and user."""
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return False, ("bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap; "
                       "Fedora: dnf install bubblewrap)")
    try:
        done = subprocess.run([bwrap, *PROBE], capture_output=True, text=True, timeout=20,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"bwrap could not be started ({exc})"
    if done.returncode == 0:
        return True, ""
    err = " ".join(done.stderr.split())[:200]
    if "uid map" in err or "Operation not permitted" in err or "namespace" in err:
        return False, (f"bwrap cannot create namespaces here ({err}): unprivileged user "
                       "namespaces are disabled (sysctl kernel.unprivileged_userns_clone=1, or "
                       "user.max_user_namespaces > 0), or a container policy forbids them")
    return False, f"bwrap failed ({err or 'exit ' + str(done.returncode)})"


def gpu_devices() -> list[str]:
    return sorted(glob.glob("/dev/nvidia*") + glob.glob("/dev/dri"))


def scratch_env(root: str) -> dict:
    """Where a sandboxed run may write besides its checkout: one scratch folder."""
    scratch = os.path.join(root, "scratch")
    os.makedirs(scratch, exist_ok=True)
    return {"TMPDIR": scratch, "UV_CACHE_DIR": os.path.join(scratch, "uv"),
            "XDG_CACHE_HOME": os.path.join(scratch, "cache"),
            "TORCHINDUCTOR_CACHE_DIR": os.path.join(scratch, "inductor"),
            "TRITON_CACHE_DIR": os.path.join(scratch, "triton"),
            "MPLCONFIGDIR": os.path.join(scratch, "mpl")}


def prefix(root: str, tree: str, writable: tuple[str, ...] = ()) -> list[str]:
    """The bwrap command line the training command is appended to (``writable``: other
    folders the run may write, e.g. the attestation channel's)."""
    argv = [shutil.which("bwrap") or "bwrap", "--ro-bind", "/", "/", "--dev", "/dev",
            "--tmpfs", "/dev/shm"]
    for device in gpu_devices():
        argv += ["--dev-bind", device, device]
    for folder in writable:
        argv += ["--bind", folder, folder]
    argv += ["--proc", "/proc", "--bind", root, root, "--chdir", tree,
             "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
             "--die-with-parent", "--"]
    return argv
