// f16 weights (two halves per u32 word, as the row-dots kernels read them) widened to f32 for
// the matmul: a prefill's many rows multiply by a weight widened once per call, as with f32
// weights, instead of re-reading it in 8-row launches.
//
// words: [WORDS]; y: [WORDS] pairs of f32. One invocation per word.

@group(0) @binding(0) var<storage, read_write> words: array<u32>;
@group(0) @binding(1) var<storage, read_write> y: array<vec2<f32>>;

const WORKGROUP: u32 = {{ workgroup }}u;
const WORDS: u32 = {{ words }}u;

@compute @workgroup_size({{ workgroup }})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let n = gid.x + gid.y * groups.x * WORKGROUP;
    if n >= WORDS {
        return;
    }
    y[n] = unpack2x16float(words[n]);
}
