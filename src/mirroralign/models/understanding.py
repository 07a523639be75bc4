"""Action understanding: a factorised space-time transformer over observer clips, and a frozen sentence
encoder with a trainable projection; trained with a symmetric video-text InfoNCE (CLIP-style, learnable
temperature). Recognition picks the variation whose instruction embedding (canonical and paraphrases
averaged) is nearest the clip's."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mirroralign.config import UnderstandingConfig
from mirroralign.models.align import info_nce
from mirroralign.models.blocks import random_shift, resolve_tap, to_float_image, transformer_block
from mirroralign.text import TEXT_DIM


CLIP_SHIFT_SALT = 0x5EED_C11B  # see encode_video


class VideoEncoder(nn.Module):
    """Each frame: patch embedding and spatial attention (CLS token); then attention over the frames."""

    def __init__(self, c: UnderstandingConfig, image_size: int):
        super().__init__()
        if image_size % c.patch:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {c.patch}")
        n_patches = (image_size // c.patch) ** 2
        self.patchify = nn.Conv2d(3, c.dim, c.patch, c.patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.space_pos = nn.Parameter(torch.randn(1, n_patches + 1, c.dim) * 0.02)
        self.time_pos = nn.Parameter(torch.randn(1, c.frames, c.dim) * 0.02)
        self.spatial = nn.ModuleList(transformer_block(c.dim, c.heads) for _ in range(c.spatial_layers))
        self.temporal = nn.ModuleList(transformer_block(c.dim, c.heads) for _ in range(c.temporal_layers))
        self.norm = nn.LayerNorm(c.dim)
        self.layer_names = [f"spatial.{i}" for i in range(c.spatial_layers)] + \
                           [f"temporal.{i}" for i in range(c.temporal_layers)]

    def forward(self, video: torch.Tensor, shift_seeds: list[int] | None = None) -> tuple[torch.Tensor, dict]:
        """`shift_seeds`: one per clip, to shift each clip's frames together (DrQ's augmentation, as the policy's)."""
        b, f = video.shape[:2]
        if f > self.time_pos.shape[1]:
            raise ValueError(f"clip has {f} frames, the model was built for at most {self.time_pos.shape[1]}")
        frames = to_float_image(video)
        if shift_seeds is not None:  # the frames as channels: one offset per clip
            frames = random_shift(frames.flatten(1, 2), seeds=shift_seeds).view_as(frames)
        x = self.patchify(frames.flatten(0, 1)).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1) + self.space_pos
        taps = {}
        for i, block in enumerate(self.spatial):
            x = block(x)
            taps[f"spatial.{i}"] = x.mean(1).view(b, f, -1).mean(1)
        t = x[:, 0].view(b, f, -1) + self.time_pos[:, :f]
        for i, block in enumerate(self.temporal):
            t = block(t)
            taps[f"temporal.{i}"] = t.mean(1)
        return self.norm(t.mean(1)), taps


class UnderstandingModel(nn.Module):
    def __init__(self, c: UnderstandingConfig, image_size: int, text_embeddings: torch.Tensor,
                 text_variation: torch.Tensor):
        super().__init__()
        self.config = c
        self.video = VideoEncoder(c, image_size)
        self.video_proj = nn.Linear(c.dim, c.embed_dim)
        self.text_proj = nn.Linear(TEXT_DIM, c.embed_dim)  # trainable, on top of the frozen MiniLM
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / c.init_temperature)))
        self.register_buffer("text_embeddings", text_embeddings.float(), persistent=False)
        self.register_buffer("text_variation", text_variation.long(), persistent=False)
        self.n_variations = int(text_variation.max()) + 1
        self.tap = resolve_tap(c.tap_layer, self.video.layer_names)
        self.representation_dim = c.dim

    def encode_video(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        seeds = None
        if self.training and self.config.augment:  # the trainer's per-sample seeds: the same shifts on any rank
            # the policy shifts its agent images from the same sample seeds: offset them, or a paired clip and step
            # would share their shift, a cue that alignment could match on instead of the content
            seeds = [s ^ CLIP_SHIFT_SALT for s in batch["sample_seed"].tolist()] if "sample_seed" in batch else \
                torch.randint(2 ** 62, (len(batch["video"]),)).tolist()
        pooled, taps = self.video(batch["video"], seeds)
        return F.normalize(self.video_proj(pooled), dim=-1), taps

    def embed_text(self, text_index: torch.Tensor) -> torch.Tensor:
        """[B, E] the instructions (rows of the text embeddings) in the joint video-text space, normalised."""
        return F.normalize(self.text_proj(self.text_embeddings[text_index]), dim=-1)

    @torch.no_grad()
    def task_embedding(self, batch: dict) -> torch.Tensor:
        """[B, E] the task as a policy conditioned on this model is told it (train.condition): the demonstration
        clip's embedding where `demo_is_video`, else the instruction's; the instruction is not read where the clip
        is. Without gradient, so the policy's loss never shapes this model's space (in a mirror run only L_AU and
        L_align do), and without the clip shifts, so training sees the embedding that evaluation computes."""
        shown = batch["demo_is_video"]
        told = torch.empty(len(shown), self.config.embed_dim, device=shown.device)
        if shown.any():
            told[shown] = F.normalize(self.video_proj(self.video(batch["demo_video"][shown])[0]), dim=-1)
        if not shown.all():
            told[~shown] = self.embed_text(batch["text_index"][~shown])
        return told

    def class_embeddings(self) -> torch.Tensor:
        """[V, E]: per variation, the mean of its instructions' projected embeddings."""
        t = F.normalize(self.text_proj(self.text_embeddings), dim=-1)
        sums = torch.zeros(self.n_variations, t.shape[1], device=t.device).index_add_(0, self.text_variation, t)
        return F.normalize(sums, dim=-1)

    def representation(self, batch: dict) -> torch.Tensor:
        return self.encode_video(batch)[1][self.tap]

    def recognize(self, batch: dict) -> torch.Tensor:
        """[B, V] similarity of each clip to each variation; argmax is the recognised instruction."""
        return self.encode_video(batch)[0] @ self.class_embeddings().T

    def forward_with_representation(self, batch: dict) -> tuple[torch.Tensor, dict, torch.Tensor]:
        video, taps = self.encode_video(batch)
        text = self.embed_text(batch["text_index"])
        scale = self.logit_scale.clamp(max=math.log(self.config.max_logit_scale)).exp()
        # clips of the same variation are positives of each other's text, not negatives
        loss = info_nce(video, text, groups=batch["variation"], temperature=1 / scale)
        with torch.no_grad():
            accuracy = ((video @ self.class_embeddings().T).argmax(1) == batch["variation"]).float().mean()
        return loss, {"loss_au": loss.item(), "recognition_acc": accuracy.item(), "logit_scale": scale.item()}, \
            taps[self.tap]

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        loss, info, _ = self.forward_with_representation(batch)
        return loss, info
