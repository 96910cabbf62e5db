// Few rows (decode) through a linear layer: y[r, :] = x[r, :] · W + b, with W as burn holds it,
// [INPUTS, OUTPUTS] row-major.
//
// w: [INPUTS, OUTPUTS / 4] (vec4); x: [ROWS, INPUTS]; bias: [OUTPUTS / 4]; y: [ROWS, OUTPUTS / 4].
// With f16 weights (`--dtype f16`) a vec4 of W is two u32 words of two halves each, widened
// by unpack2x16float; with int8 (`--dtype int8`) one u32 word of four, widened by
// unpack4x8snorm and multiplied by each output's scale on the way out: core WGSL, no
// shader-f16 needed.
// One invocation per 4 adjacent outputs: neighbouring invocations read neighbouring words of
// each W row, every W element is read once for all ROWS inputs, the sums stay in registers and
// the bias is added on the way out. No workgroup memory, no barriers (see row_dots_table.wgsl).

@group(0) @binding(0) var<storage, read_write> w: array<{{ weight_word }}>;
@group(0) @binding(1) var<storage, read_write> x: array<{{ elem }}>;
@group(0) @binding(2) var<storage, read_write> bias: array<vec4<{{ elem }}>>;
@group(0) @binding(3) var<storage, read_write> y: array<vec4<{{ elem }}>>;
{{ scales }}

const WORKGROUP: u32 = {{ workgroup }}u;
const ROWS: u32 = {{ rows }}u;
const INPUTS: u32 = {{ inputs }}u;
const OUT4: u32 = {{ output_vec4s }}u;

fn widen(v: {{ weight_word }}) -> vec4<f32> {
    return {{ widen }};
}

fn scale(i: u32) -> f32 {
    return {{ scale }};
}

@compute @workgroup_size({{ workgroup }})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let n = gid.x + gid.y * groups.x * WORKGROUP;
    if n >= OUT4 {
        return;
    }
    var acc: array<vec4<{{ elem }}>, ROWS>;
    for (var k = 0u; k < INPUTS; k++) {
        let wk = widen(w[k * OUT4 + n]);
        for (var r = 0u; r < ROWS; r++) {
            acc[r] += x[r * INPUTS + k] * wk;
        }
    }
    let b = bias[n];
    let s = vec4<f32>(scale(4u * n), scale(4u * n + 1u), scale(4u * n + 2u), scale(4u * n + 3u));
    for (var r = 0u; r < ROWS; r++) {
        y[r * OUT4 + n] = acc[r] * s + b;
    }
}
