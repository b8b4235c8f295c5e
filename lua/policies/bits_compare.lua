-- bits_compare: what BitPruning buys, in one table. BitPruning learns a bit
-- length per layer (or channel); at the size it reaches, what do the other
-- ways of storing the model give? Each method starts from the model as
-- loaded (reloaded from its file in between) and trains as long as
-- BitPruning did:
--   bitprune  bd.bitprune with the arguments below (learning, then
--             fine-tuning at the rounded bits), every layer (the first conv
--             too, as every method here);
--   ptq       uniform int of the bit length nearest BitPruning's mean,
--             every layer (the first conv too, as BitPruning does), the
--             plan's fit, no training;
--   qat       the same after as many training epochs as BitPruning's two
--             phases, with that int grid's fake quantization in every
--             forward (quant_noise=intN:p=1), then the weight fit it
--             trained for;
--   pq        size_budget's plan (PQ candidates) at BitPruning's size, then
--             global fine-tuning of the codebooks for tune_iters steps;
--   any       the same with every format a candidate (PQ, int, fp32).
-- Prints top-1, mean code bits per weight, size and ratio of each, and
-- BitPruning's bits per layer. The workspace is left as loaded (out=FILE
-- saves BitPruning's model first).
--
-- Arguments (key=value):
--   target_bits=B | target_mb=S | lambda=L   BitPruning's goal (one of them;
--                      default target_bits=4)
--   cost=memory|ops granularity=layer|channel min_bits=N max_bits=N
--   epochs=N finetune_epochs=N lr=X steps=N batch=N seed=S   as bd.bitprune
--                      takes them (epochs and finetune_epochs default 1,
--                      lr 0.01); QAT trains epochs + finetune_epochs epochs
--   tune_iters=N       PQ's fine-tuning steps (default: steps x (epochs +
--                      finetune_epochs) when steps is given, else 1000)
--   methods=LIST       which to run, comma-separated (default all five)
--   trial_iters=N      size_budget's trial fits (default 10)
--   and the common ones of lib/policy.lua: calib_n=N eval_n=N out=FILE
-- e.g. bitdown run lua/policies/bits_compare.lua target_bits=4 epochs=1
local P = require("lib.policy")

local opt, name = P.options(arg, {
  {"target_bits", "number"},
  {"target_mb", "number"},
  {"lambda", "number"},
  {"cost", "word", "memory", {memory = true, ops = true}},
  {"granularity", "word", "layer", {layer = true, channel = true}},
  {"min_bits", "integer"},
  {"max_bits", "integer"},
  {"epochs", "integer", 1},
  {"finetune_epochs", "integer", 1},
  {"lr", "number", 0.01},
  {"steps", "integer"},
  {"batch", "integer"},
  {"seed", "integer"},
  {"tune_iters", "integer"},
  {"methods", "string", "bitprune,ptq,qat,pq,any"},
  {"trial_iters", "integer", 10},
})
local want, order = {}, {}
for m in opt.methods:gmatch("[^,]+") do
  if not ({bitprune = true, ptq = true, qat = true, pq = true, any = true})[m] then
    error(("%s: methods are bitprune, ptq, qat, pq and any, not '%s'"):format(name, m), 0)
  end
  want[m] = true
  order[#order + 1] = m
end
if not opt.target_bits and not opt.target_mb and not opt.lambda then opt.target_bits = 4 end
local path = bd.path()
if not path then error(name .. ": no model is loaded", 0) end

-- Back to the model as loaded, with the data settings the arguments ask for.
local function fresh()
  bd.load(path)
  P.prepare(opt)
end

local function train_keys(t)
  for _, k in ipairs{"lr", "steps", "batch", "seed"} do t[k] = opt[k] end
  return t
end

local rows = {}
local function measure(method)
  local e = bd.eval{}
  local z = bd.size()
  local bits, weights = 0, 0
  for _, l in ipairs(bd.layers()) do
    if l.state ~= "float" then
      bits = bits + l.bits_per_weight * l.params
      weights = weights + l.params
    end
  end
  rows[#rows + 1] = {method = method, top1 = e.student.top1,
                     bits = weights > 0 and bits / weights or 32, bytes = z.compressed_bytes,
                     ratio = z.ratio}
  local r = rows[#rows]
  print(("%s: %-22s top1 %.2f%%, %.3f bits per weight, %.4f MB (%.1fx)"):format(name, method,
    r.top1, r.bits, P.mb(r.bytes), r.ratio))
end

-- Every method stores every layer, the first conv too (kept float by the
-- plan otherwise), so the sizes compare.
local function quantize_first()
  local first = bd.layers()[1]
  if first.op == "Conv" then bd.set(first.name, {quantize = true}) end
end

fresh()
local teacher = bd.eval{}.teacher.top1
quantize_first()
local bp = bd.bitprune(train_keys{target_bits = opt.target_bits, target_mb = opt.target_mb,
  lambda = opt.lambda, cost = opt.cost, granularity = opt.granularity, min_bits = opt.min_bits,
  max_bits = opt.max_bits, epochs = opt.epochs, finetune_epochs = opt.finetune_epochs})
measure("bitprune " .. opt.cost .. "/" .. opt.granularity)
local size, mean = bd.size().compressed_bytes, bp.mean_bits
local per_layer = {}
for _, l in ipairs(bp.layers) do per_layer[#per_layer + 1] = ("%s %.2f"):format(l.name, l.bits) end
if opt.out then
  bd.save(opt.out)
  print(("%s: wrote BitPruning's model to %s"):format(name, opt.out))
end
if not want.bitprune then table.remove(rows) end
local nb = math.max(1, math.min(16, math.floor(mean + 0.5)))

for _, m in ipairs(order) do
  if m == "ptq" then
    fresh()
    bd.regime("int" .. nb, {first = true})
    bd.quantize()
    measure("PTQ int" .. nb)
  elseif m == "qat" then
    fresh()
    bd.regime("int" .. nb, {first = true}) -- the grid the noise trains for
    bd.train(train_keys{quant_noise = ("int%d:p=1"):format(nb),
                        epochs = opt.epochs + opt.finetune_epochs})
    bd.set("*", {objective = "weight"})
    bd.quantize()
    measure("QAT int" .. nb)
  elseif m == "pq" or m == "any" then
    fresh()
    quantize_first()
    P.size_budget(name, size, opt.trial_iters, m == "pq" and "pq" or "all")
    bd.quantize()
    local iters = opt.tune_iters or (opt.steps and opt.steps * (opt.epochs + opt.finetune_epochs))
                  or 1000
    local pq = false
    for _, l in ipairs(bd.layers()) do pq = pq or (l.codebook and l.codebook.format == "pq") end
    if pq then bd.finetune{iters = iters} end -- fine-tuning tunes PQ codebooks; int grids stay
    measure("size_budget " .. (m == "pq" and "pq" or "all") .. (pq and "" or " (untuned)"))
  end
end
fresh()

print(("%s: teacher top1 %.2f%%; at BitPruning's %.4f MB (mean %.3f bits):"):format(name,
  teacher, P.mb(size), mean))
print(("%-26s %8s %8s %10s %10s %8s"):format("method", "top1 %", "delta", "bits/w", "MB", "ratio"))
for _, r in ipairs(rows) do
  print(("%-26s %8.2f %+8.2f %10.3f %10.4f %7.1fx"):format(r.method, r.top1, r.top1 - teacher,
    r.bits, P.mb(r.bytes), r.ratio))
end
print(name .. ": BitPruning's bits per layer: " .. table.concat(per_layer, ", "))
