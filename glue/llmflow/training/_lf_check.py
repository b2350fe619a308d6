"""Run by the training environment's interpreter (``.venv-train/bin/python _lf_check.py``):
parse a LLaMA-Factory config with LLaMA-Factory's own argument parser.

Standard library plus ``llamafactory`` only: this file is executed by path, outside the
``llmflow`` package. Input: the config as JSON on stdin. Output: one JSON line
``{"ok": true}`` or ``{"ok": false, "error": "..."}``.

``_parse_train_args`` is what ``llamafactory-cli train`` runs first: HfArgumentParser over
(model, data, training, finetuning, generating) arguments with unknown keys refused, the
dataclasses' ``__post_init__`` checks included. It loads no model and touches no GPU.

Two steps, because part of ``TrainingArguments.__post_init__`` checks the hardware it runs on
(bf16 needs a GPU that has it, a DeepSpeed config file needs ``deepspeed``): first every key
must be an argument of the pinned version; then the values are parsed, with the
hardware-bound keys (``bf16``, ``fp16``, ``deepspeed``) neutralised when this machine has no
CUDA device - they are checked where the job runs. ``hardware_checked`` says which happened.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys


def _check_types(cfg: dict[str, object], classes: tuple[type, ...]) -> None:
    """HfArgumentParser.parse_dict assigns YAML values without converting them (a string
    where an int belongs gets through and fails mid-training): check the scalar fields."""
    import types
    import typing

    scalar = {int: (int,), float: (int, float), bool: (bool,), str: (str,)}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for name, value in cfg.items():
            if name not in hints or value is None:
                continue
            hint = hints[name]
            union = typing.get_origin(hint) in (typing.Union, types.UnionType)
            kinds = [
                o for o in (typing.get_args(hint) if union else (hint,)) if o is not type(None)
            ]
            if not kinds or any(k not in scalar for k in kinds):
                continue  # lists, dicts, enums, literals: left to the parser
            allowed = tuple(t for k in kinds for t in scalar[k])
            if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, allowed):
                raise ValueError(f"{name}: {value!r} is not {hint}")


def main() -> int:
    cfg = json.load(sys.stdin)
    os.environ.pop("ALLOW_EXTRA_ARGS", None)  # unknown keys must fail here
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):  # the parser prints its help on unknown keys
            import dataclasses

            import torch
            from llamafactory.hparams.parser import _TRAIN_ARGS, _parse_train_args

            known = {f.name for cls in _TRAIN_ARGS for f in dataclasses.fields(cls)}
            unknown = sorted(set(cfg) - known)
            if unknown:
                raise ValueError(f"unknown LLaMA-Factory arguments: {unknown}")
            _check_types(cfg, _TRAIN_ARGS)
            hardware = torch.cuda.is_available()
            if not hardware:
                cfg = {**cfg, "bf16": False, "fp16": False, "deepspeed": None, "use_cpu": True}
            _parse_train_args(cfg)
    except (ValueError, TypeError, ImportError) as exc:
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        return 0
    print(json.dumps({"ok": True, "hardware_checked": hardware}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
