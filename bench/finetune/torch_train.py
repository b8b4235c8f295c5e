#!/usr/bin/python3
"""PyTorch's training throughput on a model bitdown is measured on:
forward and backward with BatchNorm in train mode, gradients of every
parameter, cross-entropy on made-up labels (what `bitdown bench --train`
does), random input, median of N passes after two warm-up ones.

MODEL: resnet or mobilenet (the Fashion-MNIST examples, 1x28x28), or a
torchvision classification model by name (3x224x224, 1000 classes; the
one examples/imagenet/export.py exports; the weights do not matter to the
speed).

usage: torch_train.py MODEL BATCH ITERS THREADS
prints: images/s median_ms
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../examples/fmnist"))


def model_and_input(name, batch):
    if name in ("resnet", "mobilenet"):
        import train  # noqa: E402  the example models' definitions
        return (train.ResNet() if name == "resnet" else train.MobileNet()), \
            torch.randn(batch, 1, 28, 28), 10
    import torchvision
    # the exported graphs hold no auxiliary classifier: neither trains one
    kwargs = {"aux_logits": False, "init_weights": True} \
        if name in ("googlenet", "inception_v3") else {}
    return getattr(torchvision.models, name)(weights=None, **kwargs), \
        torch.randn(batch, 3, 224, 224), 1000


def main():
    name, batch, iters, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, x, classes = model_and_input(name, batch)
    model.train()
    y = torch.arange(batch) % classes
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for i in range(iters + 2):
        t0 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    print("%.2f %.3f" % (batch / median, 1e3 * median))


if __name__ == "__main__":
    main()
