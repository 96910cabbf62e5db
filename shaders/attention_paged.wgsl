// Paged attention (vLLM's PagedAttention) for a ragged step: any mix of prefill chunks and
// decode tokens of many sequences, flattened into N query rows. One workgroup per (query, head).
//
// Keys and values live in pools of fixed-size blocks: key position j of the query's sequence is
// slot tables[table_offsets[seq] + j / BLOCK] * BLOCK + j % BLOCK. A query at position p sees
// positions 0..=p of its own sequence (the step's new tokens were written to the pool first).
//
// Flash-decoding inside the workgroup (flash_decoding.wgsl, appended to this file, as to
// attention_decode.wgsl): invocation i takes keys i, i + WORKGROUP, … with its own online
// softmax, merged once at the end. Rows are read as vec4 (head_dim must be a multiple of 4).
// No score matrix is ever written.

@group(0) @binding(0) var<storage, read_write> q: array<vec4<f32>>;             // [N, H·D/4]
@group(0) @binding(1) var<storage, read_write> k: array<{{ kv_word }}>;         // [slots, H·D/4]
@group(0) @binding(2) var<storage, read_write> v: array<{{ kv_word }}>;         // [slots, H·D/4]
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

    var state = empty_partial();
    for (var j = lid; j <= qpos; j = j + WORKGROUP) {
        let slot = tables[table + j / BLOCK] * BLOCK + j % BLOCK;
        absorb(&state, slot * row4 + h * D4, scale);
    }
    merge_and_store(lid, state, q_off);
}
