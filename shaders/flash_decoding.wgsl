
// ---- flash_decoding.wgsl: appended to attention_decode.wgsl and attention_paged.wgsl ----
// Flash-decoding inside one workgroup. Each invocation folds its share of the keys into a
// Partial — an online softmax: running max m, running sum l, and the weighted sum of V rows,
// rescaled by exp(m_old − m_new) when the max grows — with no barrier in the key loop. At the
// end the workgroup merges its partials once in workgroup memory:
// out = Σ_i exp(m_i − M)·acc_i / Σ_i exp(m_i − M)·l_i with M = max_i m_i.
// The kernel that includes this declares D4 and WORKGROUP, the bindings k, v (four values per
// element: an f32 vec4, or two words of two f16) and out, and the workgroup arrays query,
// maxes, sums and partial.

const MASKED: f32 = -3.0e38;

// Four K or V values as f32.
fn kv4(v: {{ kv_word }}) -> vec4<f32> {
    return {{ kv_widen }};
}

struct Partial {
    m: f32,
    l: f32,
    acc: array<vec4<f32>, D4>,
}

fn empty_partial() -> Partial {
    var p: Partial; // zero-initialised
    p.m = MASKED;
    return p;
}

// Folds the key and value rows that start at vec4 `row` into `p`.
fn absorb(p: ptr<function, Partial>, row: u32, scale: f32) {
    var dot4 = vec4<f32>(0.0);
    for (var i = 0u; i < D4; i = i + 1u) {
        dot4 = dot4 + query[i] * kv4(k[row + i]);
    }
    let score = (dot4.x + dot4.y + dot4.z + dot4.w) * scale;
    let m_new = max((*p).m, score);
    let correction = exp((*p).m - m_new);
    let weight = exp(score - m_new);
    (*p).l = (*p).l * correction + weight;
    for (var i = 0u; i < D4; i = i + 1u) {
        (*p).acc[i] = (*p).acc[i] * correction + weight * kv4(v[row + i]);
    }
    (*p).m = m_new;
}

// Merges the workgroup's partials and writes the output row that starts at vec4 `at`. Every
// invocation calls it (it holds a barrier). A query that saw no key (padding) gets zeros.
fn merge_and_store(lid: u32, p: Partial, at: u32) {
    maxes[lid] = p.m;
    sums[lid] = p.l;
    for (var i = 0u; i < D4; i = i + 1u) {
        partial[lid * D4 + i] = p.acc[i];
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
        out[at + i] = select(total / l_all, vec4<f32>(0.0), l_all == 0.0);
    }
}
