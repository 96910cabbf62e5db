// Embedding lookup from a token table chunk held in f16 (two halves per u32 word) or int8 (four
// values per word and a scale per row): y[t, :] = table[ids[t] - FIRST, :] widened, for the ids
// this chunk holds; the other rows of y are left to the other chunks' launches.
//
// table: [ROWS, K] (read four values at a time); ids: [TOKENS] (f32, exact below 2^24); y: [TOKENS, K].
// One invocation per vec4 of the output.

@group(0) @binding(0) var<storage, read_write> table: array<{{ weight_word }}>;
@group(0) @binding(1) var<storage, read_write> ids: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;
{{ scales }}

const WORKGROUP: u32 = {{ workgroup }}u;
const TOKENS: u32 = {{ tokens }}u;
const K4: u32 = {{ width_vec4s }}u;
const FIRST: u32 = {{ first }}u;
const ROWS: u32 = {{ rows }}u;

fn widen(v: {{ weight_word }}) -> vec4<f32> {
    return {{ widen }};
}

fn scale(i: u32) -> f32 {
    return {{ scale }};
}

@compute @workgroup_size({{ workgroup }})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let n = gid.x + gid.y * groups.x * WORKGROUP;
    if n >= TOKENS * K4 {
        return;
    }
    let t = n / K4;
    let id = u32(ids[t]);
    if id < FIRST || id >= FIRST + ROWS {
        return;
    }
    y[n] = widen(table[(id - FIRST) * K4 + n % K4]) * scale(id - FIRST);
}
