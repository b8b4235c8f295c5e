#!/usr/bin/env bash
# The TUI end to end, driven inside tmux: what it draws, what its keys do,
# resizing, cancelling with Esc, quitting. Skipped without tmux.
. "$(dirname "$0")/support/testlib.sh"
command -v tmux >/dev/null || { echo "tmux is not installed: skipping the TUI test"; exit 77; }
unset TMUX
SOCK=bd-test-tui-${TMP##*/} # the temporary folder's random name: no stale socket shares it
T() { tmux -L "$SOCK" -f "$TMP/tmux.conf" "$@"; }
trap 'T kill-server 2>/dev/null; rm -rf "$TMP"' EXIT
# one server for the whole test: by default it exits with its last session,
# and the next session's client could reach it while it was going
printf 'set -g default-terminal tmux-256color\nset -g exit-empty off\n' >"$TMP/tmux.conf"

# start SESSION WIDTH HEIGHT COMMAND: the command's exit status lands in $TMP/SESSION.rc
start() {
  rm -f "$TMP/$1.rc"
  T new-session -d -s "$1" -x "$2" -y "$3" \
    "cd '$PWD' && OMP_NUM_THREADS=2 $4 2>'$TMP/$1.err'; echo \$? >'$TMP/$1.rc'"
}
# wait_for SESSION PATTERN: waits until an extended regex matches the screen
# (kept in $TMP/screen)
on_screen() { T capture-pane -p -t "$1" >"$TMP/screen" 2>/dev/null && grep -qE -- "$2" "$TMP/screen"; }
wait_for() {
  eventually on_screen "$1" "$2" && return 0
  echo "--- screen of $1 while waiting for '$2':" >&2
  cat "$TMP/screen" >&2
  return 1
}
# shows SESSION PATTERN MESSAGE: what a check reads may come in a later
# redraw than the one waited for: waits for it, failing with MESSAGE
shows() { wait_for "$1" "$2" || fail "$3"; }
# exited SESSION: waits for the program to end and checks it exited 0
exited() {
  eventually test -s "$TMP/$1.rc"
  [ "$(cat "$TMP/$1.rc" 2>/dev/null)" = 0 ] ||
    fail "$1 exited with '$(cat "$TMP/$1.rc" 2>/dev/null)': $(cat "$TMP/$1.err")"
}
keys() { T send-keys -t tui "$@"; }
ratio() { grep -oE 'ratio [0-9.]+x' "$TMP/screen" | head -1; }

mapfile -t LAYERS < <("$BIN" info $M |
  awk '/^layer +kind/ { on = 1; next } on && NF == 0 { exit } on { print $1 }')
[ "${#LAYERS[@]}" = 10 ] || fail "bitdown info lists ${#LAYERS[@]} layers, expected 10"

start tui 120 40 "LANG=C.UTF-8 '$BIN' tui $M"
# The header: the model, its fp32 size, nothing compressed yet. (Every check
# of the screen waits for what it reads: a pane may come a redraw later.)
wait_for tui '^ fc ' || fail "no table"
shows tui 'resnet_bn\.onnx' "the header does not name the model"
shows tui '0\.2992 MB fp32' "the header lacks the fp32 size"
[ "$(ratio)" = "ratio 1.00x" ] || fail "before quantizing: '$(ratio)'"
# The table: every layer, all float
for l in "${LAYERS[@]}"; do
  shows tui "^ ${l//./\\.} .* float" "the table lacks a float row for $l"
done
# a float layer stores 32 bits per weight, as the REPL's table says
shows tui '^ layer1\.0\.conv1 +conv 3x3 .* 9 +32 +32\.000 +9\.00 ' "a float layer's bits/w is not 32.000"

# Training: ':train' runs with the line's options and the training pane shows
# its epochs; undo takes it back; 't' runs the last ':train' line again
keys : "data eval fmnist:test n=50" Enter
wait_for tui 'eval data: fmnist:test n=50' || fail "':data eval' said nothing"
keys : "train epochs=2 steps=2 batch=16" Enter
wait_for tui 'u undoes: train' || fail "':train' did not finish"
wait_for tui '^ +2 +[0-9.]+ +[0-9.]+% +[0-9.]+% ' || fail "the training pane lacks epoch 2's row"
shows tui 'training: 2 of 2 epochs done' "the training pane's title"
shows tui 'noise none' "the training pane does not say the noise"
shows tui 'eval top-1 by epoch' "the training pane has no top-1 curve"
# Q is q's twin: it asks the same question
keys Q
wait_for tui 'the trained weights are not saved: quit without saving' ||
  fail "Q did not ask about the unsaved training"
keys n
keys u
wait_for tui 'undid: train' || fail "u did not undo the training"
wait_for tui '^ ready' || fail "an undo step is left after undoing the training"
keys t
wait_for tui 'u undoes: train' || fail "t did not train"
shows tui 'training: 2 of 2 epochs done' "the training pane after t"
keys u
wait_for tui '^ ready' || fail "u did not undo t's training"
# While a run goes the pane shows its epoch, step, loss and ETA; Esc cancels it
keys : "train steps=100000 batch=16" Enter
wait_for tui 'epoch 1/1, step [0-9]+/100000: loss [0-9.]+, lr [0-9.e-]+ +ETA [0-9]' ||
  fail "the training pane shows no progress while a run goes"
shows tui 'training: running, 0 of 1 epochs done' "the pane's title while running"
keys Escape
wait_for tui 'cancelled: :train steps=100000' || fail "Esc did not cancel the training"
wait_for tui 'training: stopped after 0 of 1 epochs' || fail "the pane after a cancelled run"
wait_for tui '^ ready' || fail "a cancelled training left an undo step"

# BitPruning: ':bitprune' shows its pane, a bar per layer while it learns,
# each layer's int bits after it; the table shows the int codecs; undo takes
# it back
keys : "bitprune target_bits=4 steps=300 batch=16" Enter
wait_for tui 'bitprune: learning, step [0-9]+/300' || fail "the bitprune pane shows no run going"
# the rows come with the run's first report of the bits, which may be a
# redraw after the step count: waited for, not read off the same screen
wait_for tui '^ layer3\.0\.conv2 +[^ ]+ +[1-8]\.[0-9]{2} ' ||
  fail "the bitprune pane has no bar for layer3.0.conv2"
wait_for tui 'mean [0-9.]+ bits \(ops [0-9.]+\) +lambda [-0-9.e]+ +size [0-9.]+ MB' ||
  fail "the bitprune pane lacks the mean bits, lambda and size"
keys Escape
wait_for tui 'cancelled: :bitprune' || fail "Esc did not cancel bitprune"
wait_for tui '^ ready' || fail "a cancelled bitprune left an undo step"
keys : "bitprune target_bits=4 steps=3 batch=16" Enter
wait_for tui 'u undoes: bitprune' || fail "':bitprune' did not finish"
wait_for tui '^ +1 +[0-9.]+ +[0-9.]+% +[0-9.]+% ' || fail "the bitprune pane lacks the epochs"
shows tui 'bitprune: done, 2 epochs' "the bitprune pane's title after the run"
shows tui '^ layer3\.0\.conv2 +[^ ]+ +int[2-8] ' "the bitprune pane lacks the int bits"
shows tui '^ layer3\.0\.conv2 .* - +int[2-8] .* tuned' "the table does not show bitprune's int codec"
keys u
wait_for tui 'undid: bitprune' || fail "u did not undo bitprune"
wait_for tui '^ ready' || fail "an undo step is left after undoing bitprune"
# learning the inputs' bits too: the pane says their range and, after the
# run, each layer's input bits beside its weights'
keys : "bitprune target_bits=4 steps=3 batch=16 activations=1 act_min_bits=3" Enter
wait_for tui 'u undoes: bitprune' || fail "':bitprune activations=1' did not finish"
shows tui 'bits [0-9]+\.\.[0-9]+ +inputs 3\.\.8 ' "the bitprune pane does not say the inputs' range"
shows tui '^ layer3\.0\.conv2 +[^ ]+ +int[2-8] +a[3-8] ' "the bitprune pane lacks the inputs' bits"
keys u
wait_for tui '^ ready' || fail "u did not undo bitprune activations=1"

# The key bar says in words what the main keys do
shows tui '^ Enter quantize +A all .* / search .* \? help +q quit' "the key bar"
# Enter quantizes the second layer: its row turns quantized with an error, the
# header's size changes
keys Down Enter
wait_for tui '^ layer1\.0\.conv1 .* 0\.[0-9]{4} +quantized' ||
  fail "Enter did not quantize layer1.0.conv1"
r=$(ratio)
[ -n "$r" ] && [ "$r" != "ratio 1.00x" ] || fail "the header's ratio after quantizing: '$r'"
shows tui 'EM objective' "the detail pane shows no EM curve"
shows tui 'codebook 3x3' "the detail pane shows no codebook"

# The ':' line with completion: 'ev' + Tab becomes 'eval '; eval prints top-1 in the log
keys : e v Tab
wait_for tui '^:eval *$' || fail "Tab did not complete 'ev' to 'eval'"
keys 'n=200' Enter
wait_for tui 'student top-?1 [0-9.]+%' || fail "':eval n=200' printed no student top-1"
shows tui 'teacher top-?1 [0-9.]+%' "':eval n=200' printed no teacher top-1"
shows tui 'top-1 teacher [0-9.]+%' "the header shows no teacher top-1"
# F: the frontier pane has the evaluation as a point at its size, listed
# with the teacher; F again brings the layer's detail back
keys F
wait_for tui 'frontier: top-1 against stored size, [0-9]+ evaluations?' ||
  fail "F did not show the frontier pane"
shows tui '◆ +0\.[0-9]+ MB +[0-9.]+x +top-1 +[0-9.]+% +quantize layer1\.0\.conv1' \
  "the frontier does not list the quantized student's evaluation"
shows tui 'T +0\.2992 MB +1\.00x +top-1 +[0-9.]+% +the teacher' "the frontier does not list the teacher"
keys F
wait_for tui 'detail: layer1\.0\.conv1 ' || fail "F did not bring the detail back"
# History: Up brings the line back
keys : Up
wait_for tui '^:eval n=200' || fail "Up did not recall the last command"
keys Escape

# Undo puts the layer back to float
keys u
wait_for tui '^ layer1\.0\.conv1 .* float' || fail "u did not undo the quantization"
wait_for tui 'ratio 1\.00x' || fail "the header's size after undo: '$(ratio)'"

# d through the divisors of 144 (9 -> 12 -> 9), k through powers of two (32 -> 16 -> 32)
ROW='^ layer1\.0\.conv1 +conv 3x3 \[16, 16, 3, 3\] +2304'
wait_for tui "$ROW +9 +32 " || fail "layer1.0.conv1's plan is not d=9 k=32"
keys ']'
wait_for tui "$ROW +12 +32 " || fail "] did not set d=12"
keys k
wait_for tui "$ROW +12 +16 " || fail "k did not halve k"
keys K '['
wait_for tui "$ROW +9 +32 " || fail "K and [ did not restore d=9 k=32"
# i makes it an 8-bit int layer, k takes a bit off, q quantizes it as int7,
# i and undo bring the PQ plan back
keys i
wait_for tui "$ROW +- +int8 " || fail "i did not make the layer int8"
keys k
wait_for tui "$ROW +- +int7 " || fail "k did not take a bit off the int layer"
keys Enter
wait_for tui "$ROW +- +int7 +7\.000 .* quantized" 60 || fail "Enter did not quantize the int7 layer"
keys u i
wait_for tui "$ROW +9 +32 " || fail "u and i did not restore d=9 k=32"

# An unknown key says how to find the keys
keys z
wait_for tui "unknown key 'z': \? lists the keys" || fail "z gave no hint"

# '/' finds a layer as its name is typed, from the selection on; n and N go
# on to the next and previous match, round the table; Esc goes back to
# where the search began; a pattern nothing matches says so
detail() { wait_for tui "detail: ${1//./\\.} " || fail "$2"; }
keys / conv2
detail layer1.0.conv2 "'/conv2' did not select layer1.0.conv2"
keys Enter n
detail layer2.0.conv2 "n did not go on to layer2.0.conv2"
keys n n
detail layer1.0.conv2 "n twice more did not come round to layer1.0.conv2"
keys N
detail layer3.0.conv2 "N did not go back to layer3.0.conv2"
keys / zzz
wait_for tui "no layer matches 'zzz'" || fail "'/zzz' did not say it matches nothing"
keys Escape
detail layer3.0.conv2 "Esc did not put the selection back"
keys / '*down*.0' Enter
detail layer2.0.downsample.0 "the glob '*down*.0' did not select layer2.0.downsample.0"
keys / layer1.0.conv1 Enter
detail layer1.0.conv1 "'/layer1.0.conv1' did not select it"

# S measures each planned layer's top-1 drop alone quantized (on the 50
# evaluation images set above); a plan change marks the layer's '?', and the
# plan back makes it hold again
keys S
wait_for tui 'most sensitive: ' || fail "S did not measure the sensitivity"
SENS='-?[0-9]+\.[0-9]{2}'
wait_for tui "^ layer3\.0\.conv2 .* $SENS +- +float" || fail "no top-1 drop for layer3.0.conv2"
shows tui '^ conv1 .* - +- +float skip' "the skipped conv1 has a top-1 drop"
keys k
wait_for tui "$ROW +9 +16 .* $SENS\? +- +float" || fail "k did not make the drop stale"
keys K
wait_for tui "$ROW +9 +32 .* $SENS +- +float" || fail "K did not make the drop hold again"

# '>' sorts the table by the next column (its title marked), the selection
# on the same layer; '<' goes back to graph order
first_row() { awk '/^ layer +op/ { getline; print $1; exit }' "$TMP/screen"; }
keys '>'
wait_for tui 'size KB▼' || fail "'>' did not sort by size"
[ "$(first_row)" = layer3.0.conv2 ] || fail "sorted by size, the first row is '$(first_row)'"
detail layer1.0.conv1 "sorting moved the selection off layer1.0.conv1"
keys '>' '>' '>'
wait_for tui 'top1 drop▼' || fail "three more '>' did not sort by the top-1 drop"
keys '<' '<' '<' '<'
wait_for tui 'the table in graph order' || fail "'<' did not come back to graph order"
[ "$(first_row)" = conv1 ] || fail "in graph order, the first row is '$(first_row)'"

# The help lists every key
keys '?'
wait_for tui "type ':help' for the command language" || fail "? shows no help"
for what in 'move the selection' 'turn the page' 'focus the next' 'quantize the selected layer' \
  'find a layer by name' 'next / previous layer' 'sort the table' 'quantized alone' \
  'quantize all' 'd: previous / next divisor' 'k: halve / double' 'format: PQ' 'objective:' \
  "take or skip" \
  'reset the selected layer' 'undo the last change' 'evaluate teacher' 'save the compressed' \
  'train the weights' 'training pane' \
  'command line' 'cancel the running work' 'redraw' 'this help' 'quit'; do
  grep -q "$what" "$TMP/screen" || fail "the help lacks '$what'"
done
keys Escape
wait_for tui '^ layer +op' || fail "Esc did not close the help"

# Resizing keeps drawing, down to a tiny terminal and back
T resize-window -t tui -x 80 -y 24
wait_for tui '^ conv1 ' && grep -q 'ratio' "$TMP/screen" || fail "nothing sensible at 80x24"
T resize-window -t tui -x 40 -y 12
wait_for tui '^ layer1\.0\.conv1 ' || fail "nothing sensible at 40x12"
T resize-window -t tui -x 12 -y 3
wait_for tui 'too small' || fail "no 'too small' at 12x3"
T resize-window -t tui -x 120 -y 40
wait_for tui 'images: fmnist:test' || fail "no images pane back at 120x40"

# Unsaved work: q asks; 'n' stays; saving to a path typed at the prompt clears it
keys Enter
wait_for tui '^ layer1\.0\.conv1 .* quantized' || fail "Enter did not quantize again"
keys q
wait_for tui 'not saved: quit without saving' || fail "q did not ask about unsaved work"
keys n
wait_for tui '\[unsaved\]' || fail "'n' did not keep the TUI"
keys s
wait_for tui '^save to: .*resnet_bn\.pq\.onnx' || fail "s proposes no path next to the model"
keys C-u "$TMP/saved.pq.onnx" Enter
wait_for tui "wrote $TMP/saved\.pq\.onnx: compressed" 30 || fail "s did not save"
[ -s "$TMP/saved.pq.onnx" ] || fail "no file at $TMP/saved.pq.onnx"
# the header: the file's size on disk and its ratio to the original file
disk=$(/usr/bin/python3 -c 'import os, sys; a, b = (os.path.getsize(p) for p in sys.argv[1:]); print("%.4g MB %.2fx" % (a / 2**20, b / a))' \
  "$TMP/saved.pq.onnx" $M)
shows tui "ratio [0-9.]+x  on disk ${disk//./\\.} " "the header lacks the size on disk, $disk"

# Esc during a long quantize (every layer, on all 60000 training images) cancels it
keys : "data calib fmnist:train n=60000" Enter
wait_for tui 'calib.*n=60000' || fail "':data calib' said nothing"
keys A
wait_for tui 'quantize all .*Esc cancels' || fail "A shows no progress"
keys Escape
wait_for tui 'cancelled: :quantize all' || fail "Esc did not cancel"
n=$(grep -cE '^ [a-z0-9.]+ .*\] .* quantized *$' "$TMP/screen")
[ "$n" = 1 ] || fail "after cancelling, $n layers are quantized (expected the 1 saved one)"

# q quits at once when the work is saved
keys q
exited tui

# 'bitdown' alone opens the TUI on the example; a plain terminal without
# colours or UTF-8 still draws the table and the images
start plain 80 24 "TERM=vt100 LANG=C '$BIN'"
wait_for plain '^ layer1\.0\.conv1 ' || fail "bitdown alone: no TUI on the example"
shows plain 'resnet_bn\.onnx' "bitdown alone: the header does not name the example"
T send-keys -t plain Tab Tab
wait_for plain 'Ankle boot' || fail "no images on a vt100"
T send-keys -t plain : quit Enter
exited plain

# --resume says in the log what it brought back, or that there was nothing
printf 'quantize layer1.* iters=2\n' |
  BITDOWN_STATE_DIR="$TMP/state" "$BIN" repl $M >/dev/null 2>&1 || fail "the session to resume"
start resumed 120 40 "BITDOWN_STATE_DIR='$TMP/state' LANG=C.UTF-8 '$BIN' tui $M --resume"
wait_for resumed "resumed ${M//./\\.} from its checkpoint, 2 layers quantized \\(2 restored, 0 finished now\\)" ||
  fail "the TUI did not say what --resume brought back"
# its work is the checkpoint's, which stays for the next --resume
T send-keys -t resumed : quit Enter
exited resumed
ls "$TMP"/state/*.checkpoint.onnx >/dev/null 2>&1 || fail "quitting a resumed session lost its checkpoint"
start fresh 120 40 "BITDOWN_STATE_DIR='$TMP/none' LANG=C.UTF-8 '$BIN' tui $M --resume"
wait_for fresh "no checkpoint of ${M//./\\.} to resume; starting afresh" ||
  fail "the TUI did not say there was nothing to resume"
T send-keys -t fresh : quit Enter
exited fresh

# The interactive demo (./bd demo at a terminal): the paper's ResNet-18 names
# the photos in the images pane, when ../shared/models/ has it
if [ -f ../shared/models/resnet18_bgd_small.onnx ]; then
  start demo 120 40 "LANG=C.UTF-8 examples/tui_demo.sh '$BIN' '$TMP'"
  wait_for demo 'images: list:examples/images/photos/photos\.txt' ||
    fail "the demo's images pane shows no photos"
  shows demo 'T [0-9]+% tripod +T [0-9]+% tiger cat' "the demo does not name the photos"
  T send-keys -t demo : quit Enter
  exited demo
else
  echo "../shared/models/resnet18_bgd_small.onnx is not there: the ImageNet demo is not checked"
fi

# Without a terminal: the usage, and a refusal
"$BIN" </dev/null >"$TMP/out" 2>&1
[ $? = 2 ] && grep -q 'commands:' "$TMP/out" || fail "bitdown alone in a pipe: $(cat "$TMP/out")"
"$BIN" tui $M </dev/null >"$TMP/out" 2>&1
[ $? = 2 ] && grep -q 'needs a terminal' "$TMP/out" || fail "bitdown tui in a pipe: $(cat "$TMP/out")"

finish
