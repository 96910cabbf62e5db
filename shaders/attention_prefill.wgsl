// Causal attention for a chunk of queries (prefill), flash-attention style: one workgroup per
// block of WORKGROUP queries of one (batch, head), one invocation per query. Keys and values
// stream through workgroup memory in tiles of TILE rows, loaded once per tile for the whole
// block; each invocation keeps its output accumulator and online-softmax state (running max
// m, running sum l) in registers, its (pre-scaled) query in workgroup memory. Rows are read
// as vec4, so head_dim must be a multiple of 4. No [T, L] matrix is ever materialised.
// K and V come as f32 vec4s, or (an f16 cache) as pairs of words of two f16 halves each,
// widened as a tile is loaded.
//
// Masking by position, as in attention_decode.wgsl.

@group(0) @binding(0) var<storage, read_write> q: array<{{ elem }}>;         // [B, H, T, D]
@group(0) @binding(1) var<storage, read_write> k: array<{{ kv_word }}>;      // [B, H, C, D/4]
@group(0) @binding(2) var<storage, read_write> v: array<{{ kv_word }}>;      // [B, H, C, D/4]
@group(0) @binding(3) var<storage, read_write> key_pos: array<i32>;          // [B, L]
@group(0) @binding(4) var<storage, read_write> query_pos: array<i32>;        // [B, T]
@group(0) @binding(5) var<storage, read_write> out: array<{{ elem }}>;       // [B, H, T, D]
// H, T, C, L, window, scale (f32 bits)
@group(0) @binding(6) var<storage, read_write> params: array<u32>;

const WORKGROUP: u32 = {{ workgroup }}u;
const TILE: u32 = {{ tile }}u;
const D: u32 = {{ head_dim }}u;
const D4: u32 = D / 4u;
const MASKED: f32 = -3.0e38;

var<workgroup> k_tile: array<vec4<f32>, {{ tile_vec4s }}>;   // TILE × D/4
var<workgroup> v_tile: array<vec4<f32>, {{ tile_vec4s }}>;
var<workgroup> q_block: array<vec4<f32>, {{ block_vec4s }}>; // WORKGROUP × D/4
var<workgroup> pos_tile: array<i32, TILE>;
var<workgroup> key_count: u32;

fn q4(at: u32) -> vec4<f32> {
    return vec4<f32>(f32(q[at]), f32(q[at + 1u]), f32(q[at + 2u]), f32(q[at + 3u]));
}
// Four K or V values (an f32 vec4, or two words of two f16) as f32.
fn kv4(v: {{ kv_word }}) -> vec4<f32> {
    return {{ kv_widen }};
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

    let bh = wid.y;
    let b = bh / h_len;
    let t = wid.x * WORKGROUP + lid;
    let has_query = t < t_len;
    var qpos = -1;
    if has_query {
        qpos = query_pos[b * t_len + t];
        let q_off = (bh * t_len + t) * D;
        for (var i = 0u; i < D4; i = i + 1u) {
            q_block[lid * D4 + i] = q4(q_off + 4u * i) * scale;
        }
    }
    let kv_off = bh * c_len * D4;

    var m = MASKED;
    var l = 0.0;
    var acc: array<vec4<f32>, D4>;
    var scores: array<f32, TILE>;
    let tiles = (l_len + TILE - 1u) / TILE;
    for (var tile = 0u; tile < tiles; tile = tile + 1u) {
        let first = tile * TILE;
        let keys_here = min(TILE, l_len - first);
        for (var e = lid; e < TILE * D4; e = e + WORKGROUP) {
            if e / D4 < keys_here {
                k_tile[e] = kv4(k[kv_off + first * D4 + e]);
                v_tile[e] = kv4(v[kv_off + first * D4 + e]);
            }
        }
        for (var r = lid; r < TILE; r = r + WORKGROUP) {
            var kpos = -1;
            if r < keys_here {
                kpos = key_pos[b * l_len + first + r];
            }
            pos_tile[r] = kpos;
        }
        workgroupBarrier();

        if has_query {
            var tile_max = MASKED;
            for (var j = 0u; j < TILE; j = j + 1u) {
                let kpos = pos_tile[j];
                var score = MASKED;
                if kpos >= 0 && kpos <= qpos && (window == 0u || u32(qpos - kpos) < window) {
                    var dot4 = vec4<f32>(0.0);
                    for (var i = 0u; i < D4; i = i + 1u) {
                        dot4 = dot4 + q_block[lid * D4 + i] * k_tile[j * D4 + i];
                    }
                    score = dot4.x + dot4.y + dot4.z + dot4.w;
                }
                scores[j] = score;
                tile_max = max(tile_max, score);
            }
            if tile_max > MASKED {
                let m_new = max(m, tile_max);
                let correction = exp(m - m_new);
                l = l * correction;
                for (var i = 0u; i < D4; i = i + 1u) {
                    acc[i] = acc[i] * correction;
                }
                for (var j = 0u; j < TILE; j = j + 1u) {
                    if scores[j] > MASKED {
                        let w = exp(scores[j] - m_new);
                        l = l + w;
                        for (var i = 0u; i < D4; i = i + 1u) {
                            acc[i] = acc[i] + w * v_tile[j * D4 + i];
                        }
                    }
                }
                m = m_new;
            }
        }
        workgroupBarrier();
    }
    if has_query {
        let o_off = (bh * t_len + t) * D;
        let inv = select(1.0 / l, 0.0, l == 0.0);
        for (var i = 0u; i < D4; i = i + 1u) {
            let o = acc[i] * inv;
            out[o_off + 4u * i] = {{ elem }}(o.x);
            out[o_off + 4u * i + 1u] = {{ elem }}(o.y);
            out[o_off + 4u * i + 2u] = {{ elem }}(o.z);
            out[o_off + 4u * i + 3u] = {{ elem }}(o.w);
        }
    }
}
