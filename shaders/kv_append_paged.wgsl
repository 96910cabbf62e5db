// Writes a ragged step's new K and V rows into the paged pools, in place: token t's row goes
// to pool slot slot_mapping[t] (its block table's slot for its position).
//
// new_k, new_v: [N, E] (contiguous); k_pool, v_pool: [slots, E / PER], words of PER values (as
// kv_append.wgsl: f32, or two packed f16 halves). One invocation per pool word; the grid is
// 2-D so large steps stay under the 65535 limit.

@group(0) @binding(0) var<storage, read_write> k_pool: array<{{ kv_elem }}>;
@group(0) @binding(1) var<storage, read_write> v_pool: array<{{ kv_elem }}>;
@group(0) @binding(2) var<storage, read_write> new_k: array<f32>;
@group(0) @binding(3) var<storage, read_write> new_v: array<f32>;
@group(0) @binding(4) var<storage, read_write> slot_mapping: array<u32>;
// N, E
@group(0) @binding(5) var<storage, read_write> params: array<u32>;

const WORKGROUP: u32 = {{ workgroup }}u;
const PER: u32 = {{ kv_per_word }}u;

fn word(a: vec2<f32>) -> {{ kv_elem }} {
    return {{ kv_pack }};
}

@compute @workgroup_size({{ workgroup }})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let w_len = params[1] / PER;
    let index = gid.x + gid.y * groups.x * WORKGROUP;
    if index >= params[0] * w_len {
        return;
    }
    let t = index / w_len;
    let dst = slot_mapping[t] * w_len + index % w_len;
    let src = index * PER;
    k_pool[dst] = word(vec2<f32>(new_k[src], new_k[src + PER - 1u]));
    v_pool[dst] = word(vec2<f32>(new_v[src], new_v[src + PER - 1u]));
}
