"""Gene tokenizer: one token per selected gene = gene-identity embedding + value encoding (scGPT)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fimp.errors import ConfigError, FIMPError, ShapeError, UnknownGeneError
from fimp.tokenizers._common import (
    check_bool_mask,
    check_choice,
    check_finite,
    check_float,
    check_positive_int,
)

__all__ = ["ContinuousValueEncoder", "DuplicateGeneError", "GeneTokenizer", "scgpt_binning"]

_VALUE_ENCODINGS = ("continuous", "binned", "binned_continuous", "linear")
_SELECTIONS = ("panel", "expressed", "top_k", "sample")


class DuplicateGeneError(FIMPError, ValueError):
    """A gene name occurs twice in a vocabulary or in the column names of an expression matrix."""


class ContinuousValueEncoder(nn.Module):
    """scGPT's ``ContinuousValueEncoder``: a scalar value -> a d-vector.

    ``dropout(norm(linear2(relu(linear1(min(x, max_value))))))`` with ``linear1: 1 -> d``,
    ``linear2: d -> d`` and ``norm`` a LayerNorm (eps 1e-5). Sub-module names match upstream
    (``linear1``, ``linear2``, ``norm``) so scGPT's ``value_encoder.*`` weights load by name.
    """

    def __init__(self, dim: int, *, dropout: float = 0.0, max_value: float | None = 512.0) -> None:
        super().__init__()
        self.linear1 = nn.Linear(1, dim)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.max_value = max_value

    def reset_parameters(self) -> None:
        """Re-initialise the two linear layers and the LayerNorm."""
        self.linear1.reset_parameters()
        self.linear2.reset_parameters()
        self.norm.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """``x``: [...] values (any unit) -> [..., d]."""
        x = x.unsqueeze(-1)
        if self.max_value is not None:
            x = torch.clamp(x, max=self.max_value)
        return self.dropout(self.norm(self.linear2(self.activation(self.linear1(x)))))


class CategoryValueEncoder(nn.Module):
    """scGPT's ``CategoryValueEncoder``: a bin index -> ``enc_norm(embedding(bin))`` ([..., d])."""

    def __init__(self, n_bins: int, dim: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_bins, dim)
        self.enc_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        """Re-initialise the embedding table and the LayerNorm."""
        self.embedding.reset_parameters()
        self.enc_norm.reset_parameters()

    def forward(self, bins: Tensor) -> Tensor:
        """``bins``: long [...] in [0, n_bins) -> [..., d]."""
        return self.dropout(self.enc_norm(self.embedding(bins)))


def _numpy_linspace01(num: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``np.linspace(0, 1, num)`` bit for bit: ``arange(num) * (1 / (num - 1))``, last = 1."""
    q = torch.arange(num, dtype=dtype, device=device) * (1.0 / (num - 1))
    q[-1] = 1.0
    return q


def scgpt_binning(x: Tensor, n_bins: int, *, exclude: Tensor | None = None) -> Tensor:
    """scGPT's per-cell quantile binning (``scgpt.preprocess.binning``), vectorised and deterministic.

    For each row (cell) the non-zero values that are not excluded define ``n_bins - 1`` bin edges,
    ``np.quantile(values, np.linspace(0, 1, n_bins - 1))`` (linear interpolation, reproduced
    operation for operation in float64). Each non-zero value v gets the bin
    ``left = #edges <= v`` (``np.digitize``) when it lies strictly between edges; zeros stay bin 0.
    The smallest value of a cell goes to bin 1, the largest to bin ``n_bins - 1``.

    Ties: when v equals one or more edges, scGPT draws uniformly from ``right+1 .. left`` with
    ``right = #edges < v`` (``np.random.rand``: not reproducible). Here v gets
    ``(left + right + 1) // 2``, the expected value of scGPT's draw rounded down. For a cell whose
    non-zero values are distinct this equals scGPT's result exactly.

    Args:
        x: [N, G] non-negative expression (any unit; counts or log-normalised).
        n_bins: number of bins including bin 0 (scGPT: 51), >= 3.
        exclude: optional bool [N, G]; True entries are left out of the edge computation (e.g.
            entries masked for reconstruction, so their values cannot leak through the edges).
            Their own bins are still computed against the edges of the remaining values.

    Returns:
        long [N, G] bin indices in [0, n_bins - 1]; rows without non-zero values are all 0.
    """
    values = x.to(torch.float64)
    nonzero = values != 0
    present = nonzero if exclude is None else nonzero & ~exclude
    n = present.sum(dim=1)
    sorted_vals = torch.where(present, values, torch.inf).sort(dim=1).values
    q = _numpy_linspace01(n_bins - 1, torch.float64, values.device)
    nf = n.clamp(min=1).to(torch.float64).unsqueeze(1)
    # numpy's _compute_virtual_index (alpha = beta = 1), _get_indexes, _get_gamma and _lerp
    virtual = nf * q + (1.0 + q * (1.0 - 1.0 - 1.0)) - 1.0
    previous = torch.floor(virtual)
    gamma = virtual - previous
    last = (nf - 1.0).expand_as(virtual)
    above = virtual >= last
    previous = torch.where(above, last, previous.clamp(min=0.0)).long()
    following = torch.where(above, last, previous.to(torch.float64) + 1.0).long()
    a = sorted_vals.gather(1, previous)
    b = sorted_vals.gather(1, following)
    diff = b - a
    edges = torch.where(gamma >= 0.5, b - diff * (1.0 - gamma), a + diff * gamma)
    edges = torch.where((n > 0).unsqueeze(1), edges, 0.0).contiguous()
    left = torch.searchsorted(edges, values.contiguous(), right=True)
    right = torch.searchsorted(edges, values.contiguous(), right=False)
    bins = torch.div(left + right + 1, 2, rounding_mode="floor")
    return torch.where(nonzero & (n > 0).unsqueeze(1), bins, 0)


class GeneTokenizer(nn.Module):
    r"""One token per selected gene: gene identity + expression value (scGPT-aligned).

    For a cell with expression row x over named genes, each selected gene g becomes

    .. math::
        h_g = \mathrm{gene\_norm}(P\,E[\mathrm{id}(g)]) + \mathrm{value\_encoder}(v_g)

    with ``E`` = ``gene_embedding`` (nn.Embedding over the vocabulary), ``P`` = ``gene_projection``
    (a Linear(e -> d) when fixed ``gene_embeddings`` such as GenePT vectors are given, else the
    identity), ``gene_norm`` a LayerNorm (scGPT's ``encoder.enc_norm``) or the identity, and
    ``v_g`` the value seen by ``value_encoder``:

    - ``"continuous"``: the raw value, through scGPT's `ContinuousValueEncoder`
      (Linear(1->d) -> ReLU -> Linear(d->d) -> LayerNorm -> dropout; values clamped at ``max_value``);
    - ``"binned"``: the per-cell quantile bin (`scgpt_binning`) through scGPT's
      ``CategoryValueEncoder`` (``nn.Embedding(n_bins, d)`` -> LayerNorm);
    - ``"binned_continuous"``: the bin index as a float through the `ContinuousValueEncoder`; this is
      what the released scGPT checkpoints use (``input_style="binned"``,
      ``input_emb_style="continuous"``);
    - ``"linear"``: the raw value times a learned per-gene vector, ``v_g W[\mathrm{id}(g)]``
      (``value_weight``, an ``nn.Embedding`` [V, d]; the gene term acts as the per-gene bias). This
      is FT-Transformer's numerical-feature tokenizer: the token is linear in the value, so
      magnitudes survive (the continuous encoder's LayerNorm removes the scale of its input's
      encoding) and the mean of a cell's tokens is a linear function of its expression vector.

    Binning runs per cell over all columns that map to the vocabulary, before token selection (as
    scGPT's collator does), and needs non-negative expression. No position encoding is added.

    Token selection (per cell, over the columns that map to the vocabulary):

    - ``"panel"``: every mapped column, in column order (L = number of mapped columns; zero values
      are real tokens);
    - ``"expressed"``: every mapped column with value > 0, in column order (scGPT's cell
      tokenization without the length cap); L = the largest count in the batch (at least 1);
    - ``"top_k"``: the ``k`` largest values > 0, ties broken by column order (earlier first);
    - ``"sample"``: ``k`` columns with value > 0 drawn uniformly without replacement with the
      ``generator`` passed to `forward` (the same seed gives the same tokens).

    For top_k / sample, L = min(k, mapped columns). Except for the panel, the selected tokens are
    kept in column order and cells with fewer than L selected genes are padded at the end (``token_mask`` False, token
    = 0, ``index`` = -1). Selection looks at the true values, also of entries masked for
    reconstruction (as scGPT does: the identity of a masked gene is visible, its value is not).

    Masking for reconstruction (``mask`` in `forward`, per column of ``x``): the value encoding of a
    masked entry's token is replaced by the learned vector ``mask_embedding`` [d]; its gene identity
    term stays. Masked entries are also left out of the binning edges, so no value of a masked entry
    reaches the tokens.

    Args:
        genes: the vocabulary, one name per embedding row (row i = ``genes[i]``). For scGPT pass the
            ``vocab.json`` tokens ordered by index, specials included.
        dim: token width d.
        value_encoding: ``"continuous"`` | ``"binned"`` | ``"binned_continuous"`` (above).
        n_bins: number of bins including bin 0 (scGPT: 51).
        selection: ``"panel"`` | ``"expressed"`` | ``"top_k"`` | ``"sample"`` (above).
            ``"sample"`` with k = 1200 is scGPT's cap (``max_length``) on long cells.
        k: tokens per cell for top_k / sample (required there, not allowed otherwise).
        unknown: ``"error"`` raises `UnknownGeneError` for column names missing from the
            vocabulary; ``"drop"`` ignores those columns.
        padding_idx: passed to the ``nn.Embedding`` (that row gets no gradient).
        gene_embeddings: optional fixed gene vectors [V, e] (row i for ``genes[i]``; e.g. GenePT),
            copied into ``gene_embedding`` and followed by ``gene_projection = Linear(e, d)``.
        freeze_gene_embeddings: keep ``gene_embedding`` fixed (requires_grad False).
        norm_gene_embedding: apply a LayerNorm to the gene term (scGPT's ``enc_norm``).
        dropout: dropout inside the value encoder (scGPT: 0.2 in training).
        max_value: clamp of the continuous encoder's input (scGPT: 512); None disables it.
        cls_token: optional vocabulary entry (e.g. ``"<cls>"``) prepended to every cell as token 0
            (``index`` -1, never masked), valued ``cls_value``.
        cls_value: value of the cls token (scGPT: ``pad_value`` = -2); for ``"binned"`` a bin index.

    Shapes:
        forward ``x`` [N, G] -> tokens [N, L (+1 with cls), d], token_mask bool [N, L (+1)] (True =
        real token), and with ``return_index=True`` index long [N, L (+1)]: the column of ``x`` each
        token came from (-1 for padding and the cls token), to gather reconstruction targets.
    """

    def __init__(
        self,
        genes: Sequence[str],
        dim: int,
        *,
        value_encoding: str = "continuous",
        n_bins: int = 51,
        selection: str = "panel",
        k: int | None = None,
        unknown: str = "error",
        padding_idx: int | None = None,
        gene_embeddings: Tensor | None = None,
        freeze_gene_embeddings: bool = False,
        norm_gene_embedding: bool = False,
        dropout: float = 0.0,
        max_value: float | None = 512.0,
        cls_token: str | None = None,
        cls_value: float = -2.0,
    ) -> None:
        super().__init__()
        if isinstance(genes, str) or not isinstance(genes, Sequence):
            raise ConfigError(
                f"genes must be a sequence of gene names (the vocabulary), got {type(genes).__name__}."
            )
        genes = tuple(genes)
        if not genes:
            raise ConfigError("genes (the vocabulary) is empty; pass at least one gene name.")
        if not all(isinstance(g, str) for g in genes):
            raise ConfigError("every entry of genes (the vocabulary) must be a str.")
        vocab: dict[str, int] = {}
        duplicates = []
        for i, g in enumerate(genes):
            if g in vocab:
                duplicates.append(g)
            vocab.setdefault(g, i)
        if duplicates:
            raise DuplicateGeneError(
                f"the vocabulary lists {len(duplicates)} gene(s) twice, e.g. {duplicates[:5]}; "
                "each name must name exactly one embedding row."
            )
        self.genes = genes
        self._vocab = vocab
        self.dim = check_positive_int(dim, "dim")
        self.value_encoding = check_choice(value_encoding, "value_encoding", _VALUE_ENCODINGS)
        self.n_bins = check_positive_int(n_bins, "n_bins", minimum=3)
        self.selection = check_choice(selection, "selection", _SELECTIONS)
        if self.selection in ("panel", "expressed"):
            if k is not None:
                raise ConfigError(
                    f"k is only used by selection='top_k' or 'sample'; selection="
                    f"{self.selection!r} keeps every mapped (expressed) gene. Subset the columns "
                    "of x to choose a smaller panel."
                )
        else:
            k = check_positive_int(k, "k")
        self.k = k
        self.unknown = check_choice(unknown, "unknown", ("error", "drop"))
        if padding_idx is not None and not (0 <= padding_idx < len(genes)):
            raise ConfigError(f"padding_idx must be in [0, {len(genes)}), got {padding_idx}.")
        self.padding_idx = padding_idx
        self.freeze_gene_embeddings = bool(freeze_gene_embeddings)
        self.max_value = max_value

        if gene_embeddings is not None:
            check_float(
                gene_embeddings, "gene_embeddings", 2, "[V, e] (one row per vocabulary gene)"
            )
            if gene_embeddings.shape[0] != len(genes):
                raise ShapeError(
                    f"gene_embeddings has {gene_embeddings.shape[0]} rows but the vocabulary has "
                    f"{len(genes)} genes; row i must be the vector of genes[i]."
                )
            check_finite(gene_embeddings, "gene_embeddings")
            emb_dim = int(gene_embeddings.shape[1])
            self.gene_embedding = nn.Embedding(len(genes), emb_dim, padding_idx=padding_idx)
            self.gene_projection: nn.Module = nn.Linear(emb_dim, self.dim)
            # kept (not saved) so reset_parameters can restore the given vectors
            self.register_buffer(
                "_initial_gene_embeddings", gene_embeddings.detach().clone(), persistent=False
            )
        else:
            self.gene_embedding = nn.Embedding(len(genes), self.dim, padding_idx=padding_idx)
            self.gene_projection = nn.Identity()
            self._initial_gene_embeddings: Tensor | None = None
        self.gene_embedding.weight.requires_grad_(not self.freeze_gene_embeddings)
        self.gene_norm: nn.Module = nn.LayerNorm(self.dim) if norm_gene_embedding else nn.Identity()

        self.value_weight: nn.Embedding | None = None
        if self.value_encoding == "binned":
            self.value_encoder: nn.Module = CategoryValueEncoder(
                self.n_bins, self.dim, dropout=dropout
            )
        elif self.value_encoding == "linear":
            self.value_weight = nn.Embedding(len(genes), self.dim)
            self.value_encoder = nn.Dropout(dropout)
        else:
            self.value_encoder = ContinuousValueEncoder(
                self.dim, dropout=dropout, max_value=max_value
            )
        self.mask_embedding = nn.Parameter(torch.empty(self.dim))

        if cls_token is not None:
            if cls_token not in vocab:
                raise UnknownGeneError(
                    f"cls_token {cls_token!r} is not in the vocabulary; add it to genes."
                )
            if self.value_encoding == "binned" and not (
                float(cls_value).is_integer() and 0 <= cls_value < self.n_bins
            ):
                raise ConfigError(
                    f"with value_encoding='binned' cls_value must be a bin index in "
                    f"[0, {self.n_bins}), got {cls_value}."
                )
        self.cls_token = cls_token
        self.cls_value = float(cls_value)
        self._map_cache: tuple[tuple[str, ...], Tensor, Tensor] | None = None
        self.reset_parameters()

    @property
    def vocab_size(self) -> int:
        """Number of vocabulary entries V."""
        return len(self.genes)

    def reset_parameters(self) -> None:
        """Re-initialise all learnable parameters (given gene vectors are copied back in)."""
        with torch.no_grad():
            if self._initial_gene_embeddings is not None:
                self.gene_embedding.weight.copy_(self._initial_gene_embeddings)
            else:
                self.gene_embedding.reset_parameters()
        if isinstance(self.gene_projection, nn.Linear):
            self.gene_projection.reset_parameters()
        if isinstance(self.gene_norm, nn.LayerNorm):
            self.gene_norm.reset_parameters()
        if self.value_weight is not None:
            self.value_weight.reset_parameters()
        else:
            self.value_encoder.reset_parameters()
        nn.init.normal_(self.mask_embedding, std=0.02)

    def __repr__(self) -> str:
        extra = f", k={self.k}" if self.k is not None else ""
        return (
            f"{self.__class__.__name__}({self.vocab_size}, {self.dim}, "
            f"value_encoding={self.value_encoding!r}, selection={self.selection!r}{extra})"
        )

    def gene_ids(self, genes: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Map column names to vocabulary ids.

        Returns ``(columns, ids)``, two long tensors [G'] (CPU): the kept column positions of the
        expression matrix, in order, and their vocabulary rows. Unknown names raise
        `UnknownGeneError` (``unknown="error"``) or are left out (``unknown="drop"``).
        """
        key = tuple(genes)
        if self._map_cache is not None and self._map_cache[0] == key:
            return self._map_cache[1], self._map_cache[2]
        columns: list[int] = []
        ids: list[int] = []
        missing: list[str] = []
        seen: set[str] = set()
        duplicates: list[str] = []
        for col, g in enumerate(key):
            if g in seen:
                duplicates.append(g)
            seen.add(g)
            row = self._vocab.get(g)
            if row is None:
                missing.append(g)
            else:
                columns.append(col)
                ids.append(row)
        if duplicates:
            raise DuplicateGeneError(
                f"{len(duplicates)} column name(s) occur more than once, e.g. {duplicates[:5]}; "
                "aggregate or drop the duplicated columns first."
            )
        if missing and self.unknown == "error":
            shown = ", ".join(repr(g) for g in missing[:20])
            more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
            raise UnknownGeneError(
                f"{len(missing)} of {len(key)} gene(s) are not in the tokenizer's vocabulary "
                f"({self.vocab_size} genes): {shown}{more}. Map them to the vocabulary's naming "
                "(e.g. symbols vs Ensembl ids), or build the tokenizer with unknown='drop' to "
                "ignore them."
            )
        if not columns:
            raise UnknownGeneError(
                f"none of the {len(key)} column name(s) is in the tokenizer's vocabulary "
                f"(e.g. {list(key[:5])}); check that x's gene names use the vocabulary's naming."
            )
        result = (torch.tensor(columns, dtype=torch.long), torch.tensor(ids, dtype=torch.long))
        self._map_cache = (key, *result)
        return result

    def _select(self, values: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Per-cell selection over the mapped columns: (sel long [N, L] with -1 pads, valid)."""
        n, g = values.shape
        device = values.device
        if self.selection == "panel":
            sel = torch.arange(g, device=device).expand(n, g)
            return sel, torch.ones(n, g, dtype=torch.bool, device=device)
        candidate = values > 0
        if self.selection == "expressed":
            length = max(1, int(candidate.sum(dim=1).max())) if n else 1
            sel = torch.where(candidate, torch.arange(g, device=device), g).sort(dim=1).values
            sel = sel[:, :length]
            valid = sel < g
            return torch.where(valid, sel, -1), valid
        assert self.k is not None
        length = min(self.k, g)
        if self.selection == "top_k":
            key = torch.where(candidate, values, -torch.inf)
            order = torch.sort(key, dim=1, descending=True, stable=True).indices[:, :length]
        else:
            gen_device = generator.device if generator is not None else torch.device("cpu")
            noise = torch.rand(n, g, generator=generator, device=gen_device).to(device)
            key = torch.where(candidate, noise, 2.0)
            order = torch.sort(key, dim=1, stable=True).indices[:, :length]
        valid = candidate.gather(1, order)
        sel = torch.where(valid, order, g).sort(dim=1).values
        valid = sel < g
        return torch.where(valid, sel, -1), valid

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the gene tokens (1 with a cls token, else 0)."""
        return 0 if self.cls_token is None else 1

    @property
    def target_dim(self) -> int:
        """Reconstruction target width per token, one expression value."""
        return 1

    @staticmethod
    def gather_values(x: Tensor, index: Tensor, *, fill: float = 0.0) -> Tensor:
        """Per-token values of ``x`` [N, G] at ``index`` [N, L] (from ``return_index=True``):
        [N, L], ``fill`` where index is -1 (padding / cls). Gather ``mask`` the same way to find
        the tokens to reconstruct (``gather_values(mask, index, fill=False)``)."""
        picked = x.gather(1, index.clamp(min=0))
        return torch.where(index >= 0, picked, torch.tensor(fill, dtype=x.dtype, device=x.device))

    def forward(
        self,
        x: Tensor,
        genes: Sequence[str] | None = None,
        *,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
        return_index: bool = False,
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
        """Tokenize cells.

        Args:
            x: [N, G] expression, one row per cell (non-negative for the binned encodings).
            genes: G names of x's columns (vocabulary names); None = the columns are the
                vocabulary itself, in order (G = V).
            mask: optional bool [N, G], True = entry hidden for reconstruction: its token's value
                term becomes ``mask_embedding`` and the entry is left out of the binning edges.
            generator: random source of ``selection="sample"`` (the global RNG if None).
            return_index: also return the source column of every token.

        Returns:
            ``(tokens [N, L, d], token_mask bool [N, L])``, plus ``index`` long [N, L] (column of x,
            -1 for padding / cls) when ``return_index``.
        """
        check_float(x, "x", 2, "[N, G] (cells x genes)")
        if genes is None:
            if x.shape[1] != self.vocab_size:
                raise ShapeError(
                    f"genes=None means x's columns are the vocabulary in order, but x has "
                    f"{x.shape[1]} columns and the vocabulary {self.vocab_size} genes; pass genes."
                )
            genes = self.genes
        if isinstance(genes, str) or len(genes) != x.shape[1]:
            raise ShapeError(
                f"genes must name every column of x: x has {x.shape[1]} columns, "
                f"got {'a str' if isinstance(genes, str) else len(genes)} names."
            )
        check_finite(x, "x")
        n = x.shape[0]
        if mask is not None:
            check_bool_mask(mask, tuple(x.shape), "mask", "one entry per value of x")
            mask = mask.to(x.device)
        columns, ids = self.gene_ids(genes)
        columns = columns.to(x.device)
        ids = ids.to(x.device)
        full = columns.numel() == x.shape[1]
        xs = x if full else x.index_select(1, columns)
        ms = None if mask is None else (mask if full else mask.index_select(1, columns))

        if self.value_encoding in ("continuous", "linear"):
            values = xs
        else:
            if bool((xs < 0).any()):
                raise ShapeError(
                    f"value_encoding={self.value_encoding!r} bins non-negative expression (counts "
                    f"or log-normalised), but x has negative values (min {float(xs.min()):.4g}); "
                    "pass unscaled data or use value_encoding='continuous'."
                )
            values = scgpt_binning(xs, self.n_bins, exclude=ms)

        sel, valid = self._select(xs, generator)
        selc = sel.clamp(min=0)
        token_ids = ids[selc]
        token_values = values.gather(1, selc)
        weight_dtype = self.mask_embedding.dtype
        if self.value_encoding == "binned":
            value_term = self.value_encoder(token_values)
        elif self.value_weight is not None:
            value_term = self.value_encoder(
                token_values.to(weight_dtype).unsqueeze(-1) * self.value_weight(token_ids)
            )
        else:
            value_term = self.value_encoder(token_values.to(weight_dtype))
        if ms is not None:
            hidden = ms.gather(1, selc) & valid
            value_term = torch.where(hidden.unsqueeze(-1), self.mask_embedding, value_term)
        gene_term = self.gene_norm(self.gene_projection(self.gene_embedding(token_ids)))
        tokens = (gene_term + value_term) * valid.unsqueeze(-1).to(weight_dtype)
        index = torch.where(valid, columns[selc], -1)

        if self.cls_token is not None:
            cls_id = torch.tensor([self._vocab[self.cls_token]], device=x.device)
            cls_gene = self.gene_norm(self.gene_projection(self.gene_embedding(cls_id)))
            cls_val = torch.full((1,), self.cls_value, device=x.device)
            if self.value_encoding == "binned":
                cls_vec = cls_gene + self.value_encoder(cls_val.long())
            elif self.value_weight is not None:
                cls_vec = cls_gene + cls_val.to(weight_dtype)[:, None] * self.value_weight(cls_id)
            else:
                cls_vec = cls_gene + self.value_encoder(cls_val.to(weight_dtype))
            tokens = torch.cat([cls_vec.expand(n, 1, self.dim), tokens], dim=1)
            valid = torch.cat([valid.new_ones(n, 1), valid], dim=1)
            index = torch.cat([index.new_full((n, 1), -1), index], dim=1)
        if return_index:
            return tokens, valid, index
        return tokens, valid
