// Few rows (decode) times a row-major table: y[r, offset + n] = Σ_k x[r, k] · table[n, k],
// the tied head's `h @ wteᵀ` over one chunk of the token table.
//
// table: [OUTPUTS, K] (rows contiguous, read as vec4, as two u32 words of two f16 each with
// f16 weights, or as one u32 word of four int8 with int8 weights, whose dots are multiplied by
// their row's scale); x: [ROWS, K]; y: [ROWS, OUT_STRIDE].
// One invocation per table row: it streams that row once for all ROWS inputs and keeps the
// sums in registers. No workgroup memory and no barriers: a tiled matmul pads one row to a
// whole tile, and on CPU-backed adapters (SwiftShader, lavapipe) each barrier of each
// workgroup costs more than this kernel's arithmetic.

@group(0) @binding(0) var<storage, read_write> table: array<{{ weight_word }}>;
@group(0) @binding(1) var<storage, read_write> x: array<vec4<{{ elem }}>>;
@group(0) @binding(2) var<storage, read_write> y: array<{{ elem }}>;
{{ scales }}

const WORKGROUP: u32 = {{ workgroup }}u;
const ROWS: u32 = {{ rows }}u;
const OUTPUTS: u32 = {{ outputs }}u;
const K4: u32 = {{ width_vec4s }}u;
const OUT_STRIDE: u32 = {{ out_stride }}u;
const OUT_OFFSET: u32 = {{ out_offset }}u;

fn widen(v: {{ weight_word }}) -> vec4<f32> {
    return {{ widen }};
}

fn scale(i: u32) -> f32 {
    return {{ scale }};
}

@compute @workgroup_size({{ workgroup }})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let n = gid.x + gid.y * groups.x * WORKGROUP;
    if n >= OUTPUTS {
        return;
    }
    var acc: array<vec4<{{ elem }}>, ROWS>;
    for (var k = 0u; k < K4; k++) {
        let t = widen(table[n * K4 + k]);
        for (var r = 0u; r < ROWS; r++) {
            acc[r] += x[r * K4 + k] * t;
        }
    }
    let s = scale(n);
    for (var r = 0u; r < ROWS; r++) {
        y[r * OUT_STRIDE + OUT_OFFSET + n] = dot(acc[r], vec4<{{ elem }}>(1.0)) * s;
    }
}
