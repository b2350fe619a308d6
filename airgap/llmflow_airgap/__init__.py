"""LLMFlow offline bundle tool (lock, build, verify, install).

`validate`, `schema` and `plan` work today; the bundle commands arrive with issue 7.
"""

__version__ = "0.1.0"
