-- The batch demo (./bd demo when stdout is not a terminal; or
-- `bitdown run examples/scripts/demo.lua [MODEL [IMAGENET_MODEL]]`): a
-- Fashion-MNIST ResNet compressed with the paper's small blocks, told in
-- plain output: its layers, the quantization, teacher against student,
-- fine-tuning of the centroids, the size, predictions on sample images, and
-- a save. Then the paper's own ResNet-18 (IMAGENET_MODEL, by default
-- ../shared/models/resnet18_bgd_small.onnx beside the project, with
-- imagenet_classes.txt in its folder) quantized again and naming the photos
-- of examples/images/photos/; skipped, saying so, when it is not there.
local root = arg[0]:match("^(.*)/examples/scripts/[^/]*$") or "."
local model = arg[1] or root .. "/examples/fmnist/resnet_bn.onnx"
local imagenet = arg[2] or root .. "/../shared/models/resnet18_bgd_small.onnx"

local function heading(text) print("\n== " .. text) end

heading("the model: " .. model)
bd.load(model)
print(("%-22s %-9s %-16s %8s"):format("layer", "kind", "weight", "params"))
for _, l in ipairs(bd.layers()) do
  print(("%-22s %-9s %-16s %8d"):format(l.name, l.kind, "[" .. table.concat(l.shape, ", ") .. "]",
                                        l.params))
end

heading("quantize: small blocks (d = 9 for 3x3, 4 for 1x1 and fc), k = 256, clamped")
bd.regime("small")
bd.data("calib", nil, {n = 512})
print(("%-22s %4s %5s %7s %9s %9s"):format("layer", "d", "k", "bits/w", "size KB", "rel err"))
for _, l in ipairs(bd.quantize{iters = 30}) do
  print(("%-22s %4d %5d %7.3f %9.2f %9.4f"):format(l.name, l.codebook.d, l.codebook.k,
                                                  l.bits_per_weight, l.bytes / 1024, l.rel_error))
end
print("(the first conv stays fp32, as in the paper)")

local function accuracy(title)
  heading(title)
  local e = bd.eval{n = 2000}
  print(("teacher  top1 %.2f%%  top5 %.2f%%"):format(e.teacher.top1, e.teacher.top5))
  print(("student  top1 %.2f%%  top5 %.2f%%"):format(e.student.top1, e.student.top5))
end
accuracy("accuracy on 2000 test images")

heading("fine-tune the centroids: 40 steps of distillation from the teacher")
local r = bd.finetune{iters = 40, mode = "global"}
print(("KL loss %.4f -> %.4f in %.1f s"):format(r.first_loss, r.last_loss, r.seconds))
accuracy("accuracy after fine-tuning (the codes did not change, so neither did the size)")

heading("size")
local z = bd.size()
print(("%.4f MB fp32 -> %.4f MB compressed: ratio %.1fx"):format(z.fp32_mb, z.compressed_mb,
                                                                  z.ratio))
print(("codes %d B, fp16 codebooks %d B, fp32 rest %d B"):format(z.code_bytes, z.codebook_bytes,
                                                                  z.other_bytes))

heading("predictions on sample test images")
print(("%-12s %-26s %s"):format("true", "teacher", "student"))
local images = io.popen('ls "' .. root .. '"/examples/images/*.png')
for path in images:lines() do
  local truth = path:match("fmnist_test_%d+_(.-)%.png$"):gsub("_", " ")
  local p = bd.predict(path)
  local function top(list) return ("%s (%.0f%%)"):format(list[1].name, 100 * list[1].prob) end
  print(("%-12s %-26s %s"):format(truth, top(p.teacher), top(p.student)))
end
images:close()

heading("save")
local tmp = os.tmpname()
bd.save(tmp)
local f = assert(io.open(tmp, "rb"))
local bytes = f:seek("end")
f:close()
os.remove(tmp)
print(("a standard ONNX file of %d bytes (codes -> Gather(fp16 centroids) -> weight);"):format(
  bytes))
print("any ONNX runtime runs it, and bitdown loads it back to go on working")

heading("the paper's own ResNet-18 (ImageNet) names photographs")
local classes = (imagenet:match("^(.*/)") or "") .. "imagenet_classes.txt"
local function readable(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end
if not readable(imagenet) or not readable(classes) then
  print(("skipped: %s or %s is not there (the weights published with the paper,"):format(
    imagenet, classes))
  print("decoded into torchvision's ResNet-18; see README.md, 'The bundled examples')")
  return
end
local names = {}
for line in io.lines(classes) do names[#names + 1] = line end
local photos = root .. "/examples/images/photos/"
local list = {}
for line in io.lines(photos .. "photos.txt") do
  local file, label = line:match("^(%S+)%s+(%d+)$")
  list[#list + 1] = {file = file, label = tonumber(label)}
end

bd.load(imagenet)
print(imagenet .. ": weights that are the paper's PQ codes and centroids, decoded")
-- a plain PyTorch export: ImageNet's preprocessing is given here (`bitdown
-- annotate --preset imagenet` writes it into a copy instead)
bd.data("calib", "list:" .. photos .. "photos.txt", {color = "rgb", resize = 256, crop = 224,
  mean = "0.485,0.456,0.406", std = "0.229,0.224,0.225"})
bd.regime("small")
local worst, count = 0, 0
for _, l in ipairs(bd.quantize{}) do
  worst = math.max(worst, l.rel_error)
  count = count + 1
end
local z = bd.size()
print(("quantized again with small blocks (k = 256), calibrated on the %d photos: %d layers,"):
  format(#list, count))
print(("the largest rel error %.4f: the codebooks come back; %.2f MB fp32 -> %.3f MB (%.1fx)"):
  format(worst, z.fp32_mb, z.compressed_mb, z.ratio))
print()
print(("%-12s %-12s %-24s %s"):format("photo", "true", "teacher", "student"))
for _, p in ipairs(list) do
  local r = bd.predict(photos .. p.file)
  local function top(who)
    return ("%s (%.0f%%)"):format(names[who[1].class + 1], 100 * who[1].prob)
  end
  print(("%-12s %-12s %-24s %s"):format(p.file, names[p.label + 1], top(r.teacher), top(r.student)))
end
