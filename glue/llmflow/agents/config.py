"""Settings of the research agent (``settings.agents``, env ``LLMFLOW_AGENTS__...``).

The agent's own LLM is reached like any other client of the platform: through the LLM
gateway's OpenAI-compatible API (``llm_base_url`` + ``llm_api_key`` + ``llm_model``), so that
the gateway's routing, policy, PII guard and accounting apply to the agent's reasoning calls.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

CLASSIFICATIONS = ("public", "internal", "confidential", "secret")


class SensitiveTool(BaseModel):
    """A tool whose calls wait for a person's approval (LangGraph ``interrupt``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="tool name: hybrid_search, graph_neighbourhood, "
                      "follow_reference or fetch_section")  # fmt: skip
    classifications: list[Literal["public", "internal", "confidential", "secret"]] | None = Field(
        default=None,
        description="approval only when a knowledge base the call reads has one of these "
        "classifications; unset = every call of the tool",
    )


class AgentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(
        default="llmflow-agent-research",
        description="the model id clients ask the gateway for (a gateway route with "
        "provider 'agent' and handler 'research' must carry this name)",
    )
    llm_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible base URL the agent reasons with, including /v1, e.g. "
        "http://llmflow-gateway:8080/v1; unset: the agent is unavailable (503), explicitly",
    )
    llm_api_key: SecretStr | None = Field(
        default=None, description="LLMFlow API key (role 'model') of the agent's LLM calls"
    )
    llm_model: str = Field(
        default="qwen2.5-7b-instruct", description="gateway model to reason with"
    )
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=1024, ge=1)
    timeout_s: float = Field(default=120.0, gt=0, description="one LLM call")
    max_tool_rounds: int = Field(
        default=6,
        ge=0,
        description="model turns that may call tools; after that the model must answer from "
        "what it has (called without tools)",
    )
    max_tool_calls_per_round: int = Field(default=8, ge=1)
    search_top_k: int = Field(default=5, ge=1, le=50, description="hits per hybrid_search call")
    tool_result_chars: int = Field(
        default=1200, ge=100, description="text kept per hit in what the model reads"
    )
    sensitive_tools: list[SensitiveTool] = Field(
        default_factory=lambda: [
            SensitiveTool(name="fetch_section", classifications=["confidential", "secret"])
        ],
        description="tool calls that pause the run for approval (human in the loop)",
    )
    tools_public_url: str | None = Field(
        default=None,
        description="base URL at which Dify reaches this API (servers[0].url of "
        "/v1/tools/openapi.json), e.g. https://llmflow.corp.example; default: the URL the "
        "document was requested at",
    )
    checkpoints: Literal["postgres", "memory"] = Field(
        default="postgres",
        description="postgres: LangGraph's AsyncPostgresSaver on the platform database "
        "(threads survive restarts and replicas); memory: this process only",
    )
    checkpoint_pool_size: int = Field(default=4, ge=1)
    system_prompt: str = Field(
        default=(
            "You are LLMFlow's research assistant. Answer only from the knowledge bases, "
            "using the tools: hybrid_search to find passages, follow_reference to open an "
            "article or section a passage cites, fetch_section to read a section in full, "
            "graph_neighbourhood to see how entities and sections connect. Cite the "
            "documents you used. If the tools find nothing relevant, say so."
        )
    )
