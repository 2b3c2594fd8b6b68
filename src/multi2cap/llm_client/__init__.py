"""The client layer of every OpenAI-compatible chat endpoint the package calls.

One implementation shared by the VggCaps builder (`multi2cap.vggcaps`, vision requests) and the
CLAIR-A judge (`multi2cap.metrics.clair_a`, text requests): settings checked when made and the
key read from an environment variable (`settings`), the retry loop with rate limits, deadlines
and `Retry-After` (`chat`), the reply size cap and endpoint URL check (`transport`), and token
prices (`prices`). It imports nothing else of multi2cap, so both may depend on it.
"""

from multi2cap.llm_client.chat import ChatClient, Completion, RequestFailed, RunStats, UsageGuard
from multi2cap.llm_client.prices import Prices
from multi2cap.llm_client.settings import BackendConfigError, ChatSettings

__all__ = [
    "BackendConfigError",
    "ChatClient",
    "ChatSettings",
    "Completion",
    "Prices",
    "RequestFailed",
    "RunStats",
    "UsageGuard",
]
