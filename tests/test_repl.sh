#!/usr/bin/env bash
# bitdown repl end to end: every command of the command language through
# piped input on the Fashion-MNIST ResNet, with the numbers it prints checked
# against each other and against known values (tolerances, not golden text);
# errors, line numbers and --keep-going; then the terminal side (prompt,
# completion, history, Ctrl-C) through a pseudo-terminal.
. "$(dirname "$0")/support/testlib.sh"
PY=/usr/bin/python3

# repl NAME [ARGS...] <commands: the REPL on the example model; stdout in
# $TMP/NAME.out, stderr in $TMP/NAME.err, its exit status in $TMP/NAME.rc.
repl() {
  local name=$1; shift
  "$BIN" repl "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
  echo $? >"$TMP/$name.rc"
}
rc_of() { cat "$TMP/$1.rc"; }
# expect_error NAME PATTERN: the session exited 1 and said PATTERN on stderr
expect_error() {
  [ "$(rc_of "$1")" = 1 ] || fail "$1: exit status $(rc_of "$1"), expected 1"
  grep -qF -- "$2" "$TMP/$1.err" || fail "$1: stderr lacks '$2': $(cat "$TMP/$1.err")"
}

# ---- one long session: every command, in an order that changes the state ----
repl main $M <<EOF
# the plan as loaded, then the small regime again (comments and blank lines are skipped)

regime small
layers
data calib fmnist:train n=$N
data eval fmnist:test n=500
data
quantize layer1.* iters=10
layers
size
show layer1.0.conv1
eval
undo
layers
size
   quantize iters=5   # every layer the plan has
layers
size
reset layer2.*
layers
save $TMP/q.onnx
save $TMP/d.onnx decoded
predict examples/images/fmnist_test_0000_ankle_boot.png
device cpu
threads 1
threads
seed 3
set layer3.0.conv2 d=18 k=64
set fc skip
layers
set fc include
regime large
regime small first
help
help quantize
quit
layers
EOF
[ "$(rc_of main)" = 0 ] || fail "main session exited $(rc_of main): $(cat "$TMP/main.err")"
[ ! -s "$TMP/main.err" ] || fail "main session wrote to stderr: $(cat "$TMP/main.err")"

# What the checks below parse: every 'layers' table and every 'size' report.
cat >"$TMP/parse.py" <<'PY'
import re
ROW = re.compile(r"^(\S+) +(.+?) +(\[[^\]]*\]) +(\d+) +(\d+) +(\d+) +(\d+\.\d{3}) +(\d+\.\d{3}) +([\d.]+) "
                 r"+(\S+)  (float|quantized|tuned)( skip)?$")
def tables(out):
    """Every 'layers' table, in order: {name: row dict}."""
    found, cur = [], None
    for line in out.splitlines():
        if line.startswith("layer ") and "bits/w" in line:
            cur = {}
            found.append(cur)
            continue
        m = ROW.match(line) if cur is not None else None
        if m:
            cur[m[1]] = dict(kind=m[2], shape=m[3], params=int(m[4]), d=int(m[5]), k=int(m[6]),
                             plan_bits=float(m[7]), bits=float(m[8]), kb=float(m[9]),
                             err=None if m[10] == "-" else float(m[10]), state=m[11],
                             skip=bool(m[12]))
        else:
            cur = None
    return found

def sizes(out):
    """Every 'size' report, in order: bytes of each part, and the ratio."""
    return [dict(fp32=int(m[1]), compressed=int(m[2]), codes=int(m[3]), codebooks=int(m[4]),
                 rest=int(m[5]), ratio=float(m[6]))
            for m in re.finditer(r"^fp32 +[\d.]+ MB \((\d+) bytes\)\n"
                                 r"compressed +[\d.]+ MB \((\d+) bytes\)\n"
                                 r"  codes +[\d.]+ MB \((\d+) bytes\)\n"
                                 r"  codebooks +[\d.]+ MB \((\d+) bytes\)\n"
                                 r"  fp32 rest +[\d.]+ MB \((\d+) bytes\)\n"
                                 r"ratio +([\d.]+)x$", out, re.M)]
PY

$PY - "$TMP/main.out" "$TMP" <<'PY' || fail "main session: the numbers do not add up (above)"
import json, math, os, re, sys
sys.path.insert(0, sys.argv[2])
import parse
out = open(sys.argv[1]).read()
tmp = sys.argv[2]
bad = []
def check(cond, what):
    if not cond:
        bad.append(what)

T, S = parse.tables(out), parse.sizes(out)
check(len(T) == 6, "6 layer tables (the 'layers' after quit must not run), got %d" % len(T))
check(len(S) == 3, "3 size reports, got %d" % len(S))
if bad:
    print("\n".join(bad)); sys.exit(1)

# the table as planned by the small regime
want = {  # name: kind, shape, d, k
    "conv1": ("conv 3x3", "[16, 1, 3, 3]", 9, 2),
    "layer1.0.conv1": ("conv 3x3", "[16, 16, 3, 3]", 9, 32),
    "layer1.0.conv2": ("conv 3x3", "[16, 16, 3, 3]", 9, 32),
    "layer2.0.downsample.0": ("conv 1x1", "[32, 16, 1, 1]", 4, 16),
    "layer2.0.conv1": ("conv 3x3", "[32, 16, 3, 3]", 9, 64),
    "layer2.0.conv2": ("conv 3x3", "[32, 32, 3, 3]", 9, 128),
    "layer3.0.downsample.0": ("conv 1x1", "[64, 32, 1, 1]", 4, 64),
    "layer3.0.conv1": ("conv 3x3", "[64, 32, 3, 3]", 9, 256),
    "layer3.0.conv2": ("conv 3x3", "[64, 64, 3, 3]", 9, 256),
    "fc": ("fc", "[10, 64]", 4, 32),
}
t = T[0]
check(list(t) == list(want), "table 1 layers: %s" % list(t))
for name, (kind, shape, d, k) in want.items():
    r = t.get(name)
    if not r:
        continue
    dims = [int(x) for x in shape.strip("[]").split(", ")]
    params = 1
    for x in dims:
        params *= x
    check((r["kind"], r["shape"], r["d"], r["k"]) == (kind, shape, d, k), "table 1 %s: %s" % (name, r))
    check(r["params"] == params, "%s params %d" % (name, r["params"]))
    check(r["state"] == "float" and r["err"] is None, "%s starts float with no error" % name)
    check(abs(r["kb"] - params * 4 / 1024) < 0.001, "%s fp32 size %.3f KB" % (name, r["kb"]))
    check(abs(r["plan_bits"] - math.log2(k) / d) < 0.001, "%s plan b/w %.3f" % (name, r["plan_bits"]))
    check(r["bits"] == 32, "%s stores %.3f bits/w while float" % (name, r["bits"]))
    check(r["skip"] == (name == "conv1"), "%s skip marker" % name)
check(re.search(r"^10 layers: 10 float, 0 quantized, 0 tuned; the plan skips 1$", out, re.M),
      "table footer")
check("conv1: skip (first conv: kept in fp32)" in out, "regime names the skipped first conv")
check("fc: d=4 k=32 objective=feedback (k clamped from 2048 to 32)" in out, "regime names the clamp")
check(re.search(r"^calib data: fmnist:train n=\d+$", out, re.M) and
      "eval data: fmnist:test n=500" in out, "data lines")

# quantize layer1.*: those two quantized with an error in (0, 1), the rest float
def quantized(t):
    return sorted(n for n, r in t.items() if r["state"] == "quantized")
t = T[1]
check(quantized(t) == ["layer1.0.conv1", "layer1.0.conv2"], "after quantize layer1.*: %s" % quantized(t))
for n, r in t.items():
    if n.startswith("layer1."):
        check(r["err"] is not None and 0 < r["err"] < 1, "%s rel error %s" % (n, r["err"]))
        # 256 codes of 5 bits and a 32 x 9 fp16 codebook
        check(abs(r["kb"] * 1024 - (160 + 32 * 9 * 2)) < 1, "%s stored %.3f KB" % (n, r["kb"]))
        check(r["bits"] == r["plan_bits"] == 0.556, "%s bits/w %s" % (n, r))
    else:
        check(r["state"] == "float" and r["err"] is None and r["bits"] == 32, "%s stays float" % n)
for n in ("layer1.0.conv1", "layer1.0.conv2"):
    m = re.search(r"^%s: quantized d=9 k=32, rel error ([\d.]+), (\d+) iterations" % re.escape(n), out, re.M)
    check(m and abs(float(m[1]) - t[n]["err"]) < 1e-9 and 1 <= int(m[2]) <= 10, "quantize line of %s" % n)

# size: consistent with the table, the split adds up, ratio > 1
s = S[0]
check(s["compressed"] == s["codes"] + s["codebooks"] + s["rest"], "size split %s" % s)
check(s["codes"] + s["codebooks"] == 2 * (160 + 576), "codes + codebooks %s" % s)
check(s["fp32"] - s["rest"] == 2 * 2304 * 4, "fp32 rest is fp32 less the quantized weights %s" % s)
check(1 < s["ratio"] and abs(s["ratio"] - s["fp32"] / s["compressed"]) < 0.006, "ratio %s" % s)
# what the table does not list (biases, BatchNorm) is the same fp32 in both
outside = s["fp32"] - 4 * sum(r["params"] for r in T[1].values())
check(abs(s["compressed"] - 1024 * sum(r["kb"] for r in T[1].values()) - outside) < 10,
      "the table's sizes and the size report agree")

# show: the layer, its divisors, the plan and the codebook
def field(name):
    m = re.search(r"^%s +(.*)$" % re.escape(name), out, re.M)
    return m[1] if m else ""
check(field("row length") == "144", "show row length")
check(field("divisors") == "1 2 3 4 6 8 9 12 16 18 24 36 48 72 144", "show divisors")
check(field("max k") == "32 (d=9: 256 subvectors)", "show max k")
check(field("state") == "quantized", "show state")
m = re.match(r"(\d+) of 32$", field("codes used"))
check(m and 2 <= int(m[1]) <= 32, "show codes used '%s'" % field("codes used"))
check(1 <= int(field("iterations") or 0) <= 10, "show iterations")
m = re.match(r"([\d.e-]+) -> ([\d.e-]+)$", field("EM objective"))
check(m and 0 < float(m[2]) <= float(m[1]), "show EM objective '%s'" % field("EM objective"))
check(abs(float(field("rel error") or -1) - T[1]["layer1.0.conv1"]["err"]) < 1e-9, "show rel error")
check(field("bits/w plan") == field("bits/w now") == "0.556", "show bits/w")

# eval: the teacher near its recorded accuracy, the student not above it
acc = {}
for who in ("teacher", "student"):
    m = re.search(r"^%s top1 ([\d.]+)%% top5 ([\d.]+)%% \((\d+) images\)$" % who, out, re.M)
    check(m and int(m[3]) == 500, "%s eval line" % who)
    acc[who] = (float(m[1]), float(m[2])) if m else (0, 0)
check(90 <= acc["teacher"][0] <= 97 and acc["teacher"][1] >= 98, "teacher accuracy %s" % (acc["teacher"],))
check(50 <= acc["student"][0] <= acc["teacher"][0], "student accuracy %s" % (acc["student"],))

# undo: all float again, the size as loaded
check("undid: quantize layer1.*" in out, "undo says what it undid")
check(quantized(T[2]) == [], "after undo: %s" % quantized(T[2]))
check(S[1]["compressed"] == S[1]["fp32"] and S[1]["ratio"] == 1.0, "size after undo %s" % S[1])
check(re.search(r"^size [\d.]+ MB -> ([\d.]+) MB, ratio 1\.00x$", out, re.M), "undo's size line")

# quantize (all): every layer but the skipped first conv; a better ratio
t = T[3]
check(quantized(t) == sorted(n for n in want if n != "conv1"), "quantize all: %s" % quantized(t))
check(t["conv1"]["state"] == "float", "conv1 skipped by the plan")
check(S[2]["ratio"] > S[0]["ratio"] > 1, "ratio grows: %s" % [x["ratio"] for x in S])

# reset layer2.*: those float again, the rest untouched
t = T[4]
check(quantized(t) == sorted(n for n in want if n != "conv1" and not n.startswith("layer2.")),
      "after reset layer2.*: %s" % quantized(t))
for n in quantized(t):
    check(t[n]["err"] == T[3][n]["err"], "%s kept its codebook through reset" % n)
check(re.search(r"^layer2\.0\.conv1: float$", out, re.M), "reset lists the layers")
json.dump(t, open(os.path.join(tmp, "saved.json"), "w"))  # for the reload below

# save: the reported size is the file's, beside the original file's and
# (compressed) the payload's, which the size report gave
orig = os.path.getsize("examples/fmnist/resnet_bn.onnx")
for path, what in (("q.onnx", "compressed"), ("d.onnx", r"decoded \(dense fp32\)")):
    m = re.search(r"^wrote (\S+): %s, (\d+) bytes, ([\d.]+) MB on disk, ratio ([\d.]+)x to the "
                  r"original file \(([\d.]+) MB\)(; payload ([\d.]+) MB, ratio ([\d.]+)x)?$" % what, out, re.M)
    p = os.path.join(tmp, path)
    check(m and m[1] == p and os.path.exists(p) and int(m[2]) == os.path.getsize(p), "save %s" % path)
    if m and os.path.exists(p):
        size = os.path.getsize(p)
        check(float(m[3]) == round(size / 2**20, 4) and float(m[5]) == round(orig / 2**20, 4) and
              float(m[4]) == round(orig / size, 2), "save %s: sizes on disk %s" % (path, m.groups()))
        check((m[6] is None) == (path == "d.onnx"), "save %s: the payload %s" % (path, m[6]))
if os.path.exists(os.path.join(tmp, "d.onnx")) and os.path.exists(os.path.join(tmp, "q.onnx")):
    check(os.path.getsize(os.path.join(tmp, "d.onnx")) > os.path.getsize(os.path.join(tmp, "q.onnx")),
          "the decoded file is larger")

# predict: five guesses each, Ankle boot first for the teacher, most likely first
for who in ("teacher", "student"):
    rows = re.findall(r"^%s #(\d) +([\d.]+)%% (.+) \((\d+)\)$" % who, out, re.M)
    check([int(r[0]) for r in rows] == [1, 2, 3, 4, 5], "%s predictions %s" % (who, rows))
    probs = [float(r[1]) for r in rows]
    check(probs == sorted(probs, reverse=True), "%s probabilities descend" % who)
    if who == "teacher":
        check(rows and rows[0][2] == "Ankle boot" and rows[0][3] == "9" and probs[0] > 90,
              "teacher's first guess %s" % (rows[:1],))

# settings
for line in ("device cpu", "threads 1", "seed 3"):
    check(re.search("^%s$" % line, out, re.M), "'%s' line" % line)
check(len(re.findall(r"^threads 1$", out, re.M)) == 2, "threads without N shows it")

# set: the plan changes, a quantized layer keeps its codebook; skip marks
check("layer3.0.conv2: d=18 k=64 objective=feedback" in out, "set d=18 k=64 line")
t = T[5]
check((t["layer3.0.conv2"]["d"], t["layer3.0.conv2"]["k"]) == (18, 64), "set applied %s" % t["layer3.0.conv2"])
check(t["layer3.0.conv2"]["state"] == "quantized" and t["layer3.0.conv2"]["kb"] == T[4]["layer3.0.conv2"]["kb"],
      "set keeps the codebook until quantized again")
check(t["fc"]["skip"] and re.search(r"^fc: skip\b", out, re.M), "set fc skip")
check(re.search(r"^plan: large regime, 9 of 10 layers to quantize$", out, re.M), "regime large")
check(re.search(r"^plan: small regime, 10 of 10 layers to quantize$", out, re.M), "regime small first")

# help: every command of the table, and one command's usage
for c in ("load data regime set layers show quantize finetune train reset undo eval predict size "
          "save device threads seed run help quit").split():
    check(re.search(r"^  %s +\S" % c, out, re.M), "help lists %s" % c)
check("usage: quantize [GLOB|all] [iters=N]" in out, "help quantize")

if bad:
    print("\n".join(bad))
    sys.exit(1)
PY

# ---- load: a saved compressed file comes back with the same quantized layers ----
printf 'layers\nsize\n' | repl reload "$TMP/q.onnx"
[ "$(rc_of reload)" = 0 ] || fail "reload: $(cat "$TMP/reload.err")"
$PY - "$TMP" <<'PY' || fail "the reloaded file's layers differ from those saved"
import json, sys
sys.path.insert(0, sys.argv[1])
import parse
saved = json.load(open(sys.argv[1] + "/saved.json"))
t = parse.tables(open(sys.argv[1] + "/reload.out").read())
keys = ("d", "k", "kb", "err", "state")  # not the plan's skip: the file does not keep it
ok = len(t) == 1 and len(saved) == 10 and all(
    {k: saved[n][k] for k in keys} == {k: t[0].get(n, {}).get(k) for k in keys} for n in saved)
if not ok:
    print("saved:   ", saved, "\nreloaded:", t)
sys.exit(0 if ok else 1)
PY
# int layers: planned, quantized, saved and loaded back with their grids
printf 'set layer3.* int=3 per=tensor\nlayers\nquantize layer3.*\nshow layer3.0.conv2\nsave %s\n' \
  "$TMP/i.onnx" | repl int_save $M
[ "$(rc_of int_save)" = 0 ] || fail "int session: $(cat "$TMP/int_save.err")"
grep -qE '^layer3\.0\.conv2 .* - +int3 +3\.000 +32\.000 ' "$TMP/int_save.out" || fail "set int=3 plan row: $(cat "$TMP/int_save.out")"
grep -q '^layer3.0.conv2: quantized int=3 per=tensor sym=0, rel error' "$TMP/int_save.out" ||
  fail "quantize line of an int layer: $(cat "$TMP/int_save.out")"
grep -q '^grid          int=3 per=tensor sym=0 objective=feedback$' "$TMP/int_save.out" ||
  fail "show of an int layer: $(cat "$TMP/int_save.out")"
printf 'show layer3.0.conv2\nset layer3.0.conv2 k=16\n' | repl int_load "$TMP/i.onnx"
grep -q '^grid          int=3 per=tensor sym=0 objective=' "$TMP/int_load.out" ||
  fail "the reloaded int layer: $(cat "$TMP/int_load.out" "$TMP/int_load.err")"
grep -q 'weights       36864' "$TMP/int_load.out" || fail "the reloaded int layer's codes: $(cat "$TMP/int_load.out")"
grep -q '^layer3.0.conv2: d=9 k=16 objective=' "$TMP/int_load.out" || fail "k= makes an int layer PQ again: $(cat "$TMP/int_load.out")"
printf 'set layer3.0.conv2 int=17\n' | repl int_bad $M
expect_error int_bad "int wants a whole number from 1 to 16, not '17'"

printf 'load %s\nlayers\n' "$TMP/d.onnx" | repl load_decoded
grep -q "^loaded $TMP/d.onnx: 10 layers, 0 quantized$" "$TMP/load_decoded.out" || fail "load of the decoded file: $(cat "$TMP/load_decoded.out" "$TMP/load_decoded.err")"

# without a model: commands that need one say so; load brings one in
printf 'help size\nlayers\n' | repl nomodel
expect_error nomodel "bitdown: line 2: layers: no model is loaded (use 'load PATH')"
grep -q '^usage: size$' "$TMP/nomodel.out" || fail "help works without a model"
printf 'load %s\nlayers\ndata eval n=100\neval\n' $M | repl load_later
[ "$(rc_of load_later)" = 0 ] && grep -q '^10 layers: 10 float' "$TMP/load_later.out" || fail "load then layers"
grep -q '^eval data: fmnist:test n=100$' "$TMP/load_later.out" || fail "data eval n=100 keeps the model's spec"
grep -qE '^student top1 [0-9.]+% top5 [0-9.]+% \(100 images\)$' "$TMP/load_later.out" || fail "eval uses the data's n"

# ---- train: one line per epoch and a summary; undo; its options' help ----
printf 'data eval fmnist:test n=50\ntrain epochs=2 steps=3 batch=16 lr=0.01\nundo\nhelp train\n' |
  repl train $M
[ "$(rc_of train)" = 0 ] || fail "train session: $(cat "$TMP/train.err")"
for e in 1 2; do
  grep -qE "^epoch $e/2 loss [0-9.]+ train top1 [0-9.]+% eval top1 [0-9.]+% lr [0-9.e-]+ [0-9.]+ s$" \
    "$TMP/train.out" || fail "train printed no line for epoch $e: $(cat "$TMP/train.out")"
done
grep -qE '^trained: 2 epochs, loss [0-9.]+ -> [0-9.]+, student eval top1 [0-9.]+%, noise none' \
  "$TMP/train.out" || fail "train printed no summary: $(cat "$TMP/train.out")"
grep -q '^undid: train$' "$TMP/train.out" || fail "undo after train: $(cat "$TMP/train.out")"
for k in epochs= lr= quant_noise= eval_n=; do
  grep -qE "^  $k" "$TMP/train.out" || fail "help train lacks the option $k"
done
printf 'train lr=-1\n' | repl train_lr $M
expect_error train_lr "bitdown: line 1: train: lr must lie in"
printf 'train bogus=1\n' | repl train_bogus $M
expect_error train_bogus "bitdown: line 1: train: unknown option 'bogus'"
# with a layer quantized: its codebook trains, the teacher stays; undo takes it back
printf 'data eval fmnist:test n=20\nquantize fc iters=2\ntrain steps=1 batch=8\nlayers\nundo\nlayers\n' |
  repl train_quantized $M
[ "$(rc_of train_quantized)" = 0 ] || fail "train with a quantized layer: $(cat "$TMP/train_quantized.err")"
grep -q "^trained: 1 epoch, .*; the PQ layers are tuned, the float layers start from their trained weights, the teacher is as it was$" "$TMP/train_quantized.out" &&
  grep -qE '^fc .* tuned$' "$TMP/train_quantized.out" && grep -q '^undid: train$' "$TMP/train_quantized.out" &&
  [ "$(grep -E '^fc ' "$TMP/train_quantized.out" | tail -1 | awk '{print $NF}')" = quantized ] ||
  fail "train with a quantized layer: $(cat "$TMP/train_quantized.out")"

# ---- errors: the first one stops a piped session, naming the line ----
printf 'set layer1.0.conv1 d=7\nlayers\n' | repl bad_d $M
expect_error bad_d "bitdown: line 1: set: layer 'layer1.0.conv1': d=7 does not divide its row length 144"
[ ! -s "$TMP/bad_d.out" ] || fail "a failing command did not stop the session: $(cat "$TMP/bad_d.out")"
printf '# a comment\n\n   \nset layer1.* k=256\nlayers\n' | repl bad_k $M
expect_error bad_k "bitdown: line 4: set: layer 'layer1.0.conv1': k=256 is too large"
grep -q 'may be at most 32' "$TMP/bad_k.err" || fail "the k refusal says the largest k allowed"
# clamp=1: the same k becomes each layer's largest, said per layer
printf 'set layer1.* k=256 clamp=1\nset layer3.* k=4096 clamp=1\n' | repl clamp $M
for msg in "layer1.0.conv1: d=9 k=32 objective=feedback (k clamped from 256 to 32)" \
  "layer3.0.downsample.0: d=4 k=64 objective=feedback (k clamped from 4096 to 64)" \
  "layer3.0.conv2: d=9 k=512 objective=feedback (k clamped from 4096 to 512)"; do
  grep -qF -- "$msg" "$TMP/clamp.out" || fail "clamp=1: stdout lacks '$msg': $(cat "$TMP/clamp.out")"
done

# --keep-going: every error said, the rest done, exit 1 at the end; a refused
# set changes nothing
repl keep $M --keep-going <<EOF
set layer1.0.conv1 d=7
set layer1.* k=256
frobnicate now
show 'layer1
show nosuch
layers extra
quantize bogus=1
eval n=abc
undo
run $TMP/nothing.lua
device cuda
device
layers
EOF
expect_error keep "bitdown: line 1: set: layer 'layer1.0.conv1': d=7"
for msg in "line 2: set: layer 'layer1.0.conv1': k=256" \
  "line 3: unknown command 'frobnicate' (try 'help')" \
  "line 4: show: the single quote at column 6 is not closed" \
  "line 5: show: no layer 'nosuch'" \
  "line 6: layers: unexpected 'extra' (usage: layers)" \
  "line 7: quantize: unknown option 'bogus' (it takes iters, restarts, tol, tune, target_ratio, " \
  "line 8: eval: n wants a whole number from 1 to" \
  "line 9: undo: nothing to undo" \
  "line 10: run: " "nothing.lua"; do
  grep -qF -- "$msg" "$TMP/keep.err" || fail "--keep-going: stderr lacks '$msg': $(cat "$TMP/keep.err")"
done
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  echo "SKIP: a GPU is visible; 'device cuda' is checked by the GPU tests"
else
  grep -q "^bitdown: line 11: device cuda: .*CPU" "$TMP/keep.err" || fail "device cuda without a GPU: $(cat "$TMP/keep.err")"
  grep -q '^device cpu$' "$TMP/keep.out" || fail "device stays cpu after cuda fails"
fi
grep -qE '^layer1\.0\.conv1 .* 9 +32 .* float$' "$TMP/keep.out" || fail "a refused set changed the plan"
[ "$(grep -c '^bitdown: line' "$TMP/keep.err")" = 11 ] || fail "--keep-going: one message per failing line"

# piped input gets no prompt and nothing but the answers
printf 'device cpu\n' | repl quiet $M
[ "$(cat "$TMP/quiet.out")" = "device cpu" ] || fail "piped output is not just the answer: $(cat "$TMP/quiet.out")"
repl missing /nonexistent.onnx </dev/null
expect_error missing "/nonexistent.onnx"
"$BIN" repl --help | grep -q '^usage: bitdown repl' || fail "repl --help"

# ---- at a terminal: prompt, completion, history, progress bar, Ctrl-C ----
HIST="$TMP/history"
$PY - "$BIN" $M "$HIST" <<'PY' || fail "the REPL at a terminal (above)"
import os, pty, select, sys, time
binary, model, hist = sys.argv[1:4]
env = dict(os.environ, BITDOWN_HISTORY=hist, TERM="dumb")
pid, fd = pty.fork()
if pid == 0:
    os.execve(binary, [binary, "repl", model], env)
seen = b""
def until(pattern, timeout=60):
    global seen
    end = time.time() + timeout
    while time.time() < end:
        if pattern in seen:
            got, seen = seen[:seen.index(pattern) + len(pattern)], seen[seen.index(pattern) + len(pattern):]
            return got
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    sys.exit("no %r in %r" % (pattern, seen[-2000:]))
until(b"loaded " + model.encode() + b": 10 layers, 0.31 MB")  # says what it loaded
until(b"bitdown> ")
os.write(fd, b"sho\t")                    # a command completes
until(b"show ")
os.write(fd, b"layer3.0.conv\t\t")        # two layer names: both listed
until(b"layer3.0.conv1  layer3.0.conv2")
os.write(fd, b"2\r")
until(b"bitdown> ")
os.write(fd, b"quantize all it\t")        # an option completes with its '='
until(b"iters=")
os.write(fd, b"\x15data calib fmnist:train n=4096\r")
until(b"bitdown> ")
os.write(fd, b"quantize\r")               # a progress bar, then Ctrl-C
until(b"quantize [")
os.write(fd, b"\x03")
until(b"canceled")
until(b"bitdown> ")
os.write(fd, b"half a line\x03")          # Ctrl-C at the prompt: a fresh line
until(b"bitdown> ")
os.write(fd, b"layers\r")
table = until(b"the plan skips 1")
if b"10 layers: 10 float, 0 quantized" not in table:
    sys.exit("Ctrl-C did not roll the quantization back: %r" % table)
os.write(fd, b"quit\r")
_, status = os.waitpid(pid, 0)
if status != 0:
    sys.exit("exit status %d" % status)
lines = open(hist).read().splitlines()
if lines != ["show layer3.0.conv2", "data calib fmnist:train n=4096", "quantize", "layers", "quit"]:
    sys.exit("history file: %r" % lines)
PY

# ---- leaving at a terminal (tmux): unsaved work asks first ----
if command -v tmux >/dev/null; then
  unset TMUX
  SOCK=bd-test-repl-${TMP##*/} # the temporary folder's random name: no stale socket shares it
  # one server for the whole test: by default it exits with its last
  # session, and the next session's client could reach it while it was
  # going ("server exited unexpectedly", seen once with two test runs on
  # the machine)
  echo 'set -g exit-empty off' >"$TMP/tmux.conf"
  T() { tmux -L "$SOCK" -f "$TMP/tmux.conf" "$@"; }
  trap 'T kill-server 2>/dev/null; rm -rf "$TMP"' EXIT
  # screen_ends PATTERN: waits until the screen's last line that is not
  # blank matches PATTERN (an extended regex)
  ends_with() {
    T capture-pane -p -t repl >"$TMP/screen" 2>/dev/null &&
      [ -n "$(grep -v '^ *$' "$TMP/screen" | tail -1 | grep -E -- "$1")" ]
  }
  screen_ends() {
    eventually ends_with "$1" && return 0
    echo "--- the screen while waiting for '$1' at its end:" >&2
    cat "$TMP/screen" >&2
    return 1
  }
  # ran PATTERN: waits until one screen shows PATTERN and ends with the
  # prompt. The prompt alone is no sign: it is there before a command's
  # output appears.
  output_then_prompt() { ends_with '^bitdown> ?$' && grep -qE -- "$1" "$TMP/screen"; }
  ran() {
    eventually output_then_prompt "$1" && return 0
    echo "--- the screen while waiting for '$1', then the prompt:" >&2
    cat "$TMP/screen" >&2
    return 1
  }
  # session: the REPL on the example in tmux; its exit status in
  # $TMP/tmux.rc, its stderr in $TMP/tmux.err. Without a prompt it says
  # what it knows and fails, and the checks that need the session are
  # skipped (each would wait its full patience for a screen that never
  # comes).
  session() {
    rm -f "$TMP/tmux.rc"
    T new-session -d -s repl -x 120 -y 30 "cd '$PWD' && BITDOWN_STATE_DIR='$TMP/tstate' \
      BITDOWN_HISTORY='$TMP/thist' '$BIN' repl $M 2>'$TMP/tmux.err'; echo \$? >'$TMP/tmux.rc'"
    screen_ends '^bitdown> ?$' && return 0
    fail "no prompt in tmux: exit status '$(cat "$TMP/tmux.rc" 2>/dev/null)', stderr: $(cat "$TMP/tmux.err" 2>/dev/null)"
    return 1
  }
  ended() { # waits for the session's exit status; 0 expected
    eventually test -s "$TMP/tmux.rc"
    [ "$(cat "$TMP/tmux.rc" 2>/dev/null)" = 0 ] || fail "$1: exit status '$(cat "$TMP/tmux.rc" 2>/dev/null)'"
  }
  session && {
    T send-keys -t repl 'quantize fc iters=2' Enter
    ran '^fc: quantized' || fail "quantize fc in tmux"
    T send-keys -t repl C-d
    screen_ends '^1 quantized layer is not saved: quit without saving\? \(y/n\)' ||
      fail "Ctrl-D with unsaved work did not ask"
    T send-keys -t repl n Enter
    screen_ends '^bitdown> ?$' || fail "'n' did not keep the REPL"
    [ ! -s "$TMP/tmux.rc" ] || fail "'n' left the REPL"
    T send-keys -t repl quit Enter
    screen_ends 'quit without saving\? \(y/n\)' || fail "quit with unsaved work did not ask"
    T send-keys -t repl C-d          # a second Ctrl-D leaves
    ended "Ctrl-D at the question"
  }
  session && {                     # saved work: Ctrl-D leaves at once
    T send-keys -t repl 'quantize fc iters=2' Enter
    ran '^fc: quantized' || fail "quantize fc in tmux, again"
    T send-keys -t repl 'save '"$TMP/t.onnx" Enter
    ran "^wrote $TMP/t\.onnx" || fail "save in tmux"
    T send-keys -t repl C-d
    ended "Ctrl-D with the work saved"
    grep -q 'not saved' "$TMP/screen" && fail "Ctrl-D asked though the work was saved"
  }
fi
# from a pipe, the end of the input leaves at once, unsaved work or not
printf 'quantize fc iters=2\n' | repl piped_eof $M
[ "$(rc_of piped_eof)" = 0 ] && ! grep -q 'not saved' "$TMP/piped_eof.out" "$TMP/piped_eof.err" ||
  fail "a pipe's end with unsaved work: $(cat "$TMP/piped_eof.out" "$TMP/piped_eof.err")"

# data sets the preprocessing of every image: evaluation sees it, a mean
# with more values than the input's channels is refused and changes nothing
printf 'eval n=200\ndata mean=5 std=0.1\neval n=200\ndata mean=5,5,5\ndata color=rgb\ndata\n' |
  "$BIN" repl $M --keep-going >"$TMP/pp" 2>"$TMP/pp.err"
[ "$(grep -c '^teacher top1 94.50%' "$TMP/pp")" = 1 ] || fail "data mean= did not reach eval: $(cat "$TMP/pp")"
grep -q "mean = '5,5,5': 3 values for 1 channels" "$TMP/pp.err" || fail "data mean=5,5,5: $(cat "$TMP/pp.err")"
grep -q "input 'input' of .* has 1 channels, not 3" "$TMP/pp.err" || fail "data color=rgb: $(cat "$TMP/pp.err")"
[ "$(tail -1 "$TMP/pp")" = "preprocessing: gray resize=0 crop=0 mean=5,5,5 std=0.1,0.1,0.1" ] ||
  fail "refused data options changed the preprocessing: $(tail -1 "$TMP/pp")"


# finetune: the tuned layers' errors measured again; undo brings the old ones back
printf 'quantize layer1.* iters=3\nfinetune iters=20\nlayers\nundo\nlayers\n' | repl tuned_errors $M
$PY - "$TMP/tuned_errors.out" "$TMP" <<'PY' || fail "finetune's errors: $(cat "$TMP/tuned_errors.out" "$TMP/tuned_errors.err")"
import re, sys
sys.path.insert(0, sys.argv[2])
import parse
out = open(sys.argv[1]).read()
q = {m[1]: float(m[2]) for m in re.finditer(r"^(\S+): quantized .*, rel error ([\d.]+),", out, re.M)}
tuned, undone = parse.tables(out)
assert sorted(q) == ["layer1.0.conv1", "layer1.0.conv2"], q
assert all(tuned[n]["state"] == "tuned" for n in q) and any(tuned[n]["err"] != q[n] for n in q), (q, tuned)
assert all(undone[n]["state"] == "quantized" and undone[n]["err"] == q[n] for n in q), (q, undone)
PY

# --resume says what it brought back: the layers the checkpoint held
printf 'quantize layer1.* iters=2\n' | BITDOWN_STATE_DIR=$TMP/state repl resume_a $M
printf 'layers\n' | BITDOWN_STATE_DIR=$TMP/state repl resume_b $M --resume
grep -qx "bitdown: resumed $M from its checkpoint, 2 layers quantized (2 restored, 0 finished now)" \
  "$TMP/resume_b.err" || fail "--resume: $(cat "$TMP/resume_a.err" "$TMP/resume_b.err")"
[ "$(grep -cE ' quantized$' "$TMP/resume_b.out")" = 2 ] || fail "--resume restored: $(cat "$TMP/resume_b.out")"

# data: n is what the set holds, also once new preprocessing closed it
for f in examples/images/*.png; do echo "$PWD/$f 0"; done >"$TMP/eight.txt"
printf 'data calib list:%s mean=0.3\ndata\n' "$TMP/eight.txt" | repl list_n $M
[ "$(grep -c "^calib data: list:$TMP/eight.txt n=8$" "$TMP/list_n.out")" = 2 ] ||
  fail "data calib list: of 8 images: $(cat "$TMP/list_n.out" "$TMP/list_n.err")"

# ---- bitprune: its epochs, each layer's bits, the mean; the layer table
# shows int codecs; undo; both tables' help ----
printf 'data eval fmnist:test n=50\nbitprune target_bits=4 steps=5 batch=32\nlayers\nundo\nhelp bitprune\n' |
  repl bitprune $M
[ "$(rc_of bitprune)" = 0 ] || fail "bitprune session: $(cat "$TMP/bitprune.err")"
grep -qE '^learn epoch 1/1 loss [0-9.]+ .* eval top1 [0-9.]+%' "$TMP/bitprune.out" &&
  grep -qE '^tune epoch 1/1 loss [0-9.]+ ' "$TMP/bitprune.out" ||
  fail "bitprune printed no epochs: $(cat "$TMP/bitprune.out")"
grep -qE '^layer3\.0\.conv2: [2-8] bits \(learned [0-9.]+, 36864 params\)$' "$TMP/bitprune.out" ||
  fail "bitprune printed no bits per layer: $(cat "$TMP/bitprune.out")"
/usr/bin/python3 - "$TMP/bitprune.out" <<'PY' || fail "bitprune's mean bits exceed the target"
import re, sys
m = re.search(r"^bitprune: mean bits ([0-9.]+) ", open(sys.argv[1]).read(), re.M)
assert m and float(m.group(1)) <= 4 + 1e-9, m
PY
grep -qE '^layer3\.0\.conv2 .* - +int[2-8] .* tuned$' "$TMP/bitprune.out" ||
  fail "the layer table does not show bitprune's int codecs: $(cat "$TMP/bitprune.out")"
grep -q '^undid: bitprune$' "$TMP/bitprune.out" || fail "undo after bitprune"
for k in target_bits= granularity= finetune_epochs= epochs= lr=; do
  grep -qE "^  $k" "$TMP/bitprune.out" || fail "help bitprune lacks the option $k"
done
printf 'bitprune target_bits=4 max_bits=17\n' | repl bitprune_bad $M
expect_error bitprune_bad "bitdown: line 1: bitprune: max_bits must lie in"

finish
