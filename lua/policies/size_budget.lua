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
--   target_ratio=R   the compression ratio to meet (the fp32 size / R); or
--   target_bpw=B     the mean bits per weight of the quantizable layers to
--                    meet: their stored bytes (codes and codebooks, or fp32
--                    for a layer left float) are at most B / 8 per weight of
--                    theirs, everything else staying fp32
--   trial_iters=N    EM iterations of each trial fit (default 10)
--   formats=all|pq|int  the candidates: PQ (d, k), int (2 to 8 bits per
--                    channel), or both (default)
--   and the common ones of lib/policy.lua: first=true quantize=false iters=N
--   calib_n=N objective=act|weight eval=true eval_n=N out=FILE decoded=true
-- e.g. bitdown quantize M.onnx -o M.q.onnx --policy size_budget:target_mb=0.05,
-- or its shortcut bitdown quantize M.onnx -o M.q.onnx --target-mb 0.05
local P = require("lib.policy")

local opt, name = P.options(arg, {
  {"target_mb", "number"},
  {"target_ratio", "number"},
  {"target_bpw", "number"},
  {"trial_iters", "integer", 10},
  {"formats", "word", "all", {pq = true, int = true, all = true}},
})
local given = {}
for _, key in ipairs{"target_mb", "target_ratio", "target_bpw"} do
  if opt[key] ~= nil then given[#given + 1] = key end
end
if #given ~= 1 or opt[given[1]] <= 0 then
  error(name .. ": needs one of target_mb=M, target_ratio=R or target_bpw=B, above 0", 0)
end
P.prepare(opt)

local size = bd.size()
local target
if opt.target_mb then
  target = math.floor(opt.target_mb * 2 ^ 20)
elseif opt.target_ratio then
  target = math.floor(size.fp32_bytes / opt.target_ratio)
else
  local weights = 0
  for _, l in ipairs(bd.layers()) do weights = weights + l.params end
  target = math.floor(size.fp32_bytes - 4 * weights + opt.target_bpw * weights / 8)
end
local planned, total_error = P.size_budget(name, target, opt.trial_iters, opt.formats)

P.finish(opt)
local reached = opt.quantize and bd.size().compressed_bytes or planned
print(("%s: target %.4f MB, %s %.4f MB (%.1f%% of the target), sum of trial errors %.4f"):format(
  name, P.mb(target), opt.quantize and "reached" or "planned", P.mb(reached),
  100 * reached / target, total_error))
