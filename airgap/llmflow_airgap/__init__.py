"""LLMFlow offline bundle tool (lock, build, verify, install).

`validate`, `schema`, `plan`, `keygen`, `lock`, `build`, `verify` and `push` (install step 1)
work today; the rest of `install` arrives with the rest of issue 7.
"""

__version__ = "0.1.0"
