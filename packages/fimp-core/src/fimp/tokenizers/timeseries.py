"""Time-series patch tokenizer aligned with BrainLM's embeddings (fMRI region = node)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fimp.errors import ShapeError
from fimp.tokenizers._common import (
    check_bool_mask,
    check_choice,
    check_finite,
    check_float,
    check_positive_int,
)

__all__ = ["MissingCoordinatesError", "SinusoidalPositionalEncoding", "TimeSeriesPatchTokenizer"]


class MissingCoordinatesError(ShapeError):
    """Node coordinates are required by the tokenizer but were not given (or have the wrong size)."""


class SinusoidalPositionalEncoding(nn.Module):
    """BrainLM's ``PositionalEncoding`` table: ``pe[p, 2i] = sin(p / 10000^(2i/d))``,
    ``pe[p, 2i+1] = cos(p / 10000^(2i/d))``.

    Computed with the same float32 operations as upstream and stored as the persistent buffer
    ``pe`` [max_len, d], so BrainLM's ``pos_embedding.pe`` loads by name (upstream stores 5000
    rows; row p depends on p only, so ``pe[:max_len]`` of a checkpoint fits). Odd d is allowed
    (the last cos column is dropped; upstream fails for odd d).
    """

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        position = torch.arange(max_len).unsqueeze(1)
        pe = torch.zeros(max_len, dim)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term[: dim // 2])
        self.register_buffer("pe", pe)

    def forward(self, length: int) -> Tensor:
        """The first ``length`` rows, [length, d]."""
        return self.pe[:length]


class TimeSeriesPatchTokenizer(nn.Module):
    r"""One token per time patch of a node's signal (BrainLM-aligned).

    A node's signal s in R^T is cut into L = T / P consecutive patches of P samples; patch j gives

    .. math::
        h_j = W_s\,s_{[jP:(j+1)P]} + b_s \;+\; W_c\,c + b_c \;+\; \mathrm{pe}[j]

    with ``signal_embedding_projection`` (Linear(P -> d)), ``xyz_embedding_projection``
    (Linear(coord_dim -> d)) of the node's coordinates c (BrainLM: the A424 region's raw X, Y, Z in
    mm), broadcast over the node's patches, and the fixed sinusoidal encoding ``pos_embedding.pe`` of
    the patch index. Module and buffer names equal BrainLM's ``vit.embeddings.*`` so its weights load
    by name. Unlike BrainLM, which runs all regions' patches as one sequence (voxel-major, CLS
    first), a FIMP node is one region: its sequence is that region's L patches, no CLS token.

    Masking for reconstruction: for a masked patch the signal term ``W_s s + b_s`` (after the
    projection) is replaced by the learned vector ``mask_token`` [d]; the coordinate and time terms
    stay, so the token still says where and when it is.

    Args:
        dim: token width d (BrainLM: 256).
        patch_size: samples per patch P (BrainLM: 20 time points).
        coord_dim: width of the node coordinates (BrainLM: 3); 0 = no coordinate term.
        max_patches: rows of the time-encoding table, the largest L accepted (BrainLM stores 5000;
            an adapter loads ``pe[:max_patches]`` or builds with ``max_patches=5000``).
        time_encoding: ``"sinusoidal"`` (BrainLM) or ``"none"``.
        remainder: what to do when T is not a multiple of P: ``"error"`` (default), ``"truncate"``
            (drop the last T mod P samples) or ``"pad"`` (pad the last patch with ``pad_value``).
        pad_value: fill value of ``remainder="pad"``.
        dropout: dropout on the tokens (BrainLM: 0.1 after the time encoding, in training).
        class_token: prepend a learned ``cls_token`` [1, 1, d] with no coordinate or time term
            (BrainLM's ``vit.embeddings.cls_token``); ``mask`` still covers the patches only.

    Shapes:
        forward ``signal`` [N, T], ``coords`` [N, coord_dim] -> tokens [N, L (+1), d], token_mask
        bool [N, L (+1)] (all True); with ``class_token`` the cls token is token 0.
    """

    def __init__(
        self,
        dim: int,
        *,
        patch_size: int = 20,
        coord_dim: int = 3,
        max_patches: int = 512,
        time_encoding: str = "sinusoidal",
        remainder: str = "error",
        pad_value: float = 0.0,
        dropout: float = 0.0,
        class_token: bool = False,
    ) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.patch_size = check_positive_int(patch_size, "patch_size")
        self.coord_dim = check_positive_int(coord_dim, "coord_dim", minimum=0)
        self.max_patches = check_positive_int(max_patches, "max_patches")
        self.time_encoding = check_choice(time_encoding, "time_encoding", ("sinusoidal", "none"))
        self.remainder = check_choice(remainder, "remainder", ("error", "truncate", "pad"))
        self.pad_value = float(pad_value)
        self.signal_embedding_projection = nn.Linear(self.patch_size, self.dim)
        self.xyz_embedding_projection = (
            nn.Linear(self.coord_dim, self.dim) if self.coord_dim > 0 else None
        )
        self.pos_embedding = (
            SinusoidalPositionalEncoding(self.dim, self.max_patches)
            if self.time_encoding == "sinusoidal"
            else None
        )
        self.mask_token = nn.Parameter(torch.empty(self.dim))
        self.cls_token = nn.Parameter(torch.empty(1, 1, self.dim)) if class_token else None
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise the projections and the mask token (the time encoding is fixed)."""
        self.signal_embedding_projection.reset_parameters()
        if self.xyz_embedding_projection is not None:
            self.xyz_embedding_projection.reset_parameters()
        nn.init.normal_(self.mask_token, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.dim}, patch_size={self.patch_size}, "
            f"coord_dim={self.coord_dim}, time_encoding={self.time_encoding!r})"
        )

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens (1 with a class token, else 0)."""
        return 0 if self.cls_token is None else 1

    @property
    def target_dim(self) -> int:
        """Reconstruction target width per patch token, the P samples of the patch."""
        return self.patch_size

    def num_patches(self, num_samples: int) -> int:
        """Tokens per node L for a signal of ``num_samples`` time points (after ``remainder``)."""
        if self.remainder == "pad":
            return -(-num_samples // self.patch_size)
        return num_samples // self.patch_size

    def patchify(self, signal: Tensor) -> Tensor:
        """Cut ``signal`` [N, T] into patches [N, L, P] (the reconstruction targets), per
        ``remainder``."""
        check_float(signal, "signal", 2, "[N, T] (nodes x time points)")
        n, t = signal.shape
        p = self.patch_size
        rest = t % p
        if rest:
            if self.remainder == "error":
                raise ShapeError(
                    f"signal length T={t} is not a multiple of patch_size={p} (remainder {rest}); "
                    f"crop or pad it, or build the tokenizer with remainder='truncate' or 'pad'."
                )
            if self.remainder == "truncate":
                signal = signal[:, : t - rest]
            else:
                signal = torch.cat([signal, signal.new_full((n, p - rest), self.pad_value)], dim=1)
        if signal.shape[1] == 0:
            raise ShapeError(f"signal has T={t} time points, fewer than one patch of {p}.")
        return signal.reshape(n, signal.shape[1] // p, p)  # explicit L: N may be 0

    def forward(
        self, signal: Tensor, coords: Tensor | None = None, *, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Tokenize node signals.

        Args:
            signal: [N, T] one time series per node (BrainLM: robust-scaled BOLD, T = 200).
            coords: [N, coord_dim] node coordinates (BrainLM: region centroid X, Y, Z in mm);
                required when ``coord_dim > 0``.
            mask: optional bool [N, L], True = patch hidden for reconstruction (its signal term
                becomes ``mask_token``).

        Returns:
            ``(tokens [N, L (+1), d], token_mask bool [N, L (+1)])``.
        """
        patches = self.patchify(signal)
        check_finite(signal, "signal")
        n, length, _ = patches.shape
        if self.pos_embedding is not None and length > self.max_patches:
            raise ShapeError(
                f"signal gives {length} patches but the time encoding has max_patches="
                f"{self.max_patches} rows; build the tokenizer with max_patches >= {length}."
            )
        weight = self.signal_embedding_projection.weight
        tokens = self.signal_embedding_projection(patches.to(weight.dtype))
        if mask is not None:
            check_bool_mask(mask, (n, length), "mask", "one entry per node and time patch")
            tokens = torch.where(mask.to(tokens.device).unsqueeze(-1), self.mask_token, tokens)
        if self.xyz_embedding_projection is not None:
            if coords is None:
                raise MissingCoordinatesError(
                    f"coords [N, {self.coord_dim}] are required (e.g. the regions' X, Y, Z in mm); "
                    "pass them, or build the tokenizer with coord_dim=0 to drop the term."
                )
            check_float(coords, "coords", 2, f"[N, {self.coord_dim}]")
            if tuple(coords.shape) != (n, self.coord_dim):
                raise MissingCoordinatesError(
                    f"coords must have shape ({n}, {self.coord_dim}) (one row per node of signal), "
                    f"got {tuple(coords.shape)}."
                )
            check_finite(coords, "coords")
            tokens = tokens + self.xyz_embedding_projection(coords.to(weight.dtype)).unsqueeze(1)
        elif coords is not None:
            raise ShapeError(
                "coords were given but the tokenizer has coord_dim=0; build it with "
                f"coord_dim={coords.shape[-1]} to use them."
            )
        if self.pos_embedding is not None:
            tokens = tokens + self.pos_embedding(length).to(tokens.dtype)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(n, -1, -1).to(tokens.dtype), tokens], dim=1)
        token_mask = torch.ones(n, tokens.shape[1], dtype=torch.bool, device=tokens.device)
        return self.dropout(tokens), token_mask
