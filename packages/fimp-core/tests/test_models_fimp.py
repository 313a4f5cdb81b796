"""fimp.models: the FIMP model, the registry, embed, and the README's ten-line example."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Data

import fimp
from fimp.errors import ConfigError, ShapeError
from fimp.models import FIMP, masked_mean
from fimp.nn import FIMPConv
from fimp.tokenizers import GeneTokenizer

README = Path(__file__).resolve().parents[3] / "README.md"


def _gene_data(n: int = 30, g: int = 12, seed: int = 0) -> Data:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, g, generator=gen) * (torch.rand(n, g, generator=gen) > 0.3)
    return Data(
        x=x,
        edge_index=torch.randint(0, n, (2, 4 * n), generator=gen),
        y=torch.randint(0, 3, (n,), generator=gen),
        feature_names=[f"G{i}" for i in range(g)],
    )


def test_registry_lists_and_creates_fimp_base():
    assert "fimp_base" in fimp.list_models()
    assert fimp.list_models("fimp_ba*") == ["fimp_base"]
    assert {"fimp_vit", "fimp_scgpt", "fimp_brainlm", "fimp_genept"} <= set(
        fimp.list_models("fimp_*")
    )
    model = fimp.create_model("fimp_base", dim=16, heads=2, num_layers=3, num_classes=4)
    assert isinstance(model, FIMP) and len(model.convs) == 3
    assert all(isinstance(c, FIMPConv) and c.heads == 2 for c in model.convs)


def test_registry_unknown_name_lists_valid_names_and_suggests():
    with pytest.raises(ConfigError, match=r"Did you mean \['fimp_base'") as exc:
        fimp.create_model("fimp_bse")
    assert "Registered models" in str(exc.value)


def test_register_model_rejects_a_different_function_under_a_taken_name():
    def fimp_base(**kwargs):
        return torch.nn.Identity()

    with pytest.raises(ConfigError, match="already registered"):
        fimp.register_model(fimp_base)


def test_register_third_party_model():
    @fimp.register_model
    def tiny_test_model_xyz(*, width: int = 3):
        return torch.nn.Linear(width, width)

    assert "tiny_test_model_xyz" in fimp.list_models()
    assert fimp.create_model("tiny_test_model_xyz", width=5).in_features == 5


def test_model_on_data_with_gene_tokenizer_outputs_and_shapes():
    torch.manual_seed(0)
    data = _gene_data()
    tok = GeneTokenizer(data.feature_names, 16)
    model = fimp.create_model(
        "fimp_base", tokenizer=tok, dim=16, heads=4, num_classes=3, recon_out=1
    )
    out = model(data)
    assert out["tokens"].shape == (30, 12, 16)
    assert out["token_mask"].shape == (30, 12) and out["token_mask"].dtype == torch.bool
    assert out["logits"].shape == (30, 3)
    assert out["recon"].shape == (30, 12, 1)
    torch.testing.assert_close(out["node_embedding"], masked_mean(out["tokens"], out["token_mask"]))
    # the same call with explicit arguments gives the same result
    again = model(data.x, data.edge_index, genes=data.feature_names)
    torch.testing.assert_close(again["logits"], out["logits"])


def test_model_equals_manual_stack_of_layers():
    """FIMP = tokenizer -> conv -> LayerNorm -> GELU -> dropout -> conv -> masked mean -> MLP head."""
    torch.manual_seed(1)
    x = torch.randn(10, 4, 8)
    mask = torch.rand(10, 4) > 0.2
    edge_index = torch.randint(0, 10, (2, 30))
    model = FIMP(None, dim=8, num_layers=2, heads=2, num_classes=2)
    model.eval()
    out = model(x, edge_index, token_mask=mask)
    h = model.convs[0](x, edge_index, token_mask=mask)
    h = F.gelu(model.norms[0](h))
    h = model.convs[1](h, edge_index, token_mask=mask)
    w = mask[..., None].float()
    emb = (h * w).sum(1) / w.sum(1).clamp(min=1)
    torch.testing.assert_close(out["tokens"], h)
    torch.testing.assert_close(out["logits"], model.head(emb))


def test_embed_is_eval_mode_no_grad_and_restores_mode():
    torch.manual_seed(2)
    data = _gene_data()
    model = fimp.create_model(
        "fimp_base", tokenizer=GeneTokenizer(data.feature_names, 16), dim=16, dropout=0.5
    )
    model.train()
    e1 = fimp.embed(model, data)
    e2 = fimp.embed(model, data)
    assert e1.shape == (30, 16) and not e1.requires_grad
    torch.testing.assert_close(e1, e2)  # dropout off in eval mode
    assert model.training


def test_attn_dropout_is_separate_from_dropout_and_defaults_to_it():
    data = _gene_data()
    tok = GeneTokenizer(data.feature_names, 16)
    same = FIMP(tok, dim=16, heads=2, dropout=0.3)
    assert [c.message.dropout for c in same.convs] == [0.3, 0.3]
    assert same.dropout.p == 0.3
    split = FIMP(tok, dim=16, heads=2, dropout=0.3, attn_dropout=0.0)
    assert [c.message.dropout for c in split.convs] == [0.0, 0.0]
    assert split.dropout.p == 0.3 and split.head is None
    # attention dropout off: in train mode the layers are deterministic, only the between-layer
    # dropout (here 0) could change the output
    torch.manual_seed(0)
    quiet = FIMP(tok, dim=16, heads=2, dropout=0.0, attn_dropout=0.0).train()
    x, ei = data.x, data.edge_index
    torch.testing.assert_close(
        quiet(x, ei, genes=data.feature_names)["tokens"],
        quiet(x, ei, genes=data.feature_names)["tokens"],
    )
    noisy = FIMP(tok, dim=16, heads=2, dropout=0.0, attn_dropout=0.5).train()
    a = noisy(x, ei, genes=data.feature_names)["tokens"]
    b = noisy(x, ei, genes=data.feature_names)["tokens"]
    assert not torch.allclose(a, b)


def test_tokenizer_by_name():
    model = fimp.create_model(
        "fimp_base", tokenizer="gene", tokenizer_kwargs={"genes": ["A", "B", "C"]}, dim=8, heads=2
    )
    assert isinstance(model.tokenizer, GeneTokenizer)
    with pytest.raises(ConfigError, match="unknown tokenizer"):
        fimp.create_model("fimp_base", tokenizer="graph", dim=8)


def test_model_errors():
    model = FIMP(None, dim=8, heads=2)
    with pytest.raises(ShapeError, match="tokens"):
        model(torch.randn(5, 8), torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ShapeError, match="edge_index is required"):
        model(torch.randn(5, 2, 8))
    with pytest.raises(ConfigError, match="num_layers"):
        FIMP(None, dim=8, num_layers=0)


def _readme_example() -> str:
    text = README.read_text()
    m = re.search(
        r"<!-- example:start -->\s*```python\n(.*?)```\s*<!-- example:end -->", text, re.S
    )
    assert m, "README.md must hold the training example between example:start/end markers"
    return m.group(1)


def test_readme_training_example_runs_and_learns():
    code = _readme_example()
    body = [ln for ln in code.strip().splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert len(body) <= 16, f"the README example should stay short, it has {len(body)} lines"
    probe = textwrap.dedent(
        """
        assert emb.shape == (data.num_nodes, 32), emb.shape
        assert losses[-1] < 0.8 * losses[0], losses
        print("ok", losses[0], losses[-1])
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", code + probe], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-1].startswith("ok")


def test_reset_parameters_keeps_the_supplied_tokenizer_and_message_creators():
    torch.manual_seed(3)
    tok = GeneTokenizer(["A", "B"], 8)
    external = FIMP(
        tok, dim=8, heads=2, message=lambda i: fimp.nn.CrossAttention(8, 2), num_classes=2
    )
    own = FIMP(None, dim=8, heads=2, num_classes=2)
    before_tok = {k: v.clone() for k, v in tok.state_dict().items()}
    before_msg = external.convs[0].message.q_proj.weight.clone()
    before_head, before_own = (
        external.head[0].weight.clone(),
        own.convs[0].message.q_proj.weight.clone(),
    )
    external.reset_parameters()
    own.reset_parameters()
    assert all(torch.equal(before_tok[k], v) for k, v in tok.state_dict().items())
    assert torch.equal(before_msg, external.convs[0].message.q_proj.weight)
    assert not torch.equal(before_head, external.head[0].weight)
    assert not torch.equal(before_own, own.convs[0].message.q_proj.weight)


def test_import_fimp_stays_light_and_exposes_the_public_names():
    # torch_geometric itself imports transformers when it is installed: compare against it
    code = (
        "import sys, torch_geometric\n"
        "before = set(sys.modules)\n"
        "import fimp\n"
        "heavy = [m for m in ('timm', 'torchvision', 'onnx', 'safetensors', 'huggingface_hub',"
        " 'transformers', 'fimp_data', 'fimp_bench') if m in set(sys.modules) - before]\n"
        "assert not heavy, heavy\n"
        "for name in ('FIMP', 'create_model', 'list_models', 'register_model', 'embed'):\n"
        "    assert callable(getattr(fimp, name)), name\n"
        "assert fimp.nn.FIMPConv and fimp.nn.CrossAttention and fimp.interpret.attention_maps\n"
        "for t in ('GeneTokenizer', 'TimeSeriesPatchTokenizer', 'ImagePatchTokenizer'):\n"
        "    assert hasattr(fimp.tokenizers, t), t\n"
        "for f in ('load_timm_vit', 'load_scgpt', 'load_brainlm', 'load_genept', 'load_bert'):\n"
        "    assert callable(getattr(fimp.pretrained, f)), f\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
