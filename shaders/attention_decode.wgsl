// Attention for a few queries per sequence (decode): one workgroup per (batch, head, query).
//
// The workgroup walks the keys in tiles of WORKGROUP: each invocation scores one key of the
// tile (q·k·scale as vec4 dot products, or "masked"), the tile's max and sum are reduced in
// workgroup memory, and the output is accumulated with an online softmax (running max m,
// running sum l, rescaled by exp(m_old - m_new)). For the weighted sum of V the workgroup
// splits into GROUPS = WORKGROUP / (D/4) groups: invocation i adds up every GROUPS-th key of
// the tile for the 4 dims i % (D/4), reading V rows as vec4, and the groups' partial sums are
// added in workgroup memory. head_dim must be a multiple of 4 and at most 4·WORKGROUP.
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
const D4: u32 = D / 4u;
const GROUPS: u32 = WORKGROUP / D4;
const MASKED: f32 = -3.0e38;

var<workgroup> query: array<vec4<f32>, D4>;
var<workgroup> weights: array<f32, WORKGROUP>;
var<workgroup> scratch: array<f32, WORKGROUP>;
var<workgroup> partial: array<vec4<f32>, WORKGROUP>;
var<workgroup> key_count: u32;

// (WGSL cannot pass storage pointers to functions: one reader per buffer.)
fn k4(at: u32) -> vec4<f32> {
    return vec4<f32>(f32(k[at]), f32(k[at + 1u]), f32(k[at + 2u]), f32(k[at + 3u]));
}
fn v4(at: u32) -> vec4<f32> {
    return vec4<f32>(f32(v[at]), f32(v[at + 1u]), f32(v[at + 2u]), f32(v[at + 3u]));
}

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
    if lid < D4 {
        let at = q_off + 4u * lid;
        query[lid] = vec4<f32>(f32(q[at]), f32(q[at + 1u]), f32(q[at + 2u]), f32(q[at + 3u]));
    }
    workgroupBarrier();

    // Invocation lid owns dims 4·(lid % D4) .. +4 of key group lid / D4.
    let dim4 = lid % D4;
    let group = lid / D4;
    var m = MASKED;
    var l = 0.0;
    var acc = vec4<f32>(0.0);
    let tiles = (l_len + WORKGROUP - 1u) / WORKGROUP;
    for (var tile = 0u; tile < tiles; tile = tile + 1u) {
        let j = tile * WORKGROUP + lid;
        var score = MASKED;
        if j < l_len {
            let kpos = key_pos[b * l_len + j];
            if kpos >= 0 && kpos <= qpos && (window == 0u || u32(qpos - kpos) < window) {
                var dot4 = vec4<f32>(0.0);
                let row = kv_off + j * D;
                for (var i = 0u; i < D4; i = i + 1u) {
                    dot4 = dot4 + query[i] * k4(row + 4u * i);
                }
                score = (dot4.x + dot4.y + dot4.z + dot4.w) * scale;
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
        var sum = vec4<f32>(0.0);
        if group < GROUPS {
            for (var jj = group; jj < keys_here; jj = jj + GROUPS) {
                sum = sum + weights[jj] * v4(kv_off + (tile * WORKGROUP + jj) * D + 4u * dim4);
            }
        }
        partial[lid] = sum;
        workgroupBarrier();
        if lid < D4 {
            var total = vec4<f32>(0.0);
            for (var g = 0u; g < GROUPS; g = g + 1u) {
                total = total + partial[g * D4 + lid];
            }
            acc = acc * correction + total;
        }
        m = m_new;
        workgroupBarrier();
    }
    if lid < D4 {
        // A query that sees no key (padding) gets zeros instead of NaN.
        let o = select(acc / l, vec4<f32>(0.0), l == 0.0);
        let at = q_off + 4u * lid;
        out[at] = {{ elem }}(o.x);
        out[at + 1u] = {{ elem }}(o.y);
        out[at + 2u] = {{ elem }}(o.z);
        out[at + 3u] = {{ elem }}(o.w);
    }
}
