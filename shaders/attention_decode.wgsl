// Attention for a few queries per sequence (decode): one workgroup per (batch, head, query).
//
// Flash-decoding inside a workgroup (flash_decoding.wgsl, appended to this file): invocation i
// takes keys i, i + WORKGROUP, i + 2·WORKGROUP, … with its own online softmax, and the partial
// results are merged once at the end. Rows are read as vec4 (head_dim must be a multiple of 4).
// No [T, L] score matrix is ever written to memory.
//
// Masking is by position, which covers left padding, ragged batches and sliding windows in
// ring order alike: key j is visible to a query at position p when key_pos[j] >= 0 (a real
// token), key_pos[j] <= p, and p - key_pos[j] < window (window 0 = unlimited).

@group(0) @binding(0) var<storage, read_write> q: array<vec4<f32>>;          // [B, H, T, D/4]
@group(0) @binding(1) var<storage, read_write> k: array<{{ kv_word }}>;      // [B, H, C, D/4]
@group(0) @binding(2) var<storage, read_write> v: array<{{ kv_word }}>;      // [B, H, C, D/4]
@group(0) @binding(3) var<storage, read_write> key_pos: array<i32>;          // [B, L]
@group(0) @binding(4) var<storage, read_write> query_pos: array<i32>;        // [B, T]
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;        // [B, H, T, D/4]
// H, T, C, L, window, scale (f32 bits)
@group(0) @binding(6) var<storage, read_write> params: array<u32>;

const WORKGROUP: u32 = {{ workgroup }}u;
const D4: u32 = {{ head_dim }}u / 4u;

var<workgroup> query: array<vec4<f32>, D4>;
var<workgroup> maxes: array<f32, WORKGROUP>;
var<workgroup> sums: array<f32, WORKGROUP>;
var<workgroup> partial: array<vec4<f32>, {{ partial_vec4s }}>;              // [WORKGROUP, D/4]
var<workgroup> key_count: u32;

@compute @workgroup_size({{ workgroup }})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h_len = params[0];
    let t_len = params[1];
    let c_len = params[2];
    let window = params[4];
    let scale = bitcast<f32>(params[5]);
    if lid == 0u {
        key_count = params[3];
    }
    let l_len = workgroupUniformLoad(&key_count);

    let t = wid.x % t_len;
    let bh = wid.x / t_len;
    let b = bh / h_len;
    let qpos = query_pos[b * t_len + t];
    let q_off = (bh * t_len + t) * D4;
    let kv_off = bh * c_len * D4;
    for (var i = lid; i < D4; i = i + WORKGROUP) {
        query[i] = q[q_off + i];
    }
    workgroupBarrier();

    var state = empty_partial();
    for (var j = lid; j < l_len; j = j + WORKGROUP) {
        let kpos = key_pos[b * l_len + j];
        if kpos < 0 || kpos > qpos || (window != 0u && u32(qpos - kpos) >= window) {
            continue;
        }
        absorb(&state, kv_off + j * D4, scale);
    }
    merge_and_store(lid, state, q_off);
}
