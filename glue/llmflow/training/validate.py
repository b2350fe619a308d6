"""Check a LLaMA-Factory config with LLaMA-Factory's own parser, in the training environment."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmflow.errors import InvalidRequest, ServiceUnavailable

CHECK_SCRIPT = Path(__file__).with_name("_lf_check.py")


@dataclass(frozen=True, slots=True)
class ConfigCheck:
    """The parser accepted the config; ``hardware_checked`` is false when bf16/fp16/DeepSpeed
    could not be checked on this machine (no CUDA) and are left to the machine that trains."""

    hardware_checked: bool


def train_env(venv: Path) -> dict[str, str]:
    """The environment of a process of the training venv: ours without what points another
    interpreter at this one's packages, offline hubs (air gap)."""
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "UV_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        {
            "VIRTUAL_ENV": str(venv),
            "PATH": f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "DISABLE_VERSION_CHECK": "1",
            "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    return env


async def validate_config(cfg: dict[str, Any], venv: Path, timeout_s: float = 120.0) -> ConfigCheck:
    """Raise :class:`InvalidRequest` with the parser's message when LLaMA-Factory refuses
    ``cfg``; :class:`ServiceUnavailable` when the training environment is missing."""
    python = venv / "bin" / "python"
    if not python.exists():
        raise ServiceUnavailable(
            f"the training environment {venv} is missing: run `bash .ci/train-env.sh`"
        )
    proc = await asyncio.create_subprocess_exec(
        str(python),
        "-I",  # isolated: the script's directory is not on sys.path (ours has a `datasets`)
        str(CHECK_SCRIPT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=train_env(venv),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(json.dumps(cfg).encode()), timeout_s)
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise ServiceUnavailable(
            f"LLaMA-Factory's parser did not answer in {timeout_s:.0f}s"
        ) from exc
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise ServiceUnavailable(
            f"LLaMA-Factory's parser failed (exit {proc.returncode}): "
            f"{err.decode(errors='replace')[-500:]}"
        )
    answer = json.loads(lines[-1])
    if not answer.get("ok"):
        raise InvalidRequest(f"LLaMA-Factory refuses the training config: {answer.get('error')}")
    return ConfigCheck(hardware_checked=bool(answer.get("hardware_checked")))
