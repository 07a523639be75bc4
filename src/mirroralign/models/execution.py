"""Embodied execution: a language-conditioned visuomotor policy. A shared conv encoder per agent camera
(with a camera embedding), proprioception and the instruction embedding become tokens of a small
transformer; a readout token predicts the next H actions (an action chunk), trained with L1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mirroralign import distributed
from mirroralign.config import ExecutionConfig
from mirroralign.models.blocks import random_shift, resolve_tap, to_float_image, transformer_block
from mirroralign.text import TEXT_DIM


class ConvEncoder(nn.Module):
    def __init__(self, dim: int, side: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1), nn.GELU(), nn.Conv2d(32, 64, 3, 2, 1), nn.GELU(),
            nn.Conv2d(64, dim, 3, 2, 1), nn.GELU(), nn.AdaptiveAvgPool2d(side))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(2).transpose(1, 2)  # [N, side*side, dim]


class ExecutionPolicy(nn.Module):
    def __init__(self, c: ExecutionConfig, n_cameras: int, proprio_dim: int, action_dim: int,
                 text_embeddings: torch.Tensor, task_dim: int = TEXT_DIM):
        super().__init__()
        self.config = c
        self.action_dim = action_dim
        self.encoder = ConvEncoder(c.dim, c.tokens_per_camera)
        self.camera_embed = nn.Parameter(torch.randn(n_cameras, 1, c.dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, c.tokens_per_camera ** 2, c.dim) * 0.02)
        self.proprio = nn.Linear(proprio_dim, c.dim)
        self.task_dim = task_dim  # TEXT_DIM (told by sentence embeddings), or the understanding model's joint space
        self.instruction = nn.Linear(task_dim, c.dim)
        self.joint_text = None  # see read_text_through
        self.readout = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.blocks = nn.ModuleList(transformer_block(c.dim, c.heads) for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.horizon * action_dim)
        self.register_buffer("text_embeddings", text_embeddings.float(), persistent=False)
        self.layer_names = [f"blocks.{i}" for i in range(c.layers)]
        self.tap = resolve_tap(c.tap_layer, self.layer_names)
        self.representation_dim = c.dim

    def features(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images = batch["images"]  # [B, C, 3, H, W] uint8
        b, n_cam = images.shape[:2]
        x = to_float_image(images.flatten(0, 1))
        if self.training and self.config.augment:
            seeds = batch.get("sample_seed")  # the trainer's per-sample seeds: the same shifts on any rank
            x = random_shift(x, seeds=None if seeds is None else seeds.tolist())
        cams = (self.encoder(x).view(b, n_cam, -1, self.config.dim) + self.pos.unsqueeze(1)
                + self.camera_embed.unsqueeze(0)).flatten(1, 2)
        # the task as an embedding: the batch's own (a demonstration clip's, or the probes' null instruction), else
        # the instruction's, looked up by row (in the joint video-text space when the policy is told by video)
        if "instruction_embedding" in batch:
            text = batch["instruction_embedding"]
        elif self.joint_text is not None:
            with torch.no_grad():
                text = self.joint_text(batch["text_index"])
        else:
            text = self.text_embeddings[batch["text_index"]]
        instruction = self.instruction(text).unsqueeze(1)
        proprio = self.proprio(batch["proprio"]).unsqueeze(1)
        tokens = torch.cat([self.readout.expand(b, -1, -1), instruction, proprio, cams], 1)
        taps = {}
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            taps[f"blocks.{i}"] = tokens.mean(1)
        chunk = self.head(self.norm(tokens[:, 0])).view(b, self.config.horizon, self.action_dim)
        return chunk, taps

    def read_text_through(self, understanding) -> None:
        """A policy told its task in the understanding model's joint space (train.condition video or mixed) reads an
        instruction as that model embeds it. Held as a bound method, not a submodule: the weights are that part's."""
        self.joint_text = understanding.embed_text

    def representation(self, batch: dict) -> torch.Tensor:
        return self.features(batch)[1][self.tap]

    @torch.no_grad()
    def act(self, batch: dict) -> torch.Tensor:
        """[B, H, A] predicted action chunk, as predicted: each simulator adapter makes it valid for its action
        space (Meta-World clips to [-1, 1]; RLBench poses are in metres, where such a clip would be wrong)."""
        return self.features(batch)[0]

    def forward_with_representation(self, batch: dict) -> tuple[torch.Tensor, dict, torch.Tensor]:
        chunk, taps = self.features(batch)
        real = (~batch["action_is_pad"]).unsqueeze(-1).to(chunk.dtype)  # padded steps carry no loss
        # mean over the real steps of all ranks' samples (ranks may hold different numbers of them)
        loss = distributed.share_of_global_mean((F.l1_loss(chunk, batch["actions"], reduction="none") * real).sum(),
                                                real.sum() * self.action_dim)
        return loss, {"loss_ee": loss.item()}, taps[self.tap]

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        loss, info, _ = self.forward_with_representation(batch)
        return loss, info
