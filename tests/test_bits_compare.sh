#!/usr/bin/env bash
# lua/policies/bits_compare.lua end to end (its own test: under the
# sanitizers the policies' test is long already): BitPruning, then PTQ and
# QAT of the nearest width, each a row of the table with its size; an
# unknown method refused by name.
. "$(dirname "$0")/support/testlib.sh"

# the table: a row per method, with top-1, bits, size and ratio
"$BIN" run --model $M lua/policies/bits_compare.lua target_bits=4 steps=3 batch=32 eval_n=100 \
  calib_n=$N methods=bitprune,ptq,qat >"$TMP/out" 2>&1 || fail "bits_compare: $(cat "$TMP/out")"
for row in "bitprune memory/layer" "PTQ int[0-9]" "QAT int[0-9]"; do
  grep -qE "^$row +[0-9.]+ +[-+][0-9.]+ +[0-9.]+ +0\.0[0-9]+ +[0-9.]+x$" "$TMP/out" ||
    fail "bits_compare has no '$row' row: $(cat "$TMP/out")"
done
grep -q "^bits_compare: BitPruning's bits per layer: conv1 [0-9]" "$TMP/out" ||
  fail "bits_compare gives no bits per layer: $(cat "$TMP/out")"
"$BIN" run --model $M lua/policies/bits_compare.lua methods=nosuch >"$TMP/out" 2>&1 &&
  fail "bits_compare took an unknown method"
grep -q "methods are bitprune, ptq, qat, pq and any, not 'nosuch'" "$TMP/out" ||
  fail "bits_compare's refusal: $(cat "$TMP/out")"

finish
