"""The LLM judge against a small OpenAI-compatible server on 127.0.0.1 started by the test."""

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rewards import LLMJudge

API_KEY = "sk-test-secret-123"


class FakeChatServer(ThreadingHTTPServer):
    """Answers POST /<mode>/v1/chat/completions. Modes: `grade` (yes when the model answer equals the reference),
    `error` (HTTP 500), `flaky` (503 on the first request, then grades), `hang` (no reply for 2 s), `garbage`
    (a body that is not JSON), `forbidden` (HTTP 401), `chatty` (a reply that is neither yes nor no)."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests = []  # (mode, authorization header, body)

    def handle_error(self, request, client_address):  # a client that timed out closed its socket: expected here
        pass

    @property
    def base(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):  # keep pytest output clean
        pass

    def _send(self, status, body):
        payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        mode = self.path.split("/")[1]
        server = self.server
        server.requests.append((mode, self.headers.get("Authorization"), body))
        if not self.path.endswith("/v1/chat/completions"):
            return self._send(404, {"error": "not found"})
        if mode == "error" or (mode == "flaky" and len(server.requests) == 1):
            return self._send(500 if mode == "error" else 503, {"error": "busy"})
        if mode == "forbidden":
            return self._send(401, {"error": "bad key"})
        if mode == "redirect":  # to the host (and port) named after `redirect` in the path
            target = self.path.split("/")[2]
            self.send_response(307)
            self.send_header("Location", f"http://{target}/grade/v1/chat/completions")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if mode == "hang":
            time.sleep(2.0)
        if mode == "garbage":
            return self._send(200, "<html>not json</html>")
        user = body["messages"][-1]["content"]
        reference = user.split("Reference answer: ")[1].split("\n")[0]
        answer = user.split("Model answer: ")[1].split("\n")[0]
        verdict = (
            "maybe, hard to say" if mode == "chatty" else ("Yes." if answer.lower() == reference.lower() else "no")
        )
        return self._send(200, {"choices": [{"message": {"role": "assistant", "content": verdict}}]})


@pytest.fixture
def server():
    httpd = FakeChatServer()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def make_judge(server, mode, **options):
    options = {"timeout_s": 0.5, "max_retries": 1, "retry_backoff_s": 0.0, **options}
    return LLMJudge(f"{server.base}/{mode}/v1", model="judge-model", api_key_env="TEST_JUDGE_KEY", **options)


def test_judge_grades_answers_and_sends_the_key(server, monkeypatch):
    monkeypatch.setenv("TEST_JUDGE_KEY", API_KEY)
    judge = make_judge(server, "grade")
    completions = ["<think>a</think>Red", "<think>a</think>blue", "<think>cut off"]
    rewards = judge(None, completions, solution=["red", "red", "red"], problem=["Colour?"] * 3)
    # The third answer is empty: 0.0 without asking the server.
    assert rewards == [1.0, 0.0, 0.0]
    assert len(server.requests) == 2
    _, authorization, body = server.requests[0]
    assert authorization == f"Bearer {API_KEY}"
    assert body["model"] == "judge-model"
    assert "Question: Colour?" in body["messages"][-1]["content"]
    assert judge.__name__ == "llm_judge"
    assert API_KEY not in repr(vars(judge))  # the key is read per request, never stored


def test_judge_without_a_key_sends_no_authorization(server, monkeypatch):
    monkeypatch.delenv("TEST_JUDGE_KEY", raising=False)
    assert make_judge(server, "grade")(["Colour?"], ["<think>a</think>red"], solution=["red"]) == [1.0]
    assert server.requests[0][1] is None


def test_judge_uses_the_prompt_when_there_is_no_problem_column(server):
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which shape is red?"}]}]
    make_judge(server, "grade")([prompt], ["<think>a</think>square"], solution=["square"])
    assert "Question: Which shape is red?" in server.requests[0][2]["messages"][-1]["content"]


def test_server_errors_are_retried_then_give_none(server):
    assert make_judge(server, "error", max_retries=2)(["Colour?"], ["<think>a</think>red"], solution=["red"]) == [None]
    assert len(server.requests) == 3  # one try and two retries


def test_a_transient_error_is_retried(server):
    assert make_judge(server, "flaky")(["Colour?"], ["<think>a</think>red"], solution=["red"]) == [1.0]
    assert len(server.requests) == 2


def test_client_errors_are_not_retried(server):
    assert make_judge(server, "forbidden", max_retries=3)(["Colour?"], ["<think>a</think>red"], solution=["red"]) == [
        None
    ]
    assert len(server.requests) == 1


def test_a_hanging_server_times_out_to_none(server):
    start = time.monotonic()
    assert make_judge(server, "hang", timeout_s=0.2, max_retries=1)(
        ["Colour?"], ["<think>a</think>red"], solution=["r"]
    ) == [None]
    assert time.monotonic() - start < 1.5  # two attempts of 0.2 s, not the server's 2 s


@pytest.mark.parametrize("mode", ["garbage", "chatty"])
def test_unreadable_replies_give_none(server, mode):
    assert make_judge(server, mode)(["Colour?"], ["<think>a</think>red"], solution=["red"]) == [None]


def test_unreachable_endpoint_gives_none_and_never_logs_the_key(monkeypatch, caplog):
    monkeypatch.setenv("TEST_JUDGE_KEY", API_KEY)
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    judge = LLMJudge(f"http://127.0.0.1:{port}/v1", "m", api_key_env="TEST_JUDGE_KEY", timeout_s=0.5, retry_backoff_s=0)
    with caplog.at_level(logging.DEBUG):
        assert judge(["Colour?"] * 2, ["<think>a</think>red"] * 2, solution=["red"] * 2) == [None, None]
    assert "unreachable" in caplog.text
    assert API_KEY not in caplog.text


def test_a_redirect_to_another_host_is_not_followed_and_gets_no_key(server, monkeypatch, caplog):
    other = FakeChatServer()
    threading.Thread(target=other.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        monkeypatch.setenv("TEST_JUDGE_KEY", API_KEY)
        judge = make_judge(server, f"redirect/127.0.0.1:{other.server_address[1]}", max_retries=2)
        with caplog.at_level(logging.WARNING):
            assert judge(["Colour?"], ["<think>a</think>red"], solution=["red"]) == [None]
        assert other.requests == [] and len(server.requests) == 1  # not followed, not retried
        assert "HTTP 307" in caplog.text
    finally:
        other.shutdown()
        other.server_close()


def test_credentials_in_the_endpoint_url_are_never_logged(caplog):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    judge = LLMJudge(f"http://user:{API_KEY}@127.0.0.1:{port}/v1", "m", api_key_env=None, timeout_s=0.5, max_retries=0)
    with caplog.at_level(logging.DEBUG):
        assert judge(["Colour?"], ["<think>a</think>red"], solution=["red"]) == [None]
    assert f"***@127.0.0.1:{port}" in caplog.text and API_KEY not in caplog.text


def test_judge_names_the_missing_column_and_checks_its_options():
    with pytest.raises(ValueError, match="'solution'"):
        LLMJudge("http://127.0.0.1:1/v1", "m")(None, ["<think>a</think>red"])
    with pytest.raises(ValueError, match="timeout_s"):
        LLMJudge("http://127.0.0.1:1/v1", "m", timeout_s=0)
