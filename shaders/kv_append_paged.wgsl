// Writes a ragged step's new K and V rows into the paged pools, in place: token t's row goes
// to pool slot slot_mapping[t] (its block table's slot for its position).
//
// new_k, new_v: [N, E] (contiguous); k_pool, v_pool: [slots, E]. One invocation per element;
// the grid is 2-D so large steps stay under the 65535 limit.

@group(0) @binding(0) var<storage, read_write> k_pool: array<{{ elem }}>;
@group(0) @binding(1) var<storage, read_write> v_pool: array<{{ elem }}>;
@group(0) @binding(2) var<storage, read_write> new_k: array<{{ elem }}>;
@group(0) @binding(3) var<storage, read_write> new_v: array<{{ elem }}>;
@group(0) @binding(4) var<storage, read_write> slot_mapping: array<u32>;
// N, E
@group(0) @binding(5) var<storage, read_write> params: array<u32>;

const WORKGROUP: u32 = {{ workgroup }}u;

@compute @workgroup_size({{ workgroup }})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e_len = params[1];
    let index = gid.x + gid.y * groups.x * WORKGROUP;
    if index >= params[0] * e_len {
        return;
    }
    let t = index / e_len;
    let dst = slot_mapping[t] * e_len + index % e_len;
    k_pool[dst] = new_k[index];
    v_pool[dst] = new_v[index];
}
