#!/usr/bin/python3
"""PyTorch's training step on a bundled example model: a batch indexed from
Fashion-MNIST's training images (normalised), forward with BatchNorm in train
mode, cross-entropy, backward, and an SGD update (momentum 0.9, weight decay
5e-4): the work one step of `bitdown train` does. Median of N steps after
two warm-up ones.

usage: torch_step.py resnet|mobilenet BATCH STEPS THREADS
prints: images/s median_ms
"""
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../examples/fmnist"))
import train  # noqa: E402  the example models' definitions and data reader


def main():
    name, batch, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x_u8, y_np = train.load_split("train")
    x_all = train.to_input(x_u8)
    y_all = torch.from_numpy(y_np.astype("int64"))
    model = train.ResNet() if name == "resnet" else train.MobileNet()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    perm = torch.randperm(x_all.shape[0])
    times = []
    for i in range(steps + 2):
        idx = perm[i * batch:(i + 1) * batch]
        t0 = time.perf_counter()
        xb, yb = x_all[idx], y_all[idx]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    print("%.2f %.3f" % (batch / median, 1e3 * median))


if __name__ == "__main__":
    main()
