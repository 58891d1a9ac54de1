"""The one record type for instruction data, and the error every loader raises.

A :class:`Record` is a conversation (``messages``: role/content dicts, roles "system", "user",
"assistant") plus identity (``id``, ``source``, ``task``, ``subtask``), evaluation fields
(``answer`` for exact match, ``choices``/``gold`` for multiple choice) and the ``raw`` original
object so a selection can be exported in its original format.

The training signal is the assistant turns; ``prompt`` / ``response`` are the convenient views of a
single-turn record (response = the last assistant message; prompt = everything before it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    """Bad input data. The message names the file, the line (or record) and what to do."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, field: str | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f", line {line}"
            if field is not None:
                where += f", field {field!r}"
            where += ": "
        super().__init__(where + message)
        self.path, self.line, self.field, self.reason = path, line, field, message


@dataclass(frozen=True)
class Record:
    id: str
    source: str
    task: str
    messages: tuple[dict[str, str], ...]
    subtask: str | None = None
    answer: str | None = None               # gold final answer for exact match (e.g. GSM8K number)
    choices: tuple[str, ...] | None = None  # multiple-choice options, in order
    gold: int | None = None                 # index into choices
    metadata: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] | None = None       # the original object (for export in its original format)
    fmt: str | None = None                  # loader format name that produced it

    # ---- views
    @property
    def response(self) -> str:
        """The last assistant message ("" for a prompt-only record)."""
        for m in reversed(self.messages):
            if m["role"] == "assistant":
                return m["content"]
        return ""

    @property
    def prompt_messages(self) -> tuple[dict[str, str], ...]:
        """Messages before the last assistant turn (all of them for a prompt-only record)."""
        for i in range(len(self.messages) - 1, -1, -1):
            if self.messages[i]["role"] == "assistant":
                return self.messages[:i]
        return self.messages

    @property
    def prompt(self) -> str:
        """The user-visible prompt text of the last turn (system text excluded)."""
        users = [m["content"] for m in self.prompt_messages if m["role"] == "user"]
        return users[-1] if users else ""

    @property
    def has_response(self) -> bool:
        return any(m["role"] == "assistant" and m["content"] for m in self.messages)

    def to_chat(self) -> dict[str, Any]:
        """Chat-messages export (OpenAI style), ready for common trainers."""
        return {"id": self.id, "messages": [dict(m) for m in self.messages],
                "source": self.source, "task": self.task, **({"subtask": self.subtask} if self.subtask else {})}

    def to_json(self) -> dict[str, Any]:
        """Full JSON-able form (round-trips through :meth:`from_json`)."""
        return {"id": self.id, "source": self.source, "task": self.task, "subtask": self.subtask,
                "messages": [dict(m) for m in self.messages], "answer": self.answer,
                "choices": list(self.choices) if self.choices is not None else None, "gold": self.gold,
                "metadata": self.metadata, "raw": self.raw, "fmt": self.fmt}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Record":
        return cls(id=d["id"], source=d["source"], task=d["task"], subtask=d.get("subtask"),
                   messages=tuple(dict(m) for m in d["messages"]), answer=d.get("answer"),
                   choices=tuple(d["choices"]) if d.get("choices") is not None else None, gold=d.get("gold"),
                   metadata=d.get("metadata") or {}, raw=d.get("raw"), fmt=d.get("fmt"))


def simple(id: str, prompt: str, response: str, *, source: str, task: str, system: str | None = None,
           **kw: Any) -> Record:
    """A single-turn record from a prompt and a response."""
    msgs: list[dict[str, str]] = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": prompt})
    if response is not None:
        msgs.append({"role": "assistant", "content": response})
    return Record(id=id, source=source, task=task, messages=tuple(msgs), **kw)


def check_messages(messages: Iterable[dict[str, Any]], *, path: str | None = None, line: int | None = None) -> tuple[dict[str, str], ...]:
    """Validate and normalise a message list: known roles, string contents."""
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise DataError(f"message {i} is a {type(m).__name__}, expected an object with 'role' and 'content'",
                            path=path, line=line, field="messages")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise DataError(f"message {i} has role {role!r}; expected one of {', '.join(ROLES)}",
                            path=path, line=line, field="messages")
        if not isinstance(content, str):
            raise DataError(f"message {i} content is {type(content).__name__}, expected text",
                            path=path, line=line, field="messages")
        out.append({"role": role, "content": content})
    if not out:
        raise DataError("the conversation has no messages", path=path, line=line, field="messages")
    return tuple(out)
