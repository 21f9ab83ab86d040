"""The real agent CLIs (Claude Code, Codex) against a scripted model on loopback.

tests/run.sh installs the npm packages `@anthropic-ai/claude-code` and `@openai/codex`, at the
versions references/proposer-recipes.md names, into tests/.agent-clis/ (ignored by git); without
them (no npm, no network) every test here skips and says why. Each test gets a scratch HOME,
so the machine's own client configuration is never read or written, and its own
tests/agentserver.py server (127.0.0.1, port 0) playing one script.

What is checked: the skill install.sh puts in each client's folders reaches the client's first
request (name and description); the recipes' exact command lines, read from
references/proposer-recipes.md, drive run-loop.sh to one judged experiment; misbehaving
scripts end as the loop's usual rejected proposal; the recipe's permissions really refuse
`git reset --hard` and `git push` (what the client sent back, and that nothing happened); and
the tokens and dollars the client reported reach runs.jsonl and show-results.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from agentserver import NEW_VALUE, SUBJECT, ScriptedServer
from scratchrepo import git, make_repo

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "references" / "proposer-recipes.md"
SCRIPTS = ROOT / "scripts"
CLI_DIR = Path(os.environ.get("AR_AGENT_CLIS") or ROOT / "tests" / ".agent-clis")
BIN = CLI_DIR / "node_modules" / ".bin"
PACKAGES = {"claude": "@anthropic-ai/claude-code", "codex": "@openai/codex"}
HEADINGS = {"claude": "Claude Code (print mode)", "codex": "Codex CLI (`codex exec`)"}
TIMEOUT = 180  # a cap for one client or loop run, never a synchronisation


# ---------------------------------------------------------------------------
# What the recipes say (read from the document, never copied here)
# ---------------------------------------------------------------------------


def recipe_argv(client: str) -> list[str]:
    """The recipe's whole command line (scripts/run-loop.sh ... --propose CMD), as argv."""
    text = RECIPES.read_text(encoding="utf-8")
    section = text.split(f"## {HEADINGS[client]}", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return shlex.split(block.replace("\\\n", " "))


def pinned_version(client: str) -> str:
    """The version references/proposer-recipes.md says was tested (`PACKAGE@VERSION`)."""
    found = re.findall(rf"`{re.escape(PACKAGES[client])}@([0-9][^`\s]*)`",
                       RECIPES.read_text(encoding="utf-8"))
    assert found, f"proposer-recipes.md names no tested version of {PACKAGES[client]}"
    return found[0]


def skill_description() -> str:
    front = (ROOT / "SKILL.md").read_text(encoding="utf-8").split("---", 2)[1]
    match = re.search(r"^description: >-\n((?:  .*\n)+)", front, re.M)
    return " ".join(match.group(1).split())


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


def binary(client: str) -> Path:
    path = BIN / client
    if not path.exists():
        where = CLI_DIR.relative_to(ROOT) if CLI_DIR.is_relative_to(ROOT) else CLI_DIR
        pytest.skip(f"{PACKAGES[client]} is not installed in {where} "
                    "(tests/run.sh installs it with npm; npm or the network is absent here)")
    if client == "codex":
        problem = sandbox_problem(path)
        if problem:
            pytest.skip(f"Codex's sandbox cannot start on this machine ({problem}); the Codex "
                        "recipe needs it")
    return path


_SANDBOX: dict[str, str | None] = {}


def sandbox_problem(codex: Path) -> str | None:
    """Why `codex sandbox -- true` (its bundled bubblewrap) fails here, or None; asked once."""
    if "answer" not in _SANDBOX:
        with tempfile.TemporaryDirectory(dir=_home_root()) as home:
            probe = subprocess.run([str(codex), "sandbox", "--", "true"], cwd=home,
                                   env={**os.environ, "HOME": home}, capture_output=True,
                                   text=True, timeout=60, stdin=subprocess.DEVNULL)
        last = (probe.stderr.strip().splitlines() or ["no message"])[-1][:200]
        _SANDBOX["answer"] = None if probe.returncode == 0 else f"exit {probe.returncode}: {last}"
    return _SANDBOX["answer"]


def _home_root() -> str:
    """Where scratch HOMEs go: never under /tmp. Codex refuses to make its sandbox helper
    (``codex-linux-sandbox``) under a temporary folder, and with a system bubblewrap installed
    (tests/run.sh installs one for --sandbox) its sandbox then cannot start."""
    for root in ("/var/tmp", str(CLI_DIR / "homes")):
        try:
            os.makedirs(root, exist_ok=True)
            if os.access(root, os.W_OK):
                return root
        except OSError:
            continue
    return tempfile.gettempdir()


def scratch_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="autoresearch-home-", dir=_home_root()))
    atexit.register(shutil.rmtree, home, True)
    return home


def client_env(tmp_path: Path, client: str, server: ScriptedServer) -> dict:
    """A scratch HOME holding only what the client needs to reach the scripted server."""
    home = scratch_home()
    (home / ".config").mkdir(parents=True, exist_ok=True)
    drop = ("AUTORESEARCH_", "ANTHROPIC_", "CLAUDE", "CODEX_", "OPENAI_", "XDG_", "FAKE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(HOME=str(home), PATH=f"{BIN}:{os.environ['PATH']}",
               XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
               XDG_DATA_HOME=str(home / ".local" / "share"),
               AUTORESEARCH_CACHE_DIR=str(tmp_path / "cache"),
               AUTORESEARCH_METRIC_SOURCE="printed")  # the stand-in train.py prints its value
    if client == "claude":
        env.update(ANTHROPIC_BASE_URL=server.url, ANTHROPIC_API_KEY="scripted-test-key",
                   DISABLE_AUTOUPDATER="1", DISABLE_TELEMETRY="1",
                   CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1")
    else:
        (home / ".codex").mkdir(parents=True, exist_ok=True)
        (home / ".codex" / "config.toml").write_text(
            'model = "gpt-5.5"\nmodel_provider = "scripted"\n\n'
            '[model_providers.scripted]\nname = "Scripted"\n'
            f'base_url = "{server.url}/v1"\nenv_key = "SCRIPTED_API_KEY"\n'
            'wire_api = "responses"\nrequest_max_retries = 0\nstream_max_retries = 0\n',
            encoding="utf-8")
        env["SCRIPTED_API_KEY"] = "scripted-test-key"
    return env


@pytest.fixture
def serve(tmp_path: Path):
    """serve(script) -> a started ScriptedServer recording to tmp_path; stopped afterwards."""
    started = []

    def start(script: str) -> ScriptedServer:
        server = ScriptedServer(script, record=tmp_path / f"{script}.requests.jsonl",
                                lifetime=TIMEOUT * 2).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def run_loop(client: str, repo: Path, env: dict) -> subprocess.CompletedProcess:
    """The recipe's exact command line, bounded to one proposal and a quick stand-in run."""
    argv = recipe_argv(client)
    assert argv[0] == "scripts/run-loop.sh" and "--propose" in argv
    argv = ["bash", str(SCRIPTS / "run-loop.sh"), *argv[1:],
            "--max", "1", "--cmd", f"{sys.executable} train.py", "--grace", "1"]
    return subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


def statuses(repo: Path) -> list[str]:
    lines = (repo / "results.tsv").read_text().splitlines()[1:]
    return [line.split("\t")[3] for line in lines]


def descriptions(repo: Path) -> list[str]:
    lines = (repo / "results.tsv").read_text().splitlines()[1:]
    return [line.split("\t")[4] for line in lines]


def runs(repo: Path) -> list[dict]:
    path = repo / ".autoresearch" / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def request_text(request: dict) -> str:
    """Everything a request carried, as one whitespace-normalised string."""
    return " ".join(json.dumps(request["body"], ensure_ascii=False).replace("\\n", " ").split())


def reported_usage(repo: Path, client: str) -> dict:
    """What the client itself printed at the end (read from the loop's proposer.log)."""
    lines = (repo / ".autoresearch" / "proposer.log").read_text().splitlines()
    objects = [json.loads(line) for line in lines if line.startswith("{")]
    kind = "result" if client == "claude" else "turn.completed"
    found = [o for o in objects if o.get("type") == kind]
    assert found, f"no {kind} object in proposer.log: the recipe lost the usage output"
    return found[-1]


# ---------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["claude", "codex"])
def test_the_installed_client_is_the_version_the_recipes_name(client, tmp_path):
    exe = binary(client)
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert re.search(rf"(^|\s){re.escape(pinned_version(client))}(\s|$)", out.stdout), (
        f"{client} --version says {out.stdout.strip()!r}; proposer-recipes.md names "
        f"{pinned_version(client)} (tests/run.sh installs the named version)")


# ---------------------------------------------------------------------------
# Discovery: install.sh puts the skill where the real client finds it
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["user", "project"])
@pytest.mark.parametrize("client", ["claude", "codex"])
def test_the_clients_first_request_carries_the_skill_install_sh_installed(client, scope,
                                                                           tmp_path, serve):
    exe = binary(client)
    server = serve(f"{client}-none")
    env = client_env(tmp_path, client, server)
    repo = make_repo(tmp_path)
    where = ["--project", str(repo)] if scope == "project" else []
    install = subprocess.run(["bash", str(SCRIPTS / "install.sh"), "--target", client,
                              "--scope", scope, *where],
                             env=env, capture_output=True, text=True, timeout=60)
    assert install.returncode == 0, install.stderr
    argv = [str(exe), "-p", "Say hello."] if client == "claude" else \
        [str(exe), "exec", "--sandbox", "read-only", "--ephemeral", "Say hello."]
    done = subprocess.run(argv, cwd=repo, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    first = server.main_requests()[0]
    assert f"autoresearch: {skill_description()}" in request_text(first)


def test_without_the_install_the_client_sees_no_such_skill(tmp_path, serve):
    """The discovery test above can fail: a client with nothing installed lists no skill."""
    exe = binary("claude")
    server = serve("claude-none")
    env = client_env(tmp_path, "claude", server)
    repo = make_repo(tmp_path)
    done = subprocess.run([str(exe), "-p", "Say hello."], cwd=repo, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "autoresearch: Run Karpathy-style" not in request_text(server.main_requests()[0])


# ---------------------------------------------------------------------------
# The recipes, end to end through run-loop.sh
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["claude", "codex"])
def test_the_recipe_gives_one_judged_experiment_and_its_cost(client, tmp_path, serve):
    binary(client)
    server = serve(f"{client}-good")
    env = client_env(tmp_path, client, server)
    repo = make_repo(tmp_path)
    done = run_loop(client, repo, env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert statuses(repo) == ["keep", "keep"]
    assert descriptions(repo)[-1] == SUBJECT
    assert git(repo, "log", "-1", "--format=%s") == SUBJECT
    assert git(repo, "show", "HEAD", "--name-only", "--format=") == "train.py"
    assert f"VAL_BPB = {NEW_VALUE}" in (repo / "train.py").read_text()
    assert git(repo, "status", "--porcelain") == ""
    # The client got the loop's rendered prompt and ran in the repository.
    first = server.main_requests()[0]
    assert "Your task: propose one experiment" in request_text(first)
    # What it cost: the client's own report, in the judged run's runs.jsonl object.
    record = runs(repo)[-1]
    assert record["status"] == "keep" and "proposer_usage" in record
    got = record["proposer_usage"]
    sent = server.usage_sent()
    assert got["source"] == client
    assert (got["input_tokens"], got["output_tokens"], got["cached_input_tokens"]) == \
        (sent["input_tokens"], sent["output_tokens"], sent["cached_input_tokens"])
    reported = reported_usage(repo, client)
    if client == "claude":
        assert got["cost_usd"] == pytest.approx(reported["total_cost_usd"], abs=1e-6)
        assert got["cost_usd"] > 0
    else:
        assert got["cost_usd"] is None  # Codex reports tokens only; no price is made up
        assert reported["usage"]["input_tokens"] == got["input_tokens"]
    assert "proposer_usage" not in runs(repo)[0]  # the baseline had no proposal
    # show-results reports it per experiment, per kept gain and for the session.
    shown = subprocess.run(["bash", str(SCRIPTS / "show-results.sh"), "--json"], cwd=repo,
                           env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    cost = json.loads(shown.stdout)["agent_cost"]
    assert cost["session"]["proposals"] == 1
    assert cost["session"]["input_tokens"] == sent["input_tokens"]
    assert cost["session"]["cost_usd"] == got["cost_usd"]
    assert [e["commit"] for e in cost["experiments"]] == [git(repo, "rev-parse", "--short=7",
                                                              "HEAD")]
    assert len(cost["kept_gains"]) == 1 and cost["kept_gains"][0]["proposals"] == 1
    text = subprocess.run(["bash", str(SCRIPTS / "show-results.sh")], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=60).stdout
    assert "agent cost:" in text
    assert ("no dollar figure" in text) == (client == "codex")


@pytest.mark.parametrize("script", ["prepare", "deny", "none"])
@pytest.mark.parametrize("client", ["claude", "codex"])
def test_a_misbehaving_proposal_is_the_loops_usual_rejected_proposal(client, script,
                                                                      tmp_path, serve):
    binary(client)
    server = serve(f"{client}-{script}")
    env = client_env(tmp_path, client, server)
    repo = make_repo(tmp_path)
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    env["PUSH_TARGET"] = str(remote)  # the deny scripts push there (the clone has no remote)
    base = git(repo, "rev-parse", "HEAD")
    prepare = (repo / "prepare.py").read_text()
    done = run_loop(client, repo, env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert statuses(repo) == ["keep", "crash"]
    assert git(repo, "rev-parse", "HEAD") == base
    assert git(repo, "status", "--porcelain") == ""
    assert (repo / "prepare.py").read_text() == prepare
    assert server.main_requests(), "the client never asked the scripted model"
    record = runs(repo)[-1]
    assert record.get("rejected") is True and record["status"] == "crash"
    assert record["proposer_usage"]["source"] == client
    assert record["proposer_usage"]["input_tokens"] == server.usage_sent()["input_tokens"]
    if script == "deny":
        assert_denied(client, server)
        assert git(remote, "for-each-ref") == ""  # nothing was pushed


def assert_denied(client: str, server: ScriptedServer) -> None:
    """The client refused `git reset --hard` and `git push` (Claude: `git checkout` too), and
    they did not run: the re-read after them still shows the uncommitted edit."""
    results = server.results()
    assert len(results) >= 5, f"the script did not get to its denied commands: {results}"
    reset, push, reread = results[2], results[3], results[-1]
    if client == "claude":  # refused by --disallowedTools before anything ran
        assert len(results) == 6, results
        denied = ("git reset --hard", 'git push "$PUSH_TARGET" HEAD', "git checkout -- train.py")
        for refused, command in zip(results[2:5], denied):
            assert refused["is_error"], refused
            assert f"Permission to use Bash with command {command} has been denied" \
                in refused["text"], refused
    else:  # refused by the workspace-write sandbox: .git and /tmp are read-only
        assert re.search(r"exited with code [1-9]", reset["text"]), reset
        assert "Read-only file system" in reset["text"], reset
        assert re.search(r"rejected|failed|Read-only|denied", push["text"]), push
    assert f"VAL_BPB = {NEW_VALUE}" in reread["text"], reread


# ---------------------------------------------------------------------------
# The scripted server itself (no client needed)
# ---------------------------------------------------------------------------


def _post(server: ScriptedServer, path: str, body) -> tuple[int, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as answer:
        return answer.status, answer.read().decode()


def _events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def test_the_server_plays_the_next_step_per_distinct_tool_result_and_never_errors(serve):
    server = serve("claude-good")
    tools = [{"name": "Read"}]
    system = [{"type": "text", "text": "Primary working directory: /w"}]
    status, text = _post(server, "/v1/messages?beta=true",
                         {"stream": True, "tools": tools, "system": system, "messages": []})
    events = _events(text)
    assert status == 200 and [e["type"] for e in events][0] == "message_start"
    assert events[1]["content_block"]["name"] == "Read"
    assert json.loads(events[2]["delta"]["partial_json"]) == {"file_path": "/w/train.py"}
    assert events[-2]["usage"]["output_tokens"] > 0 and events[-1]["type"] == "message_stop"
    shown = {"type": "tool_result", "tool_use_id": "t1", "content": "8\u2192VAL_BPB = 1.5"}
    twice = {"role": "user", "content": [shown, dict(shown)]}  # one result, sent twice
    _, text = _post(server, "/v1/messages", {"stream": True, "tools": tools, "system": system,
                                             "messages": [twice]})
    edit = json.loads(_events(text)[2]["delta"]["partial_json"])
    assert edit["old_string"] == "VAL_BPB = 1.5" and edit["new_string"].endswith("0.990000")
    assert _post(server, "/v1/messages", {"messages": []})[0] == 200  # a side request: text
    assert _post(server, "/anything", b"not json")[0] == 200
    assert [r["step"] for r in server.requests] == [0, 1, None, None]


def test_the_server_speaks_the_responses_api_with_apply_patch_only_when_offered(serve):
    server = serve("codex-good")
    seen = {"type": "function_call_output", "call_id": "c1", "output": "VAL_BPB = 1.0\n"}
    for tools, kind in (([{"type": "function", "name": "exec_command"}], "function_call"),
                        ([{"type": "custom", "name": "apply_patch"}], "custom_tool_call")):
        _, text = _post(server, "/v1/responses", {"stream": True, "tools": tools,
                                                  "input": [seen]})
        events = _events(text)
        assert events[-1]["type"] == "response.completed"
        assert events[-1]["response"]["usage"]["input_tokens"] > 0
        assert events[1]["item"]["type"] == kind
    assert "*** Update File: train.py" in events[1]["item"]["input"]


def test_a_request_the_server_cannot_read_still_gets_a_final_answer(serve):
    server = serve("claude-good")
    status, text = _post(server, "/v1/messages", {"stream": True, "tools": [{"name": "Read"}],
                                                  "messages": "not a list", "system": 5})
    assert status == 200 and _events(text)[-1]["type"] == "message_stop"
    status, text = _post(server, "/v1/responses", {"stream": True, "input": [None, 3]})
    assert status == 200 and _events(text)[-1]["type"] == "response.completed"


@pytest.mark.parametrize("client", ["claude", "codex"])
def test_the_recipe_works_in_whatever_checkout_the_loop_names(client):
    """The proposal happens where AUTORESEARCH_REPO points (a disposable clone, say): the
    command goes there first and names no fixed path of its own."""
    propose = recipe_argv(client)[recipe_argv(client).index("--propose") + 1]
    assert propose.startswith('cd "$AUTORESEARCH_REPO" && ')
    assert not re.search(r"(^|[\s'\"=])/(?!dev/null)", propose), propose
    assert pinned_version(client)
