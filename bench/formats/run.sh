#!/usr/bin/env bash
# bench/formats: PQ and int at equal footing, without fine-tuning: top-1,
# payload, file bytes and ratio of
#   pq-small, pq-large         - the paper's regimes (feedback objective),
#   intB-weight, -act, -feedback for B = 8, 4, 3, 2 - round to nearest on
#                                min/max, the activation-aware clipping, and
#                                that with error feedback (per channel),
#   budget-R                   - size_budget across formats at ratios R,
# on both Fashion-MNIST examples (1024 calibration images, top-1 on the test
# set) and, when present, the paper's ResNet-18 calibrated on skimage's
# photos (agreement with the unquantized model's predictions there). Writes
# the table into docs/benchmarks.md and the size-vs-top-1 frontier as
# docs/formats_frontier.svg.
set -euo pipefail
BIN=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
RATIOS=${BD_BENCH_RATIOS:-4 6 9}

# one NAME MODEL VARIANT CALIB N EVAL ARGS...: quantize, report, evaluate
one() {
  local name=$1 model=$2 v=$3 calib=$4 n=$5 eval=$6
  shift 6
  local t0 t1
  t0=$(date +%s.%N)
  "$BIN" quantize "$model" -o "$TMP/$name.$v.onnx" --calib "$calib" --calib-n "$n" \
    --report "$TMP/$name.$v.json" "$@" >"$TMP/$name.$v.log"
  t1=$(date +%s.%N)
  echo "$t0 $t1" | awk '{print $2 - $1}' >"$TMP/$name.$v.seconds"
  "$BIN" eval "$TMP/$name.$v.onnx" --data "$eval" "${EVAL_ARGS[@]}" --logits "$TMP/$name.$v.logits" \
    >"$TMP/$name.$v.eval"
}
EVAL_ARGS=()

run() {
  local name=$1 model=$2 calib=$3 n=$4 eval=$5 b o r
  "$BIN" eval "$model" --data "$eval" --logits "$TMP/$name.teacher.logits" >"$TMP/$name.teacher.eval"
  # the seconds are the quantization's: no check of the student after it
  one "$name" "$model" pq-small "$calib" "$n" "$eval" --regime small --check-n 0
  one "$name" "$model" pq-large "$calib" "$n" "$eval" --regime large --check-n 0
  for b in 8 4 3 2; do
    for o in weight act feedback; do
      one "$name" "$model" "int$b-$o" "$calib" "$n" "$eval" --regime "int$b" --objective "$o" \
        --check-n 0
    done
  done
  for r in $RATIOS; do
    one "$name" "$model" "budget-$r" "$calib" "$n" "$eval" --policy "size_budget:target_ratio=$r"
  done
}

models=()
run resnet_bn examples/fmnist/resnet_bn.onnx fmnist:train 1024 fmnist:test
run mobilenet_bn examples/fmnist/mobilenet_bn.onnx fmnist:train 1024 fmnist:test
models+=(resnet_bn mobilenet_bn)

R18=$ROOT/../shared/models/resnet18_bgd_small.onnx
PHOTOS=${BD_PHOTOS:-$(/usr/bin/python3 -c 'import skimage, os; print(os.path.dirname(skimage.__file__) + "/data")' 2>/dev/null || true)}
if [ -z "${BD_BENCH_NO_R18:-}" ] && [ -f "$R18" ] && [ -n "$PHOTOS" ]; then
  for p in astronaut chelsea coffee motorcycle_left motorcycle_right camera page; do
    [ -f "$PHOTOS/$p.png" ] && mkdir -p "$TMP/photos/$p" && ln -s "$PHOTOS/$p.png" "$TMP/photos/$p/$p.png"
  done
  PRE=(--resize 256 --crop 224 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225)
  "$BIN" eval "$R18" --data "dir:$TMP/photos" "${PRE[@]}" --logits "$TMP/resnet18.teacher.logits" \
    >"$TMP/resnet18.teacher.eval"
  for v in pq-small int8-feedback int4-weight int4-feedback; do
    case $v in
      pq-small) args=(--regime small) ;;
      *) b=${v%%-*} o=${v#*-}; args=(--regime "$b" --objective "$o") ;;
    esac
    EVAL_ARGS=("${PRE[@]}")
    one resnet18 "$R18" "$v" "dir:$TMP/photos" 1024 "dir:$TMP/photos" "${PRE[@]}" "${args[@]}"
  done
  models+=(resnet18)
fi

out=$TMP/section.md
{
  echo "Command: \`./bd bench formats\` ($(date -u +%Y-%m-%d), $(nproc) cores). Each row: \`bitdown quantize MODEL -o OUT --calib SPEC --calib-n 1024 --report R.json\` with \`--regime small|large\`, \`--regime intB --objective weight|act|feedback\`, or \`--policy size_budget:target_ratio=R\` (PQ and int candidates), then \`bitdown eval OUT\`; no fine-tuning. *payload* is what the report's \`totals.compressed_bytes\` counts, *file* the bytes on disk (\`totals.file_bytes\`). The frontier of every point is drawn in [formats_frontier.svg](formats_frontier.svg)."
} >"$out"
/usr/bin/python3 - "$TMP" "$ROOT/docs/formats_frontier.svg" "${models[@]}" >>"$out" <<'PY'
import json, re, sys, glob, os
import numpy as np
tmp, svg, models = sys.argv[1], sys.argv[2], sys.argv[3:]

def top1(path):
    m = re.search(r"top1 ([\d.]+)%", open(path).read())
    return float(m[1])

points = {}
for name in models:
    classes = 1000 if name == "resnet18" else 10
    t = np.fromfile("%s/%s.teacher.logits" % (tmp, name), dtype="<f4").reshape(-1, classes).argmax(1)
    print()
    print("### %s" % name)
    print()
    if name != "resnet18":
        print("teacher: %s" % next(l for l in open("%s/%s.teacher.eval" % (tmp, name))
                                   if l.startswith("top1")).strip())
        print()
    print("| variant | top-1 | agrees with teacher | payload bytes | file bytes | file / payload | ratio | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = sorted(glob.glob("%s/%s.*.json" % (tmp, name)), key=os.path.getmtime)
    for j in rows:
        v = j[len(tmp) + len(name) + 2:-5]
        tot = json.load(open(j))["totals"]
        base = "%s/%s.%s" % (tmp, name, v)
        pred = np.fromfile(base + ".logits", dtype="<f4").reshape(-1, classes).argmax(1)
        agree = 100.0 * (pred == t).mean()
        acc = top1(base + ".eval")
        secs = float(open(base + ".seconds").read())
        fb = tot.get("file_bytes", 0)
        print("| %s | %s | %.1f%% | %d | %d | %.3f | %.2fx | %.1f |" % (
            v, "-" if name == "resnet18" else "%.2f%%" % acc, agree, tot["compressed_bytes"], fb,
            fb / tot["compressed_bytes"], tot["ratio"], secs))
        points.setdefault(name, []).append((v, fb, agree if name == "resnet18" else acc))

# the frontier: file size (log) against top-1 (agreement for ResNet-18), one
# panel per model, a colour per family of variants
colours = {"pq": "#1f77b4", "int": "#d62728", "budget": "#2ca02c"}
W, H, pad = 420, 300, 50
parts = []
for i, name in enumerate(points):
    ox = i * W
    pts = points[name]
    xs = [np.log10(p[1]) for p in pts]
    ys = [p[2] for p in pts]
    x0, x1 = min(xs) - 0.05, max(xs) + 0.05
    y0, y1 = min(ys) - 1, max(ys) + 1
    X = lambda x: ox + pad + (x - x0) / (x1 - x0) * (W - 2 * pad)
    Y = lambda y: H - pad - (y - y0) / (y1 - y0) * (H - 2 * pad)
    parts.append('<text x="%d" y="20" font-size="14">%s</text>' % (ox + pad, name))
    parts.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (ox + pad, H - pad, ox + W - pad, H - pad))
    parts.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (ox + pad, pad, ox + pad, H - pad))
    parts.append('<text x="%d" y="%d" font-size="11">file KB (log)</text>' % (ox + W / 2 - 30, H - 15))
    parts.append('<text x="%d" y="%d" font-size="11" transform="rotate(-90 %d %d)">%s</text>' % (
        ox + 15, H / 2 + 30, ox + 15, H / 2 + 30, "agreement %" if name == "resnet18" else "top-1 %"))
    for k in range(5):
        xv = x0 + (x1 - x0) * k / 4
        parts.append('<text x="%d" y="%d" font-size="9">%.0f</text>' % (X(xv) - 8, H - pad + 14, 10 ** xv / 1024))
        yv = y0 + (y1 - y0) * k / 4
        parts.append('<text x="%d" y="%d" font-size="9">%.1f</text>' % (ox + 12, Y(yv) + 3, yv))
    # the upper-left frontier: no point both smaller and more accurate
    front = sorted((p for p in pts if not any(q[1] <= p[1] and q[2] > p[2] for q in pts)), key=lambda p: p[1])
    parts.append('<polyline fill="none" stroke="#999" points="%s"/>' % " ".join(
        "%.1f,%.1f" % (X(np.log10(p[1])), Y(p[2])) for p in front))
    for v, fb, acc in pts:
        fam = "budget" if v.startswith("budget") else "pq" if v.startswith("pq") else "int"
        parts.append('<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s: %d bytes, %.2f</title></circle>' % (
            X(np.log10(fb)), Y(acc), colours[fam], v, fb, acc))
        parts.append('<text x="%.1f" y="%.1f" font-size="8">%s</text>' % (X(np.log10(fb)) + 4, Y(acc) - 4, v))
legend = " ".join('<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d" font-size="11">%s</text>' % (
    pad + 90 * j, H - 2, c, pad + 90 * j + 14, H + 8, f) for j, (f, c) in enumerate(colours.items()))
with open(svg, "w") as f:
    f.write('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif">\n' % (W * len(points), H + 14))
    f.write("\n".join(parts + [legend]))
    f.write("\n</svg>\n")
PY
cat "$out"
"$ROOT/bench/record.sh" formats "$out"
