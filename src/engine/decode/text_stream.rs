//! Tokens → text as it streams, with stop strings: byte-level BPE can split a character across
//! tokens, and a stop string can span tokens, so text is released only once it is final —
//! never half a character (a trailing U+FFFD waits for the next token) and never the start of
//! what may become a stop string. A stop string found is cut, with everything after it, as
//! OpenAI does. The engine's `generate`, the command line's streamed output and the server's
//! choices all read their text through this one type.

use crate::engine::error::Result;
use crate::engine::model::tokenizer::Tokenizer;

pub struct TextStream {
    ids: Vec<u32>,
    stops: Vec<String>,
    /// The text of `ids`, as of the last push.
    decoded: String,
    /// Bytes of `decoded` already released.
    released: usize,
    /// Where the first stop string begins, once one has matched.
    cut: Option<usize>,
}

/// What one token released.
#[derive(Debug, Default, PartialEq)]
pub struct Delta {
    pub text: String,
    /// A stop string matched: the text is over.
    pub stopped: bool,
}

impl TextStream {
    pub fn new(stops: Vec<String>) -> Self {
        Self { ids: vec![], stops, decoded: String::new(), released: 0, cut: None }
    }

    /// Adds a token and releases what is now final. After a stop, nothing more is released.
    pub fn push(&mut self, id: u32, tokenizer: &Tokenizer) -> Result<Delta> {
        if self.cut.is_some() {
            return Ok(Delta { text: String::new(), stopped: true });
        }
        self.ids.push(id);
        self.decoded = tokenizer.decode(&self.ids)?;
        if let Some(at) = self.stops.iter().filter_map(|s| self.decoded.find(s.as_str())).min() {
            self.cut = Some(at);
            return Ok(Delta { text: self.release(at), stopped: true });
        }
        // A half character first, then a stop string's start before it: the other order would
        // release text that a later token shows to begin a stop string.
        let settled = self.decoded.strip_suffix('\u{FFFD}').unwrap_or(&self.decoded);
        let end = settled.len() - held_back(settled, &self.stops);
        Ok(Delta { text: self.release(end), stopped: false })
    }

    /// The end of the text (the tokens ran out): whatever was held back, or nothing after a stop.
    pub fn finish(&mut self) -> String {
        self.release(self.cut.unwrap_or(self.decoded.len()))
    }

    /// The whole text so far: up to the stop string's start once one matched.
    pub fn text(&self) -> &str {
        &self.decoded[..self.cut.unwrap_or(self.decoded.len())]
    }

    /// Releases `decoded[released..end]`.
    fn release(&mut self, end: usize) -> String {
        let end = end.max(self.released);
        let out = self.decoded[self.released..end].to_string();
        self.released = end;
        out
    }
}

/// Bytes at the end of `text` that could begin a stop string.
fn held_back(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .flat_map(|stop| stop.char_indices().skip(1).map(|(i, _)| &stop[..i]))
        .filter(|prefix| text.ends_with(prefix))
        .map(str::len)
        .max()
        .unwrap_or(0)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    fn tokenizer() -> Tokenizer {
        let root = std::env::var("INFERLAB_FIXTURES")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gpt2").into());
        Tokenizer::from_bytes(&std::fs::read(format!("{root}/tokenizer/tokenizer.json")).unwrap()).unwrap()
    }

    fn run_ids(ids: &[u32], stops: &[&str]) -> (Vec<String>, bool) {
        let tok = tokenizer();
        let mut stream = TextStream::new(stops.iter().map(|s| s.to_string()).collect());
        let mut parts = vec![];
        for &id in ids {
            let delta = stream.push(id, &tok).unwrap();
            parts.push(delta.text);
            if delta.stopped {
                assert_eq!(parts.concat(), stream.text(), "released text is the text up to the stop");
                return (parts, true);
            }
        }
        parts.push(stream.finish());
        (parts, false)
    }

    fn run(text: &str, stops: &[&str]) -> (Vec<String>, bool) {
        run_ids(&tokenizer().encode(text).unwrap(), stops)
    }

    #[test]
    fn pieces_join_to_the_text_and_never_split_a_character() {
        let text = "Héllo wörld — 東京 🎉 done";
        let (parts, stopped) = run(text, &[]);
        assert!(!stopped);
        assert_eq!(parts.concat(), text);
        assert!(parts.iter().all(|p| !p.contains('\u{FFFD}')), "{parts:?}");
    }

    #[test]
    fn a_stop_string_across_tokens_is_cut_and_never_shown() {
        let (parts, stopped) = run("The answer is 42.\n\nQuestion: why", &["\n\nQuestion"]);
        assert!(stopped);
        assert_eq!(parts.concat(), "The answer is 42.");
        let (parts, stopped) = run("one two three", &["zzz", "two"]);
        assert!(stopped);
        assert_eq!(parts.concat(), "one ");
        let (parts, _) = run("a partial Que match", &["Question"]);
        assert_eq!(parts.concat(), "a partial Que match", "held-back text comes out once it cannot stop");
    }

    #[test]
    fn a_stop_string_that_ends_in_a_split_character_is_held_back_through_the_split() {
        // "a", "b", then "é" as its two bytes (0xC3 → "Ã", 0xA9 → "©"): after the third token
        // the text is "ab\u{FFFD}"; the "b" may still begin "bé" and must not be released.
        let tok = tokenizer();
        let ids = [64, 65, 127, 102];
        assert_eq!(tok.decode(&ids).unwrap(), "abé");
        assert!(tok.decode(&ids[..3]).unwrap().ends_with('\u{FFFD}'));
        let (parts, stopped) = run_ids(&ids, &["bé"]);
        assert!(stopped);
        assert_eq!(parts.concat(), "a", "{parts:?}");
    }
}
