// ONNX Runtime's forward throughput on the same file and input shape as
// `bitdown bench`: random input, two warm-up passes, median of N passes.
// usage: node ort_bench.js MODEL BATCH ITERS THREADS
// prints: images/s median_ms
'use strict';
const ort = require('onnxruntime-node');

async function main() {
  const [model, batchArg, itersArg, threadsArg] = process.argv.slice(2);
  const batch = Number(batchArg), iters = Number(itersArg), threads = Number(threadsArg);
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  const name = session.inputNames[0];
  // the input's declared shape is not exposed by every binding version: ask
  // the caller's convention (NCHW, 28x28 gray for Fashion-MNIST models)
  const shape = model.includes('fmnist') ? [batch, 1, 28, 28] : [batch, 3, 224, 224];
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = Math.random() * 2 - 1;
  const feeds = {[name]: new ort.Tensor('float32', data, shape)};
  for (let i = 0; i < 2; i++) await session.run(feeds);
  const times = [];
  for (let i = 0; i < iters; i++) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  const median = times[Math.floor(iters / 2)];
  console.log((batch * 1000 / median).toFixed(2), median.toFixed(3));
}

main().catch((e) => { console.error(e.message || e); process.exit(1); });
