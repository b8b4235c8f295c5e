#!/usr/bin/env bash
# bench/quantize: how good the PQ fit is, without fine-tuning, in one run:
#   old      - the fit as it was before k-means++ and restarts (git revision
#              $BD_BENCH_OLD_REV, built here into build-bench-old/),
#   block    - this build, --objective act (the paper's block objective),
#   feedback - this build, --objective feedback (the default),
# on both Fashion-MNIST examples (1024 calibration images, top-1 on the test
# set) and on the paper's own compressed ResNet-18 from ../shared/models/
# (calibrated on skimage's photos; its 3x3 layers are exactly 256 kernels,
# so the fit should find them: top-1 there is agreement with the unquantized
# model's predictions on the photos), each for seeds 0, 1, 2: the mean and
# spread of top-1 and of every layer's relative output error, and seconds.
set -euo pipefail
BIN=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OLD_REV=${BD_BENCH_OLD_REV:-f4866ca}
SEEDS=${BD_BENCH_SEEDS:-0 1 2}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# the old fit, from its own source
OLD=$ROOT/build-bench-old
if [ ! -x "$OLD/bitdown" ] || [ "$(cat "$OLD/REV" 2>/dev/null)" != "$OLD_REV" ]; then
  rm -rf "$OLD" && mkdir -p "$OLD/src"
  git -C "$ROOT" archive "$OLD_REV" | tar -x -C "$OLD/src"
  cmake -S "$OLD/src" -B "$OLD/build" -DCMAKE_BUILD_TYPE=Release -DBD_CUDA=OFF >/dev/null
  cmake --build "$OLD/build" -j "$(nproc)" --target bitdown -- --no-print-directory >/dev/null
  cp "$OLD/build/bitdown" "$OLD/bitdown"
  echo "$OLD_REV" >"$OLD/REV"
fi

# run NAME MODEL CALIB N EVAL: every variant and seed, a JSON report each
run() {
  local name=$1 model=$2 calib=$3 n=$4 eval=$5 v bin obj s t0 t1
  for v in old block feedback; do
    # the seconds are the quantization's: no check of the student after it
    bin=$BIN obj=(--objective "${v/block/act}" --check-n 0)
    [ "$v" = old ] && bin=$OLD/bitdown obj=(--objective act)
    for s in $SEEDS; do
      t0=$(date +%s.%N)
      "$bin" quantize "$model" -o "$TMP/$name.$v.$s.onnx" --regime small "${obj[@]}" --seed "$s" \
        --calib "$calib" --calib-n "$n" --report "$TMP/$name.$v.$s.json" >/dev/null
      t1=$(date +%s.%N)
      echo "$t0 $t1" | awk '{print $2 - $1}' >"$TMP/$name.$v.$s.seconds"
      # top-1 against the labels, and the logits for agreement with the teacher
      "$BIN" eval "$TMP/$name.$v.$s.onnx" --data "$eval" --logits "$TMP/$name.$v.$s.logits" \
        >"$TMP/$name.$v.$s.eval"
    done
  done
  "$BIN" eval "$model" --data "$eval" --logits "$TMP/$name.teacher.logits" >"$TMP/$name.teacher.eval"
}

out=$TMP/section.md
{
  echo "Command: \`./bd bench quantize\` ($(date -u +%Y-%m-%d), $(nproc) cores). Each model, variant and seed: \`bitdown quantize MODEL -o OUT --regime small --objective act|feedback --seed S --calib SPEC --calib-n N --report R.json\`, then \`bitdown eval OUT\`; no fine-tuning. *old* is revision $OLD_REV (random distinct initialisation, one fit stopped at the first fixed point), *block* this build's block objective (k-means++, best of 4 restarts), *feedback* this build's default (block, then error feedback across blocks). Means over seeds $(echo $SEEDS | tr ' ' ','), with the spread (max - min) after +-."
} >"$out"

run resnet_bn examples/fmnist/resnet_bn.onnx fmnist:train 1024 fmnist:test
run mobilenet_bn examples/fmnist/mobilenet_bn.onnx fmnist:train 1024 fmnist:test
models=(resnet_bn mobilenet_bn)

R18=$ROOT/../shared/models/resnet18_bgd_small.onnx
PHOTOS=${BD_PHOTOS:-$(/usr/bin/python3 -c 'import skimage, os; print(os.path.dirname(skimage.__file__) + "/data")' 2>/dev/null || true)}
if [ -f "$R18" ] && [ -n "$PHOTOS" ]; then
  # one class folder per photo, and the model annotated with ImageNet's
  # preprocessing (the file carries none)
  for p in astronaut chelsea coffee rocket motorcycle_left motorcycle_right camera page; do
    [ -f "$PHOTOS/$p.png" ] && mkdir -p "$TMP/photos/$p" && ln -s "$PHOTOS/$p.png" "$TMP/photos/$p/$p.png"
  done
  /usr/bin/python3 - "$R18" "$TMP/resnet18.onnx" <<'PY'
import onnx, sys
m = onnx.load(sys.argv[1])
for k, v in {"bitdown.preprocess.color": "rgb", "bitdown.preprocess.resize": "256",
             "bitdown.preprocess.crop": "224", "bitdown.preprocess.mean": "0.485,0.456,0.406",
             "bitdown.preprocess.std": "0.229,0.224,0.225"}.items():
    e = m.metadata_props.add(); e.key, e.value = k, v
onnx.save(m, sys.argv[2])
PY
  run resnet18 "$TMP/resnet18.onnx" "dir:$TMP/photos" 1024 "dir:$TMP/photos"
  models+=(resnet18)
fi

/usr/bin/python3 - "$TMP" "$SEEDS" "${models[@]}" >>"$out" <<'PY'
import json, re, statistics, sys
import numpy as np
tmp, seeds, models = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
variants = ["old", "block", "feedback"]

def ms(xs, fmt):
    return (fmt + " +-" + fmt) % (statistics.mean(xs), max(xs) - min(xs))

def top1(path):
    return float(re.search(r"top1 ([\d.]+)%", open(path).read())[1])

for name in models:
    teacher = np.fromfile("%s/%s.teacher.logits" % (tmp, name), dtype="<f4")
    classes = 1000 if name == "resnet18" else 10
    t_pred = teacher.reshape(-1, classes).argmax(1)
    rows, layers = {}, {}
    for v in variants:
        acc, agree, secs, errs = [], [], [], {}
        for s in seeds:
            base = "%s/%s.%s.%s" % (tmp, name, v, s)
            acc.append(top1(base + ".eval"))
            pred = np.fromfile(base + ".logits", dtype="<f4").reshape(-1, classes).argmax(1)
            agree.append(100.0 * (pred == t_pred).mean())
            secs.append(float(open(base + ".seconds").read()))
            for l in json.load(open(base + ".json"))["layers"]:
                if l["quantized"]:
                    errs.setdefault(l["name"], []).append(l["rel_error"])
        rows[v] = (acc, agree, secs)
        layers[v] = errs
    print()
    print("### %s" % name)
    print()
    if name != "resnet18":
        print("teacher: %s" % next(l for l in open("%s/%s.teacher.eval" % (tmp, name))
                                   if l.startswith("top1")).strip())
    print()
    print("| | top-1 | agrees with teacher | seconds |")
    print("|---|---:|---:|---:|")
    for v in variants:
        acc, agree, secs = rows[v]
        # the photos' folders are not ImageNet classes: only agreement means anything there
        a = "-" if name == "resnet18" else ms(acc, "%.2f") + "%"
        print("| %s | %s | %s%% | %s |" % (v, a, ms(agree, "%.1f"), ms(secs, "%.1f")))
    print()
    print("| layer | old | block | feedback | feedback / old |")
    print("|---|---:|---:|---:|---:|")
    worst = 0
    for lname in layers["feedback"]:
        e = [layers[v][lname] for v in variants]
        ratio = statistics.mean(e[2]) / max(statistics.mean(e[0]), 1e-12)
        worst = max(worst, ratio)
        print("| %s | %s | %s | %s | %.2f |" % (lname, ms(e[0], "%.4f"), ms(e[1], "%.4f"),
                                                ms(e[2], "%.4f"), ratio))
    print()
    print("Feedback's error at most %.2fx the old fit's on every layer; mean agreement with the "
          "teacher: block %+.1f, feedback %+.1f points against the old fit's." %
          (worst, statistics.mean(rows["block"][1]) - statistics.mean(rows["old"][1]),
           statistics.mean(rows["feedback"][1]) - statistics.mean(rows["old"][1])))
    if name == "resnet18":
        worst3 = max(max(layers["feedback"][l]) for l in layers["feedback"])
        print()
        print("Re-quantizing the paper's own PQ weights: the largest relative error of any layer, "
              "any seed, is %.2g with feedback (the old fit's: %.2g)." %
              (worst3, max(max(layers["old"][l]) for l in layers["old"])))
PY
cat "$out"
"$ROOT/bench/record.sh" quantize "$out"
