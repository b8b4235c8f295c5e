-- size_budget: meets a target model size with the least total error.
--
-- For every layer the plan quantizes, quick trial fits (bd.trial: a few EM
-- iterations, from the student as it stands) measure the relative output
-- error of candidate (d, k): d the layer's divisors nearest the paper's 4,
-- 8, 9 and 18, k every power of two from 2 to the layer's cap; and of int
-- grids of 2 to 8 bits per channel; keeping the layer in fp32 is a
-- candidate too (no error, 4 bytes a weight). Then it
-- picks one candidate per layer so that the stored size as bd.size()
-- counts it (packed codes + fp16 codebooks or scales + fp32 for everything
-- else) is at most the target, with the least sum of the layers' errors: a
-- multiple-choice knapsack, solved exactly by dynamic programming over
-- sizes counted in 1/4096ths of the budget (rounded up, so the target
-- holds) -- exact where a Lagrangian sweep over the error/size frontier
-- would miss the choices inside its convex hull. Sizes depend only on the
-- setting, so the size planned is the size reached. Then it
-- quantizes and says how close to the target it came.
--
-- Arguments (key=value):
--   target_mb=M      the size to meet, in MB (2^20 bytes); or
--   target_ratio=R   the compression ratio to meet (the fp32 size / R)
--   trial_iters=N    EM iterations of each trial fit (default 10)
--   formats=all|pq|int  the candidates: PQ (d, k), int (2 to 8 bits per
--                    channel), or both (default)
--   and the common ones of lib/policy.lua: first=true quantize=false iters=N
--   calib_n=N objective=act|weight eval=true eval_n=N out=FILE decoded=true
-- e.g. bitdown quantize M.onnx -o M.q.onnx --policy size_budget:target_mb=0.05
local P = require("lib.policy")

local opt, name = P.options(arg, {
  {"target_mb", "number"},
  {"target_ratio", "number"},
  {"trial_iters", "integer", 10},
  {"formats", "word", "all", {pq = true, int = true, all = true}},
})
local goal = opt.target_mb or opt.target_ratio
if (opt.target_mb == nil) == (opt.target_ratio == nil) or goal <= 0 then
  error(name .. ": needs one of target_mb=M or target_ratio=R, above 0", 0)
end
P.prepare(opt)

local size = bd.size()
local target = opt.target_mb and math.floor(opt.target_mb * 2 ^ 20)
               or math.floor(size.fp32_bytes / opt.target_ratio)
local layers = P.planned()
if #layers == 0 then error(name .. ": the plan quantizes no layer", 0) end
print(("%s: target %.4f MB; trial fits of %d layers, %d EM iterations each"):format(
  name, P.mb(target), #layers, opt.trial_iters))

-- What every other parameter takes stays as it is; the decided layers
-- share the rest.
local base, smallest = size.compressed_bytes, 0
local choices = {}
for i, l in ipairs(layers) do
  base = base - l.bytes
  local cs = P.candidates(l.name, opt.trial_iters, opt.formats)
  cs[#cs + 1] = {fp32 = true, error = 0, bytes = 4 * l.params}
  local least = math.huge
  for _, c in ipairs(cs) do least = math.min(least, c.bytes) end
  smallest = smallest + least
  choices[i] = cs
end
local budget = target - base
if budget < smallest then
  error(("%s: target %.4f MB is below the smallest size these candidates reach, %.4f MB"):format(
    name, P.mb(target), P.mb(base + smallest)), 0)
end

-- The knapsack: best[b] is the least error of the layers so far within b
-- units; pick[i][b] the choice of layer i that gets it.
local unit = math.max(1, budget / 4096)
local units = math.floor(budget / unit)
for _, cs in ipairs(choices) do
  for _, c in ipairs(cs) do c.cost = math.ceil(c.bytes / unit) end
end
local best, pick = {}, {}
for b = 0, units do best[b] = 0 end
for i, cs in ipairs(choices) do
  local next_best, p = {}, {}
  for b = 0, units do
    local e, j_best = math.huge, nil
    for j, c in ipairs(cs) do
      if c.cost <= b then
        local v = best[b - c.cost] + c.error
        if v < e then e, j_best = v, j end
      end
    end
    next_best[b], p[b] = e, j_best
  end
  best, pick[i] = next_best, p
end

local planned, total_error, b = base, best[units], units
for i = #layers, 1, -1 do
  local c = choices[i][pick[i][b]]
  b = b - c.cost
  planned = planned + c.bytes
  P.choose(layers[i], not c.fp32 and c or nil)
end

P.finish(opt)
local reached = opt.quantize and bd.size().compressed_bytes or planned
print(("%s: target %.4f MB, %s %.4f MB (%.1f%% of the target), sum of trial errors %.4f"):format(
  name, P.mb(target), opt.quantize and "reached" or "planned", P.mb(reached),
  100 * reached / target, total_error))
