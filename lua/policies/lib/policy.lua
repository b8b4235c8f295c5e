-- What the policies in lua/policies/ share (require "lib.policy"): their
-- key=value arguments, the candidate (d, k) of a layer measured by quick
-- trial fits, and the closing part: quantize, report, evaluate, save.
--
-- Arguments every policy takes, after its own:
--   first=true|false   quantize the first conv too (default: the paper's
--                      choice, fp32)
--   objective=act|weight|feedback  the objective of every layer (default:
--                      the plan's, feedback)
--   quantize=false     only set the plan, quantize nothing
--   iters=N            EM iterations at most when quantizing (default 100)
--   calib_n=N          calibration images (default: as set, 1024)
--   eval=true          evaluate teacher and student afterwards
--   eval_n=N           evaluation images (default: all)
--   out=FILE           save the compressed model there
--   decoded=true       save it as a dense fp32 model instead
local M = {}

local common = {
  {"first", "boolean"},
  {"objective", "word", nil, {act = true, weight = true, feedback = true}},
  {"quantize", "boolean", true},
  {"iters", "integer", 100},
  {"calib_n", "integer"},
  {"eval", "boolean", false},
  {"eval_n", "integer"},
  {"out", "string"},
  {"decoded", "boolean", false},
}

local convert = {
  number = function(v) return tonumber(v) end,
  integer = function(v)
    local n = math.tointeger(tonumber(v))
    return n and n > 0 and n or nil
  end,
  boolean = function(v)
    if type(v) == "boolean" then return v end
    return ({["true"] = true, ["false"] = false, ["1"] = true, ["0"] = false})[v]
  end,
  string = function(v) return type(v) == "string" and v or nil end,
}
local wanted = {number = "a number", integer = "a whole number above 0",
                boolean = "true or false", string = "a string"}

-- The policy's name, for messages: its file's name without ".lua".
local function policy_name(args)
  return (tostring(args and args[0] or "policy"):match("([^/]+)%.lua$")) or "policy"
end

-- Parses args (the script's `arg`: "key=value" words, or named fields when
-- a script builds the table) against own, a list of {name, type, default,
-- words, required=}, and the common arguments. Unknown or malformed
-- arguments are errors that name the policy and list what it takes.
function M.options(args, own)
  args = args or {}
  local name = policy_name(args)
  local spec, order = {}, {}
  for _, list in ipairs{own, common} do
    for _, a in ipairs(list) do
      spec[a[1]] = a
      order[#order + 1] = a[1]
    end
  end
  local function fail(fmt, ...) error(name .. ": " .. fmt:format(...), 0) end
  local opt = {}
  local function set(key, value)
    local a = spec[key]
    if not a then
      fail("unknown argument '%s' (it takes %s)", tostring(key), table.concat(order, ", "))
    end
    local v
    if a[2] == "word" then
      v = a[4][value] and value or nil
    else
      v = convert[a[2]](value)
    end
    if v == nil then
      local words = {}
      for w in pairs(a[4] or {}) do words[#words + 1] = w end
      table.sort(words)
      fail("argument %s must be %s, not '%s'", key,
           a[2] == "word" and table.concat(words, " or ") or wanted[a[2]], tostring(value))
    end
    opt[key] = v
  end
  for i, word in ipairs(args) do
    local key, value = tostring(word):match("^([%w_]+)=(.*)$")
    if not key then fail("argument %d is '%s', not key=value", i, tostring(word)) end
    set(key, value)
  end
  for key, value in pairs(args) do
    if type(key) == "string" then set(key, value) end
  end
  for _, a in pairs(spec) do
    if opt[a[1]] == nil then
      if a.required then fail("needs %s=... (%s)", a[1], a.required) end
      opt[a[1]] = a[3]
    end
  end
  return opt, name
end

-- Applies the common arguments that shape the work before a policy plans.
function M.prepare(opt)
  if opt.calib_n then bd.data("calib", nil, {n = opt.calib_n}) end
  if opt.eval_n then bd.data("eval", nil, {n = opt.eval_n}) end
  local first = bd.layers()[1]
  if opt.first ~= nil and first.op == "Conv" then bd.set(first.name, {quantize = opt.first}) end
  if opt.objective then bd.set("*", {objective = opt.objective}) end
end

-- The layers the plan quantizes: the ones a budget policy decides.
function M.planned()
  local out = {}
  for _, l in ipairs(bd.layers()) do
    if l.quantize then out[#out + 1] = l end
  end
  return out
end

-- The divisor of n nearest to want in divisors (the smaller on a tie), as
-- the regimes choose d.
local function nearest(divisors, want)
  local best
  for _, d in ipairs(divisors) do
    if not best or math.abs(d - want) < math.abs(best - want) then best = d end
  end
  return best
end

-- The bits an int candidate may take: 8 is the usual safe choice, below 4
-- the output error climbs fast, so every width there is worth a trial.
local int_bits = {2, 3, 4, 5, 6, 8}

-- Candidate settings for a layer, each with the relative output error a
-- quick fit gives (trial_iters EM iterations for PQ), from the student as
-- it stands, and the bytes it would store. formats is "pq", "int" or "all":
-- PQ with d the layer's divisors nearest the paper's block sizes 4, 8, 9
-- and 18 and k every power of two from 2 to the cap; int with the bits
-- above, per channel.
function M.candidates(name, trial_iters, formats)
  local l = bd.layer(name)
  local out, seen = {}, {}
  formats = formats or "pq"
  if formats ~= "int" then
    for _, want in ipairs{4, 8, 9, 18} do
      local d = nearest(l.divisors, want)
      if not seen[d] and l.max_k_by_d[d] >= 2 then
        seen[d] = true
        local t = bd.trial(name, {d = d, iters = trial_iters})
        for j, k in ipairs(t.k) do
          out[#out + 1] = {d = d, k = k, error = t.errors[j], bytes = t.bytes[j]}
        end
      end
    end
  end
  if formats ~= "pq" then
    local t = bd.trial(name, {bits = int_bits})
    for j, b in ipairs(t.bits) do
      out[#out + 1] = {bits = b, error = t.errors[j], bytes = t.bytes[j]}
    end
  end
  return out
end

-- Puts a layer's choice in the plan: {d=, k=} or {bits=}, or nil for fp32.
function M.choose(l, c)
  if c and c.bits then
    bd.set(l.name, {bits = c.bits, per = "channel", quantize = true})
  elseif c then
    bd.set(l.name, {d = c.d, k = c.k, quantize = true})
  else
    bd.set(l.name, {quantize = false})
    if l.state ~= "float" then bd.reset(l.name) end
  end
end

local function mb(bytes) return bytes / 2 ^ 20 end

-- Plans the layers the plan quantizes so that the stored size is at most
-- target bytes with the least sum of their trial errors (size_budget.lua
-- says how): candidates of `formats` ("pq", "int" or "all") measured by
-- trial fits of trial_iters EM iterations, fp32 a candidate too, then a
-- multiple-choice knapsack. Sets the plan (quantizes nothing); returns the
-- planned bytes and the sum of the chosen trial errors. name names the
-- caller in messages.
function M.size_budget(name, target, trial_iters, formats)
  local layers = M.planned()
  if #layers == 0 then error(name .. ": the plan quantizes no layer", 0) end
  print(("%s: target %.4f MB; trial fits of %d layers, %d EM iterations each"):format(
    name, M.mb(target), #layers, trial_iters))

  -- What every other parameter takes stays as it is; the decided layers
  -- share the rest (a target below it fails before any trial fit).
  local base, smallest = bd.size().compressed_bytes, 0
  for _, l in ipairs(layers) do base = base - l.bytes end
  if target <= base then
    error(("%s: target %.4f MB is below what the parameters it does not decide take, %.4f MB"
          ):format(name, M.mb(target), M.mb(base)), 0)
  end
  local choices = {}
  for i, l in ipairs(layers) do
    local cs = M.candidates(l.name, trial_iters, formats)
    cs[#cs + 1] = {fp32 = true, error = 0, bytes = 4 * l.params}
    local least = math.huge
    for _, c in ipairs(cs) do least = math.min(least, c.bytes) end
    smallest = smallest + least
    choices[i] = cs
  end
  local budget = target - base
  if budget < smallest then
    error(("%s: target %.4f MB is below the smallest size these candidates reach, %.4f MB"):format(
      name, M.mb(target), M.mb(base + smallest)), 0)
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
    M.choose(layers[i], not c.fp32 and c or nil)
  end
  return planned, total_error
end

-- The layer table and the size, as `bitdown quantize` prints them.
function M.report()
  print(("%-28s %5s %6s %7s %9s %9s  %s"):format("layer", "d", "k", "bits/w", "size KB",
                                                  "rel err", "state"))
  for _, l in ipairs(bd.layers()) do
    -- d and k as quantized, else as planned; int layers show their bits
    local dk = l.codebook or (l.quantize and l) or {}
    local d, k = dk.d, dk.k
    if dk.format == "int" then d, k = "-", "int" .. dk.bits end
    local state = l.state ~= "float" and l.state or l.quantize and "planned" or "fp32"
    print(("%-28s %5s %6s %7.3f %9.2f %9s  %s"):format(l.name, d or "-", k or "-",
      l.bits_per_weight, l.bytes / 1024, l.rel_error and ("%.4f"):format(l.rel_error) or "-",
      state))
  end
  local z = bd.size()
  print(("size: %.4f MB fp32 -> %.4f MB (codes %.4f + codebooks %.4f + fp32 rest %.4f), " ..
         "ratio %.2fx"):format(z.fp32_mb, z.compressed_mb, mb(z.code_bytes),
                               mb(z.codebook_bytes), mb(z.other_bytes), z.ratio))
end

-- Quantizes the plan's layers (unless already done, or quantize=false),
-- reports, evaluates and saves as the common arguments say.
function M.finish(opt, quantized)
  if opt.quantize and not quantized and #M.planned() > 0 then
    bd.quantize(nil, {iters = opt.iters})
  end
  M.report()
  if opt.eval then
    local e = bd.eval{}
    for _, who in ipairs{"teacher", "student"} do
      print(("%-8s top1 %.2f%% top5 %.2f%% (%d images)"):format(who, e[who].top1, e[who].top5,
                                                                  e[who].n))
    end
  end
  if opt.out then
    local saved = bd.save(opt.out, {decoded = opt.decoded})
    print(("wrote %s%s: %s"):format(opt.out, opt.decoded and " (decoded, dense fp32)" or "",
                                    saved.summary))
  end
end

-- A policy that sets one of the paper's regimes and quantizes.
function M.regime(regime, args)
  local opt = M.options(args, {})
  bd.regime(regime, {first = opt.first == true})
  M.prepare(opt)
  M.finish(opt)
end

M.mb = mb
return M
