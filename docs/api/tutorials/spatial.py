"""Tutorial (spatial family): cell types of a real tissue section, then the spatial benchmark.

Runs offline on the embedded ``spatial-cscc`` dataset (human cSCC Spatial Transcriptomics, 621
spots x 2,000 genes, 10 clusters) in well under a minute on a 2-core CPU.
Usage: ``python docs/api/tutorials/spatial.py [OUT]`` (OUT: where the benchmark records go;
default a temporary folder).
"""

import sys
import tempfile

import torch
import torch.nn.functional as F
from torch_geometric.utils import add_remaining_self_loops

import fimp
import fimp_data
from fimp.tokenizers import GeneTokenizer
from fimp_bench.tasks import resolve_tasks
from fimp_bench.train import run_benchmark

torch.manual_seed(0)

# 1. Data: one PyG Data (x raw counts [N, genes], pos, y, edge_index), shipped in the wheel
data = fimp_data.load("spatial-cscc")
print(data)

# 2. Split by spatial blocks: neighbouring spots never straddle train and test
split = fimp_data.spatial_block_split(data, val=0.2, test=0.2, seed=0)

# 3. Tokens: one per gene of a panel of the 32 most variable genes (log1p, standardised on the
#    training spots); each token = gene identity + value
expr = torch.log1p(data.x)
panel = expr.var(0).topk(32).indices.sort().values
expr = expr[:, panel]
mean, std = expr[split.train].mean(0), expr[split.train].std(0)
data.x = (expr - mean) / std
data.feature_names = [data.feature_names[int(i)] for i in panel]
data.edge_index, _ = add_remaining_self_loops(data.edge_index, num_nodes=data.num_nodes)

# 4. FIMP-base: cross-attention between the gene tokens of neighbouring spots, in pre-norm
#    residual blocks (the benchmark's fimp-base configuration)
num_classes = int(data.y.max()) + 1
tokenizer = GeneTokenizer(data.feature_names, 32, value_encoding="linear")
model = fimp.create_model(
    "fimp_base",
    tokenizer=tokenizer,
    dim=32,
    heads=2,
    num_classes=num_classes,
    block="prenorm",
    ffn_ratio=2,
    dropout=0.1,
    attn_dropout=0.0,
)
opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=5e-4)
for epoch in range(30):
    model.train()
    opt.zero_grad()
    logits = model(data)["logits"]
    loss = F.cross_entropy(logits[split.train], data.y[split.train])
    loss.backward()
    opt.step()
    if epoch % 10 == 9:
        print(f"epoch {epoch + 1}: training loss {loss.item():.3f}")

model.eval()
with torch.no_grad():
    pred = model(data)["logits"].argmax(1)
accuracy = (pred[split.test] == data.y[split.test]).float().mean().item()
print(
    f"test accuracy {accuracy:.3f} (majority class: {data.y.bincount().max().item() / len(data.y):.3f})"
)
embedding = fimp.embed(model, data)  # [621, 32] node embeddings

# 5. The benchmark of the family (spatial-expression + spatial-celltype) on the smoke preset;
#    the same as: fimp-bench run --task spatial --preset smoke --model mlp,gcn,fimp-base --seeds 0
out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="fimp-tutorial-")
records = run_benchmark(
    resolve_tasks("spatial"),
    ["mlp", "gcn", "fimp-base"],
    [0],
    preset="smoke",
    device="cpu",
    out=out,
    progress=False,
)
for r in records:
    print(r["task"], r["model"]["name"], {k: round(v, 3) for k, v in r["metrics"]["test"].items()})
print(f"records under {out}")
