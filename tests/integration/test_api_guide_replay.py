"""The user guide (`docs/api.md`), replayed top to bottom against the real API.

The guide promises that its commands, pasted in order into a shell next to a
fresh `dunning serve`, give the answers it prints. This test keeps it to that
promise: it starts what `serve` starts (moto, the emulated stack, the seeded
configuration, the webhook receiver, the local routes, the pinned clock) and
sends every command of every fenced `bash` block, in document order, to the
same WSGI application, called directly (no port for the API).

What a command turns into:

- `curl`: method (`-X`, or POST when it sends data), URL path and query,
  headers (`-H`: `Authorization: Bearer local:<role>[:<user>]`, `If-Match`,
  `Idempotency-Key`, ...) and body (`-d`/`--data...` and `-d @-` from a
  here-document, newlines stripped as curl does for `-d @`). Without a
  `Content-Type`, data goes as curl sends it, a form.
- `dunning evaluate --as-of T` and `dunning deliver`: the local routes they
  post to (`POST /local/schedule`, `POST /local/deliver`; see `local/cli.py`).
- `echo` (between outputs) does nothing; `dunning serve` and the blocks of
  `SKIPPED_BLOCKS` are skipped, each for the reason given there. Any other
  command fails the test: a new kind of example needs a decision here.

What is compared, with the next fenced block when it is a response (`http`
or `json`; a `text` block is a shell's output and is not compared):

- an `http` block's status line: the status code must be the same, and each
  header it shows (`ETag`, `Content-Disposition`, `Content-Type`) must be
  there with the same value;
- a JSON body, read as JSON in which `…` stands for what the guide cut: as a
  value it matches anything; as an object member (`"k": 1, …`) it allows
  members the guide does not show; as a list item (`… 7 day(s) with nothing
  to do,`) it matches any number of items; at the end of a string
  (`"Ihr Konto …"`) the string must start with what precedes it. Everything
  else must be equal: every member shown (ids, timestamps and ETags the
  server derives from the pinned clock included), no member left out
  without a `…`, and lists item by item. The one value the server cannot
  reproduce, a provider's message id (`provider_id`), only has to have the
  same shape;
- any other body (CSV) line by line, exactly.

A block with several commands has one response per command, in order.
A mismatch fails with the section heading, the command and the difference;
all mismatches of a run are reported, not only the first.
"""

from __future__ import annotations

import io
import json
import re
import shlex
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest

from dunning import aws, clock
from local.apigw import wsgi_app
from local.cloud import LOCAL_ENV, LocalCloud
from local.receiver import WebhookReceiver
from local.server import LocalServer
from tests.integration.curl_examples import DATA_OPTIONS, FENCE, GUIDE, HEREDOC, SEPARATORS

SHELL = {"bash", "sh", "shell", "console"}
RESPONSES = {"http", "json"}
# Blocks that are not replayed, by a pattern of their text, and why.
SKIPPED_BLOCKS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"^\s*while\b", re.MULTILINE),
        "a shell loop that follows the cursors of a list with python3; its output is text",
    ),
    (
        re.compile(r"\|\s*\n\s*curl\b"),
        "the body is a shell pipeline's output (printf, head, tr): not a literal body",
    ),
]
# Commands that are not API calls, and why they are skipped.
SKIPPED_COMMANDS: dict[tuple[str, ...], str] = {
    ("dunning", "serve"): "starts the server; this test runs the same app in-process",
}
# Values the server cannot reproduce run after run, by route (a pattern of the
# request's path) and member name: only their shape is compared.
VOLATILE: list[tuple[re.Pattern[str], str, re.Pattern[str]]] = [
    # A channel provider's message id (SNS, SES): moto makes a new one each run.
    (re.compile(".*"), "provider_id", re.compile(r"^[0-9a-z]+(?:-[0-9a-z]+){3,}$")),
    # The audit's cursor holds the ordering stamp of its entry, from the wall clock.
    (re.compile("^/v1/config-audit$"), "next_cursor", re.compile(r"^[A-Za-z0-9+/=_-]{20,}$")),
]
ELLIPSIS = "…"


# ------------------------------------------------------------------ the guide


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    shown: str  # the command as the guide writes it (one line)


@dataclass
class Expected:
    kind: str  # "http" or "json"
    text: str


@dataclass
class Step:
    heading: str
    line: int
    requests: list[Request] = field(default_factory=list)
    expected: Expected | None = None
    skipped: list[str] = field(default_factory=list)  # reasons


def _headings(markdown: str, fences: list[tuple[int, int]]) -> list[tuple[int, str]]:
    found = []
    for m in re.finditer(r"^#{1,6} +(.+)$", markdown, re.MULTILINE):
        if not any(a <= m.start() < b for a, b in fences):
            found.append((m.start(), m.group(1).strip()))
    return found


def _logical_lines(script: str) -> list[tuple[str, str | None]]:
    """The script's command lines (continuations and multi-line quotes joined),
    each with the here-document it reads, if any."""
    lines = script.splitlines()
    out: list[tuple[str, str | None]] = []
    current = ""
    n = 0
    while n < len(lines):
        line = lines[n]
        n += 1
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        try:
            shlex.split(current)
        except ValueError:  # a quote still open: the next line belongs to it
            current += "\n"
            continue
        stdin = None
        here = HEREDOC.search(current)
        if here:
            body = []
            while n < len(lines) and lines[n].strip() != here.group(2):
                body.append(lines[n])
                n += 1
            n += 1
            stdin = "\n".join(body) + "\n"
        out.append((current, stdin))
        current = ""
    return out


def _unroll(lines: list[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    """`for v in a b; do ...; done` loops, written out once per value."""
    out: list[tuple[str, str | None]] = []
    n = 0
    while n < len(lines):
        loop = re.fullmatch(r"\s*for (\w+) in ([^;]*); do\s*", lines[n][0])
        if loop is None:
            out.append(lines[n])
            n += 1
            continue
        end = next(k for k in range(n + 1, len(lines)) if lines[k][0].strip() == "done")
        name, body = loop.group(1), lines[n + 1 : end]
        var = re.compile(r"\$(?:\{" + name + r"\}|" + name + r"\b)")
        for value in loop.group(2).split():
            out.extend(
                (var.sub(value, text), None if stdin is None else var.sub(value, stdin))
                for text, stdin in body
            )
        n = end + 1
    return out


def _words(line: str) -> list[list[str]]:
    """The simple commands of a command line, split at the shell's separators."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    redirect = False
    for word in lexer:
        if redirect:  # a here-document's delimiter, a redirection's file
            redirect = False
        elif word in ("<", "<<", "<<-", ">", ">>"):
            redirect = True
        elif word in SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


def curl_request(args: list[str], stdin: str | None, shown: str) -> Request:
    """The request of one curl command's arguments."""
    method: str | None = None
    url: str | None = None
    headers: dict[str, str] = {}
    data: list[bytes] = []
    n = 0
    while n < len(args):
        arg = args[n]
        nxt = args[n + 1] if n + 1 < len(args) else ""
        if arg in ("-X", "--request"):
            method, n = nxt, n + 1
        elif arg in ("-H", "--header"):
            name, _, value = nxt.partition(":")
            headers[name.strip()] = value.strip()
            n += 1
        elif arg in DATA_OPTIONS:
            if nxt == "@-":
                assert stdin is not None, f"{shown}: -d @- without a here-document"
                # curl strips carriage returns and newlines from `-d @file`.
                raw = stdin if arg == "--data-binary" else stdin.replace("\r", "").replace("\n", "")
                data.append(raw.encode())
            else:
                data.append(nxt.encode())
            n += 1
        elif arg.startswith("-") and not arg.startswith("--") and "X" in arg:
            rest = arg[arg.index("X") + 1 :]  # -sX POST, -XPOST
            if rest:
                method = rest
            else:
                method, n = nxt, n + 1
        elif arg.startswith("-"):
            assert arg in ("-s", "-i", "-si", "-is", "-S", "-sS"), f"{shown}: unknown option {arg}"
        else:
            assert url is None, f"{shown}: two URLs"
            url = arg
        n += 1
    assert url is not None, f"{shown}: no URL"
    body = b"&".join(data)
    if data and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/x-www-form-urlencoded"  # as curl sends -d
    parts = urlsplit(url)
    return Request(
        (method or ("POST" if data else "GET")).upper(),
        parts.path,
        parts.query,
        headers,
        body,
        shown,
    )


def _local_route(path: str, body: dict[str, str], shown: str) -> Request:
    return Request(
        "POST",
        path,
        "",
        {"Content-Type": "application/json"},
        json.dumps(body).encode(),
        shown,
    )


def _step_commands(step: Step, script: str) -> None:
    for pattern, reason in SKIPPED_BLOCKS:
        if pattern.search(script):
            step.skipped.append(reason)
            return
    for line, stdin in _unroll(_logical_lines(script)):
        shown = " ".join(line.split())
        for words in _words(line):
            program = words[0].rsplit("/", 1)[-1]
            args = words[1:]
            if program == "echo":
                continue  # a newline between two outputs
            if program == "curl":
                step.requests.append(curl_request(args, stdin, shown))
            elif program == "dunning" and args[:1] == ["evaluate"]:
                at = args[args.index("--as-of") + 1]
                step.requests.append(_local_route("/local/schedule", {"at": at}, shown))
            elif program == "dunning" and args[:1] == ["deliver"]:
                step.requests.append(_local_route("/local/deliver", {}, shown))
            elif (program, *args[:1]) in SKIPPED_COMMANDS:
                step.skipped.append(SKIPPED_COMMANDS[(program, *args[:1])])
            else:
                raise AssertionError(f"the guide has a command this test cannot run: {shown}")


def guide_steps(markdown: str) -> list[Step]:
    """Every shell block of the guide, with its commands and the response
    block that follows it (if the next fenced block is one)."""
    blocks = list(FENCE.finditer(markdown))
    headings = _headings(markdown, [(b.start(), b.end()) for b in blocks])
    steps: list[Step] = []
    for n, block in enumerate(blocks):
        lang = block.group(2).strip().lower()
        if lang not in SHELL:
            continue
        heading = next((h for at, h in reversed(headings) if at < block.start()), "(top)")
        step = Step(heading, markdown.count("\n", 0, block.start()) + 1)
        _step_commands(step, block.group(3))
        if n + 1 < len(blocks):
            following = blocks[n + 1]
            kind = following.group(2).strip().lower()
            if kind in RESPONSES:
                step.expected = Expected(kind, following.group(3))
        steps.append(step)
    return steps


# ------------------------------------------------ JSON with `…` in it, matched


class Anything:
    """`…` as a value: anything."""

    def __repr__(self) -> str:
        return ELLIPSIS


ANYTHING = Anything()


@dataclass(frozen=True)
class Gap:
    """`…` as a list item: any number of items."""

    note: str


@dataclass(frozen=True)
class Prefix:
    """A string the guide cut: the actual one starts with it."""

    text: str


@dataclass
class Obj:
    members: dict[str, Any]
    open: bool  # a `…` member: the server may have members the guide does not show


_DECODER = json.JSONDecoder()
_LITERAL = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null")


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def _space(self) -> None:
        while self.at < len(self.text) and self.text[self.at] in " \t\r\n":
            self.at += 1

    def _peek(self) -> str:
        self._space()
        return self.text[self.at] if self.at < len(self.text) else ""

    def _expect(self, char: str) -> None:
        if self._peek() != char:
            raise ValueError(
                f"expected {char!r} at {self.at}: {self.text[self.at : self.at + 40]!r}"
            )
        self.at += 1

    def _gap_note(self) -> str:
        """`…` and the words after it, up to the next `,`, `]` or `}`."""
        self.at += 1
        end = self.at
        while end < len(self.text) and self.text[end] not in ",]}\n":
            end += 1
        note, self.at = self.text[self.at : end].strip(), end
        return note

    def value(self) -> Any:
        char = self._peek()
        if char == "{":
            self.at += 1
            obj = Obj({}, open=False)
            while self._peek() != "}":
                if self._peek() == ELLIPSIS:
                    self._gap_note()
                    obj.open = True
                else:
                    key, self.at = _DECODER.raw_decode(self.text, self.at)
                    assert isinstance(key, str), f"a member name at {self.at}"
                    self._expect(":")
                    obj.members[key] = self.value()
                if self._peek() == ",":
                    self.at += 1
            self.at += 1
            return obj
        if char == "[":
            self.at += 1
            items: list[Any] = []
            while self._peek() != "]":
                items.append(Gap(self._gap_note()) if self._peek() == ELLIPSIS else self.value())
                if self._peek() == ",":
                    self.at += 1
            self.at += 1
            return items
        if char == '"':
            text, self.at = _DECODER.raw_decode(self.text, self.at)
            return Prefix(text[:-1]) if text.endswith(ELLIPSIS) else text
        if char == ELLIPSIS:
            self._gap_note()
            return ANYTHING
        found = _LITERAL.match(self.text, self.at)
        if found is None:
            raise ValueError(f"not JSON at {self.at}: {self.text[self.at : self.at + 40]!r}")
        self.at = found.end()
        return json.loads(found.group(0))

    def values(self) -> list[Any]:
        out = []
        while self._peek():
            out.append(self.value())
        return out


def parse_shown(text: str) -> list[Any]:
    """The JSON values of a response block, `…` read as above."""
    return _Reader(text).values()


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 300 else text[:300] + ELLIPSIS


def _fits(pattern: Any, actual: Any, volatile: dict[str, re.Pattern[str]]) -> bool:
    return not differences(pattern, actual, "$", None, volatile)


def _list_fits(
    patterns: list[Any], actual: list[Any], volatile: dict[str, re.Pattern[str]]
) -> bool:
    if not patterns:
        return not actual
    head, rest = patterns[0], patterns[1:]
    if isinstance(head, Gap):
        return any(_list_fits(rest, actual[n:], volatile) for n in range(len(actual) + 1))
    return (
        bool(actual) and _fits(head, actual[0], volatile) and _list_fits(rest, actual[1:], volatile)
    )


def differences(
    pattern: Any,
    actual: Any,
    where: str = "$",
    key: str | None = None,
    volatile: dict[str, re.Pattern[str]] | None = None,
) -> list[str]:
    """How `actual` differs from what the guide shows (empty: it matches).
    `volatile`: the members compared by shape only (name -> pattern)."""
    volatile = volatile or {}
    if pattern is ANYTHING:
        return []
    if key is not None and key in volatile and isinstance(pattern, str):
        if isinstance(actual, str) and volatile[key].match(actual):
            return []
        return [f"{where}: the server has {_short(actual)}, not a {key}"]
    if isinstance(pattern, Prefix):
        if isinstance(actual, str) and actual.startswith(pattern.text):
            return []
        return [f"{where}: the guide shows {pattern.text!r}…, the server has {_short(actual)}"]
    if isinstance(pattern, Obj):
        if not isinstance(actual, dict):
            return [f"{where}: the guide shows an object, the server has {_short(actual)}"]
        found: list[str] = []
        for name, shown in pattern.members.items():
            if name not in actual:
                found.append(f"{where}.{name}: in the guide, not in the server's answer")
            else:
                found.extend(differences(shown, actual[name], f"{where}.{name}", name, volatile))
        extra = sorted(set(actual) - set(pattern.members))
        if extra and not pattern.open:
            found.append(
                f"{where}: the server also has {', '.join(extra)} (not in the guide, and no …): "
                + _short({k: actual[k] for k in extra})
            )
        return found
    if isinstance(pattern, list):
        if not isinstance(actual, list):
            return [f"{where}: the guide shows a list, the server has {_short(actual)}"]
        if not any(isinstance(p, Gap) for p in pattern):
            if len(pattern) != len(actual):
                return [
                    f"{where}: the guide shows {len(pattern)} item(s), the server has "
                    f"{len(actual)}: {_short(actual)}"
                ]
            return [
                d
                for n, (p, a) in enumerate(zip(pattern, actual, strict=True))
                for d in differences(p, a, f"{where}[{n}]", None, volatile)
            ]
        if _list_fits(pattern, actual, volatile):
            return []
        for shown in (p for p in pattern if not isinstance(p, Gap)):
            if not any(_fits(shown, a, volatile) for a in actual):
                # the closest item the server has, and how it differs
                diffs = min(
                    (
                        differences(shown, a, f"{where}[{n}]", None, volatile)
                        for n, a in enumerate(actual)
                    ),
                    key=len,
                    default=[f"{where}: the list is empty"],
                )
                return [f"{where}: no item is the guide's {_short(shown)}; the closest:", *diffs]
        return [f"{where}: the items are there, but not in the order or number shown (… gaps)"]
    if pattern != actual or type(pattern) is not type(actual):
        return [f"{where}: the guide shows {_short(pattern)}, the server has {_short(actual)}"]
    return []


# ------------------------------------------------------------------ the server


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str


App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def send(app: App, request: Request) -> Answer:
    """One request through the WSGI app, as a WSGI server would pass it."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "PATH_INFO": request.path,
        "QUERY_STRING": request.query,
        "CONTENT_LENGTH": str(len(request.body)),
        "wsgi.input": io.BytesIO(request.body),
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.0",
        "wsgi.url_scheme": "http",
    }
    for name, value in request.headers.items():
        if name.lower() == "content-type":
            environ["CONTENT_TYPE"] = value
        else:
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        started["status"], started["headers"] = status, headers

    payload = b"".join(app(environ, start_response))
    return Answer(
        int(started["status"].split()[0]),
        {k.lower(): v for k, v in started["headers"]},
        payload.decode(),
    )


@pytest.fixture
def guide_app(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """What `dunning serve` runs (`local.server.serve`), without its HTTP server:
    the API is called as a WSGI app. The webhook receiver still listens on a
    free loopback port, as in `serve`: the webhook channel function posts to it
    and it checks the signatures (`verified` in `/local/delivered`)."""
    for key, value in LOCAL_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    aws.reset_clients()
    with WebhookReceiver(clock=clock.now) as receiver:
        stack = LocalCloud(webhook_base=receiver.url("")).create()
        for endpoint, secret in stack.secrets.items():
            receiver.secrets[f"/{endpoint}"] = [secret]
        server = LocalServer(stack, receiver, state=None)
        server.seed_configuration()
        clock.use(lambda: server.now or datetime.now(UTC))
        try:
            yield wsgi_app(stack.functions["api"], server.local_routes)
        finally:
            clock.use(None)


# ------------------------------------------------------------------ comparing


def volatile_members(path: str) -> dict[str, re.Pattern[str]]:
    """The members of the answer to a request for `path` compared by shape only."""
    return {key: shape for route, key, shape in VOLATILE if route.match(path)}


def _compare_http(expected: str, answer: Answer, volatile: dict[str, re.Pattern[str]]) -> list[str]:
    head, _, body = expected.partition("\n\n")
    lines = head.splitlines()
    status = re.match(r"HTTP/\S+ (\d{3})", lines[0])
    assert status is not None, f"not a status line: {lines[0]!r}"
    if int(status.group(1)) != answer.status:  # the bodies of two statuses differ anyway
        return [
            f"status: the guide shows {status.group(1)}, the server answered {answer.status}: "
            + answer.text[:300]
        ]
    found = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        actual = answer.headers.get(name.strip().lower())
        if actual != value.strip():
            found.append(
                f"header {name.strip()}: the guide shows {value.strip()!r}, got {actual!r}"
            )
    if body.strip():
        found.extend(_compare_body(body, answer, volatile))
    return found


def _compare_body(shown: str, answer: Answer, volatile: dict[str, re.Pattern[str]]) -> list[str]:
    if shown.lstrip()[:1] in ("{", "["):
        try:
            actual = json.loads(answer.text)
        except ValueError:
            return [f"body: the guide shows JSON, the server answered {answer.text[:300]!r}"]
        (pattern,) = parse_shown(shown)
        return differences(pattern, actual, "$", None, volatile)
    want, got = shown.strip().splitlines(), answer.text.strip().splitlines()
    found = [
        f"body line {n + 1}: the guide shows {w!r}, the server has {g!r}"
        for n, (w, g) in enumerate(zip(want, got, strict=False))
        if w != g and not (w.endswith(ELLIPSIS) and g.startswith(w[:-1]))
    ]
    if len(want) != len(got):
        found.append(f"body: {len(want)} line(s) shown, {len(got)} answered")
    return found


def compare(step: Step, answers: list[Answer]) -> list[str]:
    """The differences between a step's answers and its response block."""
    expected = step.expected
    if expected is None or step.skipped:
        return []
    if expected.kind == "http":
        assert len(answers) == 1, f"one http response shown for {len(answers)} commands"
        return _compare_http(expected.text, answers[0], volatile_members(step.requests[0].path))
    shown = parse_shown(expected.text)
    if len(shown) != len(answers):
        return [f"{len(shown)} response(s) shown for {len(answers)} command(s)"]
    found = []
    for n, (pattern, answer, request) in enumerate(zip(shown, answers, step.requests, strict=True)):
        try:
            actual = json.loads(answer.text)
        except ValueError:
            found.append(f"response {n + 1}: not JSON: {answer.status} {answer.text[:300]!r}")
            continue
        where = "$" if len(answers) == 1 else f"response {n + 1}: $"
        found.extend(differences(pattern, actual, where, None, volatile_members(request.path)))
    return found


def failure(step: Step, found: list[str]) -> str:
    """A step's mismatch, as the test reports it: where, what was sent, what differs."""
    commands = "\n".join(f"    $ {r.shown}" for r in step.requests)
    return f"docs/api.md:{step.line}, section {step.heading!r}\n{commands}\n" + "\n".join(
        f"    - {d}" for d in found
    )


# --------------------------------------------------------------------- tests


def test_the_guide_replays_top_to_bottom(guide_app: App) -> None:
    steps = guide_steps(GUIDE.read_text(encoding="utf-8"))
    failures: list[str] = []
    for step in steps:
        answers = [send(guide_app, request) for request in step.requests]
        found = compare(step, answers)
        if found:
            failures.append(failure(step, found))
    replayed = sum(len(s.requests) for s in steps)
    compared = sum(len(s.requests) for s in steps if s.expected is not None)
    assert replayed > 80 and compared > 80, (replayed, compared)  # the parser found them
    assert not failures, (
        f"{len(failures)} example(s) of docs/api.md do not replay as shown:\n\n"
        + "\n\n".join(failures)
    )


@pytest.mark.parametrize(
    ("shown", "actual", "expected"),
    [
        ('{"a": 1, "b": "x"}', {"a": 1, "b": "x"}, []),
        ('{"a": 1, …}', {"a": 1, "b": 2}, []),
        ('{"a": 1}', {"a": 1, "b": 2}, ["$: the server also has b (not in the guide, and no …)"]),
        ('{"a": {"b": [1, 2]}}', {"a": {"b": [1, 3]}}, ["$.a.b[1]: the guide shows 2"]),
        ('{"a": …}', {"a": {"anything": True}}, []),
        ('["x", … 2 more, "z"]', ["x", "y", "y", "z"], []),
        ('["x", …]', [], ['$: no item is the guide\'s "x"']),
        ('"Ihr Konto…"', "Ihr Konto ist im Rückstand", []),
        ('"Ihr Konto…"', "Your account", ["$: the guide shows 'Ihr Konto'…"]),
        ('{"n": 1}', {"n": True}, ["$.n: the guide shows 1, the server has true"]),
    ],
)
def test_responses_are_compared_with_the_guides_cuts(
    shown: str, actual: Any, expected: list[str]
) -> None:
    (pattern,) = parse_shown(shown)
    found = differences(pattern, actual)
    assert len(found) >= len(expected)
    for diff, start in zip(found, expected, strict=False):
        assert diff.startswith(start), (diff, start)
    assert bool(found) == bool(expected)


def test_commands_and_their_responses_are_read_in_order() -> None:
    guide = (
        "## 9.1 Somewhere\n\n"
        "```bash\n"
        "curl -si -X PUT http://localhost:8080/v1/calendars/c \\\n"
        "  -H 'Authorization: Bearer local:admin' -H 'If-Match: \"1\"' -d @- <<'EOF'\n"
        '{\n  "name": "x"\n}\n'
        "EOF\n"
        "```\n\n"
        "```http\nHTTP/1.0 200 OK\n```\n\n"
        "```bash\n"
        "for n in 1 2; do\n"
        '  curl -s -X PUT http://localhost:8080/v1/accounts/A-$n -d \'{"name": "C \'$n\'",\n'
        '       "x": 1}\'\n'
        "  echo\n"
        "done\n"
        ".venv/bin/dunning evaluate --as-of 2027-03-01T07:00:00Z\n"
        "```\n"
    )
    first, second = guide_steps(guide)
    assert first.heading == "9.1 Somewhere"
    assert first.expected == Expected("http", "HTTP/1.0 200 OK\n")
    (put,) = first.requests
    assert (put.method, put.path, put.body) == ("PUT", "/v1/calendars/c", b'{  "name": "x"}')
    assert put.headers["If-Match"] == '"1"'
    assert put.headers["Authorization"] == "Bearer local:admin"
    assert [(r.method, r.path) for r in second.requests] == [
        ("PUT", "/v1/accounts/A-1"),
        ("PUT", "/v1/accounts/A-2"),
        ("POST", "/local/schedule"),
    ]
    assert json.loads(second.requests[1].body) == {"name": "C 2", "x": 1}
    assert second.expected is None


def test_a_mismatch_names_the_section_the_command_and_the_difference() -> None:
    step = Step(
        "4.2 A payment plan", 1500, expected=Expected("http", 'HTTP/1.0 201 Created\nETag: "4"\n')
    )
    step.requests.append(curl_request(["-si", "http://localhost:8080/v1/x"], None, "curl x"))
    found = compare(step, [Answer(201, {"etag": '"5"'}, "")])
    assert found == ["header ETag: the guide shows '\"4\"', got '\"5\"'"]
    assert failure(step, found).splitlines() == [
        "docs/api.md:1500, section '4.2 A payment plan'",
        "    $ curl x",
        "    - header ETag: the guide shows '\"4\"', got '\"5\"'",
    ]
    found = compare(step, [Answer(409, {}, '{"code": "conflict"}')])
    assert found == ['status: the guide shows 201, the server answered 409: {"code": "conflict"}']
