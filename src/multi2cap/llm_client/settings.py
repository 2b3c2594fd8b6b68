"""The settings of an OpenAI-compatible chat endpoint, checked when they are made, and the API key,
read from an environment variable and checked before it is sent.

One implementation for every caller: the VggCaps builder (`multi2cap.vggcaps.backends`, whose
`OpenAISettings` adds the image detail of its vision requests) and the CLAIR-A judge
(`multi2cap.metrics.clair_a`). The key itself is never a setting, never logged and never shown in
an error: settings name the variable that holds it.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

from multi2cap.llm_client.transport import DEFAULT_MAX_REPLY_BYTES, check_base_url

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# what an API key may hold: printable ASCII without spaces (it travels in an HTTP header)
KEY_CHARS = re.compile(r"[\x21-\x7e]+")
MaxTokensParam = Literal["max_tokens", "max_completion_tokens"]
MAX_TOKENS_PARAMS: tuple[MaxTokensParam, ...] = get_args(MaxTokensParam)


class BackendConfigError(ValueError):
    """The client cannot work (the API key variable is unset, or the endpoint rejects the key,
    the model or the URL); the job stops instead of failing every request."""


@dataclass
class ChatSettings:
    """Endpoint and request settings of a Chat Completions client.

    `api_key_env` names the environment variable holding the key (the key itself is never a
    setting). `timeout_s` bounds one whole HTTP request (connect, first byte and the whole body,
    however slowly the endpoint sends it); `max_reply_bytes` caps the bytes read from one reply
    (more is a failed try, retried like a malformed reply); `max_retries` counts retries after
    the first try; backoff doubles from `backoff_base_s` up to `backoff_max_s` with jitter, unless
    the server sends `Retry-After`, which is honoured up to `max_retry_after_s`. `rpm`/`tpm` are
    requests/tokens per minute (None: unlimited); a request takes its estimated tokens from the
    tokens/min bucket before it is sent and is settled with the reported usage afterwards.
    `temperature` and `max_tokens` are omitted from the request when None; `max_tokens_param` is
    `max_completion_tokens` for o-series models.

    Every value is checked here, when the settings are made, so a bad option stops the job
    before anything is paid for (a `ValueError` naming the option and the value).
    """

    model: str = "gpt-4o"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    timeout_s: float = 60.0
    max_retries: int = 6
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0
    rpm: float | None = None
    tpm: float | None = None
    temperature: float | None = None
    max_tokens: int | None = 300
    max_tokens_param: MaxTokensParam = "max_tokens"
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES

    def __post_init__(self) -> None:
        self._check_values()
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(
                    f"{name} must be a positive number of {'requests' if name == 'rpm' else 'tokens'}"
                    f" per minute, found {value!r} (leave it unset for no limit)"
                )
        looks_like_key = self.api_key_env.startswith(("sk-", "sk_"))
        if looks_like_key or not ENV_NAME.fullmatch(self.api_key_env):
            # never echo it: what was given may be the key itself
            raise BackendConfigError(
                "--api-key-env / api_key_env takes the NAME of an environment variable (e.g. "
                "OPENAI_API_KEY), and what was given "
                + ("looks like an API key itself" if looks_like_key else "is not a variable name")
                + " (not shown, so it stays out of logs); export the key, e.g. "
                "`export OPENAI_API_KEY=...`, and pass the variable's name"
            )

    def _check_values(self) -> None:
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(
                f"--timeout / timeout_s must be a positive number of seconds, found "
                f"{self.timeout_s!r}"
            )
        if self.max_tokens is not None and not self.max_tokens >= 1:
            raise ValueError(
                f"--max-tokens / max_tokens must be at least 1, found {self.max_tokens!r}"
            )
        if self.temperature is not None and not (
            math.isfinite(self.temperature) and self.temperature >= 0
        ):
            raise ValueError(
                f"--temperature / temperature must be 0 or more, found {self.temperature!r}"
            )
        if self.max_tokens_param not in MAX_TOKENS_PARAMS:
            raise ValueError(
                f"--max-tokens-param / max_tokens_param must be one of "
                f"{', '.join(MAX_TOKENS_PARAMS)}, found {self.max_tokens_param!r}"
            )
        if not self.max_reply_bytes >= 1024:
            raise ValueError(
                f"--max-reply-bytes / max_reply_bytes must be at least 1024, found "
                f"{self.max_reply_bytes!r}"
            )
        if self.base_url is not None:
            check_base_url(self.base_url)

    def sampling_fields(self) -> dict[str, Any]:
        """The request-body fields these settings add to every request: `temperature` and the
        token cap (under `max_tokens_param`), each left out when None."""
        fields: dict[str, Any] = {}
        if self.temperature is not None:
            fields["temperature"] = self.temperature
        if self.max_tokens is not None:
            fields[self.max_tokens_param] = self.max_tokens
        return fields

    def api_key(self) -> str:
        """The key from the variable named by `api_key_env`. A key that could not be sent in an
        HTTP header (a trailing CR/LF from a pasted file, a space, non-ASCII characters) is
        refused here, naming the variable and never showing the value: sent, it read as
        "server not reachable" or failed every request as a malformed response."""
        key = os.environ.get(self.api_key_env)
        if not key:
            raise BackendConfigError(
                f"environment variable {self.api_key_env} is not set; export the API key there "
                "(local servers accept any value, e.g. EMPTY)"
            )
        if not KEY_CHARS.fullmatch(key):
            if key != key.strip():
                found = "starts or ends with whitespace or a line break (CR/LF)"
            elif not key.isascii():
                found = "holds non-ASCII characters"
            else:
                found = "holds spaces or control characters"
            raise BackendConfigError(
                f"the API key in environment variable {self.api_key_env} {found} (value not "
                "shown); an API key is printable ASCII without spaces: export it again, e.g. "
                f"`export {self.api_key_env}=\"$(tr -d '\\r\\n' < keyfile)\"`"
            )
        return key
