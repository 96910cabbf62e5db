//! The tokenizer against transformers' goldens: ids and decoded text, exactly, for every
//! model folder's `tokenizer.json` and the shared one.

mod common;

use inferlab::engine::model::tokenizer::Tokenizer;
use serde::Deserialize;

#[derive(Deserialize)]
struct GoldenTokenizer {
    cases: Vec<EncodeCase>,
    decode_cases: Vec<DecodeCase>,
}

#[derive(Deserialize)]
struct EncodeCase {
    text: String,
    ids: Vec<u32>,
    decoded: String,
}

#[derive(Deserialize)]
struct DecodeCase {
    ids: Vec<u32>,
    text: String,
    #[serde(default)]
    skip_special_tokens: bool,
}

#[test]
fn tokenizer_matches_transformers() {
    let root = common::fixtures_root();
    let golden: GoldenTokenizer = serde_json::from_slice(
        &std::fs::read(root.join("tokenizer/golden_tokenizer.json")).expect("golden_tokenizer.json"),
    )
    .expect("golden tokenizer schema");
    let mut files = vec![root.join("tokenizer/tokenizer.json")];
    files.extend(common::model_dirs().into_iter().map(|d| d.join("tokenizer.json")));
    for file in files {
        let tokenizer = Tokenizer::from_bytes(&std::fs::read(&file).expect("tokenizer.json")).expect("loads");
        assert_eq!(tokenizer.vocab_size(), 50257, "{}", file.display());
        for case in &golden.cases {
            assert_eq!(tokenizer.encode(&case.text).unwrap(), case.ids, "{}: encode {:?}", file.display(), case.text);
            assert_eq!(tokenizer.decode(&case.ids).unwrap(), case.decoded, "{}: decode {:?}", file.display(), case.ids);
        }
        for case in &golden.decode_cases {
            let text = tokenizer.decode_with(&case.ids, case.skip_special_tokens).unwrap();
            assert_eq!(text, case.text, "{}: decode {:?}", file.display(), case.ids);
        }
    }
}
