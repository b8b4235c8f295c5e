// Runs an ONNX model with ONNX Runtime, a third-party runtime, on raw float32
// input and writes its first output as raw float32, so tests can check that
// the files bitdown writes run elsewhere and give the same numbers.
//
// usage: node ort_run.js MODEL INPUT.f32 N C H W OUTPUT.f32
// (NODE_PATH must reach onnxruntime-node; `./bd deps` installs it in .deps/)
'use strict';

const fs = require('fs');
const ort = require('onnxruntime-node');

async function main() {
    const args = process.argv.slice(2);
    if (args.length !== 7) {
        console.error('usage: node ort_run.js MODEL INPUT.f32 N C H W OUTPUT.f32');
        process.exit(2);
    }
    const [model, input, output] = [args[0], args[1], args[6]];
    const dims = args.slice(2, 6).map(Number);
    const raw = fs.readFileSync(input);
    // a copy, so the floats are aligned whatever offset the Buffer has
    const data = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    const expected = dims.reduce((a, b) => a * b, 1);
    if (data.length !== expected) {
        throw new Error(`${input} holds ${data.length} floats, ${dims.join('x')} needs ${expected}`);
    }
    const session = await ort.InferenceSession.create(model);
    const feeds = {[session.inputNames[0]]: new ort.Tensor('float32', data, dims)};
    const result = await session.run(feeds);
    const out = result[session.outputNames[0]].data;
    fs.writeFileSync(output, Buffer.from(out.buffer, out.byteOffset, out.byteLength));
}

main().catch((e) => {
    console.error(`ort_run: ${e.message || e}`);
    process.exit(1);
});
