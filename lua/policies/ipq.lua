-- ipq: iterative product quantization (Fan, Stock et al. 2020, sec. 4.3):
-- the model is quantized in stages, and between stages what is left trains:
-- the layers not yet quantized as float weights, with Quant-Noise on their
-- blocks, and the quantized layers' centroids (docs/method.md, "Iterative
-- PQ"). Each stage is quantized with bitdown's activation-aware fit from the
-- student as it stands, so later stages see the trained earlier ones; the
-- training distils the teacher (loss=kl) or uses the labels (loss=ce).
--
-- Arguments (key=value):
--   regime=small|large  the blocks (default small)
--   stages=GLOBS        the stages in order: ';' between stages, ',' between
--                       the globs of one, e.g. "layer1.*;layer2.*;layer3.*,fc";
--                       every glob must match a layer the plan quantizes
--                       (checked before anything changes); planned layers
--                       no stage names stay float. Default: the planned
--                       layers in graph order (bottom up, as the paper's
--                       CNNs are), cut into `groups` runs of about equal
--                       parameter count (each cut at the layer boundary
--                       nearest its share)
--   groups=N            stages of the default split (default 4)
--   epochs=N            training epochs after each stage (default 1)
--   steps=N             steps per epoch (default: a pass over the data)
--   batch=N             images per step (default: training's, 128)
--   lr=X                peak learning rate of each stage's cosine (default 0.01)
--   p=X                 Quant-Noise rate on the float layers (default 0.1; 0: none)
--   loss=kl|ce          distil the teacher (default) or use the labels
--   final=true|false    also train after the last stage (default true: the
--                       centroids of every layer together)
--   quantize=false      only show the stages
--   and the common ones of lib/policy.lua: first=true iters=N calib_n=N
--   objective=act|weight|feedback eval=true eval_n=N out=FILE decoded=true
-- e.g. bitdown quantize M.onnx -o M.q.onnx --policy ipq:stages="layer1.*;layer2.*;layer3.*;fc"
local P = require("lib.policy")

local opt, name = P.options(arg, {
  {"regime", "word", "small", {small = true, large = true}},
  {"stages", "string"},
  {"groups", "integer", 4},
  {"epochs", "integer", 1},
  {"steps", "integer"},
  {"batch", "integer"},
  {"lr", "number", 0.01},
  {"p", "number", 0.1},
  {"loss", "word", "kl", {kl = true, ce = true}},
  {"final", "boolean", true},
})
if opt.p < 0 or opt.p > 1 then error(name .. ": p must lie in [0, 1]", 0) end
if opt.lr <= 0 then error(name .. ": lr must be above 0", 0) end

bd.regime(opt.regime, {first = opt.first == true})
-- an argument that cannot work changes nothing: the regime is taken back
local function fail(fmt, ...)
  bd.undo()
  error(name .. ": " .. fmt:format(...), 0)
end
local planned = P.planned()
if #planned == 0 then fail("the plan quantizes no layer") end

-- The layers a glob matches among the planned ones, by the workspace's own
-- matching (bd.layers(glob)), in graph order.
local function matches(glob)
  local want = {}
  for _, l in ipairs(bd.layers(glob)) do want[l.name] = true end
  local out = {}
  for _, l in ipairs(planned) do
    if want[l.name] then out[#out + 1] = l.name end
  end
  return out
end

-- stages[i] = list of layer names
local stages = {}
if opt.stages then
  local taken = {}
  local i = 0
  for text in (opt.stages .. ";"):gmatch("([^;]*);") do
    i = i + 1
    local stage = {}
    for glob in text:gmatch("[^,]+") do
      local found = matches(glob)
      if #found == 0 then
        fail("stage %d: '%s' matches no layer the plan quantizes", i, glob)
      end
      for _, n in ipairs(found) do
        if not taken[n] then
          taken[n] = true
          stage[#stage + 1] = n
        end
      end
    end
    if #stage == 0 then fail("stage %d is empty", i) end
    stages[#stages + 1] = stage
  end
else
  local total = 0
  for _, l in ipairs(planned) do total = total + l.params end
  local groups = math.min(opt.groups, #planned)
  local stage, acc = {}, 0
  for j, l in ipairs(planned) do
    -- a stage ends at the cut nearest its share of the parameters, and
    -- early enough to leave a layer for every stage after it
    local left, open = #planned - j + 1, groups - #stages
    local share = total * (#stages + 1) / groups
    if #stage > 0 and open > 1 and
       (left == open - 1 or acc + l.params - share > share - acc) then
      stages[#stages + 1] = stage
      stage = {}
    end
    stage[#stage + 1] = l.name
    acc = acc + l.params
  end
  if #stage > 0 then stages[#stages + 1] = stage end
end

P.prepare(opt)

-- Every float layer trains as weights; the noise falls on the planned ones
-- (the plan lays out its blocks; the others get none).
local function train(i)
  local floats, noised = 0, false
  for _, l in ipairs(bd.layers()) do
    if l.state == "float" then
      floats = floats + 1
      noised = noised or l.quantize
    end
  end
  local args = {epochs = opt.epochs, lr = opt.lr, loss = opt.loss, schedule = "cosine",
                steps = opt.steps, batch = opt.batch}
  if noised and opt.p > 0 then args.quant_noise = ("pq:p=%g"):format(opt.p) end
  local r = bd.train(args)
  local last = r[#r]
  print(("stage %d/%d: trained %d epoch%s (%d float layer%s%s), loss %.4f%s"):format(
    i, #stages, #r, #r == 1 and "" or "s", floats, floats == 1 and "" or "s",
    args.quant_noise and (" with " .. args.quant_noise) or "", last.loss,
    last.top1 and last.top1 >= 0 and (", top1 %.2f%%"):format(last.top1) or ""))
end

if not opt.quantize then
  for i, stage in ipairs(stages) do
    print(("stage %d/%d: %s"):format(i, #stages, table.concat(stage, " ")))
  end
  P.finish(opt, true)
  return
end
for i, stage in ipairs(stages) do
  for _, n in ipairs(stage) do bd.quantize(n, {iters = opt.iters}) end
  print(("stage %d/%d: quantized %s"):format(i, #stages, table.concat(stage, " ")))
  if i < #stages or opt.final then train(i) end
end
P.finish(opt, true)
