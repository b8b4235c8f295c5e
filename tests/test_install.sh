#!/usr/bin/env bash
# cmake --install puts bitdown, the Lua policies and the example under a
# prefix; the installed bitdown finds them there, from any folder, through
# its own path (not the source tree it was built from): a policy runs, and
# the policies are looked up and listed in the prefix.
. "$(dirname "$0")/support/testlib.sh"

P=$TMP/prefix
cmake --install "$(dirname "$BIN")" --prefix "$P" >"$TMP/out" 2>&1 || fail "install: $(cat "$TMP/out")"
[ -x "$P/bin/bitdown" ] || fail "no $P/bin/bitdown"
for f in lua/policies/small_blocks.lua lua/policies/lib/policy.lua examples/fmnist/resnet_bn.onnx; do
  [ -f "$P/share/bitdown/$f" ] || fail "not installed: share/bitdown/$f"
done
# moved after installing: found from the executable's path, not the prefix
mv "$P" "$TMP/moved"
P=$TMP/moved
src=$PWD
cd "$TMP" || exit 1
"$P/bin/bitdown" quantize "$src/$M" -o "$TMP/q.onnx" --calib-n $N --policy small_blocks \
  >"$TMP/out" 2>&1 || fail "installed quantize --policy small_blocks: $(cat "$TMP/out")"
[ -s "$TMP/q.onnx" ] || fail "the policy wrote no model"
"$P/bin/bitdown" quantize "$src/$M" -o "$TMP/x.onnx" --policy nosuch >/dev/null 2>"$TMP/err" &&
  fail "an unknown policy ran"
grep -q "$P/share/bitdown/lua/policies/nosuch.lua is not readable" "$TMP/err" ||
  fail "policies not looked up in the install: $(cat "$TMP/err")"
grep -q "small_blocks" "$TMP/err" || fail "the installed policies are not listed: $(cat "$TMP/err")"
cd "$src" || exit 1
finish
