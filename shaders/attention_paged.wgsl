// Paged attention (vLLM's PagedAttention) for a ragged step: any mix of prefill chunks and
// decode tokens of many sequences, flattened into N query rows. One workgroup per (query, head).
//
// Keys and values live in pools of fixed-size blocks: key position j of the query's sequence is
// slot tables[table_offsets[seq] + j / BLOCK] * BLOCK + j % BLOCK. A query at position p sees
// positions 0..=p of its own sequence (the step's new tokens were written to the pool first).
//
// Flash-decoding inside the workgroup, as attention_decode.wgsl: invocation i takes keys
// i, i + WORKGROUP, … with its own online softmax (running max m, sum l, weighted V rows in
// registers), no barrier in the key loop, one merge in workgroup memory at the end. Rows are
// read as vec4 (head_dim must be a multiple of 4). No score matrix is ever written.

@group(0) @binding(0) var<storage, read_write> q: array<vec4<f32>>;             // [N, H·D/4]
@group(0) @binding(1) var<storage, read_write> k_pool: array<vec4<f32>>;        // [slots, H·D/4]
@group(0) @binding(2) var<storage, read_write> v_pool: array<vec4<f32>>;        // [slots, H·D/4]
@group(0) @binding(3) var<storage, read_write> token_segment: array<u32>;       // [N]
@group(0) @binding(4) var<storage, read_write> token_position: array<i32>;      // [N]
@group(0) @binding(5) var<storage, read_write> table_offsets: array<u32>;       // [segments]
@group(0) @binding(6) var<storage, read_write> tables: array<u32>;              // block ids
@group(0) @binding(7) var<storage, read_write> out: array<vec4<f32>>;           // [N, H·D/4]
// N, H, scale (f32 bits)
@group(0) @binding(8) var<storage, read_write> params: array<u32>;

const WORKGROUP: u32 = {{ workgroup }}u;
const D4: u32 = {{ head_dim }}u / 4u;
const BLOCK: u32 = {{ block_size }}u;
const MASKED: f32 = -3.0e38;

var<workgroup> query: array<vec4<f32>, D4>;
var<workgroup> maxes: array<f32, WORKGROUP>;
var<workgroup> sums: array<f32, WORKGROUP>;
var<workgroup> partial: array<vec4<f32>, {{ partial_vec4s }}>;                // [WORKGROUP, D/4]
var<workgroup> shape: array<u32, 2>;                                           // N, H (uniform)

@compute @workgroup_size({{ workgroup }})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // Through workgroup memory, so that the early return below is uniform control flow.
    if lid == 0u {
        shape[0] = params[0];
        shape[1] = params[1];
    }
    let dims = workgroupUniformLoad(&shape);
    let n_len = dims[0];
    let h_len = dims[1];
    let scale = bitcast<f32>(params[2]);
    let index = wid.x + wid.y * groups.x;
    if index >= n_len * h_len {
        return;  // the whole workgroup leaves together
    }
    let t = index / h_len;
    let h = index % h_len;
    let row4 = h_len * D4;
    let segment = token_segment[t];
    let qpos = u32(token_position[t]);
    let table = table_offsets[segment];
    let q_off = t * row4 + h * D4;
    for (var i = lid; i < D4; i = i + WORKGROUP) {
        query[i] = q[q_off + i];
    }
    workgroupBarrier();

    var m = MASKED;
    var l = 0.0;
    var acc: array<vec4<f32>, D4>;
    for (var j = lid; j <= qpos; j = j + WORKGROUP) {
        let slot = tables[table + j / BLOCK] * BLOCK + j % BLOCK;
        let row = slot * row4 + h * D4;
        var dot4 = vec4<f32>(0.0);
        for (var i = 0u; i < D4; i = i + 1u) {
            dot4 = dot4 + query[i] * k_pool[row + i];
        }
        let score = (dot4.x + dot4.y + dot4.z + dot4.w) * scale;
        let m_new = max(m, score);
        let correction = exp(m - m_new);
        let weight = exp(score - m_new);
        l = l * correction + weight;
        for (var i = 0u; i < D4; i = i + 1u) {
            acc[i] = acc[i] * correction + weight * v_pool[row + i];
        }
        m = m_new;
    }

    maxes[lid] = m;
    sums[lid] = l;
    for (var i = 0u; i < D4; i = i + 1u) {
        partial[lid * D4 + i] = acc[i];
    }
    workgroupBarrier();
    var m_all = MASKED;
    for (var g = 0u; g < WORKGROUP; g = g + 1u) {
        m_all = max(m_all, maxes[g]);
    }
    for (var i = lid; i < D4; i = i + WORKGROUP) {
        var total = vec4<f32>(0.0);
        var l_all = 0.0;
        for (var g = 0u; g < WORKGROUP; g = g + 1u) {
            let c = exp(maxes[g] - m_all);
            total = total + c * partial[g * D4 + i];
            l_all = l_all + c * sums[g];
        }
        out[q_off + i] = total / l_all;
    }
}
