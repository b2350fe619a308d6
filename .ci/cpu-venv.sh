# Sourced by .ci/vllm-env.sh and .ci/train-env.sh: one side environment with the CPU torch.
#
#   torch_cpu_requirements LABEL PIN_TORCH   sets $torch_req and $overrides: torch 2.13.0+cpu from
#       the local wheel in $WHEELS (PyPI has no +cpu build; without the file, torch 2.13.0 from
#       PyPI, a CUDA build that runs on the CPU all the same), and uv overrides whose marker
#       never matches for torchvision, torchaudio, torchcodec and triton (PyPI's builds do not
#       load beside the CPU torch; triton has no CPU backend). PIN_TORCH=1 also overrides the
#       torch version when the wheel is there (for packages that pin a different torch).
#   venv_is_current WANT     true when $VENV was built from exactly WANT (its stamp) and
#       FORCE is not 1.
#   venv_install PKG...      recreates $VENV and installs the packages with the overrides.
# Callers set VENV, STAMP, TORCH_VERSION and WHEELS first.

torch_cpu_requirements() {
  local label=$1 pin_torch=$2 torch_wheel
  torch_wheel=$(ls "$WHEELS"/torch-"$TORCH_VERSION"+cpu-cp311-*.whl 2>/dev/null | head -n1 || true)
  overrides=$'torchvision ; sys_platform == "never"\ntorchaudio ; sys_platform == "never"\ntorchcodec ; sys_platform == "never"\ntriton ; sys_platform == "never"'
  if [[ -n "$torch_wheel" ]]; then
    torch_req="torch==$TORCH_VERSION+cpu"
    [[ "$pin_torch" == 1 ]] && overrides+=$'\n'"torch==$TORCH_VERSION+cpu"
  else
    echo "$label: no $WHEELS/torch-$TORCH_VERSION+cpu wheel: using torch==$TORCH_VERSION from PyPI" >&2
    torch_req="torch==$TORCH_VERSION"
    overrides+=$'\n'"torch==$TORCH_VERSION"
  fi
  return 0
}

venv_is_current() {
  [[ "${FORCE:-0}" != 1 && -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$1" ]]
}

venv_install() {
  command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
  local uv python tmp
  uv=$(command -v uv || echo "$HOME/.local/bin/uv")
  python=$(command -v python3.11 || command -v python3)
  tmp=$(mktemp -d)
  printf '%s\n' "$overrides" >"$tmp/overrides.txt"
  rm -rf "$VENV"
  UV_PYTHON_DOWNLOADS=never "$uv" venv --quiet --python "$python" "$VENV"
  local find_links=()
  [[ -d "$WHEELS" ]] && find_links=(--find-links "$WHEELS")
  "$uv" pip install --quiet --python "$VENV/bin/python" "${find_links[@]}" \
    --override "$tmp/overrides.txt" "$@"
  rm -rf "$tmp"
}
