#!/usr/bin/env bash
# The CUDA backend is a plugin (docs/architecture.md, "The device"): a run
# that asks for no GPU neither links nor loads the CUDA libraries, so
# `bitdown --help` stays small; `device cuda` loads the plugin, or says why
# it cannot.
. "$(dirname "$0")/support/testlib.sh"
PLUGIN=$(dirname "$BIN")/libbitdown_cuda.so

# the executable does not depend on the CUDA libraries
ldd "$BIN" >"$TMP/ldd" || fail "ldd $BIN failed"
! grep -E 'libcudart|libcublas|libbitdown_cuda' "$TMP/ldd" ||
  fail "bitdown links the CUDA libraries or the plugin: $(grep -E 'cuda|cublas' "$TMP/ldd")"

# a CPU-only evaluation loads none of them either (the dynamic loader's log
# names every file it maps, dlopen's included)
LD_DEBUG=files "$BIN" eval $M --limit 64 >"$TMP/eval" 2>"$TMP/ld" || fail "eval failed: $(tail -3 "$TMP/ld")"
grep -q '^top1 ' "$TMP/eval" || fail "eval printed no accuracy: $(cat "$TMP/eval")"
! grep -E 'file=[^ ]*(libcudart|libcublas|libbitdown_cuda)' "$TMP/ld" ||
  fail "a CPU-only eval loaded CUDA: $(grep -oE 'file=[^ ]*(cudart|cublas|bitdown_cuda)[^ ]*' "$TMP/ld" | sort -u)"

# --help's peak resident memory: the CUDA libraries linked in cost ~220 MB
# (AddressSanitizer's shadow memory would dwarf the limit: skipped there)
if [ -z "${BD_SANITIZED:-}" ]; then
  if [ -x /usr/bin/time ]; then
    kb=$(/usr/bin/time -f %M "$BIN" --help 2>&1 >/dev/null | tail -1)
    [[ $kb =~ ^[0-9]+$ ]] || fail "/usr/bin/time said '$kb', not a size in KB"
    ((kb < 30 * 1024)) || fail "bitdown --help peaked at $kb KB resident, limit 30720 KB"
  else
    fail "measuring memory needs /usr/bin/time (Debian package time; ./bd deps installs it)"
  fi
fi

# device cuda: with the plugin built, it loads (every symbol it needs from
# bitdown resolved) and then finds a GPU or says there is none; without
# it, the message says where the plugin was looked for
printf 'device cuda\n' | "$BIN" repl $M >"$TMP/dev.out" 2>"$TMP/dev.err"
if [ -f "$PLUGIN" ]; then
  # (a sanitized build adds its own instrumentation symbols, __asan_* and
  # __odr_asan.*, which are not the plugin's)
  exported=$(nm -D --defined-only "$PLUGIN" | awk '$3 !~ /^__(odr_)?asan/ {print $3}')
  [ "$exported" = bd_cuda_plugin ] || fail "the plugin exports more than its table: $exported"
  if grep -q '^device cuda$' "$TMP/dev.out"; then
    echo "a GPU is visible: device cuda opened it"
  else
    grep -qE 'device cuda: (no usable CUDA driver or GPU|no CUDA GPU is visible)' "$TMP/dev.err" ||
      fail "device cuda with the plugin, without a GPU: $(cat "$TMP/dev.err")"
  fi
else
  grep -qF "device cuda: this bitdown has no CUDA backend: libbitdown_cuda.so is in none of $(dirname "$BIN")" "$TMP/dev.err" ||
    fail "device cuda without the plugin: $(cat "$TMP/dev.err")"
fi
finish
