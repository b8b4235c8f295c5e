#!/usr/bin/python3
"""Small models of every torchvision CNN family, with PyTorch's answers.

For each family of the torchvision classification zoo, a model a few
hundred kilobytes large built from torchvision's own constructors or
building blocks at small widths, so that its ONNX graph has the ops and
patterns of the full model (grouped and depthwise convs, squeeze-and-
excitation, Concat and channel shuffles, LayerNorm and GELU spelled out,
asymmetric kernels and pads, ceil-mode pooling). Each is written to
tests/zoo/NAME.onnx with NAME.ref, PyTorch's answers for one batch:

  the input x [4, 3, 64, 64], the same for every family (x.f32);
  the logits in eval mode (running statistics);
  the logits in training mode (BatchNorm on the batch's statistics,
  dropout and stochastic depth off, as bitdown's trainer runs);
  r, a seeded tensor shaped like the logits; the loss sum(r * logits) has
  r as its gradient with respect to the logits, so no loss function of
  either side is involved;
  the gradient of that loss, in training mode, of every parameter.

NAME.ref is a text header, one line per array ("x 4 3 64 64" for x.f32, "eval 4 10",
"train 4 10", "r 4 10", then "grad INITIALIZER COUNT" per parameter), a
line "end", then the arrays' float32 values but x's, little-endian, in that order.
tests/test_zoo.c reads them. Run by hand when a family changes (needs
Debian's python3-torch, python3-torchvision, python3-onnx); the outputs
are committed.

usage: /usr/bin/python3 tests/zoo/make_fixtures.py [NAME...]
"""
import os
import sys

import onnx
import torch
import torch.nn as nn
import torchvision
from torchvision.models import (convnext, densenet, efficientnet, mnasnet, mobilenetv2,
                                mobilenetv3, regnet, resnet, shufflenetv2, squeezenet, vgg)

GOOGLENET = sys.modules["torchvision.models.googlenet"]
INCEPTION = sys.modules["torchvision.models.inception"]
HERE = os.path.dirname(os.path.abspath(__file__))
CLASSES = 10


def alexnet():
    # AlexNet's layout: 11x11 stride-4 stem, overlapping max pools, an
    # adaptive pool, a dropout MLP
    return nn.Sequential(
        nn.Conv2d(3, 16, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(16, 24, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(24, 32, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d((3, 3)), nn.Flatten(),
        nn.Dropout(), nn.Linear(32 * 9, 64), nn.ReLU(inplace=True),
        nn.Dropout(), nn.Linear(64, 64), nn.ReLU(inplace=True), nn.Linear(64, CLASSES))


def vgg11_bn():
    features = vgg.make_layers([8, "M", 16, "M", 32, 32, "M", 32, 32, "M"], batch_norm=True)
    return nn.Sequential(features, nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(),
                         nn.Linear(128, 64), nn.ReLU(True), nn.Dropout(),
                         nn.Linear(64, CLASSES))


def squeezenet1_1():
    fire = squeezenet.Fire
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
        fire(16, 4, 8, 8), fire(16, 4, 8, 8), nn.MaxPool2d(3, 2, ceil_mode=True),
        fire(16, 8, 16, 16),
        nn.Dropout(), nn.Conv2d(32, CLASSES, 1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten())


def googlenet():
    inc = GOOGLENET.Inception
    return nn.Sequential(
        GOOGLENET.BasicConv2d(3, 16, kernel_size=7, stride=2, padding=3),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        inc(16, 8, 8, 12, 4, 8, 8), nn.MaxPool2d(3, 2, ceil_mode=True),
        inc(36, 8, 8, 16, 4, 8, 8),
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Dropout(0.2), nn.Linear(40, CLASSES))


def inception_v3():
    # InceptionC: 1x7 and 7x1 kernels with asymmetric pads, an average pool
    # of stride 1 counting its padding; its 192-wide branches are
    # torchvision's own (InceptionA's 5x5 and 3x3 branches, as wide, would
    # make the fixture megabytes: googlenet's Inception has their ops)
    return nn.Sequential(
        INCEPTION.BasicConv2d(3, 16, kernel_size=3, stride=2),
        nn.MaxPool2d(3, 2),
        INCEPTION.BasicConv2d(16, 32, kernel_size=1),
        INCEPTION.InceptionC(32, channels_7x7=8),
        nn.AdaptiveAvgPool2d((1, 1)), nn.Dropout(), nn.Flatten(), nn.Linear(768, CLASSES))


def densenet121():
    return densenet.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16,
                             bn_size=2, num_classes=CLASSES)


def resnets():
    # resnet18's BasicBlock; resnext50_32x4d's and wide_resnet50_2's
    # Bottleneck, grouped (and wide by base_width)
    def down(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))
    return nn.Sequential(
        nn.Conv2d(3, 16, 7, 2, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
        resnet.BasicBlock(16, 16),
        resnet.Bottleneck(16, 8, 2, down(16, 32), groups=4, base_width=16),
        resnet.Bottleneck(32, 8, 1, None, groups=1, base_width=128),
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(32, CLASSES))


def mobilenet_v2():
    return mobilenetv2.MobileNetV2(num_classes=CLASSES, width_mult=0.25,
                                   inverted_residual_setting=[[1, 16, 1, 1], [6, 24, 2, 2],
                                                              [6, 32, 1, 2]],
                                   round_nearest=4)


def mobilenet_v3_small():
    setting, _ = mobilenetv3._mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25)
    return mobilenetv3.MobileNetV3(setting[:5], last_channel=64, num_classes=CLASSES)


def mnasnet0_5():
    # MNASNet's stem and first three stacks (5x5 depthwise convs), and its
    # own forward (the spatial mean as ReduceMean); a narrower head than
    # its 1280 channels
    m = mnasnet.MNASNet(0.25, num_classes=CLASSES)
    body = nn.Sequential(*list(m.layers)[:11])
    width = body(torch.zeros(1, 3, 64, 64)).shape[1]
    m.layers = nn.Sequential(body, nn.Conv2d(width, 64, 1, bias=False), nn.BatchNorm2d(64),
                             nn.ReLU(inplace=True))
    m.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, CLASSES))
    return m


def shufflenet_v2():
    return shufflenetv2.ShuffleNetV2([2, 2, 1], [8, 16, 32, 64, 128], num_classes=CLASSES)


def efficientnet_b0():
    setting, _ = efficientnet._efficientnet_conf("efficientnet_b0", width_mult=0.25,
                                                 depth_mult=0.25)
    return efficientnet.EfficientNet(setting[:5], 0.2, num_classes=CLASSES, last_channel=96)


def efficientnet_v2_s():
    fused, mb = efficientnet.FusedMBConvConfig, efficientnet.MBConvConfig
    setting = [fused(1, 3, 1, 8, 8, 1), fused(4, 3, 2, 8, 16, 2), mb(4, 3, 2, 16, 24, 1)]
    return efficientnet.EfficientNet(setting, 0.2, num_classes=CLASSES, last_channel=64)


def regnet_y_400mf():
    params = regnet.BlockParams.from_init_params(depth=4, w_0=8, w_a=8, w_m=2, group_width=4,
                                                 se_ratio=0.25)
    return regnet.RegNet(params, num_classes=CLASSES, stem_width=8)


def convnext_tiny():
    cfg = convnext.CNBlockConfig
    # layer_scale 0.5, not 1e-6: at 1e-6 the blocks' own parameters get
    # gradients a million times smaller than the rest, below what float32
    # agreement can check
    return convnext.ConvNeXt([cfg(16, 32, 1), cfg(32, None, 1)], layer_scale=0.5,
                             num_classes=CLASSES)


FAMILIES = {f.__name__: f for f in [
    alexnet, vgg11_bn, squeezenet1_1, googlenet, inception_v3, densenet121, resnets,
    mobilenet_v2, mobilenet_v3_small, mnasnet0_5, shufflenet_v2, efficientnet_b0,
    efficientnet_v2_s, regnet_y_400mf, convnext_tiny]}


def randomize(model, gen):
    """Running statistics and affine parameters away from 1 and 0, so that
    eval mode checks them and the gradients of every parameter differ;
    biases random too, since the exporter merges initializers that are
    equal (zeros of one shape), and two parameters would become one."""
    for n, p in model.named_parameters():
        if n.endswith("bias"):
            with torch.no_grad():
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            with torch.no_grad():
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(1 + 0.5 * torch.rand(m.running_var.shape, generator=gen))


def train_mode(model):
    """BatchNorm on batch statistics; dropout and stochastic depth as in
    eval (bitdown's trainer runs them so: its gradients are deterministic)."""
    model.train()
    for m in model.modules():
        if isinstance(m, (nn.Dropout, torchvision.ops.StochasticDepth)):
            m.eval()


def make(name):
    torch.manual_seed(0)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    model = FAMILIES[name]().eval()
    randomize(model, gen)
    path = os.path.join(HERE, name + ".onnx")
    torch.onnx.export(model, x, path, opset_version=13, input_names=["input"],
                      output_names=["logits"], training=torch.onnx.TrainingMode.PRESERVE,
                      do_constant_folding=False,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    inits = {i.name for i in onnx.load(path).graph.initializer}
    with torch.no_grad():
        logits_eval = model(x)
    train_mode(model)
    logits_train = model(x)
    r = torch.randn(logits_train.shape, generator=gen)
    model.zero_grad()
    (r * logits_train).sum().backward()
    grads = []
    for pname, p in model.named_parameters():
        if pname not in inits:
            sys.exit("%s: parameter %s is not an initializer of the export" % (name, pname))
        grads.append((pname, p.grad.detach().reshape(-1)))
    with open(os.path.join(HERE, name + ".ref"), "wb") as f:
        header = ["x " + " ".join(map(str, x.shape)),
                  "eval " + " ".join(map(str, logits_eval.shape)),
                  "train " + " ".join(map(str, logits_train.shape)),
                  "r " + " ".join(map(str, r.shape))]
        header += ["grad %s %d" % (n, g.numel()) for n, g in grads]
        f.write(("\n".join(header) + "\nend\n").encode())
        for t in [logits_eval, logits_train.detach(), r] + [g for _, g in grads]:
            f.write(t.contiguous().numpy().astype("<f4").tobytes())
    x.numpy().astype("<f4").tofile(os.path.join(HERE, "x.f32"))
    print("wrote %s: %d parameters, %d KB" % (path, sum(g.numel() for _, g in grads),
                                             os.path.getsize(path) // 1024))


def main():
    names = sys.argv[1:] or list(FAMILIES)
    for n in names:
        if n not in FAMILIES:
            sys.exit("unknown family %s (%s)" % (n, " ".join(FAMILIES)))
    torch.set_num_threads(1)
    for n in names:
        make(n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
