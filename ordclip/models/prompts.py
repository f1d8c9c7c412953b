"""Prompt learners: the token-embedding sequences ``[SOT] ctx_1..ctx_n rank_tokens [.] [EOT]``
fed to CLIP's frozen text transformer, one sequence per rank."""

from __future__ import annotations

import torch
from torch import nn

from ordclip.errors import ConfigError

FULL_STOP = "."


def rank_interpolation_weights(num_base_ranks: int, num_ranks: int, kind: str = "linear") -> torch.Tensor:
    """(R, M) weights that build R rank embeddings from M base rank embeddings (OrdinalCLIP §3.3).

    Base rank j sits at b_j = linspace(0, R-1, M)_j (b = (R-1)/2 when M = 1); d_ij = |i - b_j|.
      linear:   w_ij ∝ 1 - d_ij / (R-1)
      inv_prop: w_ij ∝ 1 / (d_ij + 1e-5)
    Each row is normalised to sum to 1, so r_i = Σ_j w_ij · base_j (every base rank contributes).
    """
    if num_ranks < 2 or num_base_ranks < 1:
        raise ConfigError(f"rank interpolation needs R >= 2 and M >= 1 (got R={num_ranks}, M={num_base_ranks})")
    if num_base_ranks == 1:
        base = torch.tensor([(num_ranks - 1) / 2], dtype=torch.float64)
    else:
        base = torch.linspace(0, num_ranks - 1, num_base_ranks, dtype=torch.float64)
    d = (torch.arange(num_ranks, dtype=torch.float64)[:, None] - base[None, :]).abs()
    if kind == "linear":
        w = 1 - d / (num_ranks - 1)
    elif kind == "inv_prop":
        w = 1 / (d + 1e-5)
    else:
        raise ConfigError(f"interpolation: unknown kind {kind!r} (linear | inv_prop)")
    return (w / w.sum(dim=1, keepdim=True)).float()


class PromptLearner(nn.Module):
    """Learnable context and rank embeddings around CLIP's frozen special-token embeddings.

    context:       initialise the shared context from these words, or None for ``n_ctx``
                   random vectors N(0, 0.02²).
    rank_names:    initialise one embedding sequence per rank from these words (CoOp-style), or
                   None for random ``tokens_per_rank`` vectors per rank.
    num_base_ranks: if set, learn M base rank embeddings and build the R ranks by
                   ``rank_interpolation_weights`` (OrdinalCLIP); rank_names are then unused.
    rank_transform: a module applied to the (R, T, D) rank embeddings with their lengths
                   (L2RCLIP's RankFormer).
    n_ctx = 0 without context words gives prompts of rank tokens only.
    """

    def __init__(self, token_embedding: nn.Embedding, tok, num_ranks: int, *, context: str | None,
                 n_ctx: int = 8, rank_names: list[str] | None = None, tokens_per_rank: int = 1,
                 num_base_ranks: int | None = None, interpolation: str = "linear",
                 context_length: int = 77, rank_transform: nn.Module | None = None) -> None:
        super().__init__()
        weight = token_embedding.weight.detach()
        dim = weight.shape[1]

        def embed(text: str) -> torch.Tensor:
            return weight[torch.tensor(tok.encode(text), dtype=torch.long)].clone()

        ctx = embed(context) if context else torch.randn(n_ctx, dim) * 0.02
        self.context = nn.Parameter(ctx)
        self.num_ranks = num_ranks
        self.rank_transform = rank_transform
        if num_base_ranks is not None:
            self.base_ranks = nn.Parameter(torch.randn(num_base_ranks, tokens_per_rank, dim) * 0.02)
            self.register_buffer("interp", rank_interpolation_weights(num_base_ranks, num_ranks, interpolation),
                                 persistent=False)
            lengths = [tokens_per_rank] * num_ranks
            self.ranks = None
        elif rank_names is not None:
            if len(rank_names) != num_ranks:
                raise ConfigError(f"rank_names: {len(rank_names)} names for {num_ranks} ranks")
            parts = [embed(name) for name in rank_names]
            lengths = [p.shape[0] for p in parts]
            padded = torch.zeros(num_ranks, max(lengths), dim)
            for i, p in enumerate(parts):
                padded[i, : p.shape[0]] = p
            self.ranks = nn.Parameter(padded)
        else:
            self.ranks = nn.Parameter(torch.randn(num_ranks, tokens_per_rank, dim) * 0.02)
            lengths = [tokens_per_rank] * num_ranks
        self.lengths: list[int] = list(lengths)
        n = self.context.shape[0]
        # [SOT] ctx_1..ctx_n rank_1..rank_t [.] [EOT]: the EOT sits at 1 + n + t + 1.
        self.eot_positions: list[int] = [1 + n + t + 1 for t in self.lengths]
        self.length: int = max(self.eot_positions) + 1
        if self.length > context_length:
            raise ConfigError(f"prompt of {self.length} tokens exceeds the context length {context_length}")
        self.register_buffer("rank_lengths", torch.tensor(self.lengths), persistent=False)
        self.register_buffer("eot", torch.tensor(self.eot_positions), persistent=False)
        ids = torch.tensor([tok.sot_token_id, tok.encode(FULL_STOP)[0], tok.eot_token_id, 0])
        sot, stop, eot, pad = weight[ids].clone()
        self.register_buffer("sot", sot, persistent=False)
        # after the context, rank i holds t_i rank tokens, [.], [EOT], then padding up to the longest prompt
        width = max(self.lengths) + 2
        tail = pad.repeat(num_ranks, width, 1)
        slot = torch.zeros(num_ranks, width, dtype=torch.bool)
        for i, t in enumerate(self.lengths):
            tail[i, t], tail[i, t + 1] = stop, eot
            slot[i, :t] = True
        self.register_buffer("tail", tail, persistent=False)
        self.register_buffer("rank_slot", slot[:, :, None], persistent=False)

    def rank_embeddings(self) -> torch.Tensor:
        """(R, T, D) rank token embeddings (interpolated from the base ranks for OrdinalCLIP)."""
        ranks = self.ranks if self.ranks is not None else torch.einsum("rm,mtd->rtd", self.interp, self.base_ranks)
        if self.rank_transform is not None:
            ranks = self.rank_transform(ranks, self.rank_lengths)
        return ranks

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings (R, L, D) with L = ``self.length`` (the longest prompt), and the EOT
        index of each rank (``self.eot_positions`` as a tensor on the module's device).

        All ranks are assembled at once: the shared context expanded over the ranks (as the
        official prompt learner expands it) and each rank's tokens selected into its fixed
        [.] [EOT] pad tail by a mask built with the prompts, so the step needs no Python loop
        over ranks and no value read back from the device."""
        ranks = self.rank_embeddings()
        r, _, d = ranks.shape
        tail = torch.where(self.rank_slot, torch.nn.functional.pad(ranks, (0, 0, 0, 2)), self.tail)
        x = torch.cat([self.sot.expand(r, 1, d), self.context.expand(r, -1, -1), tail], dim=1)
        return x, self.eot
