#!/usr/bin/env bash
# The command line end to end: output formats, numbers against the PyTorch
# fixtures, --help everywhere, and errors on stderr with a non-zero exit.
. "$(dirname "$0")/support/testlib.sh"
# expect_fail EXIT_CODE STDERR_PATTERN CMD...: fails, stderr names the problem, stdout empty
expect_fail() {
  local code=$1 pattern=$2; shift 2
  "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$?
  [ "$rc" = "$code" ] || fail "'$*' exited $rc, expected $code"
  grep -q -- "$pattern" "$TMP/err" || fail "'$*' stderr lacks '$pattern': $(cat "$TMP/err")"
  [ ! -s "$TMP/out" ] || fail "'$*' wrote to stdout on error"
}

# --help on every subcommand, exit 0, on stdout
for c in info eval predict bench; do
  "$BIN" "$c" --help >"$TMP/help" 2>&1 || fail "$c --help exited non-zero"
  grep -q "usage: bitdown $c" "$TMP/help" || fail "$c --help has no usage line"
done
"$BIN" --help | grep -q "commands:" || fail "bitdown --help lists no commands"

# --version and -V, on the top level and after every subcommand, exit 0
v=$(sed -n 's/^project(bitdown VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
for c in "" info eval predict bench quantize finetune bitprune annotate tui repl run; do
  for opt in --version -V; do
    [ "$("$BIN" $c $opt 2>&1)" = "bitdown $v" ] || fail "bitdown $c $opt: $("$BIN" $c $opt 2>&1)"
  done
done

# bitdown starts again with libgomp's spin count lowered (ui/main.c), unless
# the user chose the count or the wait policy, or said BD_NO_REEXEC
spin() { env -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY "$@" "$BIN" run -e 'print(os.getenv("GOMP_SPINCOUNT"))' 2>&1; }
[ "$(spin)" = 2000 ] || fail "bitdown did not lower the spin count: $(spin)"
[ "$(spin GOMP_SPINCOUNT=77)" = 77 ] || fail "the user's GOMP_SPINCOUNT: $(spin GOMP_SPINCOUNT=77)"
[ "$(spin OMP_WAIT_POLICY=passive)" = nil ] || fail "the user's OMP_WAIT_POLICY: $(spin OMP_WAIT_POLICY=passive)"
[ "$(spin BD_NO_REEXEC=1)" = nil ] || fail "BD_NO_REEXEC: $(spin BD_NO_REEXEC=1)"

# and with OpenBLAS's widest kernels the CPU runs, where OpenBLAS did not
# recognise it (its own report of the core it loads, the last one after the
# restart): AVX-512 ones on an AVX-512 CPU, AVX2 ones on an AVX2 CPU
core=$(env -u OPENBLAS_CORETYPE OPENBLAS_VERBOSE=2 "$BIN" run -e 'print(1)' 2>&1 |
  sed -n 's/^Core: //p' | tail -n1)
flags=" $(grep -m1 '^flags' /proc/cpuinfo) "
if [[ $flags == *" avx512f "* && $flags == *" avx512bw "* && $flags == *" avx512vl "* &&
  $flags == *" avx512dq "* ]]; then
  [[ $core =~ ^(SkylakeX|Cooperlake|SapphireRapids)$ ]] || fail "OpenBLAS core on AVX-512: $core"
elif [[ $flags == *" avx2 "* && $flags == *" fma "* ]]; then
  [[ $core =~ ^(Haswell|Zen|SkylakeX|Cooperlake|SapphireRapids)$ ]] ||
    fail "OpenBLAS core on AVX2: $core"
fi

# info: every layer of the example with its weight shape, and totals
"$BIN" info $M >"$TMP/info" || fail "info failed"
grep -qE '^layer1\.0\.conv1 +conv 3x3 +\[16, 16, 3, 3\] +2304 ' "$TMP/info" || fail "info: layer1.0.conv1 row"
grep -qE '^fc +fc +\[10, 64\] +640 ' "$TMP/info" || fail "info: fc row"
grep -q '^10 quantizable layers, 77072 parameters' "$TMP/info" || fail "info: totals"

# eval: the format, the recorded accuracy, and raw logits equal to the fixture's
want=$(sed -n 's/.*"top1": \([0-9.]*\).*/\1/p' examples/fmnist/fixtures/resnet_bn.json)
"$BIN" eval $M --data fmnist:test --batch 100 >"$TMP/eval" || fail "eval failed"
grep -qE '^top1 [0-9]+\.[0-9]{2}% top5 [0-9]+\.[0-9]{2}% \(10000 images\)$' "$TMP/eval" || fail "eval format: $(cat "$TMP/eval")"
grep -qx "$M on fmnist:test:" "$TMP/eval" || fail "eval does not say whose accuracy: $(cat "$TMP/eval")"
got=$(sed -n 's/^top1 \([0-9.]*\)%.*/\1/p' "$TMP/eval")
awk -v a="$got" -v b="$want" 'BEGIN { exit !((a - b) ^ 2 <= 0.0004) }' || fail "eval top1 $got, PyTorch recorded $want"
"$BIN" eval $M --limit 256 --logits "$TMP/logits.f32" >/dev/null || fail "eval --logits failed"
[ "$(stat -c %s "$TMP/logits.f32")" = $((256 * 10 * 4)) ] || fail "logits file size"
/usr/bin/python3 - "$TMP/logits.f32" examples/fmnist/fixtures/resnet_bn.logits256.f32 <<'PY' || fail "logits differ from PyTorch's"
import sys, numpy as np
a = np.fromfile(sys.argv[1], '<f4').reshape(256, 10)
b = np.fromfile(sys.argv[2], '<f4').reshape(256, 10)
err = (np.abs(a - b).max(1) / np.abs(b).max(1)).max()
sys.exit(0 if err < 1e-4 else 1)
PY
"$BIN" eval $M --data fmnist:test --limit 500 --per-class | grep -q 'Ankle boot' || fail "eval --per-class names classes"

# predict: the true class of each sample image comes first
for img in examples/images/fmnist_test_*.png; do
  name=$(basename "$img" .png | sed 's/fmnist_test_[0-9]*_//')
  first=$("$BIN" predict $M "$img" | sed -n 2p | tr 'A-Z/ ' 'a-z__')
  case "$first" in *"$name"*) ;; *) fail "predict $img: first guess '$first'" ;; esac
done
[ "$("$BIN" predict $M examples/images/fmnist_test_0000_ankle_boot.png --top 3 | wc -l)" = 4 ] || fail "predict --top 3"

# bench prints a throughput
"$BIN" bench $M --batch 8 --iters 3 | grep -qE 'batch 8, [0-9]+ threads, 3 forward passes: [0-9.]+ images/s' || fail "bench output"
# --profile: time per op and the slowest nodes with the shapes they read
"$BIN" bench $M --batch 8 --iters 3 --profile >"$TMP/prof" || fail "bench --profile"
grep -qE '^  Conv +[0-9.]+ ms +[0-9.]+%  [0-9]+ nodes' "$TMP/prof" || fail "bench --profile: no Conv line"
grep -qE 'ms +[0-9.]+%  Conv +[^ ]+  \[8, [0-9]+, [0-9]+, [0-9]+\] \* \[' "$TMP/prof" ||
  fail "bench --profile: no Conv node with its shapes: $(cat "$TMP/prof")"

# errors: non-zero exit, a message naming what was wrong, nothing on stdout
expect_fail 2 "unknown command 'frobnicate'" "$BIN" frobnicate
expect_fail 2 "expects one MODEL" "$BIN" info
expect_fail 1 "/nonexistent.onnx" "$BIN" info /nonexistent.onnx
printf 'not a model' >"$TMP/bad.onnx"
expect_fail 1 "$TMP/bad.onnx" "$BIN" eval "$TMP/bad.onnx" --data fmnist:test
expect_fail 2 "--limit wants a whole number" "$BIN" eval $M --limit zero
expect_fail 1 "nope:x" "$BIN" eval $M --data nope:x
expect_fail 1 "$TMP/bad.onnx" "$BIN" predict $M "$TMP/bad.onnx"
expect_fail 2 "--mean wants one value or three" "$BIN" eval $M --mean 1,2
expect_fail 2 "--size wants HxW" "$BIN" bench $M --size big
expect_fail 2 "does not go with --train" "$BIN" bench $M --train --profile
# a bad option is reported once, by name; the commands with an option table
# (tests/test_options.sh has more) list every option they take
for c in info eval predict bench annotate repl run tui; do
  expect_fail 2 "option '--frob' is unknown or lacks its value" "$BIN" $c --frob
  [ "$(wc -l <"$TMP/err")" = 2 ] || fail "$c --frob: $(cat "$TMP/err")"
done
for c in quantize finetune train bitprune; do
  expect_fail 2 "unknown option '--frob' (it takes --help, --output, " "$BIN" $c --frob
  [ "$(wc -l <"$TMP/err")" = 2 ] || fail "$c --frob: $(cat "$TMP/err")"
done
expect_fail 2 "option '--data' is unknown or lacks its value" "$BIN" eval $M --data
expect_fail 2 "option '--data' needs a value" "$BIN" finetune $M -o "$TMP/x.onnx" --data
printf 'a\nb\nc\n' >"$TMP/three.txt"
expect_fail 2 "$TMP/three.txt has 3 class names, but the model has 10 outputs" \
  "$BIN" predict $M examples/images/fmnist_test_0000_ankle_boot.png --classes "$TMP/three.txt"

# preprocessing: the same flags on every command that reads images; a mean
# or std with more channels than the model's input is refused, nothing written
rm -f "$TMP/pp.onnx"
for c in eval predict quantize finetune bitprune annotate tui repl run; do
  # through a file: grep -q leaving early would break a long help's pipe
  "$BIN" "$c" --help >"$TMP/help" && grep -q -- "--resize S" "$TMP/help" ||
    fail "$c --help lacks the preprocessing options"
done
expect_fail 2 "--mean has 3 values, but the model's input has 1 channel" "$BIN" quantize $M -o "$TMP/pp.onnx" --mean 1,2,3
expect_fail 2 "--std has 3 values, but the model's input has 1 channel" "$BIN" finetune $M -o "$TMP/pp.onnx" --std 1,2,3
expect_fail 2 "--mean has 3 values" "$BIN" eval $M --mean 0.5,0.5,0.5
expect_fail 2 "--mean has 3 values" "$BIN" run --model $M --mean 1,2,3 -e 'print(1)'
expect_fail 2 "--mean has 3 values" "$BIN" repl $M --mean 1,2,3 </dev/null
expect_fail 2 "preprocessing options need --model" "$BIN" run --mean 0.5 -e 'print(1)'
[ "$("$BIN" run --model $M --mean 0.5 --std 0.5 -e 'print(1)')" = 1 ] || fail "run --mean --std"
# the TUI takes them too (it needs a terminal, which is all it says here)
expect_fail 2 "needs a terminal" "$BIN" tui --resize 28 --crop 28 --gray $M
[ ! -e "$TMP/pp.onnx" ] || fail "a refused preprocessing option still wrote a model"
"$BIN" predict $M examples/images/fmnist_test_0000_ankle_boot.png 2>"$TMP/err" >/dev/null || fail "predict failed"
! grep -q "preprocessing metadata" "$TMP/err" || fail "a model with metadata warned: $(cat "$TMP/err")"
# a plain PyTorch export (no metadata) warns loudly unless flags say what to do
R=../shared/models/resnet18_bgd_small.onnx
if [ -e "$R" ]; then
  img=examples/images/fmnist_test_0000_ankle_boot.png
  "$BIN" predict "$R" "$img" 2>"$TMP/err" >/dev/null || fail "predict on a plain export failed"
  grep -q "no preprocessing metadata" "$TMP/err" || fail "plain export: no warning: $(cat "$TMP/err")"
  "$BIN" predict "$R" "$img" --resize 256 --crop 224 --mean 0.485,0.456,0.406 \
    --std 0.229,0.224,0.225 2>"$TMP/err" >/dev/null || fail "predict with flags failed"
  ! grep -q "preprocessing" "$TMP/err" || fail "plain export with flags still warned"
  "$BIN" run --model "$R" -e 'print(1)' 2>"$TMP/err" >/dev/null || fail "run on a plain export failed"
  grep -q "no preprocessing metadata" "$TMP/err" || fail "run on a plain export: no warning"
fi

# the quantize header counts the images a small data set really has, not --calib-n
/usr/bin/python3 - "$TMP" <<'PY'
import sys
from PIL import Image
with open(sys.argv[1] + "/three.txt", "w") as f:
    for i in range(3):
        Image.new("L", (28, 28), 40 * i).save("%s/img%d.png" % (sys.argv[1], i))
        print("%s/img%d.png %d" % (sys.argv[1], i, i), file=f)
PY
"$BIN" quantize $M -o "$TMP/three.onnx" --calib "list:$TMP/three.txt" --calib-n 1024 --set '*:skip' \
  --set 'fc:d=4,k=8' >"$TMP/out" 2>"$TMP/err" || fail "quantize on 3 images: $(cat "$TMP/err")"
grep -q "3 calibration images from list:$TMP/three.txt (2 for the fit, 1 held out" "$TMP/out" \
  || fail "quantize header on 3 images: $(head -1 "$TMP/out")"


# bitprune: a few steps to 4 bits; every layer it quantized is int, the
# report's mean bits meet the target, ONNX Runtime runs the file as bitdown
# does; a bad flag writes nothing
BP=(--data fmnist:train --eval-n 100 --steps 5 --batch 32 --epochs 1 --finetune-epochs 1)
"$BIN" bitprune --help >"$TMP/help" || fail "bitprune --help exited non-zero"
grep -q -- "--target-bits B" "$TMP/help" || fail "bitprune --help lacks BitPruning's table"
grep -q -- "--momentum X" "$TMP/help" || fail "bitprune --help lacks training's table"
"$BIN" bitprune $M -o "$TMP/bp.onnx" --target-bits 4 "${BP[@]}" --report "$TMP/bp.json" \
  >"$TMP/out" 2>"$TMP/err" || fail "bitprune failed: $(cat "$TMP/err")"
grep -qE '^layer +params +learned +bits$' "$TMP/out" || fail "bitprune prints no layer table"
grep -qE '^layer3\.0\.conv2 +36864 +[0-9.]+ +[0-9]' "$TMP/out" || fail "bitprune's table lacks a layer"
grep -qE '^mean bits [0-9.]+ \(memory-weighted\)' "$TMP/out" || fail "bitprune prints no mean bits"
grep -qE '^student +top1 ' "$TMP/out" || fail "bitprune prints no student accuracy"
/usr/bin/python3 - "$TMP/bp.json" <<'PY' || fail "bitprune's report"
import json, sys
r = json.load(open(sys.argv[1]))
t = r["totals"]
assert 0 < t["mean_bits"] <= 4 + 1e-9, t
q = [l for l in r["layers"] if l["quantized"]]
assert q and all(l["format"] == "int" and 1 <= l["bits"] <= 8 for l in q), q
PY
# its checkpoint (OUT.ckpt by default) resumes to the same file: every epoch
# had run; one with other options is refused
"$BIN" bitprune $M -o "$TMP/bpr.onnx" --target-bits 4 "${BP[@]}" --checkpoint "$TMP/bp.onnx.ckpt" \
  --resume >"$TMP/out" 2>"$TMP/err" || fail "bitprune --resume failed: $(cat "$TMP/err")"
grep -q "resumed from $TMP/bp.onnx.ckpt: 1 of 1 learning epochs and 1 of 1 fine-tuning" "$TMP/out" ||
  fail "bitprune --resume does not say where it resumed: $(head -3 "$TMP/out")"
cmp -s "$TMP/bp.onnx" "$TMP/bpr.onnx" || fail "a resumed bitprune wrote another model"
expect_fail 1 "bp.onnx.ckpt: written by a run .* learned in 1 epochs; this one .* in 2" \
  "$BIN" bitprune $M -o "$TMP/bpr.onnx" --target-bits 4 "${BP[@]}" --epochs 2 \
  --checkpoint "$TMP/bp.onnx.ckpt" --resume
"$BIN" info "$TMP/bp.onnx" >"$TMP/info" || fail "info on bitprune's output"
grep -qE '^layer3\.0\.conv2 .* int[0-9]+ ' "$TMP/info" || fail "bitprune's layers are not int: $(cat "$TMP/info")"
. "$(dirname "$0")/support/ort.sh"
runtimes_agree "$TMP/bp.onnx"
# per channel, by ops: rows of their own widths; the report's mean is the rows'
"$BIN" bitprune $M -o "$TMP/bpc.onnx" --target-bits 4 --granularity channel --cost ops \
  "${BP[@]}" --report "$TMP/bpc.json" >"$TMP/out" 2>"$TMP/err" ||
  fail "bitprune per channel failed: $(cat "$TMP/err")"
/usr/bin/python3 - "$TMP/bpc.json" "$TMP/out" <<'PY' || fail "bitprune per channel's report"
import json, re, sys
t = json.load(open(sys.argv[1]))["totals"]
printed = float(re.search(r"^mean bits ([0-9.]+) \(memory-weighted\)", open(sys.argv[2]).read(), re.M).group(1))
assert 0 < t["mean_bits"] <= 4 + 1e-9 and abs(t["mean_bits"] - printed) < 1e-3, (t, printed)
PY
runtimes_agree "$TMP/bpc.onnx"
rm -f "$TMP/bp2.onnx" "$TMP/bp2.json"
expect_fail 2 "--max-bits must lie in .1, 16., not 17" \
  "$BIN" bitprune $M -o "$TMP/bp2.onnx" --target-bits 4 --max-bits 17
expect_fail 2 "one of --target-bits, --target-mb or --lambda" "$BIN" bitprune $M -o "$TMP/bp2.onnx"
expect_fail 1 "0.5 bits cannot be met" "$BIN" bitprune $M -o "$TMP/bp2.onnx" --target-bits 0.5 \
  "${BP[@]}" --report "$TMP/bp2.json"
[ ! -e "$TMP/bp2.onnx" ] && [ ! -e "$TMP/bp2.json" ] || fail "a refused bitprune wrote a file"

finish
