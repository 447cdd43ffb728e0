"""Every Redis key the product uses, each with its type, writer and reader.

All keys carry the hash tag ``{fb}`` so that multi-key transactions (an exchange and its thread
index written together) stay in one hash slot and work unchanged on Redis Cluster.
`tests/test_keys.py` pins these strings: changing one is a data migration, not a refactor.
"""

from __future__ import annotations

PREFIX = "{fb}"


def active_model() -> str:
    """STRING: name of the model in service (an id or a path the model server accepts).

    Writer: the retraining job's promote step and the `chatbot model` commands.
    Reader: the bot, once per request; unset means the configured LLM_MODEL.
    """
    return f"{PREFIX}:model:active"


def exchange(exchange_id: str) -> str:
    """HASH: one assistant answer: thread, user, prompt messages (JSON), completion, prompt id and
    version, model, timestamps, latency.

    Writer: the bot after each answer. Reader: the data layer, the retraining job.
    """
    return f"{PREFIX}:exchange:{exchange_id}"


def thread_exchanges(thread_id: str) -> str:
    """LIST: exchange ids of a thread, oldest first.

    Writer: the bot, in the same transaction as the exchange. Reader: history, retraining job.
    """
    return f"{PREFIX}:thread:{thread_id}:exchanges"
