"""LangGraph agents: the research agent (tools over hybrid search and the knowledge graph,
PostgreSQL checkpoints, human approval of sensitive tool calls).

``config`` is imported by ``llmflow.settings`` and stays free of heavy imports; the graph
(``graph``), its state (``state``), tools (``tools``, ``runtime_tools``), LLM client (``llm``),
service (``service``) and OpenAI-compatible model (``openai_model``) are imported where used.
"""
