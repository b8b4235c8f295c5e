#!/usr/bin/python3
"""PyTorch's training throughput on a torchvision model, as `bitdown bench
MODEL --train` measures bitdown's: forward and backward in train mode
(BatchNorm on batch statistics), gradients of every parameter,
cross-entropy on made-up labels, random 224x224 input, median of N passes
after two warm-up ones. The weights do not matter to the speed; the model
is the one examples/imagenet/export.py exports.

usage: torch_train.py NAME BATCH ITERS THREADS
prints: images/s median_ms
"""
import sys
import time

import torch
import torchvision


def main():
    name, batch, iters, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    model = getattr(torchvision.models, name)(weights=None, **kwargs)
    model.train()
    x = torch.randn(batch, 3, 224, 224)
    y = torch.arange(batch) % 1000
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
