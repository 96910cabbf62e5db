// int8 weights (four values per u32 word, as the row-dots kernels read them) widened to f32 and
// scaled for the matmul: a prefill's many rows multiply by a weight widened once per call.
// Scales are per row of a table (PER_ROW = 1) or per column of a layer's W, each the largest
// |value| of its output, as unpack4x8snorm gives q / 127.
//
// words: [WORDS] = [rows, ROW_WORDS]; y: [WORDS] vec4s of f32. One invocation per word.

@group(0) @binding(0) var<storage, read_write> words: array<u32>;
@group(0) @binding(1) var<storage, read_write> y: array<vec4<f32>>;
{{ scales }}

const WORKGROUP: u32 = {{ workgroup }}u;
const WORDS: u32 = {{ words }}u;
const ROW_WORDS: u32 = {{ row_words }}u;
const PER_ROW: u32 = {{ per_row }}u;

fn scale(i: u32) -> f32 {
    return {{ scale }};
}

@compute @workgroup_size({{ workgroup }})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let n = gid.x + gid.y * groups.x * WORKGROUP;
    if n >= WORDS {
        return;
    }
    let c = 4u * (n % ROW_WORDS);
    var s = vec4<f32>(scale(c), scale(c + 1u), scale(c + 2u), scale(c + 3u));
    if PER_ROW == 1u {
        s = vec4<f32>(scale(n / ROW_WORDS));
    }
    y[n] = unpack4x8snorm(words[n]) * s;
}
