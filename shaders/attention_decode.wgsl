// Attention for a few queries per sequence (decode): one workgroup per (batch, head, query).
//
// The workgroup walks the keys in tiles of WORKGROUP: each invocation scores one key of the
// tile (q·k·scale, or "masked"), the tile's max and sum are reduced in workgroup memory, and
// the output is accumulated with an online softmax (running max m, running sum l, rescaled
// by exp(m_old - m_new)), invocation i owning output dims i, i + WORKGROUP, ...
// No [T, L] score matrix is ever written to memory.
//
// Masking is by position, which covers left padding, ragged batches and sliding windows in
// ring order alike: key j is visible to a query at position p when key_pos[j] >= 0 (a real
// token), key_pos[j] <= p, and p - key_pos[j] < window (window 0 = unlimited).

@group(0) @binding(0) var<storage, read_write> q: array<{{ elem }}>;         // [B, H, T, D]
@group(0) @binding(1) var<storage, read_write> k: array<{{ elem }}>;         // [B, H, C, D]
@group(0) @binding(2) var<storage, read_write> v: array<{{ elem }}>;         // [B, H, C, D]
@group(0) @binding(3) var<storage, read_write> key_pos: array<i32>;          // [B, L]
@group(0) @binding(4) var<storage, read_write> query_pos: array<i32>;        // [B, T]
@group(0) @binding(5) var<storage, read_write> out: array<{{ elem }}>;       // [B, H, T, D]
// H, T, C, L, window, scale (f32 bits)
@group(0) @binding(6) var<storage, read_write> params: array<u32>;

const WORKGROUP: u32 = {{ workgroup }}u;
const D: u32 = {{ head_dim }}u;
// Output dims per invocation: ceil(D / WORKGROUP).
const DIMS: u32 = {{ dims_per_invocation }}u;
const MASKED: f32 = -3.0e38;

var<workgroup> query: array<f32, D>;
var<workgroup> weights: array<f32, WORKGROUP>;
var<workgroup> scratch: array<f32, WORKGROUP>;
var<workgroup> key_count: u32;

// Tree reduction of `scratch` (max when `take_max`, else sum); every invocation gets the result.
fn reduce(lid: u32, take_max: bool) -> f32 {
    for (var stride = WORKGROUP / 2u; stride > 0u; stride = stride / 2u) {
        if lid < stride {
            let a = scratch[lid];
            let b = scratch[lid + stride];
            scratch[lid] = select(a + b, max(a, b), take_max);
        }
        workgroupBarrier();
    }
    let result = scratch[0];
    workgroupBarrier();
    return result;
}

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
    let q_off = (bh * t_len + t) * D;
    let kv_off = bh * c_len * D;
    for (var d = lid; d < D; d = d + WORKGROUP) {
        query[d] = f32(q[q_off + d]);
    }
    workgroupBarrier();

    var m = MASKED;
    var l = 0.0;
    var acc: array<f32, DIMS>;
    let tiles = (l_len + WORKGROUP - 1u) / WORKGROUP;
    for (var tile = 0u; tile < tiles; tile = tile + 1u) {
        let j = tile * WORKGROUP + lid;
        var score = MASKED;
        if j < l_len {
            let kpos = key_pos[b * l_len + j];
            if kpos >= 0 && kpos <= qpos && (window == 0u || u32(qpos - kpos) < window) {
                var dot = 0.0;
                let row = kv_off + j * D;
                for (var d = 0u; d < D; d = d + 1u) {
                    dot = dot + query[d] * f32(k[row + d]);
                }
                score = dot * scale;
            }
        }
        scratch[lid] = score;
        workgroupBarrier();
        let m_new = max(m, reduce(lid, true));
        var weight = 0.0;
        if score > MASKED {
            weight = exp(score - m_new);
        }
        weights[lid] = weight;
        scratch[lid] = weight;
        workgroupBarrier();
        let tile_sum = reduce(lid, false);
        let correction = exp(m - m_new);
        l = l * correction + tile_sum;
        let keys_here = min(WORKGROUP, l_len - tile * WORKGROUP);
        for (var i = 0u; i < DIMS; i = i + 1u) {
            let d = lid + i * WORKGROUP;
            if d < D {
                var sum = 0.0;
                for (var jj = 0u; jj < keys_here; jj = jj + 1u) {
                    sum = sum + weights[jj] * f32(v[kv_off + (tile * WORKGROUP + jj) * D + d]);
                }
                acc[i] = acc[i] * correction + sum;
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    for (var i = 0u; i < DIMS; i = i + 1u) {
        let d = lid + i * WORKGROUP;
        if d < D {
            // A query that sees no key (padding) gets zeros instead of NaN.
            out[q_off + d] = {{ elem }}(select(acc[i] / l, 0.0, l == 0.0));
        }
    }
}
