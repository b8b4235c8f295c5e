#!/usr/bin/python3
"""Train and export the bundled Fashion-MNIST example models for bitdown.

Run from anywhere (outputs are written next to this script):

    /usr/bin/python3 examples/fmnist/train.py

Produces, in examples/fmnist/:
  resnet_bn.onnx, resnet.onnx, mobilenet_bn.onnx, mobilenet.onnx
  fixtures/<name>.logits256.f32, fixtures/<name>.pred10k.u8, fixtures/<name>.json
and 8 test images (PNG) plus a README in examples/images/.

Everything runs on the CPU and is seeded, so re-running on the same
machine/torch build reproduces the same weights and fixtures.
"""

import gzip
import json
import os
import random
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DATA_DIR = "/usr/share/datasets/fashion-mnist"
FIXTURES = os.path.join(HERE, "fixtures")
IMAGES = os.path.join(REPO, "examples", "images")

# Normalisation constants are part of the model contract (they are also
# written into the ONNX metadata), so they are fixed here, not measured.
MEAN = 0.2860
STD = 0.3530
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SEED = 20240601
BATCH = 128

# Epoch counts were chosen so that both models clear their accuracy targets
# (resnet >= 91 %, mobilenet >= 89 %) while the whole script stays well under
# 15 minutes on a 2-core CPU.
RESNET_EPOCHS = 15
MOBILENET_EPOCHS = 6


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

def read_idx(name):
    """Read a gzipped IDX file into a numpy array (uint8)."""
    with gzip.open(os.path.join(DATA_DIR, name), "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    assert (magic >> 8) == 0x08, "expected unsigned byte IDX data"
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(dims)


def load_split(prefix):
    x = read_idx(f"{prefix}-images-idx3-ubyte.gz")
    y = read_idx(f"{prefix}-labels-idx1-ubyte.gz")
    assert x.shape[0] == y.shape[0]
    return x, y


def to_input(x_u8):
    """uint8 [N,28,28] -> normalised float32 [N,1,28,28] (the model input)."""
    x = torch.from_numpy(x_u8.astype(np.float32) / 255.0).unsqueeze(1)
    return (x - MEAN) / STD


def augment(x, gen):
    """Random 28x28 crop of the 2-pixel zero-padded image + horizontal flip.

    Works on a whole raw [0,1] batch at once with index arithmetic, because a
    per-sample Python loop would cost a noticeable share of the (short)
    training time. Padding happens before normalisation so the border is
    real "black" (0), like the background of the dataset.
    """
    n = x.shape[0]
    pad = 2
    xp = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    ar = torch.arange(28)
    rows = (dy[:, None] + ar)[:, :, None]            # [n,28,1]
    cols = (dx[:, None] + ar)                        # [n,28]
    flip = torch.rand(n, generator=gen) < 0.5
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, :]  # [n,1,28]
    idx = torch.arange(n)[:, None, None]
    return xp[idx, 0, rows, cols].unsqueeze(1)


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------

class BasicBlock(nn.Module):
    """torchvision-style ResNet basic block (names conv1/bn1/conv2/bn2/downsample)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, 0, bias=False),
                nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Small ResNet for 28x28 inputs.

    Widths 16/32/64: every 3x3 conv after the stem has a row length
    Cin*3*3 in {144, 288, 576}, all divisible by 9, 18, 4 and 8, which the
    bitdown kernels want. The stem keeps stride 1 because 28x28 is already
    small; stages 2 and 3 halve the resolution (28 -> 14 -> 7).
    One block per stage (a "ResNet-8") is enough for > 91 % and keeps the
    CPU training time low.
    """

    def __init__(self, widths=(16, 32, 64), blocks=(1, 1, 1), num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        cin = widths[0]
        layers = []
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(cin, w, stride)]
            stage += [BasicBlock(w, w, 1) for _ in range(n - 1)]
            layers.append(nn.Sequential(*stage))
            cin = w
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def conv_bn(cin, cout, k, stride, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear project."""

    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            conv_bn(cin, hidden, 1, 1),
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout))

    def forward(self, x):
        if self.use_res:
            return x + self.conv(x)
        return self.conv(x)


class MobileNet(nn.Module):
    """MobileNetV2-style net sized for 28x28 grayscale.

    All channel counts are multiples of 8 so 1x1 conv rows divide by 4 and 8.
    Block settings (expand t, out c, repeats n, first stride s) are a
    shrunken MobileNetV2 table: depthwise convs are memory-bound on a CPU,
    so the expensive 28x28 resolution is left right after the stem.
    """

    SETTINGS = [(4, 24, 2, 2),   # 28 -> 14
                (4, 32, 2, 2),   # 14 -> 7
                (4, 64, 2, 1)]

    def __init__(self, stem=16, last=256, num_classes=10):
        super().__init__()
        feats = [conv_bn(1, stem, 3, 1)]
        cin = stem
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                feats.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        feats.append(conv_bn(cin, last, 1, 1))
        self.features = nn.Sequential(*feats)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x):
        x = self.avgpool(self.features(x))
        x = torch.flatten(x, 1)
        return self.classifier(x)


# --------------------------------------------------------------------------
# Training / evaluation
# --------------------------------------------------------------------------

def train(model, x_train_u8, y_train, epochs, max_lr, weight_decay, tag):
    gen = torch.Generator().manual_seed(SEED)
    x_raw = torch.from_numpy(x_train_u8.astype(np.float32) / 255.0).unsqueeze(1)
    y_all = torch.from_numpy(y_train.astype(np.int64))
    n = x_raw.shape[0]
    steps = epochs * ((n + BATCH - 1) // BATCH)

    # channels_last makes the oneDNN convolutions ~1.5x faster on this CPU;
    # it does not change the parameters' names or shapes.
    model = model.to(memory_format=torch.channels_last)

    # No weight decay on BN affine params and biases: decaying them only
    # fights the normalisation and costs a little accuracy.
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=max_lr, momentum=0.9, nesterov=True)
    # One-cycle gives good accuracy in few epochs, which is what we need
    # under the CPU time budget.
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=steps,
                                                pct_start=0.25, div_factor=10.0,
                                                final_div_factor=100.0)
    for epoch in range(epochs):
        model.train()
        t0 = time.time()
        perm = torch.randperm(n, generator=gen)
        total_loss, correct = 0.0, 0
        for i in range(0, n, BATCH):
            idx = perm[i:i + BATCH]
            xb = augment(x_raw[idx], gen)
            xb = ((xb - MEAN) / STD).contiguous(memory_format=torch.channels_last)
            yb = y_all[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * yb.shape[0]
            correct += (logits.argmax(1) == yb).sum().item()
        print(f"[{tag}] epoch {epoch + 1}/{epochs} loss {total_loss / n:.4f} "
              f"train-acc {100.0 * correct / n:.2f}% ({time.time() - t0:.1f}s)", flush=True)
    # Back to the default layout so evaluation/export see a plain NCHW model.
    return model.to(memory_format=torch.contiguous_format).eval()


@torch.no_grad()
def predict(model, x):
    model.eval()
    return torch.cat([model(x[i:i + 500]) for i in range(0, x.shape[0], 500)])


# --------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------

METADATA = {
    "bitdown.preprocess.color": "gray",
    "bitdown.preprocess.resize": "0",
    "bitdown.preprocess.crop": "0",
    "bitdown.preprocess.mean": "0.2860",
    "bitdown.preprocess.std": "0.3530",
    "bitdown.classes": "\n".join(CLASSES),
    "bitdown.dataset": "fmnist",
}


def conv_call_order(model):
    """Qualified names of the Conv2d modules in the order forward() calls them.

    The exporter emits ONNX nodes in trace (= call) order, so this lines the
    ONNX Conv nodes up with their PyTorch modules.
    """
    order, hooks = [], []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            hooks.append(mod.register_forward_hook(
                lambda m, i, o, name=name: order.append((name, m))))
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    for h in hooks:
        h.remove()
    return order


def tidy_graph(m, model):
    """Post-export clean-ups so the files are easy for a small C loader.

    1. The exporter de-duplicates initializers with identical contents and
       re-creates the duplicates with Identity nodes. In the ResNet, bn2.bias
       and downsample.1.bias of a stage's first block always receive the same
       gradient (both feed the same Add) and start at 0, so they are equal and
       would turn into an Identity node. Turn such Identity-of-initializer
       nodes back into plain initializers.
    2. With BN folded, the fused conv parameters get anonymous names like
       "onnx::Conv_89"; rename them to the PyTorch module name
       ("layer1.0.conv1.weight"/".bias") so the two export flavours use the
       same readable names.
    """
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    for node in list(g.node):
        if node.op_type == "Identity" and node.input[0] in inits:
            t = onnx.TensorProto()
            t.CopyFrom(inits[node.input[0]])
            t.name = node.output[0]
            g.initializer.append(t)
            inits[t.name] = t
            g.node.remove(node)

    convs = [n for n in g.node if n.op_type == "Conv"]
    order = conv_call_order(model)
    assert len(convs) == len(order), "Conv node / module count mismatch"
    rename = {}
    for node, (name, mod) in zip(convs, order):
        # Cross-check the pairing: the node's scope path ends in the module's
        # attribute name and the weight shape matches.
        assert node.name.split("/")[-2].endswith(name.split(".")[-1]), (node.name, name)
        assert list(inits[node.input[1]].dims) == list(mod.weight.shape), (node.name, name)
        for idx, suffix in ((1, "weight"), (2, "bias")):
            if len(node.input) > idx and node.input[idx].startswith("onnx::"):
                rename[node.input[idx]] = f"{name}.{suffix}"
    for t in g.initializer:
        if t.name in rename:
            t.name = rename[t.name]
    for node in g.node:
        for i, inp in enumerate(node.input):
            if inp in rename:
                node.input[i] = rename[inp]
    # Initializers must not be listed as graph inputs (they are not, with the
    # default keep_initializers_as_inputs=False), but be safe after renaming.
    assert not any(i.name in rename for i in g.input)


def export(model, path, keep_bn):
    model.eval()
    dummy = torch.zeros(1, 1, 28, 28)
    kwargs = dict(opset_version=13, input_names=["input"], output_names=["logits"],
                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    if keep_bn:
        # PRESERVE skips the eval-mode Conv+BN fusion pass; constant folding is
        # off too so nothing else rewrites the BN parameters.
        kwargs.update(training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    torch.onnx.export(model, dummy, path, **kwargs)

    m = onnx.load(path)
    tidy_graph(m, model)
    for k, v in METADATA.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(m, path)
    m = onnx.load(path)
    onnx.checker.check_model(m)
    ops = sorted({node.op_type for node in m.graph.node})
    has_bn = "BatchNormalization" in ops
    assert has_bn == keep_bn, f"{path}: BatchNormalization present={has_bn}, expected {keep_bn}"
    print(f"  {os.path.relpath(path, REPO)}: {os.path.getsize(path)} bytes, ops {ops}", flush=True)
    return ops


def write_fixtures(name, logits, y_test, torch_version):
    logits = logits.float()
    first = logits[:256].numpy().astype("<f4")
    assert first.shape == (256, 10)
    first.tofile(os.path.join(FIXTURES, f"{name}.logits256.f32"))
    pred = logits.argmax(1).numpy().astype(np.uint8)
    pred.tofile(os.path.join(FIXTURES, f"{name}.pred10k.u8"))
    y = torch.from_numpy(y_test.astype(np.int64))
    top5 = logits.topk(5, dim=1).indices
    top1_acc = 100.0 * (top5[:, 0] == y).float().mean().item()
    top5_acc = 100.0 * (top5 == y[:, None]).any(1).float().mean().item()
    info = {"top1": round(top1_acc, 2), "top5": round(top5_acc, 2),
            "n": int(y.shape[0]), "torch": torch_version}
    with open(os.path.join(FIXTURES, f"{name}.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    return info


def write_images(x_test, y_test):
    """Save the first test image of 8 different classes as 8-bit PNGs."""
    from PIL import Image
    os.makedirs(IMAGES, exist_ok=True)
    chosen, seen = [], set()
    for i, label in enumerate(y_test):
        if int(label) not in seen:
            seen.add(int(label))
            chosen.append(i)
        if len(chosen) == 8:
            break
    lines = ["# Example images",
             "",
             "Fashion-MNIST **test set** images (28x28, 8-bit grayscale PNG), written by",
             "`examples/fmnist/train.py`: the first test image of each of the first",
             "8 distinct classes in test-set order. Index = position in",
             "`t10k-images-idx3-ubyte`, label = true class (0-based).",
             "",
             "| file | test index | label | class |",
             "|---|---|---|---|"]
    for i in chosen:
        label = int(y_test[i])
        slug = CLASSES[label].lower().replace(" ", "_").replace("/", "_")
        fname = f"fmnist_test_{i:04d}_{slug}.png"
        Image.fromarray(x_test[i], mode="L").save(os.path.join(IMAGES, fname))
        lines.append(f"| `{fname}` | {i} | {label} | {CLASSES[label]} |")
    with open(os.path.join(IMAGES, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return chosen


def main():
    t_start = time.time()
    # Determinism: fixed seeds everywhere, fixed thread count (oneDNN results
    # can depend on the number of threads), deterministic kernels only.
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    random.seed(SEED)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)

    os.makedirs(FIXTURES, exist_ok=True)
    x_train, y_train = load_split("train")
    x_test, y_test = load_split("t10k")
    x_test_in = to_input(x_test)
    print(f"train {x_train.shape}, test {x_test.shape}, torch {torch.__version__}", flush=True)

    write_images(x_test, y_test)

    specs = [
        # name, constructor, epochs, peak lr, weight decay
        ("resnet", ResNet, RESNET_EPOCHS, 0.2, 5e-4),
        # 4e-5 is MobileNetV2's own setting: its tiny depthwise filters
        # have few parameters each and are hurt by strong decay.
        ("mobilenet", MobileNet, MOBILENET_EPOCHS, 0.2, 4e-5),
    ]
    summary = {}
    for name, ctor, epochs, lr, wd in specs:
        torch.manual_seed(SEED)  # each model's init is independent of the other
        t0 = time.time()
        model = ctor()
        nparams = sum(p.numel() for p in model.parameters())
        print(f"== {name}: {nparams} parameters, {epochs} epochs", flush=True)
        model = train(model, x_train, y_train, epochs, lr, wd, name)
        train_s = time.time() - t0

        logits = predict(model, x_test_in)
        for suffix, keep_bn in (("_bn", True), ("", False)):
            fname = name + suffix
            export(model, os.path.join(HERE, fname + ".onnx"), keep_bn)
            # The folded file computes the same function as the BN one, so
            # both get the fixtures of the same (eval-mode, float32) model.
            info = write_fixtures(fname, logits, y_test, torch.__version__)
        summary[name] = dict(info, params=nparams, train_seconds=round(train_s, 1))
        print(f"== {name}: top1 {info['top1']:.2f}% top5 {info['top5']:.2f}% "
              f"(train {train_s:.1f}s)", flush=True)

    total = time.time() - t_start
    print(json.dumps(summary, indent=2))
    print(f"total wall time {total:.1f}s")
    ok = summary["resnet"]["top1"] >= 91.0 and summary["mobilenet"]["top1"] >= 89.0
    if not ok:
        print("WARNING: accuracy target missed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
