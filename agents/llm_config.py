"""How to reach each agent's model: plain, JSON-friendly settings (no client, no LangChain import), so the
runtime context and the settings can hold them and `capnas --help` stays fast. `capnas.agents.llm` turns
them into clients.

They never hold a key, only the *name* of the environment variable that does: the context of a served run
is stored by the server, and the CLI's is recorded in the journal, so a key in them would be a key at rest."""

from __future__ import annotations

import os
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Role = Literal["planner", "coder", "critic", "reporter"]
ROLES: tuple[Role, ...] = get_args(Role)
ROLE_HEADER = "X-Capnas-Role"  # tells servers and recorded-response tests which agent is asking
NO_KEY = "sk-no-key-needed"  # local servers take any key, but the openai client insists on one

class LLMConfig(BaseModel):
    """How to reach one model. The key comes from the environment variable named by `api_key_env`, read when
    the client is built (in the process that makes the calls); a server with no key (llama.cpp, vLLM, Ollama)
    needs none."""

    # hide_input_in_errors: a refused field's error must not quote the value (it may be a pasted key)
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    model: str
    base_url: str | None = None  # None: OpenAI's own API
    api_key_env: str | None = None
    temperature: float = Field(default=0.2, ge=0, le=2)
    max_output_tokens: int = Field(default=2048, gt=0)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=2, ge=0)
    price_in_per_mtok: float | None = Field(default=None, ge=0)  # USD per 1M prompt tokens
    price_out_per_mtok: float | None = Field(default=None, ge=0)  # USD per 1M completion tokens
    # langchain-openai sends the cap as `max_completion_tokens`, which llama.cpp-style servers ignore;
    # the legacy `max_tokens` in the body caps them too. OpenAI's reasoning models reject it: set False.
    send_max_tokens: bool = True

    @model_validator(mode="before")
    @classmethod
    def _no_key_in_settings(cls, data: Any) -> Any:
        if isinstance(data, dict) and "api_key" in data:
            raise ValueError("api_key: settings never hold a key; put it in an environment variable of the process "
                             "that calls the model and name that variable in api_key_env")
        return data

    def resolve_api_key(self) -> str:
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ValueError(f"api_key_env: environment variable {self.api_key_env} is not set or empty")
            return key
        if self.base_url is None:
            raise ValueError(f"model {self.model!r}: OpenAI's API needs a key; name the environment variable "
                             "holding it in api_key_env")
        return NO_KEY


class AgentModels(BaseModel):
    """A default model plus per-role overrides of any of its fields, e.g.
    `{"default": {"model": "qwen", "base_url": ...}, "roles": {"coder": {"max_output_tokens": 4096}}}`."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    default: LLMConfig
    roles: dict[Role, dict[str, Any]] = {}

    @model_validator(mode="after")
    def _overrides_are_valid(self) -> AgentModels:
        for role in self.roles:
            try:
                self.for_role(role)
            except ValidationError as err:  # one line, the messages only (never the values)
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
                                     for e in err.errors())
                raise ValueError(f"roles.{role}: {problems}") from None
        return self

    def for_role(self, role: Role) -> LLMConfig:
        override = self.roles.get(role)
        if not override:
            return self.default
        return LLMConfig.model_validate({**dict(self.default), **override})
