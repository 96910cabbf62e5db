// Writes a step's new K and V rows into the preallocated cache buffers, in place.
//
// new_k, new_v: [B, H, T, D] (contiguous); cache_k, cache_v: [B, H, C, D].
// Token t goes to slot `base + t` (contiguous cache) or `(base + t) % C` (ring of a sliding
// window); tokens before `first` are skipped (a chunk longer than the ring keeps its tail).
// One invocation per element; the grid is 2-D so large steps stay under the 65535 limit.

@group(0) @binding(0) var<storage, read_write> cache_k: array<{{ elem }}>;
@group(0) @binding(1) var<storage, read_write> cache_v: array<{{ elem }}>;
@group(0) @binding(2) var<storage, read_write> new_k: array<{{ elem }}>;
@group(0) @binding(3) var<storage, read_write> new_v: array<{{ elem }}>;
// B·H, T, D, C, base, ring (0 | 1), first
@group(0) @binding(4) var<storage, read_write> params: array<u32>;

const WORKGROUP: u32 = {{ workgroup }}u;

@compute @workgroup_size({{ workgroup }})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let rows = params[0];
    let t_len = params[1];
    let d_len = params[2];
    let c_len = params[3];
    let index = gid.x + gid.y * groups.x * WORKGROUP;
    if index >= rows * t_len * d_len {
        return;
    }
    let d = index % d_len;
    let t = (index / d_len) % t_len;
    let bh = index / (d_len * t_len);
    if t < params[6] {
        return;
    }
    var slot = params[4] + t;
    if params[5] != 0u {
        slot = slot % c_len;
    }
    let dst = (bh * c_len + slot) * d_len + d;
    cache_k[dst] = new_k[index];
    cache_v[dst] = new_v[index];
}
