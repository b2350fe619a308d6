"""Dify as the application OS: typed clients of Dify's console and service APIs (the Dify
version pinned in ``platform/platform.yaml``), and what LLMFlow wires through them."""

from llmflow.dify.client import DIFY_VERSION, DifyConsole, DifyError, DifyService

__all__ = ["DIFY_VERSION", "DifyConsole", "DifyError", "DifyService"]
