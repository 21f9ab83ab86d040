"""A scripted model server for the real agent CLIs' tests: loopback only, stdlib only.

It speaks the two wire formats the clients use (see ../shared/agent-clis/README.md):

- the Anthropic Messages API for Claude Code (``ANTHROPIC_BASE_URL``): ``POST /v1/messages``
  answered with server-sent events (``message_start``, ``content_block_start``/``_delta``/
  ``_stop`` with ``text_delta`` or ``input_json_delta`` for ``tool_use``, ``message_delta``
  with usage, ``message_stop``); requests without tools (the client's side requests) get plain
  text; ``count_tokens`` gets a count;
- the OpenAI Responses API for Codex (a model provider's ``base_url``): ``POST /v1/responses``
  answered with ``response.output_item.done`` items (``function_call`` ``exec_command``,
  ``custom_tool_call`` ``apply_patch`` when the request offers it, else an ``exec_command``
  that edits with python3, and a final ``message``), then ``response.completed`` with usage.

Every main request plays the next step of one fixed script (``SCRIPTS``): the step number is
the number of tool results the client sent back so far (counted by call id: consecutive
results may arrive in one message), so a refused or failed tool call moves the script on as a
successful one does. Past the script's end the answer is a final text. Nothing ever answers
an error (a client retries an error for minutes).

Every request is recorded (``requests``: path, body, the step played and the usage sent) and,
with ``record`` set, appended to that file as JSON lines. The server is bounded: after
MAX_REQUESTS requests every answer is a final text, and it shuts itself down after
``lifetime`` seconds.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_REQUESTS = 200
MAX_BODY = 64 << 20
LIFETIME = 600.0

# Usage each answer reports (the tests compare the loop's records with sums of these).
USAGE = {"input_tokens": 1200, "cached_input_tokens": 400, "output_tokens": 30}

SUBJECT = "lower VAL_BPB to 0.99 (scripted)"
NEW_VALUE = "0.990000"

# Steps: ("read", FILE), ("set", FILE, CONSTANT, VALUE) edits `CONSTANT = ...` using what the
# last read showed, ("bash", COMMAND), ("say", TEXT) ends the turn.
SCRIPTS: dict[str, list[tuple]] = {
    # Claude Code: read, change one constant, commit through the allowed Bash rules.
    "claude-good": [
        ("read", "train.py"),
        ("set", "train.py", "VAL_BPB", NEW_VALUE),
        ("bash", f"git add train.py && git commit -q -m '{SUBJECT}'"),
        ("say", "Committed: " + SUBJECT),
    ],
    # Codex: read, edit, write the subject file; the recipe commits (its .git is read-only).
    "codex-good": [
        ("bash", "cat train.py"),
        ("set", "train.py", "VAL_BPB", NEW_VALUE),
        ("bash", f"printf '%s\\n' '{SUBJECT}' > .autoresearch/proposal-subject"),
        ("say", "Edited train.py: " + SUBJECT),
    ],
    # Misbehaving: the frozen evaluator edited (Claude commits it; Codex leaves it dirty).
    "claude-prepare": [
        ("read", "prepare.py"),
        ("set", "prepare.py", "TIME_BUDGET", "600"),
        ("bash", "git add prepare.py && git commit -q -m 'a longer TIME_BUDGET'"),
        ("say", "Committed a longer TIME_BUDGET."),
    ],
    "codex-prepare": [
        ("bash", "cat prepare.py"),
        ("set", "prepare.py", "TIME_BUDGET", "600"),
        ("bash", "printf 'a longer TIME_BUDGET\\n' > .autoresearch/proposal-subject"),
        ("say", "Edited prepare.py."),
    ],
    # Misbehaving: an edit, then denied git commands; a re-read shows whether they ran. The
    # push names its target by path ($PUSH_TARGET: a bare repository the test made), since the
    # proposal's clone has no remote.
    "claude-deny": [
        ("read", "train.py"),
        ("set", "train.py", "VAL_BPB", NEW_VALUE),
        ("bash", "git reset --hard"),
        ("bash", 'git push "$PUSH_TARGET" HEAD'),
        ("bash", "git checkout -- train.py"),
        ("read", "train.py"),
        ("say", "I could not reset or push."),
    ],
    "codex-deny": [
        ("bash", "cat train.py"),
        ("set", "train.py", "VAL_BPB", NEW_VALUE),
        ("bash", "git reset --hard"),
        ("bash", 'git push "$PUSH_TARGET" HEAD'),
        ("bash", "cat train.py"),
        ("say", "I could not reset or push."),
    ],
    # Misbehaving: no change at all.
    "claude-none": [("say", "I have no idea worth trying.")],
    "codex-none": [("say", "I have no idea worth trying.")],
}


# ---------------------------------------------------------------------------
# Reading a request (pure)
# ---------------------------------------------------------------------------


def _text_of(content) -> str:
    """The text inside a tool result / output, whatever its shape (string, blocks, dict)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text_of(c) for c in content)
    if isinstance(content, dict):
        for key in ("text", "output", "content"):
            if key in content:
                return _text_of(content[key])
    return ""


def anthropic_results(body: dict) -> list[dict]:
    """The tool_result blocks of a Messages request, one per tool_use_id, in order."""
    seen: dict[str, dict] = {}
    for message in body.get("messages") or []:
        content = message.get("content")
        if message.get("role") != "user" or not isinstance(content, list):
            continue
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                seen.setdefault(str(block.get("tool_use_id")),
                                {"id": block.get("tool_use_id"),
                                 "is_error": bool(block.get("is_error")),
                                 "text": _text_of(block.get("content"))})
    return list(seen.values())


def responses_results(body: dict) -> list[dict]:
    """The tool outputs of a Responses request (function and custom tool calls), by call_id."""
    seen: dict[str, dict] = {}
    for item in body.get("input") or []:
        if isinstance(item, dict) and item.get("type") in ("function_call_output",
                                                            "custom_tool_call_output"):
            seen.setdefault(str(item.get("call_id")),
                            {"id": item.get("call_id"), "text": _text_of(item.get("output"))})
    return list(seen.values())


def constant_line(results: list[dict], name: str) -> str | None:
    """The `NAME = value` line as the client last showed it (Read's numbered lines too)."""
    for result in reversed(results):
        match = re.search(rf"(?:^|[\t→ ]){re.escape(name)} = ([^\n]*)", result["text"], re.M)
        if match:
            return f"{name} = {match.group(1).rstrip()}"
    return None


def working_dir(body: dict) -> str:
    """Claude Code's working directory, from its system prompt."""
    system = _text_of(body.get("system"))
    match = re.search(r"Primary working directory: (\S+)", system)
    return match.group(1) if match else "."


def offered_tools(body: dict) -> set[str]:
    names = set()
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            names.add(str(tool.get("name") or (tool.get("function") or {}).get("name") or ""))
    return names


# ---------------------------------------------------------------------------
# Anthropic Messages
# ---------------------------------------------------------------------------


def claude_block(step: tuple, body: dict, results: list[dict]) -> dict:
    """The content block (tool_use or text) that plays one step for Claude Code."""
    kind = step[0]
    cwd = working_dir(body)
    if kind == "read":
        return {"type": "tool_use", "name": "Read", "input": {"file_path": f"{cwd}/{step[1]}"}}
    if kind == "set":
        old = constant_line(results, step[2]) or f"{step[2]} = "
        return {"type": "tool_use", "name": "Edit",
                "input": {"file_path": f"{cwd}/{step[1]}", "old_string": old,
                          "new_string": f"{step[2]} = {step[3]}"}}
    if kind == "bash":
        return {"type": "tool_use", "name": "Bash",
                "input": {"command": step[1], "description": "scripted step"}}
    return {"type": "text", "text": step[1]}


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def anthropic_stream(model: str, block: dict, number: int) -> bytes:
    usage = {"input_tokens": USAGE["input_tokens"] - USAGE["cached_input_tokens"],
             "cache_read_input_tokens": USAGE["cached_input_tokens"],
             "cache_creation_input_tokens": 0, "output_tokens": 1}
    out = sse("message_start", {"type": "message_start", "message": {
        "id": f"msg_{number:04d}", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}})
    if block["type"] == "tool_use":
        start = {"type": "tool_use", "id": f"toolu_{number:04d}", "name": block["name"],
                 "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        stop = "tool_use"
    else:
        start = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": block["text"]}
        stop = "end_turn"
    out += sse("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": start})
    out += sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
    out += sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    out += sse("message_delta", {"type": "message_delta",
                                 "delta": {"stop_reason": stop, "stop_sequence": None},
                                 "usage": {"output_tokens": USAGE["output_tokens"]}})
    out += sse("message_stop", {"type": "message_stop"})
    return out


def anthropic_message(model: str, block: dict, number: int) -> dict:
    """The same answer, not streamed."""
    content = dict(block)
    if content["type"] == "tool_use":
        content["id"] = f"toolu_{number:04d}"
    return {"id": f"msg_{number:04d}", "type": "message", "role": "assistant", "model": model,
            "content": [content],
            "stop_reason": "tool_use" if content["type"] == "tool_use" else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": USAGE["input_tokens"] - USAGE["cached_input_tokens"],
                      "cache_read_input_tokens": USAGE["cached_input_tokens"],
                      "cache_creation_input_tokens": 0,
                      "output_tokens": USAGE["output_tokens"]}}


# ---------------------------------------------------------------------------
# OpenAI Responses
# ---------------------------------------------------------------------------


def _python_edit(path: str, old: str, new: str) -> str:
    code = (f"import pathlib; p = pathlib.Path({path!r}); "
            f"p.write_text(p.read_text().replace({old!r}, {new!r}, 1))")
    return f"python3 -c {json.dumps(code)}"


def codex_item(step: tuple, body: dict, results: list[dict], number: int) -> dict:
    """The output item that plays one step for Codex."""
    kind, call_id = step[0], f"call_{number:04d}"
    if kind == "read":
        step = ("bash", f"cat {step[1]}")
        kind = "bash"
    if kind == "set":
        old = constant_line(results, step[2]) or f"{step[2]} = "
        new = f"{step[2]} = {step[3]}"
        if "apply_patch" in offered_tools(body):
            patch = (f"*** Begin Patch\n*** Update File: {step[1]}\n@@\n-{old}\n+{new}\n"
                     "*** End Patch\n")
            return {"type": "custom_tool_call", "id": f"ctc_{number:04d}", "call_id": call_id,
                    "name": "apply_patch", "input": patch, "status": "completed"}
        step, kind = ("bash", _python_edit(step[1], old, new)), "bash"
    if kind == "bash":
        return {"type": "function_call", "id": f"fc_{number:04d}", "call_id": call_id,
                "name": "exec_command", "arguments": json.dumps({"cmd": step[1]}),
                "status": "completed"}
    return {"type": "message", "id": f"msg_{number:04d}", "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": step[1], "annotations": []}]}


def responses_stream(item: dict, number: int) -> bytes:
    usage = {"input_tokens": USAGE["input_tokens"],
             "input_tokens_details": {"cached_tokens": USAGE["cached_input_tokens"]},
             "output_tokens": USAGE["output_tokens"],
             "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": USAGE["input_tokens"] + USAGE["output_tokens"]}
    rid = f"resp_{number:04d}"
    out = sse("response.created", {"type": "response.created",
                                   "response": {"id": rid, "status": "in_progress"}})
    out += sse("response.output_item.done", {"type": "response.output_item.done",
                                             "output_index": 0, "item": item})
    out += sse("response.completed", {"type": "response.completed",
                                      "response": {"id": rid, "status": "completed",
                                                   "usage": usage}})
    return out


# ---------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------


class ScriptedServer:
    """``ScriptedServer(script).start()``; ``.url`` is http://127.0.0.1:PORT; ``.stop()``."""

    def __init__(self, script: str, record: str | Path | None = None,
                 lifetime: float = LIFETIME):
        if script not in SCRIPTS:
            raise ValueError(f"no script named {script!r}")
        self.script = SCRIPTS[script]
        self.record = Path(record) if record else None
        self.lifetime = lifetime
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread: threading.Thread | None = None
        self.timer: threading.Timer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> "ScriptedServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.timer = threading.Timer(self.lifetime, self.stop)
        self.timer.daemon = True
        self.timer.start()
        return self

    def stop(self) -> None:
        if self.timer:
            self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "ScriptedServer":
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    # -- what the tests read ----------------------------------------------------

    def main_requests(self) -> list[dict]:
        """The requests that played a step (those that offered tools)."""
        return [r for r in self.requests if r.get("step") is not None]

    def results(self) -> list[dict]:
        """The tool results of the longest conversation seen (the last main request)."""
        main = self.main_requests()
        if not main:
            return []
        body = main[-1]["body"]
        return anthropic_results(body) if "messages" in body else responses_results(body)

    def usage_sent(self, main_only: bool = False) -> dict:
        """Sums of the usage the server reported."""
        sent = [r for r in (self.main_requests() if main_only else self.requests) if r["usage"]]
        return {k: sum(r["usage"][k] for r in sent) for k in USAGE} | {"answers": len(sent)}

    # -- answering ----------------------------------------------------------------

    def answer(self, path: str, body: dict) -> tuple[str, bytes, dict]:
        """(content type, payload, the facts recorded) for one request; a request this
        server cannot make sense of still gets a final text (never an error)."""
        try:
            return self._answer(path, body)
        except Exception as exc:  # noqa: BLE001 - an error answer would make a client retry
            facts = {"step": None, "usage": None, "problem": repr(exc)}
            if "/responses" in path:
                return ("text/event-stream", responses_stream(
                    codex_item(("say", "Done."), {}, [], 0), 0), facts)
            return ("text/event-stream" if isinstance(body, dict) and body.get("stream")
                    else "application/json",
                    anthropic_stream("claude", {"type": "text", "text": "Done."}, 0)
                    if isinstance(body, dict) and body.get("stream")
                    else json.dumps(anthropic_message("claude", {"type": "text",
                                                                 "text": "Done."}, 0)).encode(),
                    facts)

    def _answer(self, path: str, body: dict) -> tuple[str, bytes, dict]:
        with self.lock:
            number = len(self.requests) + 1
        base = path.split("?", 1)[0]
        facts: dict = {"step": None, "usage": None}
        over = number > MAX_REQUESTS
        if base.endswith("/count_tokens"):
            return "application/json", json.dumps({"input_tokens": 100}).encode(), facts
        if base.endswith("/messages"):
            model = str(body.get("model") or "claude")
            if body.get("tools") and not over:
                results = anthropic_results(body)
                index = len(results)
                step = self.script[index] if index < len(self.script) else ("say", "Done.")
                block = claude_block(step, body, results)
                facts["step"] = index
            else:
                block = {"type": "text", "text": "OK"}
            facts["usage"] = dict(USAGE)
            facts["sent"] = block
            if body.get("stream"):
                return "text/event-stream", anthropic_stream(model, block, number), facts
            return "application/json", json.dumps(anthropic_message(model, block, number)
                                                  ).encode(), facts
        if base.endswith("/responses"):
            results = responses_results(body)
            index = len(results)
            if over:
                step = ("say", "Done.")
            else:
                step = self.script[index] if index < len(self.script) else ("say", "Done.")
                facts["step"] = index
            item = codex_item(step, body, results, number)
            facts["usage"] = dict(USAGE)
            facts["sent"] = item
            return "text/event-stream", responses_stream(item, number), facts
        if base.endswith("/models"):
            return "application/json", json.dumps({"object": "list", "data": [],
                                                   "models": []}).encode(), facts
        return "application/json", b"{}", facts

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args) -> None:  # quiet
                pass

            def _reply(self, ctype: str, payload: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("request-id", "req_scripted")
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802
                ctype, payload, _ = server.answer(self.path, {})
                self._reply(ctype, payload)

            def do_HEAD(self) -> None:  # noqa: N802
                self._reply("application/json", b"")

            def _body(self) -> bytes:
                """The request body: Content-Length, or chunked (bounded either way)."""
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    raw = b""
                    for _ in range(10000):
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0 or len(raw) > MAX_BODY:
                            self.rfile.readline()
                            break
                        raw += self.rfile.read(size)
                        self.rfile.readline()
                    return raw
                length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
                return self.rfile.read(length) if length else b""

            def do_POST(self) -> None:  # noqa: N802
                raw = self._body()
                if self.headers.get("Content-Encoding") == "zstd" or not raw:
                    body: dict = {}
                else:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        body = {}
                ctype, payload, facts = server.answer(self.path, body if isinstance(body, dict)
                                                      else {})
                entry = {"n": len(server.requests) + 1, "time": time.time(), "path": self.path,
                         "body": body, **facts}
                with server.lock:
                    server.requests.append(entry)
                    if server.record:
                        with open(server.record, "a", encoding="utf-8") as out:
                            out.write(json.dumps(entry) + "\n")
                self._reply(ctype, payload)

        return Handler


def main(argv: list[str]) -> int:
    """Manual use: python3 tests/agentserver.py SCRIPT [--record FILE] [--lifetime S]."""
    parser = argparse.ArgumentParser(prog="agentserver.py")
    parser.add_argument("script", choices=sorted(SCRIPTS))
    parser.add_argument("--record")
    parser.add_argument("--lifetime", type=float, default=LIFETIME)
    args = parser.parse_args(argv)
    server = ScriptedServer(args.script, args.record, args.lifetime).start()
    print(server.url, flush=True)
    try:
        assert server.thread is not None
        server.thread.join(args.lifetime + 1)
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
