"""autoresearch_attest: runs train.py so that the score comes from the frozen evaluator.

The harness (run-experiment.sh, ``arcore.experiment``) runs the training command as
``uv run python -m autoresearch_attest train.py [ARGS...]`` with only this file's folder
added to PYTHONPATH. Standard library only, one file: it is the only piece of the skill that
runs inside the candidate's process. What it does, in order:

1. Reads its configuration from the environment and removes it (``AUTORESEARCH_ATTEST_*``),
   reads the per-run HMAC key from the key file the harness wrote and deletes that file, so
   neither train.py's ``os.environ`` nor its subprocesses see the key.
2. Installs a PEP 578 audit hook (it cannot be removed) that records any open, link, copy or
   subprocess naming a validation file, and any ``__code__``/``__defaults__`` replacement of
   an evaluator function.
3. Puts a finder first on ``sys.meta_path``: when train.py imports ``prepare``, the finder
   checks that it is the frozen file (path and sha256 from the harness), executes its source
   itself (never a cached .pyc), and, right after prepare's module code has run and before
   train.py binds any name, wraps ``evaluate_bpb``, guards every prepare function that takes
   a ``split`` argument (``make_dataloader(..., "val")``, ``load_split("val")``), and
   snapshots what the evaluator depends on (prepare's globals, function code, defaults and
   closures, the public contents of its containers, and each attribute of the modules it
   imports that prepare's code names: ``math.fsum``, ``np.log2``,
   ``np.lib.stride_tricks.sliding_window_view``, ``torch.nn.functional...``, builtins).
4. Runs train.py as ``__main__`` (runpy), as ``python train.py`` would.

At each ``evaluate_bpb`` call it re-checks the snapshot (before and after), counts the
validation data the model was given, cross-checks a loss the model reports itself
(``model(x, y, reduction='none')``) against the cross-entropy of the same model's logits
(``model(x)`` on one random row of the batch) at random positions, and writes JSON-lines
records to the harness's file, each with an HMAC-SHA256 under the run's key and a
per-process sequence number::

    {"r": "<canonical JSON of the record>", "mac": "<hex>"}

Records (``kind``): ``start``; ``eval_begin`` (``wall``: seconds since the process started,
``cpu``: process CPU seconds, ``ref``: reference seconds when prepare.py has a reference step);
``eval_end`` (``value``, ``consumed``: batches, rows, tokens; ``crosscheck``); ``eval_error``;
``finding`` (``what``, ``class``: tamper). ``arcore.attest`` on the harness side verifies and
judges them. Without the environment (run by hand) it runs train.py unattested, with one line
on stderr.

Reference seconds (``TIME_BUDGET_CLOCK = "reference"``, examples/cpu-target): when prepare.py
defines ``reference_step()`` (a fixed workload; returns the CPU seconds it took) and
``reference_factor(seconds)`` (reference seconds per CPU second after such a measurement), the
launcher wraps ``reference_step`` like the evaluator, measures once itself when prepare is
imported, and keeps its own account from every measurement (its own or prepare.BudgetClock's):
process CPU time, each stretch at the factor of the measurement before it (the time before the
first at the first's), the measurements' own time not counted. It is the account
``prepare.BudgetClock`` keeps of the training loop, so the judge holds the run to its budget
on the clock the run itself stopped on.
"""

from __future__ import annotations  # the target's Python may be older than the skill's

import os
import sys
import time

_T0 = time.monotonic()
_process_time = time.process_time    # bound now: train.py cannot re-point the judge's clocks
_thread_time = time.thread_time

import _thread  # noqa: E402
import hashlib  # noqa: E402
import math  # noqa: E402
import hmac  # noqa: E402
import importlib.machinery  # noqa: E402
import json  # noqa: E402
import runpy  # noqa: E402

PREFIX = "AUTORESEARCH_ATTEST_"
ENV_RECORDS = PREFIX + "RECORDS"          # the records file (exists, owned by the harness)
ENV_KEY_FILE = PREFIX + "KEY_FILE"        # hex HMAC key; deleted once read
ENV_PREPARE = PREFIX + "PREPARE"          # absolute path of the frozen prepare.py
ENV_PREPARE_SHA = PREFIX + "PREPARE_SHA256"
ENV_VALIDATION = PREFIX + "VALIDATION"    # JSON: {"files": [...], "loaders": [...], "split": "val"}
MODULE = "prepare"
EVALUATOR = "evaluate_bpb"
PROBE = "reference_step"          # the reference clock's fixed workload (TIME_BUDGET_CLOCK)
PROBE_FACTOR = "reference_factor"
CHECK_POSITIONS = 16      # positions sampled per loss cross-check
CHECK_EVERY = 8           # after the first call, each call is checked with chance 1/8
MAX_CHECKS = 6
CHECK_RELATIVE = 0.01     # a reported loss this much below the logits' cross-entropy is tamper
CHECK_ABSOLUTE = 1e-3     # nats per position, on top
_MISSING = object()
_SIMPLE = (int, float, complex, str, bytes, bool, type(None))
_WATCHED = frozenset(("open", "os.link", "os.symlink", "os.rename", "shutil.copyfile",
                      "shutil.copytree", "subprocess.Popen", "os.system", "os.exec",
                      "os.posix_spawn", "os.spawn", "object.__setattr__",
                      "object.__delattr__"))


def _process_age() -> float:
    """Seconds since this process started (Linux /proc), else since the launcher loaded."""
    try:
        with open("/proc/self/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        with open("/proc/uptime", "rb") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


_AGE0 = _process_age()


def _clock() -> dict:
    cpu = _process_time()
    out = {"wall": round(_AGE0 + time.monotonic() - _T0, 4), "cpu": round(cpu, 4),
           "unix": round(time.time(), 4)}
    state = _STATE
    ref = state.reference.seconds(cpu) if state is not None and state.reference else None
    if ref is not None:
        out["ref"] = round(ref, 4)
    return out


class _Reference:
    """Reference seconds from prepare's reference-step measurements (see the module doc)."""

    def __init__(self, factor):
        self.factor_of = factor     # prepare.reference_factor, as it was on import
        self.factor = None          # reference seconds per CPU second, from the latest measurement
        self.total = 0.0            # reference seconds up to `mark`
        self.mark = 0.0             # process CPU seconds where the current stretch began
        self.measurements = 0

    def measured(self, before: float, after: float, seconds) -> None:
        """A measurement ran from CPU time `before` to `after` and reported `seconds`."""
        try:
            factor = float(self.factor_of(seconds))
        except Exception:  # noqa: BLE001 -- a measurement that cannot be read counts 1:1
            factor = 1.0
        if not math.isfinite(factor) or factor <= 0:
            factor = 1.0
        self.total += (before - self.mark) * (factor if self.factor is None else self.factor)
        self.mark, self.factor = after, factor
        self.measurements += 1

    def seconds(self, cpu: float):
        if self.factor is None:
            return None
        return self.total + max(0.0, cpu - self.mark) * self.factor


class _Channel:
    """Appends MAC'd records to the harness's file; seq counts per process (forks too)."""

    def __init__(self, path: str, key: bytes):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
        self.key = key
        self.seq = 0
        self.pid = os.getpid()

    def emit(self, kind: str, **fields) -> None:
        if os.getpid() != self.pid:       # a forked child numbers its own records
            self.pid, self.seq = os.getpid(), 0
        record = dict(fields, kind=kind, seq=self.seq, pid=self.pid)
        self.seq += 1
        body = json.dumps(record, sort_keys=True, separators=(",", ":"), default=repr)
        mac = hmac.new(self.key, body.encode("utf-8"), hashlib.sha256).hexdigest()
        data = (json.dumps({"r": body, "mac": mac}) + "\n").encode("utf-8")
        while data:
            data = data[os.write(self.fd, data):]


class _State:
    def __init__(self, channel: _Channel, prepare_path: str, prepare_sha: str, validation: dict):
        self.channel = channel
        self.prepare_path = os.path.realpath(prepare_path) if prepare_path else ""
        self.prepare_sha = prepare_sha
        self.split = str(validation.get("split") or "val")
        self.loaders = set(validation.get("loaders") or ())
        self.val_files = [os.path.abspath(os.path.expanduser(str(p)))
                          for p in validation.get("files") or ()]
        self.val_names = {os.path.basename(p) for p in self.val_files}
        self.val_ids = set()
        for path in self.val_files:
            try:
                stat = os.stat(path)
                self.val_ids.add((stat.st_dev, stat.st_ino))
            except OSError:
                pass
        self.in_eval = 0
        self.in_model = 0
        self.eval_done = False
        self.busy = set()         # threads inside the audit hook (its own calls are not audited)
        self.protected = {}       # id(function) -> label, for the audit hook
        self.entries = []         # (mapping, key, expected, label)
        self.attrs = []           # (object, attribute, expected, label)
        self.contents = []        # (container, shallow copy, label)
        self.findings = set()
        self.module = None
        self.reference = None     # _Reference, when prepare.py has a reference step

    def finding(self, what: str) -> None:
        if what in self.findings:
            return
        self.findings.add(what)
        phase = "evaluation" if self.in_eval else "after evaluation" if self.eval_done \
            else "training"
        self.channel.emit("finding", what=what, phase=phase, **_clock())
        try:
            print(f"autoresearch_attest: tamper: {what}", file=sys.__stderr__, flush=True)
        except Exception:  # noqa: BLE001 -- the record is written; the line is a courtesy
            pass

    def during_training(self) -> str | None:
        """Why a validation read now is one the candidate made, or None."""
        if self.in_model:
            return "the model read the validation split during evaluation"
        if not self.in_eval and not self.eval_done:
            return "read the validation split during training"
        return None

    # -- validation files ---------------------------------------------------

    def is_val_path(self, path) -> bool:
        if isinstance(path, int) or path is None:
            return False
        try:
            path = os.fsdecode(os.fspath(path))
        except TypeError:
            return False
        if os.path.basename(path) in self.val_names:
            full = os.path.abspath(path)
            if any(full == p for p in self.val_files):
                return True
        if not self.val_ids:
            return False
        try:
            stat = os.stat(path)
        except (OSError, ValueError):
            return False
        return (stat.st_dev, stat.st_ino) in self.val_ids

    def names_val(self, args) -> bool:
        for arg in args if isinstance(args, (list, tuple)) else (args,):
            text = os.fsdecode(arg) if isinstance(arg, (str, bytes)) else ""
            if any(name in text for name in self.val_names) or self.is_val_path(arg):
                return True
        return False


_STATE: "_State | None" = None


def _audit(event, args):
    if event not in _WATCHED:
        return
    state = _STATE
    thread = _thread.get_ident()
    if state is None or thread in state.busy:
        return
    state.busy.add(thread)
    try:
        if event.startswith("object."):
            label = state.protected.get(id(args[0]))
            if label and len(args) > 1 and args[1] in ("__code__", "__defaults__",
                                                        "__kwdefaults__"):
                state.finding(f"{label}.{args[1]} was replaced")
            return
        why = state.during_training()
        if why is None:
            return
        if event == "open":
            hit = state.is_val_path(args[0])
        elif event in ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn",
                       "os.system"):
            hit = any(state.names_val(arg) for arg in args
                      if isinstance(arg, (str, bytes, list, tuple)))
        else:
            hit = state.is_val_path(args[0])
        if hit:
            state.finding(f"{why} ({event} {_short(args[0])})")
    except Exception:  # noqa: BLE001 -- the hook must never break the candidate's own calls
        pass
    finally:
        state.busy.discard(thread)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


# ---------------------------------------------------------------------------
# The snapshot of what the evaluator depends on
# ---------------------------------------------------------------------------


def _code_names(code) -> set:
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _code_names(const)
    return names


def _same(current, expected) -> bool:
    if current is expected:
        return True
    return (type(current) is type(expected) and isinstance(expected, _SIMPLE)
            and current == expected) or (isinstance(expected, tuple)
                                         and type(current) is tuple and current == expected)


def _is_function(value) -> bool:
    return hasattr(value, "__code__") and hasattr(value, "__globals__")


def _watch_function(state: _State, fn, label: str, depth: int = 0) -> None:
    if depth > 3 or id(fn) in state.protected:
        return
    state.protected[id(fn)] = label
    for attr in ("__code__", "__defaults__", "__kwdefaults__"):
        state.attrs.append((fn, attr, getattr(fn, attr, None), f"{label}.{attr}"))
    for index, cell in enumerate(fn.__closure__ or ()):
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        state.attrs.append((cell, "cell_contents", value, f"{label} (closure {index})"))
        if _is_function(value):
            _watch_function(state, value, f"{label}.<closure>", depth + 1)
    wrapped = getattr(fn, "__wrapped__", None)  # e.g. @torch.no_grad()
    if _is_function(wrapped):
        _watch_function(state, wrapped, f"{label}.__wrapped__", depth + 1)


def _snapshot(state: _State, module, names: set) -> None:
    g = vars(module)
    modules = []
    for name, value in g.items():
        if name.startswith("__") and name != "__builtins__":
            continue
        label = f"{MODULE}.{name}"
        state.entries.append((g, name, value, label))
        if _is_function(value):
            _watch_function(state, value, label)
        elif isinstance(value, type) and value.__module__ == module.__name__:
            for key, member in list(vars(value).items()):
                if key in ("__dict__", "__weakref__", "__doc__"):
                    continue
                state.entries.append((vars(value), key, member, f"{label}.{key}"))
                inner = getattr(member, "__func__", member)
                if _is_function(inner):
                    _watch_function(state, inner, f"{label}.{key}")
        elif type(value).__name__ == "module":
            modules.append((value, 0))
        elif isinstance(value, (dict, list, set)) and not name.startswith("_") \
                and len(value) <= 1000:
            state.contents.append((value, value.copy(), label))
    builtins = g.get("__builtins__")
    builtins = builtins if isinstance(builtins, dict) else vars(builtins)
    for name in sorted(names & set(builtins)):
        state.entries.append((builtins, name, builtins[name], f"builtins.{name}"))
    seen = set()
    while modules:
        mod, depth = modules.pop()
        if id(mod) in seen:
            continue
        seen.add(id(mod))
        md = vars(mod)
        full = getattr(mod, "__name__", "?")
        keys = set(md) if full == "math" else names & set(md)
        for name in sorted(keys):
            value = md[name]
            if type(value).__name__ == "module":
                state.entries.append((md, name, value, f"{full}.{name}"))
                if depth < 3:
                    modules.append((value, depth + 1))
            elif callable(value) or isinstance(value, (int, float)):
                state.entries.append((md, name, value, f"{full}.{name}"))


def _changes(state: _State) -> list:
    changed = []
    for mapping, key, expected, label in state.entries:
        if not _same(mapping.get(key, _MISSING), expected):
            changed.append(label)
    for obj, attr, expected, label in state.attrs:
        try:
            current = getattr(obj, attr)
        except (AttributeError, ValueError):
            current = _MISSING
        if not _same(current, expected):
            changed.append(label)
    for container, copy, label in state.contents:
        if container != copy:
            changed.append(f"{label} (contents)")
    return changed


# ---------------------------------------------------------------------------
# Wrappers: the evaluator, the split loaders, the model
# ---------------------------------------------------------------------------


def _split_index(fn):
    code = fn.__code__
    params = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
    return params.index("split") if "split" in params else None


def _guard(state: _State, fn, name: str):
    index = _split_index(fn)
    defaults = fn.__defaults__ or ()
    code = fn.__code__
    npos = code.co_argcount

    def guarded(*args, **kwargs):
        split = _MISSING
        if index is not None and index < len(args):
            split = args[index]
        elif "split" in kwargs:
            split = kwargs["split"]
        elif index is not None and index < npos and index >= npos - len(defaults):
            split = defaults[index - (npos - len(defaults))]
        elif index is None and args:
            split = args[-1]
        if isinstance(split, str) and split == state.split:
            why = state.during_training()
            if why:
                state.finding(f"{why} ({name}(..., {split!r}))")
        return fn(*args, **kwargs)

    guarded.__name__, guarded.__qualname__ = fn.__name__, fn.__qualname__
    guarded.__doc__, guarded.__module__ = fn.__doc__, fn.__module__
    return guarded


def _tolist(value):
    for step in ("detach", "float", "cpu"):
        method = getattr(value, step, None)
        if callable(method):
            value = method()
    return value.tolist() if hasattr(value, "tolist") else list(value)


def _below(n: int) -> int:
    """A uniform pick in range(n) the candidate cannot predict."""
    return int.from_bytes(os.urandom(8), "big") % n


def _cross_entropy(row, target) -> float:
    top = max(row)
    return top + math.log(math.fsum(math.exp(v - top) for v in row)) - row[target]


class _Model:
    """What evaluate_bpb is handed instead of the model: counts the data it is given and
    cross-checks a loss the model computes itself."""

    __slots__ = ("_m", "_s", "_stats")

    def __init__(self, model, state: _State, stats: dict):
        object.__setattr__(self, "_m", model)
        object.__setattr__(self, "_s", state)
        object.__setattr__(self, "_stats", stats)

    def __getattr__(self, name):
        return getattr(object.__getattribute__(self, "_m"), name)

    def __call__(self, *args, **kwargs):
        model, state, stats = self._m, self._s, self._stats
        first = args[0] if args else next(iter(kwargs.values()), None)
        shape = tuple(getattr(first, "shape", ()) or ())
        stats["batches"] += 1
        stats["rows"] += int(shape[0]) if shape else 0
        tokens = 1
        for size in shape:
            tokens *= int(size)
        stats["tokens"] += tokens if shape else 0
        loss_mode = len(args) >= 2 or "targets" in kwargs or "reduction" in kwargs
        check = loss_mode and stats["checks"] < MAX_CHECKS and (
            stats["batches"] == 1 or os.urandom(1)[0] < 256 // CHECK_EVERY)
        logits = None
        if check:
            logits = self._logits(args, kwargs, stats)
        state.in_model += 1
        try:
            out = model(*args, **kwargs)
        finally:
            state.in_model -= 1
        if check and logits is not None:
            self._compare(args, kwargs, out, logits, stats)
        return out

    def _logits(self, args, kwargs, stats):
        """model(x) on one random row of the batch (its logits are small), uncompiled."""
        state = self._s
        plain = getattr(self._m, "_orig_mod", self._m)   # torch.compile: no recompile
        x = args[0] if args else kwargs.get("idx", kwargs.get("x"))
        shape = tuple(getattr(x, "shape", ()) or ())
        row = _below(int(shape[0])) if len(shape) >= 2 and int(shape[0]) > 1 else None
        stats["row"] = row
        state.in_model += 1
        try:
            return plain(x if row is None else x[row:row + 1])
        except Exception as exc:  # noqa: BLE001
            stats["crosscheck"] = {"skipped": f"model(x) raised {type(exc).__name__}: "
                                              f"{_short(str(exc))}"}
            return None
        finally:
            state.in_model -= 1

    def _compare(self, args, kwargs, loss, logits, stats):
        state = self._s
        try:
            shape = tuple(logits.shape)
            y = args[1] if len(args) > 1 else kwargs.get("targets", kwargs.get("y"))
            vocab = int(shape[-1])
            row = stats.get("row")
            flat_y = (y if row is None else y[row:row + 1]).reshape(-1)
            flat_loss = loss.reshape(-1)
            count = int(flat_y.shape[0])
            if int(flat_loss.shape[0]) != int(y.reshape(-1).shape[0]) or len(shape) < 2 \
                    or count == 0:
                stats["crosscheck"] = {"skipped": "the model's loss is not one value per "
                                                  "target (pass reduction='none')"}
                return
            if row is not None:
                flat_loss = flat_loss[row * count:(row + 1) * count]
            picks = sorted({_below(count) for _ in range(CHECK_POSITIONS)})
            rows = _tolist(logits.reshape(-1, vocab)[picks])
            targets = [int(t) for t in _tolist(flat_y[picks])]
            reported = [float(v) for v in _tolist(flat_loss[picks])]
        except Exception as exc:  # noqa: BLE001
            stats["crosscheck"] = {"skipped": f"model(x) did not return logits of shape "
                                              f"(..., vocab) ({type(exc).__name__})"}
            return
        got = want = 0.0
        for row, target, value in zip(rows, targets, reported):
            if target < 0:
                continue
            got += value
            want += _cross_entropy(row, target)
            stats["positions"] += 1
        stats["checks"] += 1
        stats["reported"] += got
        stats["reference"] += want
        stats["crosscheck"] = {"checks": stats["checks"], "positions": stats["positions"],
                               "reported": round(stats["reported"], 6),
                               "reference": round(stats["reference"], 6)}
        if got < want * (1 - CHECK_RELATIVE) - CHECK_ABSOLUTE * len(rows):
            state.finding(f"the model under-reports its loss: {got:.4f} nats where its own "
                          f"logits give {want:.4f} over {len(rows)} positions")


def _wrap_probe(state: _State, probe):
    """prepare.reference_step, each measurement also entered in the launcher's account."""

    def reference_step(*args, **kwargs):
        before = _process_time()
        value = probe(*args, **kwargs)
        account = state.reference
        if account is not None:
            account.measured(before, _process_time(), value)
        return value

    reference_step.__doc__ = probe.__doc__
    reference_step.__module__ = probe.__module__
    return reference_step


def _wrap_evaluator(state: _State, evaluate):
    code = evaluate.__code__
    params = code.co_varnames[:code.co_argcount]

    def evaluate_bpb(*args, **kwargs):
        state.channel.emit("eval_begin", **_clock())
        stats = {"batches": 0, "rows": 0, "tokens": 0, "checks": 0, "positions": 0,
                 "reported": 0.0, "reference": 0.0, "crosscheck": None}
        for label in _changes(state):
            state.finding(f"{label} changed before evaluation")
        args = list(args)
        if args:
            args[0] = _Model(args[0], state, stats)
        elif "model" in kwargs:
            kwargs["model"] = _Model(kwargs["model"], state, stats)
        tokenizer = args[1] if len(args) > 1 and "tokenizer" in params[1:2] \
            else kwargs.get("tokenizer")
        cls = vars(state.module).get("Tokenizer")
        if tokenizer is not None and isinstance(cls, type) and type(tokenizer) is not cls:
            state.finding(f"evaluate_bpb was given a {type(tokenizer).__name__}, "
                          "not prepare's Tokenizer")
        state.in_eval += 1
        try:
            value = evaluate(*args, **kwargs)
        except BaseException as exc:
            state.in_eval -= 1
            state.eval_done = True
            state.channel.emit("eval_error", error=f"{type(exc).__name__}: {_short(str(exc))}",
                               **_clock())
            raise
        state.in_eval -= 1
        state.eval_done = True
        for label in _changes(state):
            state.finding(f"{label} changed during evaluation")
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
        consumed = {k: stats[k] for k in ("batches", "rows", "tokens")}
        state.channel.emit("eval_end", value=number if number is None else repr(number),
                           consumed=consumed, crosscheck=stats["crosscheck"], **_clock())
        return value

    evaluate_bpb.__doc__ = evaluate.__doc__
    evaluate_bpb.__module__ = evaluate.__module__
    return evaluate_bpb


# ---------------------------------------------------------------------------
# The import of prepare
# ---------------------------------------------------------------------------


def _instrument(state: _State, module, code) -> None:
    g = vars(module)
    state.module = module
    evaluate = g.get(EVALUATOR)
    if not _is_function(evaluate):
        print(f"autoresearch_attest: {MODULE} has no {EVALUATOR} function: unattested",
              file=sys.stderr, flush=True)
        return
    for name, value in list(g.items()):
        if name == EVALUATOR or not _is_function(value) or value.__module__ != module.__name__:
            continue
        if _split_index(value) is not None or name in state.loaders:
            g[name] = _guard(state, value, name)
    g[EVALUATOR] = _wrap_evaluator(state, evaluate)
    probe, factor = g.get(PROBE), g.get(PROBE_FACTOR)
    if _is_function(probe) and _is_function(factor):
        state.reference = _Reference(factor)
        g[PROBE] = _wrap_probe(state, probe)
    _snapshot(state, module, _code_names(code))
    state.protected[id(evaluate)] = EVALUATOR
    if state.reference is not None:
        try:
            g[PROBE]()        # the launcher's own measurement, before train.py's next line
        except Exception as exc:  # noqa: BLE001 -- no account then: the judge uses CPU time
            state.reference = None
            print(f"autoresearch_attest: {PROBE}() raised {type(exc).__name__}: "
                  "reference seconds not kept", file=sys.stderr, flush=True)


class _Loader(importlib.machinery.SourceFileLoader):
    """Executes the frozen prepare.py from its source (never a .pyc), then instruments it."""

    def exec_module(self, module):
        state = _STATE
        with open(self.path, "rb") as handle:
            source = handle.read()
        digest = hashlib.sha256(source).hexdigest()
        if state.prepare_sha and digest != state.prepare_sha:
            state.finding(f"prepare.py is not the frozen file (sha256 {digest[:12]})")
        code = compile(source, self.path, "exec", dont_inherit=True)
        exec(code, vars(module))  # noqa: S102 -- prepare's own code, verified above
        _instrument(state, module, code)


class _Finder:
    """First on sys.meta_path: the import of ``prepare`` goes through _Loader."""

    def find_spec(self, fullname, path=None, target=None):
        state = _STATE
        if fullname != MODULE or state is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            state.finding(f"{MODULE} was imported from {spec.origin if spec else 'nowhere'}, "
                          "not the frozen prepare.py")
            return spec
        if state.prepare_path and os.path.realpath(spec.origin) != state.prepare_path:
            state.finding(f"{MODULE} was imported from {spec.origin}, not the frozen "
                          f"{state.prepare_path}")
        spec.loader = _Loader(fullname, spec.origin)
        return spec


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def _configure():
    """The run's state from the environment (removed from it), or None when unconfigured."""
    config = {name: os.environ.pop(name, "") for name in
              (ENV_RECORDS, ENV_KEY_FILE, ENV_PREPARE, ENV_PREPARE_SHA, ENV_VALIDATION)}
    if not config[ENV_RECORDS] or not config[ENV_KEY_FILE]:
        return None
    try:
        with open(config[ENV_KEY_FILE], "rb") as handle:
            key = bytes.fromhex(handle.read().decode("ascii").strip())
    finally:
        try:
            os.unlink(config[ENV_KEY_FILE])
        except OSError:
            pass
    try:
        validation = json.loads(config[ENV_VALIDATION] or "{}")
    except ValueError:
        validation = {}
    channel = _Channel(config[ENV_RECORDS], key)
    return _State(channel, config[ENV_PREPARE], config[ENV_PREPARE_SHA],
                  validation if isinstance(validation, dict) else {})


def main(argv: list) -> int:
    global _STATE
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m autoresearch_attest SCRIPT.py [ARGS...]", file=sys.stderr)
        return 2
    script = argv[0]
    state = _configure()
    if state is None:
        print("autoresearch_attest: no attestation configured: running unattested",
              file=sys.stderr, flush=True)
    else:
        _STATE = state
        sys.addaudithook(_audit)
        sys.meta_path.insert(0, _Finder())
        state.channel.emit("start", script=script, prepare=state.prepare_path,
                           prepare_sha256=state.prepare_sha, python=sys.version.split()[0],
                           **_clock())
    sys.argv = [script, *argv[1:]]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
