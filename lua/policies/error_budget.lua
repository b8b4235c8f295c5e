-- error_budget: the most compression per layer under a bound on its error.
--
-- Layer by layer in graph order, quick trial fits (bd.trial: a few EM
-- iterations) measure the relative output error ||X(W - W^)|| / ||XW|| of
-- candidate (d, k), as size_budget does: d the layer's divisors nearest 4,
-- 8, 9 and 18, k every power of two from 2 to the layer's cap. The
-- candidate with the fewest stored bytes whose error is at most max_error
-- is planned and the layer quantized, so the next layer's trials see the
-- student as it will be; if the real fit misses the bound, the next
-- smallest candidate under it is tried. A layer no candidate fits stays
-- fp32. With quantize=false nothing is quantized, and every trial sees the
-- float model.
--
-- Arguments (key=value):
--   max_error=E      the bound on each layer's relative output error (needed)
--   trial_iters=N    EM iterations of each trial fit (default 10)
--   formats=all|pq|int  the candidates: PQ (d, k), int (2 to 8 bits per
--                    channel), or both (default)
--   and the common ones of lib/policy.lua: first=true quantize=false iters=N
--   calib_n=N objective=act|weight eval=true eval_n=N out=FILE decoded=true
-- e.g. bitdown run --model M.onnx lua/policies/error_budget.lua max_error=0.1
local P = require("lib.policy")

local opt, name = P.options(arg, {
  {"max_error", "number", nil, required = "the bound on each layer's relative error"},
  {"trial_iters", "integer", 10},
  {"formats", "word", "all", {pq = true, int = true, all = true}},
})
if opt.max_error <= 0 then error(name .. ": max_error must be above 0", 0) end
P.prepare(opt)

local layers = P.planned()
print(("%s: max_error %g; %d layers, trial fits of %d EM iterations"):format(
  name, opt.max_error, #layers, opt.trial_iters))
local kept = {}
for _, l in ipairs(layers) do
  local cs = P.candidates(l.name, opt.trial_iters, opt.formats)
  table.sort(cs, function(a, b)
    if a.bytes ~= b.bytes then return a.bytes < b.bytes end
    return a.error < b.error
  end)
  local fitted = false
  for _, c in ipairs(cs) do
    if c.error <= opt.max_error then
      P.choose(l, c)
      if not opt.quantize then fitted = true break end
      local q = bd.quantize(l.name, {iters = opt.iters})[1]
      if (q.rel_error or c.error) <= opt.max_error then fitted = true break end
    end
  end
  if not fitted then
    P.choose(bd.layer(l.name), nil)
    kept[#kept + 1] = l.name
  end
end

P.finish(opt, true)
print(("%s: %d of %d layers under max_error %g%s"):format(name, #layers - #kept, #layers,
  opt.max_error, #kept > 0 and ("; kept fp32: " .. table.concat(kept, ", ")) or ""))
