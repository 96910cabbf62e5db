// Writes a step's new K and V rows into the preallocated cache buffers, in place.
//
// new_k, new_v: [B, H, T, D] (contiguous); cache_k, cache_v: [B, H, C, D / PER], words of PER
// values: f32 (PER 1), or two f16 halves packed by pack2x16float (PER 2, an f16 cache on a
// device without shader-f16).
// Token t goes to slot `base + t` (contiguous cache) or `(base + t) % C` (ring of a sliding
// window); tokens before `first` are skipped (a chunk longer than the ring keeps its tail).
// One invocation per cache word; the grid is 2-D so large steps stay under the 65535 limit.

@group(0) @binding(0) var<storage, read_write> cache_k: array<{{ kv_elem }}>;
@group(0) @binding(1) var<storage, read_write> cache_v: array<{{ kv_elem }}>;
@group(0) @binding(2) var<storage, read_write> new_k: array<f32>;
@group(0) @binding(3) var<storage, read_write> new_v: array<f32>;
@group(0) @binding(4) var<storage, read_write> params: array<u32>;

const WORKGROUP: u32 = {{ workgroup }}u;
const PER: u32 = {{ kv_per_word }}u;

// The word that stores values a.x (and a.y, for two halves).
fn word(a: vec2<f32>) -> {{ kv_elem }} {
    return {{ kv_pack }};
}

@compute @workgroup_size({{ workgroup }})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let rows = params[0];
    let t_len = params[1];
    let w_len = params[2] / PER;
    let c_len = params[3];
    let index = gid.x + gid.y * groups.x * WORKGROUP;
    if index >= rows * t_len * w_len {
        return;
    }
    let w = index % w_len;
    let t = (index / w_len) % t_len;
    let bh = index / (w_len * t_len);
    if t < params[6] {
        return;
    }
    var slot = params[4] + t;
    if params[5] != 0u {
        slot = slot % c_len;
    }
    let dst = (bh * c_len + slot) * w_len + w;
    let src = index * PER;
    cache_k[dst] = word(vec2<f32>(new_k[src], new_k[src + PER - 1u]));
    cache_v[dst] = word(vec2<f32>(new_v[src], new_v[src + PER - 1u]));
}
