#!/usr/bin/python3
"""Seed inputs for the fuzz harnesses, made from the project's own files.

    fuzz/make_corpus.py OUT        writes OUT/<harness>/<seed>

Deterministic and quick (about a second), so ./bd fuzz runs it every time
into a git-ignored folder. The seeds are small on purpose: libFuzzer caps
mutated inputs at the size of the largest seed, and small inputs run fast.

  onnx        small models built here with onnx.helper (every op bitdown
              runs, typed and raw initializers, external data, metadata) and
              broken ones (a cycle, a dangling input, an output made twice,
              strings, negative or huge dimensions, external data leaving the
              folder), plus cut and garbled copies
  compressed  models holding bitdown's decoding expression (docs/format.md),
              valid and damaged, plus the plain onnx seeds
  idx         pieces of Debian's Fashion-MNIST test set, plain and gzipped,
              and headers that lie (the harness's mode byte comes first)
  image       examples/images/*.png, JPEGs and PNGs in other modes made with
              PIL, cut copies, and images that claim absurd sizes
  cmd         the REPL session of tests/test_repl.sh and lines that poke at
              quoting, options and every command's arguments
"""
import gzip
import io
import os
import struct
import sys
import zlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = "/usr/share/datasets/fashion-mnist"
OPSET = 13


def write(out, harness, name, data):
    d = os.path.join(out, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def model(nodes, inputs, outputs, inits=(), opset=OPSET, meta=None, value_info=()):
    g = helper.make_graph(nodes, "g", list(inputs), list(outputs), list(inits),
                          value_info=list(value_info))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="make_corpus")
    m.ir_version = 8
    for k, v in (meta or {}).items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    return m


def f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def rng(seed):
    return np.random.default_rng(seed)


# ---- onnx ---------------------------------------------------------------------------


def matmul_model():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    return model([helper.make_node("MatMul", ["X", "W"], ["Y"], name="mm")],
                 [f32("X", [1, 2])], [f32("Y", [1, 3])], [init("W", w)])


def cnn_model():
    """Conv + BatchNorm + Relu, a depthwise conv, a residual Add, pooling and a
    Gemm: the shape of the example networks, a thousand times smaller."""
    r = rng(1)
    inits = [
        init("conv1.weight", r.standard_normal((4, 1, 3, 3)).astype(np.float32)),
        init("bn1.weight", np.ones(4, np.float32)),
        init("bn1.bias", np.zeros(4, np.float32)),
        init("bn1.running_mean", r.standard_normal(4).astype(np.float32) * 0.1),
        init("bn1.running_var", np.ones(4, np.float32)),
        init("dw.weight", r.standard_normal((4, 1, 3, 3)).astype(np.float32)),
        init("pw.weight", r.standard_normal((4, 4, 1, 1)).astype(np.float32)),
        init("pw.bias", np.zeros(4, np.float32)),
        init("fc.weight", r.standard_normal((10, 4)).astype(np.float32)),
        init("fc.bias", np.zeros(10, np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["X", "conv1.weight"], ["c1"], name="/conv1/Conv",
                         pads=[1, 1, 1, 1], strides=[1, 1], kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c1", "bn1.weight", "bn1.bias",
                                                "bn1.running_mean", "bn1.running_var"],
                         ["b1"], epsilon=1e-5),
        helper.make_node("Relu", ["b1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "dw.weight"], ["d1"], group=4, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["d1", "pw.weight", "pw.bias"], ["e1"]),
        helper.make_node("Add", ["e1", "p1"], ["a1"]),
        helper.make_node("Clip", ["a1"], ["k1"], min=0.0, max=6.0),
        helper.make_node("GlobalAveragePool", ["k1"], ["g1"]),
        helper.make_node("Flatten", ["g1"], ["f1"], axis=1),
        helper.make_node("Gemm", ["f1", "fc.weight", "fc.bias"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["Y"], axis=1),
    ]
    meta = {"bitdown.preprocess.color": "gray", "bitdown.preprocess.resize": "8",
            "bitdown.preprocess.crop": "8", "bitdown.preprocess.mean": "0.5",
            "bitdown.preprocess.std": "0.25",
            "bitdown.classes": "\n".join("class%d" % i for i in range(10)),
            "bitdown.dataset": "fmnist"}
    return model(nodes, [f32("X", ["N", 1, 8, 8])], [f32("Y", ["N", 10])], inits, meta=meta,
                 value_info=[f32("r1", ["N", 4, 8, 8])])


def ops_model():
    """Every other op bitdown runs, on a [1, 2, 4, 4] input."""
    i64 = lambda name, v: init(name, np.array(v, np.int64))
    inits = [
        i64("shape", [1, 2, 16]), i64("axes0", [0]), i64("starts", [0]), i64("ends", [8]),
        i64("idx", [1, 0]), i64("pads", [0, 0, 1, 1, 0, 0, 1, 1]), i64("ones", [1, 1, 1, 1]),
        init("two", np.array(2.0, np.float32)), init("mmw", np.ones((4, 3), np.float32)),
    ]
    n = helper.make_node
    nodes = [
        n("Constant", [], ["half"], value=numpy_helper.from_array(np.array(0.5, np.float32))),
        n("Constant", [], ["cf"], value_float=1.5),
        n("Constant", [], ["ci"], value_ints=[1, 2]),
        n("Mul", ["X", "half"], ["m"]), n("Sub", ["m", "cf"], ["s"]), n("Div", ["s", "two"], ["dv"]),
        n("Pow", ["dv", "two"], ["pw"]), n("Sqrt", ["pw"], ["sq"]), n("Exp", ["sq"], ["ex"]),
        n("Neg", ["ex"], ["ng"]), n("Tanh", ["ng"], ["th"]), n("Erf", ["th"], ["er"]),
        n("Sigmoid", ["er"], ["sg"]), n("HardSigmoid", ["sg"], ["hs"], alpha=0.2, beta=0.5),
        n("HardSwish", ["hs"], ["hw"]), n("LeakyRelu", ["hw"], ["lr"], alpha=0.1),
        n("Dropout", ["lr"], ["dr"]), n("Identity", ["dr"], ["id"]),
        n("Pad", ["id", "pads"], ["pd"], mode="constant"),
        n("AveragePool", ["pd"], ["ap"], kernel_shape=[3, 3], pads=[0, 0, 0, 0]),
        n("GlobalMaxPool", ["ap"], ["gm"]),
        n("Expand", ["gm", "ones"], ["xp"]),
        n("Reshape", ["X", "shape"], ["rs"]), n("Transpose", ["rs"], ["tr"], perm=[0, 2, 1]),
        n("Slice", ["tr", "starts", "ends", "axes0"], ["sl"]),
        n("Gather", ["sl", "idx"], ["ga"], axis=2),
        n("Concat", ["ga", "ga"], ["cc"], axis=2),
        n("ReduceMean", ["cc"], ["rm"], axes=[2], keepdims=1),
        n("Squeeze", ["rm", "axes0"], ["sq0"]),
        n("Unsqueeze", ["sq0", "axes0"], ["us"]),
        n("Shape", ["us"], ["sh"]), n("ConstantOfShape", ["sh"], ["co"],
                                      value=numpy_helper.from_array(np.array([1.0], np.float32))),
        n("Cast", ["co"], ["cs"], to=TensorProto.FLOAT),
        n("Add", ["cs", "xp"], ["ad"]),
        n("Reshape", ["X", "shape"], ["rs2"]),
        n("Slice", ["rs2", "starts", "ends", "axes0"], ["rs3"]),
        n("LogSoftmax", ["rs3"], ["ls"], axis=2),
        n("MatMul", ["X", "mmw"], ["mmo"]),
    ]
    return model(nodes, [f32("X", [1, 2, 4, 4])],
                 [f32("ad", None), f32("ls", None), f32("mmo", None)], inits)


def typed_model():
    """Initializers in the typed fields instead of raw_data."""
    t = [
        helper.make_tensor("W", TensorProto.FLOAT, [2, 3], [1, 2, 3, 4, 5, 6]),
        helper.make_tensor("h", TensorProto.FLOAT16, [3],
                           np.array([1, 2, 3], np.float16).view(np.uint16).astype(np.int32)),
        helper.make_tensor("u8", TensorProto.UINT8, [3], [0, 7, 255]),
        helper.make_tensor("u16", TensorProto.UINT16, [2], [1, 65535]),
        helper.make_tensor("i8", TensorProto.INT8, [2], [-1, 1]),
        helper.make_tensor("b", TensorProto.BOOL, [2], [True, False]),
        helper.make_tensor("i64", TensorProto.INT64, [2], [1, -(1 << 40)]),
        helper.make_tensor("d", TensorProto.DOUBLE, [1], [0.5]),
        helper.make_tensor("i32", TensorProto.INT32, [1], [-7]),
        helper.make_tensor("i16", TensorProto.INT16, [1], [-3]),
    ]
    return model([helper.make_node("MatMul", ["X", "W"], ["Y"])], [f32("X", [1, 2])],
                 [f32("Y", [1, 3])], t)


def external_model(location, offset="0", length="24"):
    """W's data lies in a file next to the model (the harness provides
    weights.bin, 4 KiB, and link.bin, which leads out of the folder)."""
    m = matmul_model()
    w = m.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", offset), ("length", length)):
        e = w.external_data.add()
        e.key, e.value = k, v
    return m


def broken_models():
    """name -> a model bitdown must refuse, each for one reason."""
    out = {}

    def variant(name, edit, base=matmul_model):
        m = base()
        edit(m)
        out[name] = m

    variant("cycle", lambda m: m.graph.node[0].input.__setitem__(0, "Y"))
    variant("dangling", lambda m: m.graph.node[0].input.__setitem__(0, "nowhere"))

    def twice(m):
        m.graph.node.append(helper.make_node("Relu", ["X"], ["Y"], name="again"))
    variant("output_twice", twice)

    def string_tensor(m):
        m.graph.initializer.append(helper.make_tensor("s", TensorProto.STRING, [1], [b"x"]))
    variant("string", string_tensor)
    variant("negative_dim", lambda m: m.graph.initializer[0].dims.__setitem__(0, -2))

    def huge(m):
        del m.graph.initializer[0].dims[:]
        m.graph.initializer[0].dims.extend([1 << 40, 1 << 40])
    variant("overflow", huge)

    def big(m):
        del m.graph.initializer[0].dims[:]
        m.graph.initializer[0].dims.extend([1 << 20, 1 << 20])
    variant("beyond_limit", big)

    def rank9(m):
        del m.graph.initializer[0].dims[:]
        m.graph.initializer[0].dims.extend([1] * 9)
    variant("rank9", rank9)
    variant("opset9", lambda m: m.opset_import[0].__setattr__("version", 9))
    variant("unknown_op", lambda m: m.graph.node[0].__setattr__("op_type", "FancyOp"))
    variant("no_outputs", lambda m: m.graph.ClearField("output"))

    def graph_attr(m):
        m.graph.node[0].attribute.append(
            helper.make_attribute("body", helper.make_graph([], "b", [], [])))
    variant("graph_attribute", graph_attr)

    def int64_conv(m):
        w = np.arange(9, dtype=np.int64).reshape(1, 1, 3, 3)
        m.graph.ClearField("initializer")
        m.graph.initializer.append(init("W", w))
        m.graph.node[0].op_type = "Conv"
    variant("conv_int64_weight", int64_conv)

    def float_index(m):
        m.graph.initializer[0].CopyFrom(init("W", np.array([0.0, 1.0], np.float32)))
        m.graph.node[0].op_type = "Gather"
    variant("gather_float_index", float_index)
    return out


def onnx_seeds(out):
    seeds = {"matmul": matmul_model(), "cnn": cnn_model(), "ops": ops_model(),
             "typed": typed_model(),
             "ext_ok": external_model("weights.bin", "8"),
             "ext_dotdot": external_model("../secret.bin"),
             "ext_absolute": external_model("/etc/hostname"),
             "ext_symlink": external_model("link.bin"),
             "ext_short": external_model("weights.bin", "4090"),
             "ext_length": external_model("weights.bin", "0", "20")}
    seeds.update({"bad_" + k: v for k, v in broken_models().items()})
    for name, m in sorted(seeds.items()):
        write(out, "onnx", name + ".onnx", m.SerializeToString())
    # cut and garbled copies of the two richest models
    for name in ("cnn", "ops"):
        data = seeds[name].SerializeToString()
        for frac in (0.1, 0.5, 0.9):
            write(out, "onnx", "%s_cut%d.onnx" % (name, frac * 100), data[:int(len(data) * frac)])
        flipped = bytearray(data)
        for i in range(7, len(flipped), 97):
            flipped[i] ^= 0x5A
        write(out, "onnx", name + "_garbled.onnx", bytes(flipped))
    return seeds


# ---- compressed -----------------------------------------------------------------------


def pq_expression(wname, shape, d, k, seed, transposed=False, code_type=np.uint8):
    """The nodes and initializers that compute weight wname (docs/format.md)."""
    r = rng(seed)
    shape = list(shape)
    count = int(np.prod(shape))
    n = count // d
    codes = r.integers(0, k, n).astype(code_type)
    cents = r.standard_normal((k, d)).astype(np.float16)
    rows = [shape[1], shape[0]] if transposed else shape
    inits = [init(wname + ".codes", codes), init(wname + ".centroids", cents),
             init(wname + ".shape", np.array(rows, np.int64))]
    nodes = [
        helper.make_node("Cast", [wname + ".codes"], [wname + "/i"], to=TensorProto.INT64),
        helper.make_node("Gather", [wname + ".centroids", wname + "/i"], [wname + "/g"], axis=0),
        helper.make_node("Cast", [wname + "/g"], [wname + "/f"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", [wname + "/f", wname + ".shape"],
                         [wname + "/r" if transposed else wname]),
    ]
    if transposed:
        nodes.append(helper.make_node("Transpose", [wname + "/r"], [wname], perm=[1, 0]))
    return nodes, inits


def compressed_model(code_type=np.uint8, k=16, meta_extra=None, bad_code=False):
    n1, i1 = pq_expression("conv.weight", (4, 3, 3, 3), 9, k, 1, code_type=code_type)
    n2, i2 = pq_expression("fc.weight", (4, 6), 2, 8, 2, transposed=True)
    if bad_code:
        i1[0] = init("conv.weight.codes", np.full(12, k, code_type))
    nodes = n1 + n2 + [
        helper.make_node("Conv", ["X", "conv.weight"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.weight"], ["Y"], transB=0),
    ]
    meta = {"bitdown.format": "pq/1",
            "bitdown.layer.conv": "d=9;k=%d;objective=act;rel_error=0.05;iterations=2;"
                                  "seconds=0.5;history=0.9,0.8" % k,
            "bitdown.layer.fc": "d=2;k=8;objective=weight;iterations=0;seconds=0;history="}
    meta.update(meta_extra or {})
    return model(nodes, [f32("X", [1, 3, 5, 5])], [f32("Y", [1, 6])], i1 + i2, meta=meta)


def compressed_seeds(out, plain):
    seeds = {
        "pq_u8": compressed_model(),
        "pq_u16": compressed_model(np.uint16, 300),
        "bad_code": compressed_model(bad_code=True),
        "bad_format": compressed_model(meta_extra={"bitdown.format": "pq/2"}),
        "bad_history": compressed_model(meta_extra={
            "bitdown.layer.conv": "d=9;k=16;iterations=3;history=1,2"}),
        "bad_objective": compressed_model(meta_extra={"bitdown.layer.conv": "objective=x"}),
        "bad_item": compressed_model(meta_extra={"bitdown.layer.fc": "d"}),
    }
    for name, m in sorted(seeds.items()):
        write(out, "compressed", name + ".onnx", m.SerializeToString())
    data = seeds["pq_u8"].SerializeToString()
    write(out, "compressed", "pq_cut.onnx", data[:len(data) * 2 // 3])
    for name in ("matmul", "cnn", "ops"):
        write(out, "compressed", name + ".onnx", plain[name].SerializeToString())


# ---- idx ------------------------------------------------------------------------------


def idx_bytes(dims, data, type_code=8):
    head = bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    return head + bytes(data)


def mode(ndim, harness_gzips=False):
    """The harness's first byte: bit 0 gzip, bits 1-3 the expected ndim - 1."""
    return bytes([((ndim - 1) << 1) | int(harness_gzips)])


def idx_seeds(out):
    with gzip.open(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")) as f:
        images = f.read(16 + 3 * 28 * 28)[16:]
    with gzip.open(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = f.read(8 + 20)[8:]
    two = idx_bytes([2, 28, 28], images[:2 * 784])
    small = idx_bytes([3, 4, 5], images[300:360])
    lab = idx_bytes([20], labels)
    mtime = 0  # gzip headers carry a time: fixed, so the seeds are reproducible
    gz = lambda b: gzip.compress(b, mtime=mtime)
    seeds = {
        "images_plain": mode(3) + two,
        "images_harness_gz": mode(3, True) + two,
        "images_gz": mode(3) + gz(two),
        "small_plain": mode(3) + small,
        "small_gz": mode(3) + gz(small),
        "labels_plain": mode(1) + lab,
        "labels_gz": mode(1) + gz(lab),
        "labels_harness_gz": mode(1, True) + lab,
        "four_dims": mode(4) + idx_bytes([1, 2, 3, 4], range(24)),
        "lie_2g_images": mode(3) + idx_bytes([1 << 31, 28, 28], images[:784]),
        "lie_2g_images_gz": mode(3) + gz(idx_bytes([1 << 31, 28, 28], images[:784])),
        "lie_huge_dims": mode(3, True) + idx_bytes([0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF], b""),
        "zero_images": mode(3) + idx_bytes([0, 28, 28], b""),
        "zero_pixels": mode(3) + idx_bytes([4, 0, 28], b""),
        "extra_data": mode(1) + lab + b"\x01\x02",
        "short_data": mode(1) + lab[:-5],
        "wrong_type": mode(1) + idx_bytes([4], range(16), type_code=0x0D),
        "header_cut": mode(3) + two[:9],
        "gz_cut": mode(3) + gz(two)[:200],
        "gz_crc": mode(3) + gz(two)[:-8] + b"\0" * 8,
        "empty": mode(3),
    }
    for name, data in sorted(seeds.items()):
        write(out, "idx", name, data)


# ---- image ----------------------------------------------------------------------------


def encode(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def png_claiming(width, height):
    """A PNG header claiming width x height, with a few bytes of data."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def jpeg_claiming(jpeg, width, height):
    """jpeg with the size in its SOF marker replaced."""
    data = bytearray(jpeg)
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            data[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def image_seeds(out):
    # the fuzzer's preprocessing bytes: resize 10, crop 8, out 6 x 4, RGB
    tail = bytes([10, 8, 6 | 0x40, 1])
    folder = os.path.join(ROOT, "examples", "images")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".png"):
            with open(os.path.join(folder, name), "rb") as f:
                data = f.read()
            write(out, "image", name, data)
            write(out, "image", name + ".pre", data + tail)
    src = Image.open(os.path.join(folder, "fmnist_test_0001_pullover.png")).convert("L")
    r = rng(3)
    rgb = Image.fromarray(r.integers(0, 256, (12, 17, 3), dtype=np.uint8), "RGB")
    made = {
        "gray.jpg": encode(src, "JPEG", quality=80),
        "rgb.jpg": encode(rgb, "JPEG", quality=90),
        "rgb444.jpg": encode(rgb, "JPEG", quality=90, subsampling=0),
        "progressive.jpg": encode(rgb, "JPEG", quality=75, progressive=True),
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG"),
        "tiny.jpg": encode(Image.new("L", (1, 1), 128), "JPEG"),
        "palette.png": encode(rgb.convert("P"), "PNG"),
        "rgba.png": encode(rgb.convert("RGBA"), "PNG"),
        "gray_alpha.png": encode(src.convert("LA"), "PNG"),
        "gray16.png": encode(src.convert("I;16"), "PNG"),
        "bilevel.png": encode(src.convert("1"), "PNG"),
        "rgb.png": encode(rgb, "PNG"),
    }
    made["png_100000x100000.png"] = png_claiming(100000, 100000)
    made["png_1x1000000.png"] = png_claiming(1, 1000000)
    made["jpeg_65000x65000.jpg"] = jpeg_claiming(made["rgb.jpg"], 65000, 65000)
    made["jpeg_0x10.jpg"] = jpeg_claiming(made["gray.jpg"], 0, 10)
    made["jpeg_cut.jpg"] = made["rgb.jpg"][:len(made["rgb.jpg"]) // 2]
    made["png_cut.png"] = made["rgb.png"][:len(made["rgb.png"]) * 2 // 3]
    for name, data in sorted(made.items()):
        write(out, "image", name, data)
        write(out, "image", name + ".pre", data + tail)


# ---- cmd ------------------------------------------------------------------------------


def repl_session():
    """The commands of test_repl.sh's main session, with its variables filled in."""
    with open(os.path.join(ROOT, "tests", "test_repl.sh")) as f:
        text = f.read()
    start = text.index("repl main $M <<EOF\n") + len("repl main $M <<EOF\n")
    body = text[start:text.index("\nEOF\n", start)]
    return body.replace("$N", "64").replace("$TMP", "/tmp") + "\n"


CMD_LINES = [
    "help", "help set", "help nosuch", "layers", "size", "show layer1.0.conv1", "show nosuch",
    "regime small", "regime large first", "regime medium", "set layer1.* d=3 k=9",
    "set all d=1 k=65536", "set fc skip", "set * include", "set conv1 objective=weight",
    "set conv1 d=0", "set conv1 d=2 d=3", "set conv1 skip d=4", "set 'layer[12].*' k=2",
    "reset all", "reset layer2.*", "undo", "undo", "data", "data calib", "data eval n=5",
    "threads", "threads 0", "threads 1025", "threads 2", "seed", "seed -1",
    "seed 18446744073709551615", "seed 7", "device", "device cuda", "device tpu",
    "quit now", "layers extra", "  # a comment", "", "\t", 'set "layer1.0.conv1" d=9',
    "set 'unterminated", 'set "unterminated', "set a\\", "set a\\ b d=1", 'show "a\\"b"',
    "x=1", "set x=1 y=2", "set layer1.0.conv1 " + "k=1 " * 20, "help " + "a " * 70,
    "run script.lua", "load /nonexistent.onnx", "save /tmp/x.onnx decoded",
]


def cmd_seeds(out):
    write(out, "cmd", "repl_session", repl_session().encode())
    for i, line in enumerate(CMD_LINES):
        write(out, "cmd", "line%02d" % i, line.encode())
    write(out, "cmd", "plan_edits", "\n".join(CMD_LINES[7:26]).encode())


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_corpus.py OUT")
    out = sys.argv[1]
    plain = onnx_seeds(out)
    compressed_seeds(out, plain)
    idx_seeds(out)
    image_seeds(out)
    cmd_seeds(out)


if __name__ == "__main__":
    main()
