//! Reads a `model.safetensors` as its bytes arrive (a download, a picked file's stream),
//! checks its header against the config before any tensor data, and hands each tensor over
//! in blocks of whole rows, converted to f32, as their bytes come in. The host then holds a
//! block at a time, not the file: gpt2-xl's f32 file (6.2 GB) is past what wasm32 can address
//! (4 GB), and a tab's wasm memory never shrinks, so its largest tensor (the 322 MB token
//! table) held whole, as bytes and then as f32, would set the tab's memory for good.

use std::collections::{BTreeSet, HashMap, VecDeque};

use burn::tensor::TensorData;
use safetensors::Dtype;
use serde::Deserialize;

use crate::engine::error::{EngineError, Result};
use crate::engine::model::config::Gpt2Config;
use crate::engine::model::weights::{Parameter, parameters};

/// Headers past this are refused (the safetensors crate's own limit).
const MAX_HEADER_BYTES: usize = 100_000_000;

/// Largest block of a tensor's bytes handed over at once, by default (at least one row).
const BLOCK_BYTES: usize = 8 << 20;

/// Rows `first..` of the tensor `name` of `shape` (rows along its first axis), as f32.
pub struct Rows<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub first: usize,
    pub values: Vec<f32>,
}

/// Where a tensor's bytes lie in the file, and what becomes of them.
struct Extent {
    /// The parameter's name, or None for bytes to skip (mask buffers, a tied `lm_head` copy).
    name: Option<String>,
    dtype: Dtype,
    shape: Vec<usize>,
    start: u64,
    end: u64,
    /// Rows handed over so far.
    done: usize,
}

enum State {
    /// Collecting the 8-byte length and the JSON header.
    Header,
    /// Header checked: the tensors still to come, in file order, and where the data ends.
    Body { extents: VecDeque<Extent>, end: u64 },
}

pub struct SafetensorsStream {
    config: Gpt2Config,
    state: State,
    /// The header, or the current tensor's bytes that came in an earlier chunk and do not
    /// make a whole block yet.
    pending: Vec<u8>,
    /// Bytes of the file received so far (u64: wasm32's usize ends at 4 GB, gpt2-xl does not).
    seen: u64,
    /// Largest block handed over at once, in bytes of the file.
    block_bytes: usize,
}

fn invalid(detail: impl std::fmt::Display) -> EngineError {
    EngineError::Weights(format!("model.safetensors is not a valid safetensors file: {detail}"))
}

impl SafetensorsStream {
    pub fn new(config: &Gpt2Config) -> Self {
        Self { config: config.clone(), state: State::Header, pending: vec![], seen: 0, block_bytes: BLOCK_BYTES }
    }

    /// Hands tensors over in blocks of at most `bytes` (at least a row): tests use small ones
    /// to see tiny models' tensors arrive in many blocks, as big models' do.
    pub fn with_block_bytes(self, bytes: usize) -> Self {
        Self { block_bytes: bytes, ..self }
    }

    /// Takes the next bytes of the file; `put` gets each parameter (by [`parameters`] name) in
    /// order, in blocks of rows, as soon as their bytes are in.
    pub fn feed(&mut self, mut bytes: &[u8], put: &mut dyn FnMut(Rows) -> Result<()>) -> Result<()> {
        while !bytes.is_empty() {
            let taken = match &mut self.state {
                State::Header => {
                    let need = match self.pending.get(..8) {
                        None => 8,
                        Some(len) => {
                            let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
                            match usize::try_from(len) {
                                Ok(len) if len <= MAX_HEADER_BYTES => 8 + len,
                                _ => return Err(invalid(format!("its header claims {len} bytes"))),
                            }
                        }
                    };
                    let take = (need - self.pending.len()).min(bytes.len());
                    self.pending.extend_from_slice(&bytes[..take]);
                    if self.pending.len() == need && need > 8 {
                        self.state = self.check_header()?;
                        self.pending = vec![];
                    }
                    take
                }
                State::Body { extents, .. } => {
                    let Some(next) = extents.front_mut() else {
                        // Past the last tensor: counted, and refused by `finish`.
                        self.seen += bytes.len() as u64;
                        return Ok(());
                    };
                    let until = |at: u64| (at - self.seen).min(bytes.len() as u64) as usize;
                    if self.seen < next.start {
                        until(next.start)
                    } else {
                        let take = until(next.end);
                        let last = self.seen + take as u64 == next.end;
                        next.hand_over(&mut self.pending, &bytes[..take], last, self.block_bytes, put)?;
                        if last {
                            extents.pop_front();
                        }
                        take
                    }
                }
            };
            self.seen += taken as u64;
            bytes = &bytes[taken..];
        }
        Ok(())
    }

    /// Checks that the file ended where its header said.
    pub fn finish(self) -> Result<()> {
        match self.state {
            State::Header => Err(invalid(format!("it ends inside its header, after {} bytes", self.seen))),
            State::Body { end, .. } if self.seen != end => {
                Err(invalid(format!("it is {} bytes long, but its header describes {end}", self.seen)))
            }
            State::Body { .. } => Ok(()),
        }
    }

    /// Parses the header and checks every parameter's presence, shape and dtype, and that the
    /// file has nothing the config does not describe.
    fn check_header(&self) -> Result<State> {
        let infos = parse_header(&self.pending[8..])?;
        let c = &self.config;
        let hint = format!(
            "n_layer {}, n_embd {}, n_inner {}, vocab_size {}, n_positions {}",
            c.n_layer, c.n_embd, c.n_inner, c.vocab_size, c.n_positions
        );
        let prefix = if infos.keys().any(|n| n.starts_with("transformer.")) { "transformer." } else { "" };
        // lm_head lives outside `transformer.`.
        let file_name =
            |name: &str| if name == "lm_head.weight" { name.to_string() } else { format!("{prefix}{name}") };
        let mut keep = HashMap::new();
        let mut used = BTreeSet::new();
        let mut wanted = parameters(c);
        if c.tie_word_embeddings && infos.contains_key("lm_head.weight") {
            // A tied model may still store a copy of wte: checked, then skipped.
            wanted.push(Parameter { name: "lm_head.weight".into(), shape: vec![c.vocab_size, c.n_embd] });
        }
        for p in wanted {
            let full = file_name(&p.name);
            let Some(info) = infos.get(&full) else {
                if p.name == "lm_head.weight" {
                    return Err(EngineError::Weights(format!(
                        "tie_word_embeddings is false but lm_head.weight is missing ({hint})"
                    )));
                }
                return Err(EngineError::Weights(format!("tensor {full} is missing from model.safetensors ({hint})")));
            };
            if info.shape != p.shape {
                return Err(EngineError::Weights(format!(
                    "tensor {full} has shape {:?} but the config ({hint}) expects {:?}",
                    info.shape, p.shape
                )));
            }
            if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                return Err(EngineError::Weights(format!(
                    "tensor {full} has dtype {:?}; expected F32, F16 or BF16",
                    info.dtype
                )));
            }
            let tied_copy = p.name == "lm_head.weight" && c.tie_word_embeddings;
            used.insert(full.clone());
            if !tied_copy {
                keep.insert(full, p.name);
            }
        }
        let mut leftovers: Vec<&String> = infos
            .keys()
            .filter(|n| !used.contains(*n) && !n.ends_with(".attn.bias") && !n.ends_with(".attn.masked_bias"))
            .collect();
        if !leftovers.is_empty() {
            leftovers.sort();
            let names: Vec<&str> = leftovers.iter().map(|n| n.as_str()).collect();
            return Err(EngineError::Weights(format!(
                "model.safetensors has tensors the config does not describe ({hint}): {}",
                names.join(", ")
            )));
        }
        let data_start = self.pending.len() as u64;
        let mut extents: Vec<Extent> = infos
            .into_iter()
            .map(|(full, info)| {
                let (start, end) = info.data_offsets;
                Extent {
                    name: keep.remove(&full),
                    dtype: info.dtype,
                    shape: info.shape,
                    start: data_start + start,
                    end: data_start + end,
                    done: 0,
                }
            })
            .collect();
        extents.sort_by_key(|e| e.start);
        let end = extents.last().map_or(data_start, |e| e.end);
        Ok(State::Body { extents: extents.into(), end })
    }
}

/// One entry of the JSON header. Offsets are u64: the safetensors crate's are usize, which on
/// wasm32 cannot hold gpt2-xl's (past 4 GB).
#[derive(Debug, Deserialize)]
struct Info {
    dtype: Dtype,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// Parses the JSON header and checks that the tensors tile the data section in order, each
/// exactly as long as its dtype and shape say.
fn parse_header(json: &[u8]) -> Result<HashMap<String, Info>> {
    let mut entries: HashMap<String, serde_json::Value> = serde_json::from_slice(json).map_err(invalid)?;
    entries.remove("__metadata__");
    let infos = entries
        .into_iter()
        .map(|(name, value)| {
            Info::deserialize(value)
                .map(|info| (name.clone(), info))
                .map_err(|e| invalid(format!("tensor {name}: {e}")))
        })
        .collect::<Result<HashMap<_, _>>>()?;
    let mut order: Vec<(&String, &Info)> = infos.iter().collect();
    order.sort_by_key(|(_, info)| info.data_offsets);
    let mut at = 0;
    for (name, info) in order {
        let (start, end) = info.data_offsets;
        let bits = info.shape.iter().try_fold(info.dtype.bitsize() as u64, |n, &d| n.checked_mul(d as u64));
        if start != at || bits.is_none_or(|bits| bits % 8 != 0 || end.checked_sub(start) != Some(bits / 8)) {
            return Err(invalid(format!(
                "tensor {name}'s offsets {start}..{end} do not fit its dtype and shape, or leave a gap"
            )));
        }
        if usize::try_from(end - start).is_err() {
            return Err(invalid(format!("tensor {name} is {} bytes, more than this machine can address", end - start)));
        }
        at = end;
    }
    Ok(infos)
}

impl Extent {
    /// Hands over the whole blocks (of up to `block_bytes`) that `pending` (this tensor's bytes
    /// from earlier chunks) and `bytes` make, and keeps the rest in `pending`; `last`: `bytes`
    /// ends the tensor. Skipped extents keep nothing.
    fn hand_over(
        &mut self,
        pending: &mut Vec<u8>,
        mut bytes: &[u8],
        last: bool,
        block_bytes: usize,
        put: &mut dyn FnMut(Rows) -> Result<()>,
    ) -> Result<()> {
        if self.name.is_none() {
            return Ok(());
        }
        let row_bytes = self.row_len() * self.dtype.bitsize() / 8;
        let block = (block_bytes / row_bytes.max(1)).max(1) * row_bytes;
        if !pending.is_empty() {
            let fill = (block - pending.len()).min(bytes.len());
            pending.extend_from_slice(&bytes[..fill]);
            bytes = &bytes[fill..];
            if pending.len() < block && !last {
                return Ok(());
            }
            self.put(&std::mem::take(pending), put)?;
        }
        // Blocks straight from the chunk, without a copy into `pending`.
        while bytes.len() >= block && block > 0 {
            let (whole, rest) = bytes.split_at(block);
            self.put(whole, put)?;
            bytes = rest;
        }
        if last && (!bytes.is_empty() || self.done == 0) {
            return self.put(bytes, put);
        }
        if !bytes.is_empty() {
            pending.reserve_exact(block - pending.len());
            pending.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// Values per row (along the first axis); 1 for a vector.
    fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// Converts whole rows' bytes to f32 and hands them over.
    fn put(&mut self, bytes: &[u8], put: &mut dyn FnMut(Rows) -> Result<()>) -> Result<()> {
        let name = self.name.clone().expect("only named extents are handed over");
        let pairs = || bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let values: Vec<f32> = match self.dtype {
            Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => pairs().map(|h| half::f16::from_bits(h).to_f32()).collect(),
            Dtype::BF16 => pairs().map(|h| half::bf16::from_bits(h).to_f32()).collect(),
            other => {
                return Err(EngineError::Weights(format!(
                    "tensor {name} has dtype {other:?}; expected F32, F16 or BF16"
                )));
            }
        };
        let first = self.done;
        self.done += values.len() / self.row_len().max(1);
        put(Rows { name: &name, shape: &self.shape, first, values })
    }
}

/// Joins the blocks of rows [`SafetensorsStream`] hands over into whole tensors, for readers
/// that want them whole.
#[derive(Default)]
pub struct WholeTensors {
    partial: HashMap<String, Vec<f32>>,
}

impl WholeTensors {
    /// Takes a block; returns its tensor once this block completes it.
    pub fn add(&mut self, rows: Rows) -> Option<TensorData> {
        let len: usize = rows.shape.iter().product();
        let values = if rows.first == 0 && rows.values.len() == len {
            rows.values
        } else {
            let values = self.partial.entry(rows.name.to_string()).or_insert_with(|| Vec::with_capacity(len));
            values.extend_from_slice(&rows.values);
            if values.len() < len {
                return None;
            }
            self.partial.remove(rows.name).expect("just filled")
        };
        Some(TensorData::new(values, rows.shape.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use safetensors::tensor::TensorView;

    use super::*;
    use crate::engine::model::weights::Gpt2Weights;

    /// A 1-layer model in a file with the `transformer.` prefix, f16 `wpe`, a mask buffer and a
    /// tied `lm_head` copy: what HF checkpoints in the wild carry.
    fn file() -> (Gpt2Config, Vec<u8>, Gpt2Weights) {
        let config =
            Gpt2Config::from_json(r#"{"vocab_size": 10, "n_positions": 8, "n_embd": 4, "n_layer": 1, "n_head": 2}"#)
                .unwrap();
        let weights = Gpt2Weights::random(&config, 3);
        let mut bytes: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> = HashMap::new();
        for (name, data) in &weights.tensors {
            let values = data.as_slice::<f32>().unwrap();
            let (dtype, raw) = if name == "wpe.weight" {
                (Dtype::F16, values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect())
            } else {
                (Dtype::F32, values.iter().flat_map(|v| v.to_le_bytes()).collect())
            };
            bytes.insert(format!("transformer.{name}"), (dtype, data.shape().to_vec(), raw));
        }
        bytes.insert("transformer.h.0.attn.bias".into(), (Dtype::F32, vec![1, 1, 8, 8], vec![0; 256]));
        let wte = bytes["transformer.wte.weight"].clone();
        bytes.insert("lm_head.weight".into(), wte);
        let views: Vec<(String, TensorView)> =
            bytes.iter().map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
        (config, safetensors::serialize(views, None).unwrap(), weights)
    }

    /// The tensors of `bytes` fed `chunk` bytes at a time, handed over in blocks of up to
    /// `block` bytes; each block must follow its tensor's previous one.
    fn stream(config: &Gpt2Config, bytes: &[u8], chunk: usize, block: usize) -> Result<HashMap<String, Vec<f32>>> {
        let mut got: HashMap<String, Vec<f32>> = HashMap::new();
        let mut s = SafetensorsStream::new(config).with_block_bytes(block);
        for piece in bytes.chunks(chunk) {
            s.feed(piece, &mut |rows| {
                let values = got.entry(rows.name.to_string()).or_default();
                let row_len = rows.shape.iter().skip(1).product::<usize>();
                assert_eq!(values.len(), rows.first * row_len, "{} rows out of order", rows.name);
                // At most a block of f16 values (2 bytes each), or a row.
                assert!(
                    !rows.values.is_empty() && rows.values.len() <= (block / 2).max(row_len),
                    "{}: a block of {}",
                    rows.name,
                    rows.values.len()
                );
                values.extend(rows.values);
                Ok(())
            })?;
        }
        s.finish()?;
        Ok(got)
    }

    #[test]
    fn any_chunking_gives_every_parameter_once() {
        let (config, bytes, weights) = file();
        for (chunk, block) in [(1, 1 << 20), (3, 16), (8, 40), (100, 1), (bytes.len(), 1 << 20), (bytes.len(), 24)] {
            let got = stream(&config, &bytes, chunk, block).unwrap();
            assert_eq!(got.len(), weights.tensors.len());
            for (name, data) in &weights.tensors {
                let want: Vec<f32> = data.iter::<f32>().collect();
                let tolerance = if name == "wpe.weight" { 1e-3 } else { 0.0 };
                assert_eq!(got[name].len(), want.len(), "{name}, chunks of {chunk}, blocks of {block}");
                assert!(
                    got[name].iter().zip(&want).all(|(a, b)| (a - b).abs() <= tolerance),
                    "{name}, chunks of {chunk}, blocks of {block}"
                );
            }
        }
    }

    #[test]
    fn a_file_cut_short_or_too_long_is_refused() {
        let (config, bytes, _) = file();
        for cut in [4, 60, bytes.len() - 1] {
            let err = stream(&config, &bytes[..cut], 7, 1 << 20).unwrap_err().to_string();
            assert!(err.contains("not a valid safetensors file"), "{err}");
        }
        let mut long = bytes.clone();
        long.extend_from_slice(&[0; 5]);
        let err = stream(&config, &long, 7, 1 << 20).unwrap_err().to_string();
        assert!(err.contains("bytes long, but its header describes"), "{err}");
    }

    #[test]
    fn offsets_must_tile_the_data() {
        let header = |offsets: &str| {
            format!(
                r#"{{"__metadata__": {{"format": "pt"}}, "a": {{"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, "b": {{"dtype": "F16", "shape": [3], "data_offsets": {offsets}}}}}"#
            )
        };
        assert_eq!(parse_header(header("[8, 14]").as_bytes()).unwrap().len(), 2);
        for bad in ["[9, 15]", "[8, 16]", "[8, 4]"] {
            let err = parse_header(header(bad).as_bytes()).unwrap_err().to_string();
            assert!(err.contains("do not fit its dtype and shape"), "{bad}: {err}");
        }
        // Offsets past 4 GB parse (u64), as gpt2-xl's do on wasm32.
        let big = r#"{"a": {"dtype": "F32", "shape": [1100000000], "data_offsets": [0, 4400000000]}}"#;
        assert_eq!(parse_header(big.as_bytes()).unwrap()["a"].data_offsets.1, 4_400_000_000);
    }

    #[test]
    fn the_header_is_checked_before_any_tensor() {
        let (config, bytes, _) = file();
        let other = Gpt2Config { n_inner: 8, ..config };
        let mut s = SafetensorsStream::new(&other);
        let err = s.feed(&bytes, &mut |rows| panic!("{} was handed over", rows.name)).unwrap_err().to_string();
        assert!(err.contains("mlp.c_fc.weight has shape [4, 16] but the config"), "{err}");
    }
}
