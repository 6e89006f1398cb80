"""An optional LLM judge for answers that rules cannot check, through any OpenAI-compatible endpoint."""

from __future__ import annotations

import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .text import answer_text, completion_text, prompt_text

logger = logging.getLogger(__name__)

JUDGE_SYSTEM_PROMPT = (
    "You grade answers to questions about images. You see the question, the reference answer and a model's "
    "answer, not the image. Reply with exactly one word: yes if the model's answer means the same as the "
    "reference answer, no otherwise."
)
_RETRYABLE_HTTP_CODES = {408, 409, 425, 429, 500, 502, 503, 504}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as its own HTTP error: following it would send the key, and trust the verdict, of
    whichever host it names."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _redacted(url: str) -> str:
    """``url`` without the user and password it may carry, for logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class LLMJudge:
    """Reward function asking a chat model whether each answer matches its reference: 1.0 yes, 0.0 no, None when the
    judge cannot answer (unreachable, timed out, an error status, an unreadable reply), so that TRL ignores it.

    Sends `POST {base_url}/chat/completions`. The API key is read from the environment variable `api_key_env` at each
    request (no header when it is unset, e.g. for a local server); it is never stored on the object nor logged.
    Connection errors, timeouts and the status codes 408/409/425/429/5xx are retried `max_retries` times with
    exponential backoff. Redirects are not followed (the key would go to, and the verdict come from, another host):
    a 3xx answer is an error status. Logs show the endpoint without any credentials written into its URL. Reads the columns `solution` and, when present, `problem` (else the prompt's last user
    text is the question). An empty answer scores 0.0 without a request.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout_s: float = 30.0,
        max_retries: int = 2,
        retry_backoff_s: float = 1.0,
        max_workers: int = 8,
        name: str = "llm_judge",
    ) -> None:
        if timeout_s <= 0 or max_retries < 0 or retry_backoff_s < 0 or max_workers < 1:
            raise ValueError("timeout_s must be > 0, max_retries and retry_backoff_s >= 0, max_workers >= 1")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self._logged_url = _redacted(self.url)
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.max_workers = max_workers
        self.__name__ = name

    def _request(self, body: bytes) -> dict | None:
        headers = {"Content-Type": "application/json"}
        api_key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.retry_backoff_s * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with _OPENER.open(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as error:
                retryable = error.code in _RETRYABLE_HTTP_CODES
                logger.warning(
                    "LLM judge at %s answered HTTP %s (attempt %d)", self._logged_url, error.code, attempt + 1
                )
                if not retryable:
                    return None
            except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out, cut short
                reason = getattr(error, "reason", error)
                logger.warning("LLM judge at %s unreachable: %s (attempt %d)", self._logged_url, reason, attempt + 1)
            except (ValueError, UnicodeDecodeError):
                logger.warning("LLM judge at %s sent a reply that is not JSON", self._logged_url)
                return None
        return None

    def judge(self, question: str, reference: str, answer: str) -> float | None:
        """1.0 / 0.0 for the judge's yes / no on one answer, None when it cannot answer."""
        if not answer.strip():
            return 0.0
        user = f"Question: {question}\nReference answer: {reference}\nModel answer: {answer}\nSame meaning (yes/no)?"
        body = json.dumps(
            {
                "model": self.model,
                "messages": [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}],
                "temperature": 0.0,
                "max_tokens": 4,
            }
        ).encode("utf-8")
        reply = self._request(body)
        try:
            content = reply["choices"][0]["message"]["content"]  # type: ignore[index]
            word = content.strip().split()[0].strip(".,!:;\"'*").lower()
        except (TypeError, KeyError, IndexError, AttributeError):
            return None
        return {"yes": 1.0, "correct": 1.0, "no": 0.0, "incorrect": 0.0}.get(word)

    def __call__(
        self,
        prompts: list[Any],
        completions: list[Any],
        completion_ids: Any = None,
        solution: list[Any] | None = None,
        problem: list[Any] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        if solution is None:
            raise ValueError(f"{self.__name__} needs the dataset column 'solution' (the reference answer of each row)")
        questions = [str(p) for p in problem] if problem is not None else [prompt_text(p) for p in prompts]
        answers = [answer_text(completion_text(c)) for c in completions]
        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            return list(pool.map(self.judge, questions, [str(s) for s in solution], answers))
