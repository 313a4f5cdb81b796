"""Tutorial (image family): the country of geo-located images on a haversine graph, then the benchmark.

Runs offline on the embedded ``image-georelief`` dataset (3,288 city-centred 32x32 shaded-relief
patches of 113 countries, a haversine kNN graph), in well under a minute on a 2-core CPU.
Usage: ``python docs/api/tutorials/image.py [OUT]`` (OUT: where the benchmark records go;
default a temporary folder).
"""

import sys
import tempfile

import torch
import torch.nn.functional as F

import fimp
import fimp_data
from fimp.tokenizers import ImagePatchTokenizer
from fimp_bench.tasks import resolve_tasks
from fimp_bench.train import run_benchmark

torch.manual_seed(0)

# 1. Data: one PyG Data, x = flattened channel-first pixels in [0, 1], pos = (lat, lon)
data = fimp_data.load("image-georelief")
print(data)

# 2. Split by (lat, lon) blocks within each country: neighbouring images share a split
split = fimp_data.spatial_block_split(data, val=0.2, test=0.2, seed=0, stratify="y")

# 3. Images: 3x32x32 average-pooled to 3x16x16, standardised per channel on the training images;
#    tokens = ViT-style 8x8-pixel patches (a 2x2 grid: 4 tokens per image) + position embedding
images = F.avg_pool2d(data.x.view(-1, *data.image_shape), 2)
mean = images[split.train].mean((0, 2, 3), keepdim=True)
std = images[split.train].std((0, 2, 3), keepdim=True)
images = (images - mean) / std

num_classes = int(data.y.max()) + 1
tokenizer = ImagePatchTokenizer(img_size=16, patch_size=8, in_chans=3, dim=32, class_token=False)
model = fimp.create_model(
    "fimp_base", tokenizer=tokenizer, dim=32, heads=2, num_classes=num_classes
)
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)

# 4. Train full-batch: each image's patches attend to its neighbours' patches
for epoch in range(30):
    model.train()
    opt.zero_grad()
    logits = model(images, data.edge_index)["logits"]
    loss = F.cross_entropy(logits[split.train], data.y[split.train])
    loss.backward()
    opt.step()
    if epoch % 10 == 9:
        print(f"epoch {epoch + 1}: training loss {loss.item():.3f}")

model.eval()
with torch.no_grad():
    pred = model(images, data.edge_index)["logits"].argmax(1)
accuracy = (pred[split.test] == data.y[split.test]).float().mean().item()
print(f"test accuracy {accuracy:.3f} ({num_classes} countries)")
embedding = fimp.embed(model, images, data.edge_index)  # [3288, 32] node embeddings

# 5. The benchmark of the family (image-country, image-zeroshot, image-zeroshot-random) on the
#    smoke preset; the same as:
#    fimp-bench run --task image --preset smoke --model mlp,gcn,fimp-base --seeds 0
out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="fimp-tutorial-")
records = run_benchmark(
    resolve_tasks("image"),
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
