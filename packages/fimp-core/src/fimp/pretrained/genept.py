"""GenePT gene embeddings (Chen & Zou 2023) as fixed gene-identity embeddings.

Upstream (github.com/yiqunchen/GenePT, data on Zenodo records 10030426 / 10833191) ships a
*pickled* ``dict`` ``{gene_symbol: vector}``: the vectors are numpy float64 arrays of shape (1536,)
(``GPT_3_5_gene_embeddings.pickle``) or lists of Python floats (the v2 files; 3072-d for
``text-embedding-3-large``). Genes without an NCBI summary hold zero vectors.

A pickle can run arbitrary code when loaded, so this module never calls :func:`pickle.load`. It
uses a restricted unpickler that resolves only the globals the two real formats need (numpy's
array-rebuild function, ``numpy.ndarray`` and ``numpy.dtype``; plus numpy's scalar and
protocol-5 buffer rebuilders, checked to build numeric data only) and refuses every other global
(``posix.system``, ``builtins.eval``, ``subprocess.Popen``, ...) with a :class:`UnsafePickleError`
before anything runs. :func:`convert_genept` writes the same content as a pickle-free ``.npz``
(``genes`` + ``embeddings``), which :func:`read_genept` also reads.

FIMP-GenePT is FIMP-base (a from-scratch cross-attention message creator) whose gene tokenizer
uses the GenePT vectors as a frozen gene-identity table followed by a learned projection to the
token width (design §1).
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from fimp.errors import CheckpointError, ConfigError, UnknownGeneError
from fimp.models import FIMP, register_model
from fimp.nn import CrossAttention
from fimp.pretrained._files import sha256_of
from fimp.pretrained.two_stream import PretrainedComponents
from fimp.tokenizers.gene import GeneTokenizer

__all__ = [
    "GenePTEmbeddings",
    "UnsafePickleError",
    "convert_genept",
    "fimp_genept",
    "genept_tokenizer",
    "load_genept",
    "read_genept",
]

#: Dimensions of the published GenePT files (ada-002 / text-embedding-3-large).
GENEPT_DIMS = (1536, 3072)
_MAX_FILE_BYTES = 4 * 1024**3


class UnsafePickleError(CheckpointError):
    """A pickle references a global that is not on the allowlist; nothing in it was executed."""


def _numeric_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind not in "fiu" or dt.hasobject:
        raise UnsafePickleError(
            f"the pickle builds a numpy object of dtype {dt!s}; GenePT files hold only numeric "
            "vectors. Convert the file with a trusted tool or supply a .npz (genes + embeddings)."
        )
    return dt


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    # numpy's ndarray.__reduce__ rebuilds as _reconstruct(ndarray, (0,), b"b") + __setstate__.
    if subtype is not np.ndarray:
        raise UnsafePickleError(
            "the pickle rebuilds a numpy array subclass; only ndarray is allowed"
        )
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _safe_scalar(dtype: Any, data: Any = None) -> Any:
    dt = _numeric_dtype(dtype)
    if not isinstance(data, bytes) or len(data) != dt.itemsize:
        raise UnsafePickleError("malformed numpy scalar in the pickle")
    return np.frombuffer(data, dtype=dt)[0]


def _safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    # protocol-5 form of ndarray.__reduce_ex__ (numpy._core.numeric._frombuffer)
    dt = _numeric_dtype(dtype)
    if not isinstance(buf, bytes | bytearray | memoryview):
        raise UnsafePickleError("malformed numpy buffer in the pickle")
    arr = np.frombuffer(bytes(buf), dtype=dt)
    return arr.reshape(tuple(shape), order="F" if order == "F" else "C").copy()


def _safe_codecs_encode(obj: Any, encoding: Any = "utf-8") -> bytes:
    # protocol <= 2 stores bytes as _codecs.encode(str, "latin1")
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("the pickle calls _codecs.encode with unexpected arguments")
    return obj.encode("latin1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy.core.multiarray", "scalar"): _safe_scalar,
    ("numpy._core.multiarray", "scalar"): _safe_scalar,
    ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _safe_codecs_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle the global {module}.{name}: a GenePT file needs only numpy "
                "arrays, lists and floats, and this name could execute code. Do not load this file; "
                "if it is genuine, convert it to .npz in a sandbox (fimp.pretrained.genept."
                "convert_genept)."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("the pickle uses persistent ids, which GenePT files never do")


@dataclass(frozen=True)
class GenePTEmbeddings:
    """GenePT gene-identity vectors.

    Attributes:
        genes: gene symbols, length V, unique, in file order.
        vectors: float32 tensor [V, e] (e = 1536 or 3072 for the published files). Rows may be zero
            (genes without an NCBI summary upstream); nothing here divides by a norm.
    """

    genes: tuple[str, ...]
    vectors: Tensor

    @property
    def dim(self) -> int:
        """Embedding width e."""
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.genes)

    def index(self) -> dict[str, int]:
        """Map gene symbol -> row of :attr:`vectors`."""
        return {g: i for i, g in enumerate(self.genes)}

    def lookup(
        self,
        genes: Sequence[str],
        *,
        missing: Literal["error", "drop", "zero"] = "error",
    ) -> tuple[Tensor, list[str]]:
        """Rows for ``genes``.

        Args:
            genes: gene symbols (e.g. ``adata.var_names``), length G.
            missing: what to do with genes GenePT does not have: ``"error"`` raises
                :class:`~fimp.errors.UnknownGeneError` listing them, ``"drop"`` leaves them out,
                ``"zero"`` gives them a zero vector (as upstream does for genes without a summary).

        Returns:
            ``(vectors [G', e], kept_genes)`` with G' = G unless ``missing="drop"``.
        """
        idx = self.index()
        unknown = [g for g in genes if g not in idx]
        if unknown and missing == "error":
            raise UnknownGeneError(
                f"{len(unknown)} of {len(genes)} genes are not in the GenePT table "
                f"({len(self.genes)} genes): {_preview(unknown)}. Map them to GenePT's gene "
                "symbols, or pass missing='drop' (leave them out) or missing='zero'."
            )
        if missing not in ("error", "drop", "zero"):
            raise ConfigError(f"missing must be 'error', 'drop' or 'zero', got {missing!r}")
        if missing == "drop":
            kept = [g for g in genes if g in idx]
            rows = torch.tensor([idx[g] for g in kept], dtype=torch.long)
            return self.vectors.index_select(0, rows), kept
        out = torch.zeros(len(genes), self.dim, dtype=self.vectors.dtype)
        for i, g in enumerate(genes):
            if g in idx:
                out[i] = self.vectors[idx[g]]
        return out, list(genes)


def _preview(items: Sequence[str], n: int = 20) -> str:
    shown = ", ".join(repr(s) for s in items[:n])
    return shown + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


def _to_vector(gene: str, value: Any, dim: int | None) -> np.ndarray:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "fiu":
            raise CheckpointError(f"GenePT entry {gene!r} has dtype {value.dtype}; expected floats")
        vec = value.astype(np.float32).reshape(-1)
        if value.ndim > 2 or (value.ndim == 2 and 1 not in value.shape):
            raise CheckpointError(f"GenePT entry {gene!r} has shape {value.shape}; expected (e,)")
    elif isinstance(value, list | tuple):
        if not all(
            isinstance(v, float | int | np.floating | np.integer) and not isinstance(v, bool)
            for v in value
        ):
            raise CheckpointError(f"GenePT entry {gene!r} is a list with non-numeric items")
        vec = np.asarray(value, dtype=np.float64).astype(np.float32)
    else:
        raise CheckpointError(
            f"GenePT entry {gene!r} is a {type(value).__name__}; expected a numpy array or a list "
            "of floats"
        )
    if dim is not None and vec.shape[0] != dim:
        raise CheckpointError(
            f"GenePT entry {gene!r} has {vec.shape[0]} values, expected {dim} (all entries must "
            "have the same length; pass dim= to state the expected width)"
        )
    if not np.all(np.isfinite(vec)):
        raise CheckpointError(f"GenePT entry {gene!r} holds NaN or inf values")
    return vec


def _from_mapping(obj: Any, dim: int | None, source: str) -> GenePTEmbeddings:
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{source} holds a {type(obj).__name__}; a GenePT file is a dict gene -> vector"
        )
    if len(obj) == 0:
        raise CheckpointError(f"{source} holds an empty dict; no gene embeddings to load")
    genes: list[str] = []
    rows: list[np.ndarray] = []
    for gene, value in obj.items():
        if not isinstance(gene, str):
            raise CheckpointError(
                f"{source} has a key of type {type(gene).__name__} ({gene!r}); keys must be gene "
                "symbols (str)"
            )
        vec = _to_vector(gene, value, dim)
        dim = vec.shape[0]
        genes.append(gene)
        rows.append(vec)
    return GenePTEmbeddings(tuple(genes), torch.from_numpy(np.stack(rows)))


def _read_npz(path: Path, dim: int | None) -> GenePTEmbeddings:
    with np.load(path, allow_pickle=False) as z:
        key = "embeddings" if "embeddings" in z.files else "matrix" if "matrix" in z.files else None
        if "genes" not in z.files or key is None:
            raise CheckpointError(
                f"{path} must hold arrays 'genes' [V] and 'embeddings' [V, e] (found {z.files})"
            )
        genes = z["genes"]
        mat = z[key]
    if genes.dtype.kind != "U" or genes.ndim != 1:
        raise CheckpointError(f"{path}: 'genes' must be a 1-D str array, got {genes.dtype}")
    if mat.ndim != 2 or mat.shape[0] != genes.shape[0] or mat.dtype.kind not in "fiu":
        raise CheckpointError(
            f"{path}: '{key}' must be numeric [V={genes.shape[0]}, e], got {mat.dtype} {mat.shape}"
        )
    if dim is not None and mat.shape[1] != dim:
        raise CheckpointError(f"{path}: embeddings have width {mat.shape[1]}, expected {dim}")
    gene_list = [str(g) for g in genes]
    if len(set(gene_list)) != len(gene_list):
        raise CheckpointError(f"{path}: 'genes' has duplicates")
    mat32 = mat.astype(np.float32)
    if not np.all(np.isfinite(mat32)):
        raise CheckpointError(f"{path}: embeddings hold NaN or inf values")
    return GenePTEmbeddings(tuple(gene_list), torch.from_numpy(mat32))


def read_genept(path: str | os.PathLike[str], *, dim: int | None = None) -> GenePTEmbeddings:
    """Read a GenePT embedding file without executing anything in it.

    Args:
        path: an upstream GenePT pickle (``GPT_3_5_gene_embeddings.pickle``,
            ``GenePT_gene_embedding_ada_text.pickle``, ...; dict gene -> ndarray or list of floats),
            or a ``.npz`` written by :func:`convert_genept` (arrays ``genes`` [V] and
            ``embeddings`` [V, e]; ``matrix`` is accepted as a synonym of ``embeddings``).
        dim: expected width e (1536 for ada-002, 3072 for text-embedding-3-large); ``None`` takes it
            from the first entry and requires every other entry to match.

    Returns:
        :class:`GenePTEmbeddings` with float32 vectors [V, e].

    Raises:
        UnsafePickleError: the pickle references any global outside numpy's array rebuilders
            (it is refused before anything runs).
        CheckpointError: the file is missing or not a dict of str -> equal-length finite vectors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"GenePT file {path} does not exist")
    if path.suffix == ".npz":
        return _read_npz(path, dim)
    size = path.stat().st_size
    if size > _MAX_FILE_BYTES:
        raise CheckpointError(f"{path} is {size} bytes; larger than any GenePT file")
    try:
        with open(path, "rb") as fh:
            obj = _RestrictedUnpickler(fh).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path} is not a readable GenePT pickle: {exc}") from exc
    return _from_mapping(obj, dim, str(path))


def convert_genept(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    dim: int | None = None,
) -> Path:
    """Convert a GenePT pickle to a pickle-free ``.npz`` (``genes`` [V] str, ``embeddings`` [V, e]).

    The pickle is read with the same restricted unpickler as :func:`read_genept`; the output is
    written atomically (temporary file + ``os.replace``). Returns the target path.
    """
    emb = read_genept(source, dim=dim)
    target = Path(target)
    if target.suffix != ".npz":
        raise ConfigError(f"target must end in .npz, got {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, genes=np.asarray(emb.genes, dtype=str), embeddings=emb.vectors.numpy())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def genept_tokenizer(
    embeddings: GenePTEmbeddings,
    dim: int,
    *,
    genes: Sequence[str] | None = None,
    missing: Literal["error", "drop", "zero"] = "error",
    value_encoding: str = "continuous",
    n_bins: int = 51,
    selection: str = "panel",
    k: int | None = None,
    dropout: float = 0.0,
) -> tuple[GeneTokenizer, list[str]]:
    """A :class:`~fimp.tokenizers.GeneTokenizer` whose gene identity is the GenePT vector.

    Gene term of gene g: ``gene_norm(gene_projection(E[g]))`` with ``E`` the frozen GenePT table
    (``gene_embedding``, [V, e]), ``gene_projection`` a learned Linear(e -> dim) and ``gene_norm`` a
    LayerNorm; the value term is the tokenizer's value encoder (see GeneTokenizer).

    Args:
        embeddings: from :func:`read_genept`.
        dim: token width d.
        genes: the data's gene names. The vocabulary is restricted to them (a full GenePT table is
            93,800 x 1536); ``None`` keeps every GenePT gene.
        missing: data genes absent from GenePT: ``"error"`` raises
            :class:`~fimp.errors.UnknownGeneError` listing them, ``"drop"`` ignores those columns,
            ``"zero"`` gives them a zero GenePT vector (as upstream does for genes without a summary).
        value_encoding, n_bins, selection, k, dropout: passed to GeneTokenizer.

    Returns:
        ``(tokenizer, vocabulary)``; ``vocabulary`` lists the genes with a GenePT row.
    """
    if genes is None:
        if missing == "zero":
            raise ConfigError("missing='zero' needs genes= (the data's gene names) to add rows for")
        vocab, table = list(embeddings.genes), embeddings.vectors
        unknown = "error" if missing == "error" else "drop"
    else:
        table, vocab = embeddings.lookup(list(genes), missing=missing)
        unknown = "drop" if missing == "drop" else "error"
    tok = GeneTokenizer(
        vocab,
        dim,
        value_encoding=value_encoding,
        n_bins=n_bins,
        selection=selection,
        k=k,
        unknown=unknown,
        gene_embeddings=table,
        freeze_gene_embeddings=True,
        norm_gene_embedding=True,
        dropout=dropout,
    )
    return tok, vocab


def load_genept(
    path: str | os.PathLike[str],
    *,
    dim: int = 64,
    heads: int = 4,
    genes: Sequence[str] | None = None,
    missing: Literal["error", "drop", "zero"] = "error",
    embedding_dim: int | None = None,
    value_encoding: str = "continuous",
    n_bins: int = 51,
    selection: str = "panel",
    k: int | None = None,
    dropout: float = 0.0,
) -> PretrainedComponents:
    """GenePT as FIMP components: a gene tokenizer with GenePT identities + a FIMP-base creator.

    GenePT is a table of text embeddings, not a transformer, so its "message creator" is FIMP-base
    cross-attention (``fimp.nn.CrossAttention(dim, heads)``, trained from scratch); the pretrained
    part is the frozen gene-identity table inside the tokenizer (:func:`genept_tokenizer`).

    Args:
        path: a GenePT pickle (read with a restricted unpickler, never ``pickle.load``) or a
            converted ``.npz`` (:func:`read_genept`).
        dim, heads: token width and attention heads of the creator.
        genes, missing, value_encoding, n_bins, selection, k, dropout: see :func:`genept_tokenizer`.
        embedding_dim: expected GenePT width (1536 ada-002 / 3072 text-embedding-3-large), checked.

    Returns:
        ``PretrainedComponents(tokenizer, message, config)``; ``config`` names the file and its
        sha256, the table size and the genes given a zero vector (``missing="zero"``).
    """
    emb = read_genept(path, dim=embedding_dim)
    tok, vocab = genept_tokenizer(
        emb,
        dim,
        genes=genes,
        missing=missing,
        value_encoding=value_encoding,
        n_bins=n_bins,
        selection=selection,
        k=k,
        dropout=dropout,
    )
    known = set(emb.genes)
    config = {
        "family": "genept",
        "weights": {"file": str(path), "sha256": sha256_of(Path(path))},
        "embedding_dim": emb.dim,
        "table_genes": len(emb),
        "vocab_size": len(vocab),
        "zero_vector_genes": [g for g in vocab if g not in known],
        "dim": dim,
        "heads": heads,
        "message": "FIMP-base cross-attention (GenePT has no transformer blocks)",
        "frozen_parameters": ["tokenizer.gene_embedding.weight"],
    }
    return PretrainedComponents(tok, CrossAttention(dim, heads), config)


@register_model
def fimp_genept(
    *,
    embeddings: str | os.PathLike[str],
    genes: Sequence[str] | None = None,
    missing: Literal["error", "drop", "zero"] = "error",
    dim: int = 64,
    heads: int = 4,
    num_layers: int = 2,
    value_encoding: str = "continuous",
    selection: str = "panel",
    k: int | None = None,
    **kwargs: Any,
) -> FIMP:
    """FIMP-GenePT: FIMP-base whose gene tokens carry frozen GenePT gene identities.

    ``embeddings`` is a GenePT pickle or ``.npz`` (:func:`load_genept`). Each of the
    ``num_layers`` layers has its own FIMP-base cross-attention. Other keyword arguments go to
    :class:`fimp.models.FIMP`. The loader's config is kept as ``model.pretrained_config``.
    """
    tok, _, config = load_genept(
        embeddings,
        dim=dim,
        heads=heads,
        genes=genes,
        missing=missing,
        value_encoding=value_encoding,
        selection=selection,
        k=k,
    )
    model = FIMP(tok, dim=dim, heads=heads, num_layers=num_layers, **kwargs)
    model.pretrained_config = config
    return model
