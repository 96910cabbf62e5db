// Attention for a few queries per sequence (decode): one workgroup per (batch, head, query).
//
// Flash-decoding inside a workgroup: invocation i takes keys i, i + WORKGROUP, i + 2·WORKGROUP, …
// and keeps its own online softmax over them (running max m, running sum l, and the weighted
// sum of V rows in registers, rescaled by exp(m_old − m_new) when the max grows). The loop over
// keys has no barrier at all; at the end the invocations' partial results are merged once in
// workgroup memory: out = Σ_i exp(m_i − M)·acc_i / Σ_i exp(m_i − M)·l_i with M = max_i m_i.
// Rows are read as vec4 (head_dim must be a multiple of 4). No [T, L] score matrix is ever
// written to memory.
//
// Masking is by position, which covers left padding, ragged batches and sliding windows in
// ring order alike: key j is visible to a query at position p when key_pos[j] >= 0 (a real
// token), key_pos[j] <= p, and p - key_pos[j] < window (window 0 = unlimited).

@group(0) @binding(0) var<storage, read_write> q: array<vec4<f32>>;          // [B, H, T, D/4]
@group(0) @binding(1) var<storage, read_write> k: array<vec4<f32>>;          // [B, H, C, D/4]
@group(0) @binding(2) var<storage, read_write> v: array<vec4<f32>>;          // [B, H, C, D/4]
@group(0) @binding(3) var<storage, read_write> key_pos: array<i32>;          // [B, L]
@group(0) @binding(4) var<storage, read_write> query_pos: array<i32>;        // [B, T]
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;        // [B, H, T, D/4]
// H, T, C, L, window, scale (f32 bits)
@group(0) @binding(6) var<storage, read_write> params: array<u32>;

const WORKGROUP: u32 = {{ workgroup }}u;
const D4: u32 = {{ head_dim }}u / 4u;
const MASKED: f32 = -3.0e38;

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

    var m = MASKED;
    var l = 0.0;
    var acc: array<vec4<f32>, D4>;
    for (var j = lid; j < l_len; j = j + WORKGROUP) {
        let kpos = key_pos[b * l_len + j];
        if kpos < 0 || kpos > qpos || (window != 0u && u32(qpos - kpos) >= window) {
            continue;
        }
        let row = kv_off + j * D4;
        var dot4 = vec4<f32>(0.0);
        for (var i = 0u; i < D4; i = i + 1u) {
            dot4 = dot4 + query[i] * k[row + i];
        }
        let score = (dot4.x + dot4.y + dot4.z + dot4.w) * scale;
        let m_new = max(m, score);
        let correction = exp(m - m_new);
        let weight = exp(score - m_new);
        l = l * correction + weight;
        for (var i = 0u; i < D4; i = i + 1u) {
            acc[i] = acc[i] * correction + weight * v[row + i];
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
        // A query that sees no key (padding) gets zeros instead of NaN.
        out[q_off + i] = select(total / l_all, vec4<f32>(0.0), l_all == 0.0);
    }
}
