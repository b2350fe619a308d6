"""LLMFlow offline bundle tool (lock, build, verify, install).

`validate`, `schema`, `plan`, `keygen`, `lock`, `build`, `verify`, `push`, `install`, `diff`,
`status` and `prune`; see `cli.py` for the command line.
"""

__version__ = "0.1.0"
